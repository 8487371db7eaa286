//! The admin listener's routes (`/admin/...`, `/metrics`). Every route needs
//! `Authorization: Bearer <admin token>`.

use super::fields::Fields;
use super::views::{account_json, key_json, list};
use crate::app::App;
use crate::control::accounts::{KeyAction, KeyPatch, KeySpec};
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::Method;
use crate::http::request::query_param;
use crate::model::KeyKind;
use crate::model::ModelEntry;
use crate::session::exchange::Exchange;
use serde_json::{Value, json};
use std::sync::Arc;

/// A model as the admin sees it: `configured` says whether it is in the config's `[[models]]` (a
/// DELETE then only removes its stored price) or exists only by its stored price.
fn model_json(m: &ModelEntry) -> Value {
    json!({
        "id": m.spec.id,
        "object": "model",
        "created": m.created,
        "configured": m.configured,
        "context_length": m.spec.context_length,
        "price_prompt_ngonka": m.spec.price_prompt_ngonka.to_string(),
        "price_completion_ngonka": m.spec.price_completion_ngonka.to_string(),
    })
}

/// An upstream node as the admin sees it: what it serves, its health and its latency.
fn node_json(n: &crate::upstream::Node, now_ms: u64) -> Value {
    let health = if n.is_ejected(now_ms) {
        "ejected"
    } else if n.is_marked_ejected() {
        "probing"
    } else {
        "up"
    };
    json!({
        "url": &*n.label,
        "object": "node",
        "kind": match n.kind {
            crate::config::NodeKind::OpenAi => "openai",
            crate::config::NodeKind::Gonka => "gonka",
        },
        "models": n.models,
        "transfer_address": n.transfer_address,
        "health": health,
        "outstanding": n.outstanding(),
        "requests_total": n.requests_total.load(std::sync::atomic::Ordering::Relaxed),
        "failures_total": n.failures_total.load(std::sync::atomic::Ordering::Relaxed),
        "first_byte_avg_us": n.first_byte_avg_us(),
    })
}

/// A model id from the path segments after `models/` (ids contain `/`; percent-decoded).
fn model_id(rest: &[&str]) -> Result<String, ApiError> {
    super::models::id_from_path(&rest.join("/"))
        .ok_or_else(|| ApiError::bad_request("Invalid model id in the path.", None))
}

/// Whether prices may be set for `model`: it is in the config's `[[models]]`, or a node that lists its
/// models lists it. Anything else is most likely a typo, which would be advertised and billed as a model
/// no node serves.
fn can_be_priced(app: &App, model: &str) -> bool {
    app.settings.models.iter().any(|m| m.id == model)
        || app.nodes.nodes().iter().any(|n| n.models.iter().any(|m| m == model))
}

fn record_json(r: &crate::model::usage::UsageRecord) -> Value {
    json!({
        "request_id": r.request_id,
        "key_id": r.key_id,
        "model": r.model,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cost_ngonka": r.cost_ngonka.to_string(),
        "status": r.status.as_str(),
        "estimated": r.estimated,
        "latency_ms": r.latency_ms,
        "day": crate::time::day_string(r.day),
        "started_at_ms": r.started_ms,
        "finished_at_ms": r.finished_ms,
    })
}

