//! `GET /v1/models`: the models this gateway serves, with context length and prices.

use crate::app::App;
use serde_json::{Value, json};

/// The OpenAI list object. Only models some node serves are listed.
pub fn list(app: &App) -> Value {
    let models = app.models.load();
    let data: Vec<Value> = models
        .list
        .iter()
        .filter(|m| app.nodes.serves(&m.id))
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": "gonka",
                "context_length": m.context_length,
                "price_prompt_ngonka": m.price_prompt_ngonka.to_string(),
                "price_completion_ngonka": m.price_completion_ngonka.to_string(),
            })
        })
        .collect();
    json!({ "object": "list", "data": data })
}
