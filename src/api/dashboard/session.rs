//! Signing in to the dashboard and out of it, the session cookies, and the CSRF rules of every request
//! a session cookie authenticates.
//!
//! # Design
//! Signing in exchanges a token for a session: the account token (public listener) for an account
//! session, a key row of kind `dashboard_session` kept by the control plane like any key (so every core
//! and instance knows it, and signing out ends it everywhere); the admin token (admin listener) for a
//! signed admin session ([`crate::auth::admin_session`]). The page never keeps the token: it posts it
//! once and from then on holds only the cookie, which scripts cannot read (`HttpOnly`), which no other
//! site's request carries (`SameSite=Strict`), `Secure` when the gateway serves TLS, and which expires
//! with the session (`keys.dashboard_session_ttl_ms`).
//!
//! Cookies are per host, not per port, so the two listeners use two cookie names, and a page of the
//! public listener is same-site with the admin listener's: `SameSite` alone does not separate them.
//! Every write a cookie authenticates therefore carries the session's CSRF token
//! ([`crate::auth::Keys::csrf_token`], derived from the session's secret), which only the session's own
//! pages are given, and is refused when the browser says it comes from another origin.

use crate::api::fields::Fields;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::{Method, RequestHead};
use crate::session::exchange::Exchange;
use serde_json::json;

/// The account session's cookie (public listener).
pub const ACCOUNT_COOKIE: &str = "gonka_session";
/// The admin session's cookie (admin listener).
pub const ADMIN_COOKIE: &str = "gonka_admin_session";

/// A session cookie as the request carries it.
#[derive(Debug, Clone, Copy)]
pub struct SessionCookie<'a> {
    pub name: &'static str,
    pub value: &'a str,
}

/// The value of cookie `name` in the request's `Cookie` header (the first one, when repeated).
pub fn cookie<'a>(head: &'a RequestHead, name: &'static str) -> Option<SessionCookie<'a>> {
    let all = head.cookie.as_deref()?;
    all.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then(|| SessionCookie { name, value: v.trim_matches('"') })
    })
}

/// The account session cookie, when the request carries one.
pub fn account_cookie(head: &RequestHead) -> Option<SessionCookie<'_>> {
    cookie(head, ACCOUNT_COOKIE)
}

/// Refuses a cookie-authenticated request that does not come from the dashboard's own page: one the
/// browser marks as from another origin, or a write without the session's CSRF token.
pub fn check_csrf(head: &RequestHead, expected: &str) -> Result<(), ApiError> {
    from_own_origin(head)?;
    if matches!(head.method, Method::Get | Method::Head) {
        return Ok(());
    }
    let given = head.csrf_token.as_deref().unwrap_or("");
    if given.is_empty() || !crate::secret::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Forbidden(
            "csrf_token_invalid",
            "This request needs the X-CSRF-Token of its dashboard session: it must come from the \
             dashboard's own page."
                .into(),
        ));
    }
    Ok(())
}

/// Refuses a request the browser says comes from another origin (`Sec-Fetch-Site`).
fn from_own_origin(head: &RequestHead) -> Result<(), ApiError> {
    match head.fetch_site.as_deref() {
        None | Some("same-origin") => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "cross_site_request",
            "The dashboard's session does not accept requests from another site or origin.".into(),
        )),
    }
}

/// A `Set-Cookie` value for `name`: `value` for `max_age_secs`, or (`None`) removal.
pub fn set_cookie(name: &str, value: Option<&str>, max_age_secs: i64, secure: bool) -> String {
    let (value, max_age) = match value {
        Some(v) => (v, max_age_secs.max(0)),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn now_secs<S: Transport>(ex: &Exchange<'_, S>) -> i64 {
    ex.core().app.clock.now_ms().div_euclid(1000)
}

fn ttl_secs<S: Transport>(ex: &Exchange<'_, S>) -> i64 {
    i64::try_from(ex.core().app.settings.keys.dashboard_session_ttl.as_secs()).unwrap_or(i64::MAX)
}

/// The token a sign-in form posts: `{"token": "…"}`.
async fn posted_token<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<String, ApiError> {
    from_own_origin(&ex.head)?;
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let token =
        f.text("token")?.ok_or_else(|| ApiError::bad_request("`token` is required.", Some("token")))?;
    f.finish()?;
    Ok(token.trim().to_owned())
}

/// `POST /dashboard/sign-in` (public): the account token for an account session.
pub async fn account_sign_in<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let token = posted_token(ex).await?;
    let core = ex.core();
    let now = now_secs(ex);
    let account_id = match core.app.keys.account_token(&token, false, now) {
        Ok(Caller::Account { account_id }) => account_id,
        _ => {
            return Err(ApiError::bad_request(
                "That is not a valid account token (gka-…). An administrator creates the account and \
                 gives you its token.",
                Some("token"),
            ));
        }
    };
    let expires_at = now.saturating_add(ttl_secs(ex));
    let account = account_id.to_string();
    let session = core.app.control.call(move |st| st.create_session(&account, expires_at)).await??;
    let secret = session.secret.ok_or_else(|| ApiError::Internal("a new session has a secret".into()))?;
    let secure = core.app.settings.tls.is_some();
    let cookie = set_cookie(ACCOUNT_COOKIE, Some(&secret), expires_at - now, secure);
    let body = json!({"account_id": &*account_id, "expires_at": crate::time::rfc3339(expires_at)});
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let headers = [("Set-Cookie", cookie), ("Cache-Control", "no-store".to_owned())];
    ex.respond(200, "application/json", &body, &headers).await;
    Ok(())
}

/// `POST /dashboard/sign-out` (public): ends the account session for good, on every instance.
pub async fn account_sign_out<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    let Some(c) = account_cookie(&ex.head) else { return Err(ApiError::InvalidApiKey) };
    let secret = c.value.to_owned();
    core.app.keys.authenticate_session(&secret, now_secs(ex))?;
    check_csrf(&ex.head, &core.app.keys.csrf_token(&secret))?;
    core.app.control.call(move |st| st.end_session(&secret)).await??;
    signed_out(ex, ACCOUNT_COOKIE, core.app.settings.tls.is_some()).await;
    Ok(())
}

