//! The account API (`/api/...` on the public listener), authenticated by the account token (`gka-`), or
//! for the children endpoints also by the management key itself. Everything that changes state runs on
//! the control plane; another account's key is always a 404.

use super::fields::Fields;
use super::views::{self, key_json, list};
use crate::auth::Caller;
use crate::control::ControlState;
use crate::control::accounts::{KeyAction, KeyPatch, KeySpec, KeyWithSecret};
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::Method;
use crate::model::{KeyKind, KeyStatus};
use crate::session::exchange::Exchange;
use serde_json::Value;
use std::sync::Arc;

fn created(k: &KeyWithSecret) -> Value {
    key_json(&k.row, k.secret.as_deref())
}

/// Routes `/api/...`. `segs` are the path segments after `api`.
pub async fn route<S: Transport>(ex: &mut Exchange<'_, S>, segs: &[&str]) -> Result<(), ApiError> {
    ex.log.route = "account";
    let method = super::route_method(ex.head.method);
    match (method, segs) {
        (Method::Post, ["keys"]) => create_top(ex, KeyKind::Managed).await,
        (Method::Get, ["keys"]) => list_top(ex, KeyKind::Managed).await,
        (Method::Get, ["keys", id]) => get_top(ex, id, &[KeyKind::Managed, KeyKind::Management]).await,
        (Method::Patch, ["keys", id]) => patch_top(ex, id).await,
        (Method::Post, ["keys", id, action]) => {
            let action = KeyAction::parse(action)
                .ok_or_else(|| ApiError::NotFound(format!("Unknown action: {action}")))?;
            act(ex, id, action).await
        }
        (Method::Post, ["management", "keys"]) => create_top(ex, KeyKind::Management).await,
        (Method::Get, ["management", "keys"]) => list_top(ex, KeyKind::Management).await,
        (Method::Get, ["management", "keys", id]) => get_top(ex, id, &[KeyKind::Management]).await,
        (Method::Post, ["management", "keys", id, "children"]) => create_child(ex, id).await,
        (Method::Get, ["management", "keys", id, "children"]) => list_children(ex, id).await,
        (Method::Get, ["management", "keys", id, "children", child]) => get_child(ex, id, child).await,
        (Method::Patch, ["management", "keys", id, "children", child]) => patch_child(ex, id, child).await,
        (Method::Delete, ["management", "keys", id, "children", child]) => delete_child(ex, id, child).await,
        (_, ["direct-keys", rest @ ..]) => {
            let account = account_caller(ex)?;
            super::direct::account_route(ex, account, rest).await
        }
        (_, ["deposit-address" | "deposits"]) => {
            let account = account_caller(ex)?;
            super::deposits::account_route(ex, account, segs)
                .await
                .unwrap_or_else(|| Err(ApiError::NotFound(format!("Unknown path: {}", ex.head.path))))
        }
        (Method::Get, ["balance"]) => {
            let account = account_caller(ex)?;
            super::usage::balance(ex, account).await
        }
        (Method::Get, ["usage"]) => {
            let account = account_caller(ex)?;
            super::usage::usage(ex, account).await
        }
        (Method::Get, ["credits"]) => {
            let account = account_caller(ex)?;
            super::credits::history(ex, account).await
        }
        (Method::Get, ["account"]) => {
            let account = account_caller(ex)?;
            super::credits::account(ex, account).await
        }
        (Method::Post, ["signup"]) => super::credits::signup(ex).await,
        _ => Err(ApiError::NotFound(format!("Unknown path: {}", ex.head.path))),
    }
}

fn account_caller<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<Arc<str>, ApiError> {
    match super::credentials::account(ex, false)? {
        Caller::Account { account_id } => Ok(account_id),
        Caller::ManagementKey { .. } => Err(ApiError::InvalidApiKey),
    }
}

/// The account of a children endpoint's caller; a management key may only reach its own children.
fn children_caller<S: Transport>(
    ex: &mut Exchange<'_, S>,
    management_key_id: &str,
) -> Result<Arc<str>, ApiError> {
    match super::credentials::account(ex, true)? {
        Caller::Account { account_id } => Ok(account_id),
        Caller::ManagementKey { account_id, key_id } if &*key_id == management_key_id => Ok(account_id),
        Caller::ManagementKey { .. } => {
            Err(ApiError::NotFound(format!("No key with id {management_key_id}.")))
        }
    }
}

