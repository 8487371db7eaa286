//! Who calls the account and admin APIs: the bearer of `Authorization`, or, without one, the
//! dashboard's session cookie ([`super::dashboard::session`]), which stands for the account token on
//! the public listener and for the admin token on the admin listener.
//!
//! A request the cookie authenticates must come from the dashboard's own page: when the browser says
//! where it comes from (`Sec-Fetch-Site`) it is `same-origin`, and a write (anything but `GET` and
//! `HEAD`) carries the session's CSRF token in `X-CSRF-Token`. Its answer is never cached.

use super::dashboard::session::{self, ADMIN_COOKIE, SessionCookie};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::session::exchange::Exchange;

/// The caller of an account-API route; `allow_management`: the children routes, which also take a
/// management key as the bearer.
pub fn account<S: Transport>(ex: &mut Exchange<'_, S>, allow_management: bool) -> Result<Caller, ApiError> {
    let core = ex.core();
    let now = core.app.clock.now_ms().div_euclid(1000);
    if ex.head.authorization.is_none()
        && let Some(cookie) = session::account_cookie(&ex.head)
    {
        let account_id = core.app.keys.authenticate_session(cookie.value, now)?;
        let csrf = core.app.keys.csrf_token(cookie.value);
        from_the_page(ex, &csrf)?;
        return Ok(Caller::Account { account_id });
    }
    core.app.keys.authenticate_account(ex.head.authorization.as_deref(), allow_management, now)
}

/// Checks that the caller of an admin route holds the admin token, or the admin dashboard's session.
pub fn admin<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    if ex.head.authorization.is_none()
        && let Some(SessionCookie { value, .. }) = session::cookie(&ex.head, ADMIN_COOKIE)
    {
        let now = core.app.clock.now_ms().div_euclid(1000);
        core.app
            .admin_sessions
            .verify(&core.app.keys, &core.app.admin_token, value, now)
            .ok_or(ApiError::InvalidApiKey)?;
        let csrf = core.app.keys.csrf_token(value);
        return from_the_page(ex, &csrf);
    }
    super::admin::check_token(&core.app, ex.head.authorization.as_deref())
}

/// A cookie-authenticated request must come from the dashboard's page (see the module docs).
fn from_the_page<S: Transport>(ex: &mut Exchange<'_, S>, csrf: &str) -> Result<(), ApiError> {
    session::check_csrf(&ex.head, csrf)?;
    ex.headers.push(("Cache-Control", "no-store".to_owned()));
    Ok(())
}
