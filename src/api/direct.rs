//! Direct keys in the account API (`/api/direct-keys...`) and the admin API
//! (`/admin/accounts/{id}/direct-keys`, `/admin/direct-keys/{id}/{action}`). A direct key is a Gonka
//! account its owner uses peer-to-peer with the official SDK; these routes create it (its private key
//! in that one answer), list it with its float and spend, and pause, resume or archive it. Everything
//! runs on the control plane; while `[chain]` is not enabled every route answers 404 saying so.

use super::fields::Fields;
use super::views::list;
use crate::control::accounts::KeyAction;
use crate::control::direct::NewDirectKey;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::Method;
use crate::model::{DirectCharge, DirectKeyRow};
use crate::session::exchange::Exchange;
use serde_json::{Value, json};
use std::sync::Arc;

/// A direct key as listed: `float_ngonka` is its on-chain balance as the gateway accounts for it,
/// `held_ngonka` what that holds on the owner's balance; `pending` the transfer in flight, if any.
pub fn direct_key_json(r: &DirectKeyRow) -> Value {
    json!({
        "id": r.id,
        "object": "direct_key",
        "name": r.name,
        "address": r.address,
        "status": r.status.as_str(),
        "float_ngonka": r.chain_balance_ngonka.to_string(),
        "held_ngonka": r.held_ngonka.to_string(),
        "spent_ngonka": r.spent_ngonka.to_string(),
        "published": r.published,
        "chain_height": r.chain_height,
        "pending": r.pending.as_ref().map(|p| json!({
            "kind": p.kind.as_str(),
            "tx_hash": p.tx_hash,
            "amount_ngonka": p.amount_ngonka.to_string(),
        })),
        "created_at": crate::time::rfc3339(r.created_at),
    })
}

/// The answer that creates a key: the only one with its `private_key`.
fn created_json(k: &NewDirectKey) -> Value {
    let mut v = direct_key_json(&k.row);
    v["private_key"] = json!(k.private_key_hex);
    v
}

fn charge_json(c: &DirectCharge) -> Value {
    json!({
        "object": "direct_charge",
        "request_id": c.reference,
        "key_id": c.key_id,
        "amount_ngonka": c.amount_ngonka.to_string(),
        "from_height": c.from_height,
        "to_height": c.to_height,
        "at_ms": c.at_ms,
    })
}

fn action(s: &str) -> Result<KeyAction, ApiError> {
    KeyAction::parse(s).ok_or_else(|| ApiError::NotFound(format!("Unknown action: {s}")))
}

/// Routes `/api/direct-keys...` for `account`; `segs` are the segments after `direct-keys`.
pub async fn account_route<S: Transport>(
    ex: &mut Exchange<'_, S>,
    account: Arc<str>,
    segs: &[&str],
) -> Result<(), ApiError> {
    let control = ex.core().app.control.clone();
    let (status, body) = match (super::route_method(ex.head.method), segs) {
        (Method::Post, []) => {
            let mut f = Fields::parse(&ex.read_body().await?)?;
            let name = f.required_name("name")?;
            f.finish()?;
            let k = control.call(move |st| st.create_direct_key(&account, &name)).await??;
            (201, created_json(&k))
        }
        (Method::Get, []) => {
            let rows = control.call(move |st| st.list_direct_keys(&account)).await??;
            (200, list(rows.iter().map(direct_key_json).collect()))
        }
        (Method::Get, [id]) => {
            let id = (*id).to_owned();
            let row = control.call(move |st| st.direct_key(&account, &id)).await??;
            (200, direct_key_json(&row))
        }
        (Method::Get, [id, "charges"]) => {
            let id = (*id).to_owned();
            let charges = control.call(move |st| st.direct_charges(&account, &id, 10_000)).await??;
            (200, list(charges.iter().map(charge_json).collect()))
        }
        (Method::Post, [id, verb]) => {
            let action = action(verb)?;
            Fields::parse(&ex.read_body().await?)?.finish()?;
            let id = (*id).to_owned();
            let row = control.call(move |st| st.direct_key_action(&account, &id, action)).await??;
            (200, direct_key_json(&row))
        }
        _ => return Err(ApiError::NotFound(format!("Unknown path: {}", ex.head.path))),
    };
    if let Some(id) = body["id"].as_str() {
        ex.log.key_id = Some(id.to_owned());
    }
    ex.respond_json(status, &body).await;
    Ok(())
}

/// Routes the admin's direct-key paths: `accounts/{id}/direct-keys` (GET lists every one, archived too;
/// POST creates one) and `direct-keys/{id}/{pause|resume|archive}`. `None` when `segs` is another path.
pub async fn admin_route<S: Transport>(
    ex: &mut Exchange<'_, S>,
    segs: &[&str],
) -> Option<Result<(), ApiError>> {
    let control = ex.core().app.control.clone();
    let method = super::route_method(ex.head.method);
    let answer: Result<(u16, Value), ApiError> = match (method, segs) {
        (Method::Get, ["accounts", account, "direct-keys"]) => {
            let account = (*account).to_owned();
            async {
                let rows = control.call(move |st| st.all_direct_keys(&account)).await??;
                Ok((200, list(rows.iter().map(direct_key_json).collect())))
            }
            .await
        }
        (Method::Post, ["accounts", account, "direct-keys"]) => {
            let account = (*account).to_owned();
            async {
                let mut f = Fields::parse(&ex.read_body().await?)?;
                let name = f.required_name("name")?;
                f.finish()?;
                let k = control.call(move |st| st.create_direct_key(&account, &name)).await??;
                Ok((201, created_json(&k)))
            }
            .await
        }
        (Method::Post, ["direct-keys", id, verb]) => {
            let id = (*id).to_owned();
            let verb = (*verb).to_owned();
            async {
                let action = action(&verb)?;
                let row = control
                    .call(move |st| {
                        let account = st.direct_key_account(&id)?;
                        st.direct_key_action(&account, &id, action)
                    })
                    .await??;
                Ok((200, direct_key_json(&row)))
            }
            .await
        }
        _ => return None,
    };
    Some(match answer {
        Ok((status, body)) => {
            ex.respond_json(status, &body).await;
            Ok(())
        }
        Err(e) => Err(e),
    })
}
