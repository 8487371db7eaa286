//! Credits and referrals over HTTP: the admin's credits and refunds
//! (`POST /admin/accounts/{id}/credits`), an account's credit history (`GET /admin/accounts/{id}/credits`,
//! `GET /api/credits`), its referral code and referrer (`GET /api/account`,
//! `POST /admin/accounts/{id}/referrer`), and self-serve sign-up (`POST /api/signup`).

use super::fields::Fields;
use crate::control::credits::CreditSpec;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::query_param;
use crate::model::CreditRow;
use crate::session::exchange::Exchange;
use serde_json::{Value, json};
use std::sync::Arc;

/// Entries a history page holds unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// An entry's public id: its place in the store's order.
fn credit_id(seq: i64) -> String {
    format!("crd_{seq}")
}

/// One entry of a credit history.
pub fn credit_json(c: &CreditRow) -> Value {
    json!({
        "id": credit_id(c.seq),
        "object": "credit",
        "account_id": c.account_id,
        "reference": c.reference,
        "kind": c.kind.as_str(),
        "amount_ngonka": c.amount_ngonka.to_string(),
        "paid": c.paid,
        "withdrawable": c.withdrawable,
        "source_account_id": c.source_account_id,
        "source_reference": c.source_reference,
        "referral_level": c.referral_level,
        "created_at": crate::time::rfc3339(c.created_at),
    })
}

/// `GET …/credits?limit=&starting_after=crd_…`: the account's credit history, newest first, a page of
/// `limit` (default 100, at most 1000) entries after the entry `starting_after`; `has_more` says
/// whether older ones follow.
pub async fn history<S: Transport>(ex: &mut Exchange<'_, S>, account: Arc<str>) -> Result<(), ApiError> {
    let query = ex.head.query.as_deref();
    let limit = match query_param(query, "limit") {
        None => DEFAULT_PAGE,
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=MAX_PAGE).contains(l)).ok_or_else(|| {
            ApiError::bad_request(format!("`limit` must be an integer from 1 to {MAX_PAGE}."), Some("limit"))
        })?,
    };
    let before = match query_param(query, "starting_after") {
        None => None,
        Some(s) => Some(s.strip_prefix("crd_").and_then(|n| n.parse::<i64>().ok()).ok_or_else(|| {
            ApiError::bad_request("`starting_after` must be a credit id (crd_…).", Some("starting_after"))
        })?),
    };
    let mut rows =
        ex.core().app.control.call(move |st| st.credit_history(&account, before, limit + 1)).await??;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let mut body = super::views::list(rows.iter().map(credit_json).collect());
    body["has_more"] = Value::Bool(has_more);
    ex.respond_json(200, &body).await;
    Ok(())
}

/// `POST /admin/accounts/{id}/credits {"amount_ngonka", "reference", "paid"?, "refund_of"?}`: a credit
/// (paid ones pay the account's referrers) or, negative, an adjustment (with `refund_of`, a refund that
/// claws back what the referrers were paid on that credit), once per reference.
pub async fn admin_credit<S: Transport>(ex: &mut Exchange<'_, S>, account: &str) -> Result<(), ApiError> {
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let amount_ngonka = f
        .signed_amount("amount_ngonka")?
        .ok_or_else(|| ApiError::bad_request("`amount_ngonka` is required.", Some("amount_ngonka")))?;
    let reference = f.text("reference")?.ok_or_else(|| {
        ApiError::bad_request("`reference` is required (it makes the credit idempotent).", Some("reference"))
    })?;
    let paid = f.boolean("paid")?.unwrap_or(false);
    let refund_of = f.text("refund_of")?;
    f.finish()?;
    let spec = CreditSpec { amount_ngonka, reference, paid, refund_of };
    let account = account.to_owned();
    let done = ex.core().app.control.call(move |st| st.credit_with(&account, spec)).await??;
    let body = json!({
        "balance_ngonka": done.credited.balance_ngonka.to_string(),
        "credited": done.credited.applied,
        "entries": done.entries.iter().map(credit_json).collect::<Vec<_>>(),
    });
    ex.respond_json(200, &body).await;
    Ok(())
}

/// `POST /admin/accounts/{id}/referrer {"referral_code"}`: sets the account's referrer, once.
pub async fn set_referrer<S: Transport>(ex: &mut Exchange<'_, S>, account: &str) -> Result<(), ApiError> {
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let code = f
        .text("referral_code")?
        .ok_or_else(|| ApiError::bad_request("`referral_code` is required.", Some("referral_code")))?;
    f.finish()?;
    let account = account.to_owned();
    let body = ex
        .core()
        .app
        .control
        .call(move |st| {
            let row = st.set_referrer(&account, &code)?;
            Ok::<_, ApiError>(super::views::account_json(st, &row))
        })
        .await??;
    ex.respond_json(200, &body).await;
    Ok(())
}

/// `GET /api/account`: the caller's account, its balance, referral code and referrer, and how many
/// accounts it referred.
pub async fn account<S: Transport>(ex: &mut Exchange<'_, S>, account: Arc<str>) -> Result<(), ApiError> {
    let body = ex
        .core()
        .app
        .control
        .call(move |st| {
            let row = st.account(&account)?;
            let mut v = super::views::account_json(st, &row);
            v["referred_accounts"] = json!(st.referred_count(&row.id)?);
            Ok::<_, ApiError>(v)
        })
        .await??;
    ex.respond_json(200, &body).await;
    Ok(())
}

/// `POST /api/signup {"name", "referral_code"?}` (no credentials; `[signup] enabled` only): a new
/// account and its token (shown once), referred by the account of `referral_code`. Sign-ups are
/// limited per client address and in all, per clock hour (429 past either).
pub async fn signup<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    if core.app.settings.signup.is_none() {
        return Err(ApiError::NotFound("Sign-up is not enabled on this gateway.".into()));
    }
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let name = f.required_name("name")?;
    let code = f.text("referral_code")?;
    f.finish()?;
    let ip = ex.conn.peer.ip();
    let now = core.app.clock.now_ms().div_euclid(1000);
    let body = core
        .app
        .control
        .call(move |st| {
            // A code is checked before the allowance is used, so a typo costs no sign-up.
            if let Some(c) = &code {
                st.referral_code_exists(c)?;
            }
            st.admit_signup(ip, now)?;
            let (account, token) = st.create_referred_account(&name, code.as_deref())?;
            let mut body = super::views::account_json(st, &account);
            body["token"] = json!(token.secret);
            Ok::<_, ApiError>(body)
        })
        .await??;
    ex.respond_json(201, &body).await;
    Ok(())
}