/// Routes `/admin/...` (token already checked). `segs` are the segments after `admin`.
pub async fn route<S: Transport>(ex: &mut Exchange<'_, S>, segs: &[&str]) -> Result<(), ApiError> {
    if let Some(answer) = super::direct::admin_route(ex, segs).await {
        return answer;
    }
    if let Some(answer) = super::deposits::admin_route(ex, segs).await {
        return answer;
    }
    let core = ex.core();
    let control = core.app.control.clone();
    match (super::route_method(ex.head.method), segs) {
        (Method::Post, ["accounts"]) => {
            let mut f = Fields::parse(&ex.read_body().await?)?;
            let name = f.required_name("name")?;
            let code = f.text("referral_code")?;
            f.finish()?;
            let body = control
                .call(move |st| {
                    let (account, token) = st.create_referred_account(&name, code.as_deref())?;
                    let mut body = account_json(st, &account);
                    body["token"] = json!(token.secret);
                    Ok::<_, ApiError>(body)
                })
                .await??;
            ex.respond_json(201, &body).await;
        }
        (Method::Get, ["accounts"]) => {
            // `?referrer_id=acc_…`: only the accounts it referred.
            let referrer = query_param(ex.head.query.as_deref(), "referrer_id");
            let data = control
                .call(move |st| {
                    let rows = st.accounts()?;
                    let rows = rows.iter().filter(|a| referrer.is_none() || a.referrer_id == referrer);
                    Ok::<_, ApiError>(rows.map(|a| account_json(st, a)).collect::<Vec<_>>())
                })
                .await??;
            ex.respond_json(200, &list(data)).await;
        }
        (Method::Get, ["accounts", id]) => {
            let id = (*id).to_owned();
            let body = control
                .call(move |st| {
                    let row = st.account(&id)?;
                    Ok::<_, ApiError>(account_json(st, &row))
                })
                .await??;
            ex.respond_json(200, &body).await;
        }
        (Method::Post, ["accounts", id, "credits"]) => super::credits::admin_credit(ex, id).await?,
        (Method::Get, ["accounts", id, "credits"]) => super::credits::history(ex, Arc::from(*id)).await?,
        (Method::Post, ["accounts", id, "referrer"]) => super::credits::set_referrer(ex, id).await?,
        (Method::Post, ["accounts", id, "token"]) => {
            let id = (*id).to_owned();
            let k = control.call(move |st| st.rotate_account_token(&id)).await??;
            ex.respond_json(200, &json!({"account_id": k.row.account_id, "token": k.secret})).await;
        }
        (Method::Get, ["accounts", id, "keys"]) => {
            let id = (*id).to_owned();
            let rows = control
                .call(move |st| {
                    st.account(&id)?;
                    let mut all = st.list_keys(&id, KeyKind::Managed, None)?;
                    all.extend(st.list_keys(&id, KeyKind::Management, None)?);
                    all.extend(st.list_keys(&id, KeyKind::Child, None)?);
                    Ok::<_, ApiError>(all)
                })
                .await??;
            ex.respond_json(200, &list(rows.iter().map(|r| key_json(r, None)).collect())).await;
        }
        (Method::Post, ["accounts", id, "keys"]) => {
            let mut f = Fields::parse(&ex.read_body().await?)?;
            let name = f.required_name("name")?;
            let kind = match f.choice("kind", &["managed", "management"])?.as_deref() {
                Some("management") => KeyKind::Management,
                _ => KeyKind::Managed,
            };
            let allowed_models = f.model_list("allowed_models")?.flatten();
            f.finish()?;
            let id = (*id).to_owned();
            let k = control
                .call(move |st| {
                    st.account(&id)?;
                    st.create_key(&id, kind, None, KeySpec { name, allowed_models, ..KeySpec::default() })
                })
                .await??;
            ex.respond_json(201, &key_json(&k.row, k.secret.as_deref())).await;
        }
        (Method::Get, ["accounts", id, "usage"]) => {
            let query = ex.head.query.clone();
            let today = crate::time::day_index(core.app.clock.now_ms());
            let day = |name: &str, default: i64| -> Result<i64, ApiError> {
                match query_param(query.as_deref(), name) {
                    Some(s) => crate::time::parse_day(&s).ok_or_else(|| {
                        ApiError::bad_request(format!("`{name}` must be YYYY-MM-DD."), Some(name))
                    }),
                    None => Ok(default),
                }
            };
            let (from, to) = (day("from", today - 29)?, day("to", today)?);
            let limit = query_param(query.as_deref(), "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(10_000)
                .min(100_000);
            let id = (*id).to_owned();
            let records = control.call(move |st| st.usage_records(&id, from, to, limit)).await??;
            ex.respond_json(200, &list(records.iter().map(record_json).collect())).await;
        }
        (Method::Get, ["nodes"]) => {
            let now = crate::time::monotonic_ms();
            let nodes = core.app.nodes.nodes();
            ex.respond_json(200, &list(nodes.iter().map(|n| node_json(n, now)).collect())).await;
        }
        (Method::Get, ["models"]) => {
            let models = core.app.models.load();
            ex.respond_json(200, &list(models.list.iter().map(model_json).collect())).await;
        }
        (Method::Put, ["models", rest @ ..]) if !rest.is_empty() => {
            let model = model_id(rest)?;
            if !can_be_priced(&core.app, &model) {
                return Err(ApiError::ModelNotConfigured(model));
            }
            let mut f = Fields::parse(&ex.read_body().await?)?;
            let required = |v: Option<Option<u64>>, name: &str| {
                v.flatten().ok_or_else(|| ApiError::bad_request(format!("`{name}` is required."), Some(name)))
            };
            let prompt = required(f.amount("price_prompt_ngonka")?, "price_prompt_ngonka")?;
            let completion = required(f.amount("price_completion_ngonka")?, "price_completion_ngonka")?;
            f.finish()?;
            let row = crate::model::PriceRow {
                model,
                price_prompt_ngonka: prompt,
                price_completion_ngonka: completion,
                updated_at: crate::time::unix_secs() as i64,
            };
            let entry = control.call(move |st| st.set_price(row)).await??;
            ex.respond_json(200, &model_json(&entry)).await;
        }
        (Method::Delete, ["models", rest @ ..]) if !rest.is_empty() => {
            let model = model_id(rest)?;
            let id = model.clone();
            let (removed, entry) = control.call(move |st| st.delete_price(&id)).await??;
            match entry {
                // A configured model stays, at its config prices.
                Some(entry) => {
                    let mut body = model_json(&entry);
                    body["deleted"] = json!(false);
                    body["price_override_removed"] = json!(removed);
                    ex.respond_json(200, &body).await;
                }
                None if removed => {
                    let body = json!({"id": model, "object": "model", "deleted": true, "price_override_removed": true});
                    ex.respond_json(200, &body).await;
                }
                None => return Err(ApiError::ModelNotFound(model)),
            }
        }
        (Method::Patch, ["keys", id]) => {
            let mut f = Fields::parse(&ex.read_body().await?)?;
            let patch = KeyPatch {
                name: f.name("name")?,
                allowed_models: f.model_list("allowed_models")?,
                ..KeyPatch::default()
            };
            f.finish()?;
            let id = (*id).to_owned();
            let row = control
                .call(move |st| {
                    let account = st.key_account(&id)?;
                    let kinds = [KeyKind::Managed, KeyKind::Management, KeyKind::Child];
                    st.update_key(&account, &id, &kinds, patch)
                })
                .await??;
            ex.respond_json(200, &key_json(&row, None)).await;
        }
        (Method::Post, ["keys", id, action]) => {
            let action = KeyAction::parse(action)
                .ok_or_else(|| ApiError::NotFound(format!("Unknown action: {action}")))?;
            let id = (*id).to_owned();
            let k = control
                .call(move |st| {
                    let account = st.key_account(&id)?;
                    st.key_action(
                        &account,
                        &id,
                        action,
                        &[KeyKind::Managed, KeyKind::Management, KeyKind::Child],
                    )
                })
                .await??;
            ex.respond_json(200, &key_json(&k.row, k.secret.as_deref())).await;
        }
        _ => {
            return Err(ApiError::NotFound(format!("Unknown admin path: {}", ex.head.path)));
        }
    }
    Ok(())
}

/// Checks the admin bearer token in constant time.
pub fn check_token(app: &App, authorization: Option<&str>) -> Result<(), ApiError> {
    let given = authorization.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
    if !given.is_empty() && crate::secret::constant_time_eq(given.as_bytes(), app.admin_token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::InvalidApiKey)
    }
}
