//! Balance and usage (`/api/balance`, `/api/usage`) of the account the caller was authenticated as.

use super::views::list;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::query_param;
use crate::model::{GroupBy, UsageQuery};
use crate::session::exchange::Exchange;
use crate::time::{day_index, day_string, parse_day};
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET /api/balance`: `{"balance_ngonka","held_ngonka","status"}` from the live counters; `status` is
/// `blocked` at a balance of 0 or below (the keys answer 402 until a credit), `active` otherwise.
pub async fn balance<S: Transport>(ex: &mut Exchange<'_, S>, account: Arc<str>) -> Result<(), ApiError> {
    let core = ex.core();
    let (balance, held) = core.app.control.call(move |st| st.account_balance(&account)).await??;
    let status = crate::model::AccountStatus::of_balance(balance).as_str();
    ex.respond_json(
        200,
        &json!({"balance_ngonka": balance.to_string(), "held_ngonka": held.to_string(), "status": status}),
    )
    .await;
    Ok(())
}

/// A day from `YYYY-MM-DD` or RFC 3339.
fn day_param(s: &str, param: &str) -> Result<i64, ApiError> {
    parse_day(s)
        .or_else(|| crate::time::parse_rfc3339(s).map(|t| day_index(t.saturating_mul(1000))))
        .ok_or_else(|| {
            ApiError::bad_request(
                format!("`{param}` must be a date (YYYY-MM-DD) or an RFC 3339 time."),
                Some(param),
            )
        })
}

/// `GET /api/usage?from=&to=&group_by=day|model|key`: requests, tokens, cost and when the latest
/// request finished per group, over UTC days `from..=to` (default: the last 30 days).
pub async fn usage<S: Transport>(ex: &mut Exchange<'_, S>, account: Arc<str>) -> Result<(), ApiError> {
    let core = ex.core();
    let query = ex.head.query.as_deref();
    let today = day_index(core.app.clock.now_ms());
    let to_day = match query_param(query, "to") {
        Some(s) => day_param(&s, "to")?,
        None => today,
    };
    let from_day = match query_param(query, "from") {
        Some(s) => day_param(&s, "from")?,
        None => to_day - 29,
    };
    if from_day > to_day {
        return Err(ApiError::bad_request("`from` is after `to`.", Some("from")));
    }
    let group_by = match query_param(query, "group_by").as_deref() {
        None | Some("day") => GroupBy::Day,
        Some("model") => GroupBy::Model,
        Some("key") => GroupBy::Key,
        Some(_) => {
            return Err(ApiError::bad_request("`group_by` must be day, model or key.", Some("group_by")));
        }
    };
    let q = UsageQuery { account_id: account.to_string(), from_day, to_day, group_by };
    let rows = core.app.control.call(move |st| st.usage_summary(&q)).await??;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut v = json!({
                "requests": r.requests,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "cost_ngonka": r.cost_ngonka.to_string(),
                "last_request_at": crate::time::rfc3339(r.last_finished_ms.div_euclid(1000)),
            });
            match group_by {
                GroupBy::Day => v["day"] = json!(r.group.parse::<i64>().map(day_string).unwrap_or(r.group)),
                GroupBy::Model => v["model"] = json!(r.group),
                GroupBy::Key => v["key_id"] = json!(r.group),
            }
            v
        })
        .collect();
    ex.respond_json(200, &list(data)).await;
    Ok(())
}
