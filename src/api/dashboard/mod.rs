//! The dashboard, served by the gateway itself on both listeners under `/dashboard`: on the public
//! listener an account's keys, child keys, limits, usage, referral code and credits (and, when
//! `[signup]` is enabled, a sign-up page); on the admin listener accounts, credits,
//! prices, nodes and headline metrics.
//!
//! # Design
//! The pages ([`pages`]) are static markup around which one embedded script ([`assets`]) calls the
//! existing account API (`/api/...`) and admin API (`/admin/...`, `/metrics`) with the session cookie
//! ([`session`]), which those routes accept in place of the account or admin token
//! ([`crate::api::credentials`]). The dashboard adds no data route of its own: what a page shows is
//! what the API answers. Nothing needs Node.js to build or run: every file is in the binary.
//!
//! Every answer under `/dashboard` carries the security headers: a Content-Security-Policy that allows
//! only this origin's own scripts and styles (no inline script, no `eval`, no framing, no other
//! origin), `nosniff`, no referrer, and `no-store` on every page and session answer.

pub mod assets;
pub mod pages;
pub mod session;

use self::pages::{SIGN_IN_PATH, SIGN_UP_PATH, Side};
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::{Method, query_param};
use crate::session::exchange::Exchange;

/// The policy of every dashboard answer: this origin's scripts, styles, images and API only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is the dashboard's.
pub fn is_dashboard(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The public listener's dashboard (the account's).
pub async fn public<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    // The API's CORS headers are not the dashboard's: its answers are for its own origin only.
    ex.headers.retain(|(name, _)| !name.starts_with("Access-Control-"));
    let tls = ex.core().app.settings.tls.is_some();
    route(ex, Side::Account, tls).await
}

/// The admin listener's dashboard.
pub async fn admin<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    route(ex, Side::Admin, false).await
}

async fn route<S: Transport>(ex: &mut Exchange<'_, S>, side: Side, tls: bool) -> Result<(), ApiError> {
    ex.log.route = "dashboard";
    ex.headers.extend(security_headers(tls));
    let method = crate::api::route_method(ex.head.method);
    let path = ex.head.path.clone();
    if let Some(name) = path.strip_prefix("/dashboard/assets/") {
        return match method {
            Method::Get => asset(ex, name).await,
            _ => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        };
    }
    if let Some(page) = pages::pages(side).iter().find(|p| p.path == path.trim_end_matches('/')) {
        if method != Method::Get {
            return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        return match signed_in(ex, side) {
            Some(csrf) => {
                respond_page(ex, &pages::render(side, page, &csrf)).await;
                Ok(())
            }
            None => redirect(ex, SIGN_IN_PATH, session_cookie(ex, side)).await,
        };
    }
    match (method, path.as_str(), side) {
        (Method::Post, SIGN_IN_PATH, Side::Account) => session::account_sign_in(ex).await,
        (Method::Post, SIGN_IN_PATH, Side::Admin) => session::admin_sign_in(ex).await,
        (Method::Post, "/dashboard/sign-out", Side::Account) => session::account_sign_out(ex).await,
        (Method::Post, "/dashboard/sign-out", Side::Admin) => session::admin_sign_out(ex).await,
        (Method::Get, SIGN_IN_PATH, _) => {
            if signed_in(ex, side).is_some() {
                return redirect(ex, "/dashboard", false).await;
            }
            let sign_up = side == Side::Account && ex.core().app.settings.signup.is_some();
            let html = pages::render_sign_in(side, sign_up);
            respond_page(ex, &html).await;
            Ok(())
        }
        (Method::Get, SIGN_UP_PATH, Side::Account) if ex.core().app.settings.signup.is_some() => {
            if signed_in(ex, side).is_some() {
                return redirect(ex, "/dashboard", false).await;
            }
            respond_page(ex, &pages::render_sign_up()).await;
            Ok(())
        }
        (_, SIGN_IN_PATH | "/dashboard/sign-out", _) => Err(ApiError::MethodNotAllowed { allow: "POST" }),
        _ => Err(ApiError::NotFound(format!(
            "The dashboard has no page {}.",
            path.chars().take(200).collect::<String>()
        ))),
    }
}

/// The headers of every dashboard answer.
fn security_headers(tls: bool) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY.to_owned()),
        ("X-Content-Type-Options", "nosniff".to_owned()),
        ("X-Frame-Options", "DENY".to_owned()),
        ("Referrer-Policy", "no-referrer".to_owned()),
        ("Cross-Origin-Opener-Policy", "same-origin".to_owned()),
        ("Cross-Origin-Resource-Policy", "same-origin".to_owned()),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()".to_owned()),
    ];
    if tls {
        h.push(("Strict-Transport-Security", "max-age=31536000".to_owned()));
    }
    h
}

