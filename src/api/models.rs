//! `GET /v1/models` and `GET /v1/models/{id}`: the models this gateway serves, with context length and
//! prices.

use crate::app::App;

use crate::http::request::percent_decode;
use crate::model::ModelEntry;
use serde_json::{Value, json};

/// A model id from the rest of a path (`moonshotai/Kimi-K2.6`, or `moonshotai%2FKimi-K2.6` as some
/// clients send it): percent-decoded, with `+` kept (it is a space only in query strings). `None` when
/// it is empty, longer than 256 bytes or not UTF-8.
pub fn id_from_path(raw: &str) -> Option<String> {
    percent_decode(&raw.replace('+', "%2B")).filter(|m| !m.is_empty() && m.len() <= 256)
}

/// The OpenAI model object; `aliases` when the model has any.
fn model_json(m: &ModelEntry) -> Value {
    let mut v = json!({
        "id": m.spec.id,
        "object": "model",
        "created": m.created,
        "owned_by": "gonka",
        "context_length": m.spec.context_length,
        "price_prompt_ngonka": m.spec.price_prompt_ngonka.to_string(),
        "price_completion_ngonka": m.spec.price_completion_ngonka.to_string(),
    });
    if !m.spec.aliases.is_empty() {
        v["aliases"] = json!(&*m.spec.aliases);
    }
    v
}

/// The OpenAI list object. Only models some node serves are listed.
pub fn list(app: &App) -> Value {
    let models = app.models.load();
    let data: Vec<Value> =
        models.list.iter().filter(|m| app.nodes.serves(&m.spec.id)).map(model_json).collect();
    json!({ "object": "list", "data": data })
}

/// One model (by id or alias), as listed; `None` when the gateway does not serve it (no such model, or
/// no node serves it).
pub fn retrieve(app: &App, name: &str) -> Option<Value> {
    let models = app.models.load();
    models.lookup(name).filter(|m| app.nodes.serves(&m.spec.id)).map(model_json)
}
