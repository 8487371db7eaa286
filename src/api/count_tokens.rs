//! `POST /v1/messages/count_tokens`: the tokens of a Messages request's prompt, as the node would see it
//! (the request translated as `/v1/messages` translates it, tools included). With the model's
//! `tokenizer.json` configured the text is counted exactly (plus the chat template's tokens per message);
//! without one it is estimated on the high side ([`PromptText::estimate_high`]), never 0: Claude Code
//! compacts its context by this number, and one that is too low would let it overflow the model's window.
//!
//! Counting costs the key nothing and is not counted against its requests per minute (Claude Code's
//! `/context` sends some twenty at once).

use crate::anthropic::request::{Purpose, to_chat};
use crate::billing::estimate::PromptText;
use crate::error::{ApiError, ErrorShape};
use crate::http::io::Transport;
use crate::session::exchange::Exchange;
use serde_json::json;

pub async fn handle<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    let app = &core.app;
    ex.log.route = "count_tokens";
    ex.error_shape = ErrorShape::Anthropic;
    ex.headers.push(("request-id", ex.request_id.clone()));
    let now = app.clock.now_ms().div_euclid(1000);
    let key = app.keys.authenticate_presented(
        ex.head.authorization.as_deref(),
        ex.head.x_api_key.as_deref(),
        now,
    )?;
    ex.log.key_id = Some(key.id().to_string());
    let body = ex.read_body().await?;
    let chat = to_chat(&body, Purpose::Count)?;
    drop(body);
    ex.log.model = Some(chat.model.clone());
    let model = app
        .models
        .load()
        .get(&chat.model)
        .map(|m| m.id.clone())
        .filter(|id| app.nodes.serves(id))
        .ok_or_else(|| ApiError::ModelNotFound(chat.model.clone()))?;
    if !key.allows_model(&model) {
        return Err(ApiError::ModelNotAllowed(model));
    }
    let prompt = PromptText::of_body_and_tools(&chat.body);
    let estimate = prompt.estimate_high();
    let input_tokens = app.tokenizers.count_exact(&model, prompt).await.unwrap_or(estimate);
    ex.log.model = Some(model);
    ex.respond_json(200, &json!({ "input_tokens": input_tokens })).await;
    Ok(())
}
