//! `GET /v1/models` and `GET /v1/models/{id}`: the models this gateway serves, with context length,
//! prices and aliases, in OpenAI's shape or, for clients of Anthropic's API, in Anthropic's
//! (`{"data":[{"type":"model","id","display_name","created_at"}],"has_more","first_id","last_id"}`).
//! A key with `allowed_models` sees only those models; any other is a 404, as if it did not exist.

use crate::app::App;
use crate::error::ErrorShape;
use crate::http::request::percent_decode;
use crate::model::{ModelEntry, model_allowed};
use serde_json::{Value, json};

/// A model id from the rest of a path (`moonshotai/Kimi-K2.6`, or `moonshotai%2FKimi-K2.6` as some
/// clients send it): percent-decoded, with `+` kept (it is a space only in query strings). `None` when
/// it is empty, longer than 256 bytes or not UTF-8.
pub fn id_from_path(raw: &str) -> Option<String> {
    percent_decode(&raw.replace('+', "%2B")).filter(|m| !m.is_empty() && m.len() <= 256)
}

/// A model object in `shape`: OpenAI's (with context length and prices) or Anthropic's; `aliases` when
/// the model has any.
fn model_json(m: &ModelEntry, shape: ErrorShape) -> Value {
    let mut v = match shape {
        ErrorShape::OpenAi => json!({
            "id": m.spec.id,
            "object": "model",
            "created": m.created,
            "owned_by": "gonka",
            "context_length": m.spec.context_length,
            "price_prompt_ngonka": m.spec.price_prompt_ngonka.to_string(),
            "price_completion_ngonka": m.spec.price_completion_ngonka.to_string(),
        }),
        ErrorShape::Anthropic => json!({
            "type": "model",
            "id": m.spec.id,
            "display_name": m.spec.id,
            "created_at": crate::time::rfc3339(m.created),
        }),
    };
    if !m.spec.aliases.is_empty() {
        v["aliases"] = json!(&*m.spec.aliases);
    }
    v
}

/// The list of the models some node serves and the key may use (`allowed`: its `allowed_models`), in
/// `shape`.
pub fn list(app: &App, shape: ErrorShape, allowed: Option<&[String]>) -> Value {
    let models = app.models.load();
    let data: Vec<Value> = models
        .list
        .iter()
        .filter(|m| app.nodes.serves(&m.spec.id) && model_allowed(allowed, &m.spec.id))
        .map(|m| model_json(m, shape))
        .collect();
    match shape {
        ErrorShape::OpenAi => super::views::list(data),
        ErrorShape::Anthropic => {
            let (first, last) = (data.first().map(|m| m["id"].clone()), data.last().map(|m| m["id"].clone()));
            json!({ "data": data, "has_more": false, "first_id": first, "last_id": last })
        }
    }
}

/// One model (by id or alias), as listed; `None` when it is not listed for the key (no such model, no
/// node serves it, or the key may not use it).
pub fn retrieve(app: &App, name: &str, shape: ErrorShape, allowed: Option<&[String]>) -> Option<Value> {
    let models = app.models.load();
    models
        .lookup(name)
        .filter(|m| app.nodes.serves(&m.spec.id) && model_allowed(allowed, &m.spec.id))
        .map(|m| model_json(m, shape))
}