/// `POST /dashboard/sign-in` (admin): the admin token for an admin session.
pub async fn admin_sign_in<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let token = posted_token(ex).await?;
    let core = ex.core();
    if crate::api::admin::check_token(&core.app, Some(&format!("Bearer {token}"))).is_err() {
        return Err(ApiError::bad_request("That is not the admin token.", Some("token")));
    }
    let now = now_secs(ex);
    let expires_at = now.saturating_add(ttl_secs(ex));
    let value = core
        .app
        .admin_sessions
        .issue(&core.app.keys, &core.app.admin_token, expires_at)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let cookie = set_cookie(ADMIN_COOKIE, Some(&value), expires_at - now, false);
    let body =
        serde_json::to_vec(&json!({"expires_at": crate::time::rfc3339(expires_at)})).unwrap_or_default();
    let headers = [("Set-Cookie", cookie), ("Cache-Control", "no-store".to_owned())];
    ex.respond(200, "application/json", &body, &headers).await;
    Ok(())
}

/// `POST /dashboard/sign-out` (admin): revokes the admin session on this instance.
pub async fn admin_sign_out<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    let now = now_secs(ex);
    let Some(c) = cookie(&ex.head, ADMIN_COOKIE) else { return Err(ApiError::InvalidApiKey) };
    let session = core
        .app
        .admin_sessions
        .verify(&core.app.keys, &core.app.admin_token, c.value, now)
        .ok_or(ApiError::InvalidApiKey)?;
    check_csrf(&ex.head, &core.app.keys.csrf_token(c.value))?;
    core.app.admin_sessions.revoke(&session, now);
    signed_out(ex, ADMIN_COOKIE, false).await;
    Ok(())
}

async fn signed_out<S: Transport>(ex: &mut Exchange<'_, S>, name: &str, secure: bool) {
    let headers =
        [("Set-Cookie", set_cookie(name, None, 0, secure)), ("Cache-Control", "no-store".to_owned())];
    let body = serde_json::to_vec(&json!({"signed_out": true})).unwrap_or_default();
    ex.respond(200, "application/json", &body, &headers).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{HttpLimits, parse_head};

    fn head(extra: &str) -> RequestHead {
        parse_head(
            format!("POST /api/keys HTTP/1.1\r\nHost: a\r\n{extra}\r\n").as_bytes(),
            &HttpLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = head("Cookie: other=1; gonka_session=gds-abc; gonka_admin_session=gas-x\r\n");
        assert_eq!(account_cookie(&h).map(|c| c.value), Some("gds-abc"));
        assert_eq!(cookie(&h, ADMIN_COOKIE).map(|c| c.value), Some("gas-x"));
        assert!(account_cookie(&head("Cookie: xgonka_session=a; gonka_session=\r\n")).is_none());
        assert!(account_cookie(&head("")).is_none());
    }

    #[test]
    fn writes_need_the_token_and_the_own_origin() {
        assert!(check_csrf(&head("X-CSRF-Token: t1\r\nSec-Fetch-Site: same-origin\r\n"), "t1").is_ok());
        assert!(check_csrf(&head("X-CSRF-Token: t1\r\n"), "t1").is_ok(), "a browser that does not say");
        let e = check_csrf(&head(""), "t1").unwrap_err();
        assert_eq!(e.code(), Some("csrf_token_invalid"));
        assert!(check_csrf(&head("X-CSRF-Token: t2\r\n"), "t1").is_err());
        let e = check_csrf(&head("X-CSRF-Token: t1\r\nSec-Fetch-Site: same-site\r\n"), "t1").unwrap_err();
        assert_eq!(e.code(), Some("cross_site_request"), "another port of the same host");
        let get = parse_head(b"GET /api/keys HTTP/1.1\r\nHost: a\r\n\r\n", &HttpLimits::default()).unwrap();
        assert!(check_csrf(&get, "t1").is_ok(), "reads need no token");
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let c = set_cookie(ACCOUNT_COOKIE, Some("gds-x"), 60, true);
        assert_eq!(c, "gonka_session=gds-x; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure");
        assert_eq!(
            set_cookie(ADMIN_COOKIE, None, 60, false),
            "gonka_admin_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }
}