/// Runs `job` on the control plane and answers its JSON with `status`; an answer that is one key logs
/// that key's id.
async fn answer<S, F>(ex: &mut Exchange<'_, S>, status: u16, job: F) -> Result<(), ApiError>
where
    S: Transport,
    F: FnOnce(&mut ControlState) -> Result<Value, ApiError> + Send + 'static,
{
    let body = ex.core().app.control.call(job).await??;
    if let Some(id) = body["id"].as_str() {
        ex.log.key_id = Some(id.to_owned());
    }
    ex.respond_json(status, &body).await;
    Ok(())
}

async fn create_top<S: Transport>(ex: &mut Exchange<'_, S>, kind: KeyKind) -> Result<(), ApiError> {
    let account = account_caller(ex)?;
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let name = f.required_name("name")?;
    let fit_max_tokens =
        if kind == KeyKind::Managed { f.fit_policy("fit_max_tokens")?.flatten() } else { None };
    let allowed_models = f.model_list("allowed_models")?.flatten();
    f.finish()?;
    answer(ex, 201, move |st| {
        let spec = KeySpec { name, fit_max_tokens, allowed_models, ..KeySpec::default() };
        st.create_key(&account, kind, None, spec).map(|k| created(&k))
    })
    .await
}

async fn list_top<S: Transport>(ex: &mut Exchange<'_, S>, kind: KeyKind) -> Result<(), ApiError> {
    let account = account_caller(ex)?;
    answer(ex, 200, move |st| {
        Ok(list(st.list_keys(&account, kind, None)?.iter().map(|r| key_json(r, None)).collect()))
    })
    .await
}

async fn get_top<S: Transport>(
    ex: &mut Exchange<'_, S>,
    id: &str,
    kinds: &'static [KeyKind],
) -> Result<(), ApiError> {
    let account = account_caller(ex)?;
    let id = id.to_owned();
    answer(ex, 200, move |st| st.owned_key(&account, &id, kinds).map(|row| key_json(&row, None))).await
}

/// `PATCH /api/keys/{id}`: a managed or management key's `name`, `allowed_models` and (managed)
/// `fit_max_tokens`.
async fn patch_top<S: Transport>(ex: &mut Exchange<'_, S>, id: &str) -> Result<(), ApiError> {
    let account = account_caller(ex)?;
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let patch = KeyPatch {
        name: f.name("name")?,
        allowed_models: f.model_list("allowed_models")?,
        fit_max_tokens: f.fit_policy("fit_max_tokens")?,
        ..KeyPatch::default()
    };
    f.finish()?;
    let id = id.to_owned();
    answer(ex, 200, move |st| {
        let key = st.owned_key(&account, &id, &[KeyKind::Managed, KeyKind::Management])?;
        if key.kind == KeyKind::Management && patch.fit_max_tokens.is_some() {
            return Err(ApiError::bad_request(
                "A management key makes no requests: `fit_max_tokens` belongs on its child keys.",
                Some("fit_max_tokens"),
            ));
        }
        let row = st.update_key(&account, &id, &[KeyKind::Managed, KeyKind::Management], patch)?;
        Ok(key_json(&row, None))
    })
    .await
}

async fn act<S: Transport>(ex: &mut Exchange<'_, S>, id: &str, action: KeyAction) -> Result<(), ApiError> {
    let account = account_caller(ex)?;
    Fields::parse(&ex.read_body().await?)?.finish()?;
    let id = id.to_owned();
    let kinds = &[KeyKind::Managed, KeyKind::Management];
    answer(ex, 200, move |st| st.key_action(&account, &id, action, kinds).map(|k| created(&k))).await
}

fn now_secs(core: &crate::session::Core) -> i64 {
    core.app.clock.now_ms().div_euclid(1000)
}

fn child_spec(f: &mut Fields, now: i64) -> Result<KeySpec, ApiError> {
    let name = f.required_name("name")?;
    let limit_daily_ngonka = f.amount("limit_daily_ngonka")?.flatten();
    let limit_monthly_ngonka = f.amount("limit_monthly_ngonka")?.flatten();
    let rate_limit_rpm = f.rpm("rate_limit_rpm")?.flatten();
    let expires_at = f.future_time("expires_at", now)?.flatten();
    let fit_max_tokens = f.fit_policy("fit_max_tokens")?.flatten();
    let allowed_models = f.model_list("allowed_models")?.flatten();
    Ok(KeySpec {
        name,
        limit_daily_ngonka,
        limit_monthly_ngonka,
        rate_limit_rpm,
        expires_at,
        fit_max_tokens,
        allowed_models,
    })
}

async fn create_child<S: Transport>(ex: &mut Exchange<'_, S>, parent: &str) -> Result<(), ApiError> {
    let account = children_caller(ex, parent)?;
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let spec = child_spec(&mut f, now_secs(&ex.core()))?;
    f.finish()?;
    let parent = parent.to_owned();
    answer(ex, 201, move |st| {
        let k = st.create_key(&account, KeyKind::Child, Some(&parent), spec)?;
        Ok(views::child_json(st, &k.row, k.secret.as_deref()))
    })
    .await
}

async fn list_children<S: Transport>(ex: &mut Exchange<'_, S>, parent: &str) -> Result<(), ApiError> {
    let account = children_caller(ex, parent)?;
    let parent = parent.to_owned();
    answer(ex, 200, move |st| {
        let rows = st.list_keys(&account, KeyKind::Child, Some(&parent))?;
        Ok(list(rows.iter().map(|r| views::child_json(st, r, None)).collect()))
    })
    .await
}

async fn get_child<S: Transport>(
    ex: &mut Exchange<'_, S>,
    parent: &str,
    child: &str,
) -> Result<(), ApiError> {
    let account = children_caller(ex, parent)?;
    let (parent, child) = (parent.to_owned(), child.to_owned());
    answer(ex, 200, move |st| {
        st.owned_key(&account, &parent, &[KeyKind::Management])?;
        let row = st.owned_key(&account, &child, &[KeyKind::Child])?;
        if row.parent_id.as_deref() != Some(parent.as_str()) {
            return Err(ApiError::NotFound(format!("No key with id {child}.")));
        }
        Ok(views::child_json(st, &row, None))
    })
    .await
}

async fn patch_child<S: Transport>(
    ex: &mut Exchange<'_, S>,
    parent: &str,
    child: &str,
) -> Result<(), ApiError> {
    let account = children_caller(ex, parent)?;
    let mut f = Fields::parse(&ex.read_body().await?)?;
    let now = now_secs(&ex.core());
    let patch = KeyPatch {
        name: f.name("name")?,
        limit_daily_ngonka: f.amount("limit_daily_ngonka")?,
        limit_monthly_ngonka: f.amount("limit_monthly_ngonka")?,
        rate_limit_rpm: f.rpm("rate_limit_rpm")?,
        expires_at: f.future_time("expires_at", now)?,
        status: f.choice("status", &["active", "paused"])?.and_then(|s| KeyStatus::parse(&s)),
        fit_max_tokens: f.fit_policy("fit_max_tokens")?,
        allowed_models: f.model_list("allowed_models")?,
    };
    f.finish()?;
    let (parent, child) = (parent.to_owned(), child.to_owned());
    answer(ex, 200, move |st| {
        let row = st.update_child(&account, &parent, &child, patch)?;
        Ok(views::child_json(st, &row, None))
    })
    .await
}

async fn delete_child<S: Transport>(
    ex: &mut Exchange<'_, S>,
    parent: &str,
    child: &str,
) -> Result<(), ApiError> {
    let account = children_caller(ex, parent)?;
    let (parent, child) = (parent.to_owned(), child.to_owned());
    answer(ex, 200, move |st| {
        let row = st.delete_child(&account, &parent, &child)?;
        Ok(views::child_json(st, &row, None))
    })
    .await
}