/// Whether the request carries a session cookie of `side` at all (valid or not).
fn session_cookie<S: Transport>(ex: &Exchange<'_, S>, side: Side) -> bool {
    let name = match side {
        Side::Account => session::ACCOUNT_COOKIE,
        Side::Admin => session::ADMIN_COOKIE,
    };
    session::cookie(&ex.head, name).is_some()
}

/// The CSRF token of the request's valid session of `side`; `None` when it is not signed in.
fn signed_in<S: Transport>(ex: &Exchange<'_, S>, side: Side) -> Option<String> {
    let core = ex.core();
    let now = core.app.clock.now_ms().div_euclid(1000);
    match side {
        Side::Account => {
            let c = session::account_cookie(&ex.head)?;
            core.app.keys.authenticate_session(c.value, now).ok()?;
            Some(core.app.keys.csrf_token(c.value))
        }
        Side::Admin => {
            let c = session::cookie(&ex.head, session::ADMIN_COOKIE)?;
            core.app.admin_sessions.verify(&core.app.keys, &core.app.admin_token, c.value, now)?;
            Some(core.app.keys.csrf_token(c.value))
        }
    }
}

async fn respond_page<S: Transport>(ex: &mut Exchange<'_, S>, html: &str) {
    let headers = [("Cache-Control", "no-store".to_owned())];
    ex.respond(200, "text/html; charset=utf-8", html.as_bytes(), &headers).await;
}

/// A 303 to `to`; `clear`: the request's session cookie is no longer valid and is removed.
async fn redirect<S: Transport>(ex: &mut Exchange<'_, S>, to: &str, clear: bool) -> Result<(), ApiError> {
    let mut headers = vec![("Location", to.to_owned()), ("Cache-Control", "no-store".to_owned())];
    if clear {
        let core = ex.core();
        let (name, secure) = match ex.conn.kind {
            crate::session::ListenerKind::Public => {
                (session::ACCOUNT_COOKIE, core.app.settings.tls.is_some())
            }
            crate::session::ListenerKind::Admin => (session::ADMIN_COOKIE, false),
        };
        headers.push(("Set-Cookie", session::set_cookie(name, None, 0, secure)));
    }
    ex.respond(303, "text/plain; charset=utf-8", b"", &headers).await;
    Ok(())
}

/// `GET /dashboard/assets/{name}`: kept for good when asked for by the current version.
async fn asset<S: Transport>(ex: &mut Exchange<'_, S>, name: &str) -> Result<(), ApiError> {
    let asset = assets::find(name).ok_or_else(|| {
        ApiError::NotFound(format!("No dashboard file {}.", name.chars().take(100).collect::<String>()))
    })?;
    let current = query_param(ex.head.query.as_deref(), "v").is_some_and(|v| v == assets::version());
    let cache = if current { "public, max-age=31536000, immutable" } else { "no-cache" };
    ex.respond(200, asset.content_type, asset.bytes, &[("Cache-Control", cache.to_owned())]).await;
    Ok(())
}
