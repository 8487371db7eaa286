//! `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`: a stored response of OpenAI's Responses
//! API, read or deleted with any inference key of the account that made it. Another account's id, and
//! one whose retention (`responses.retention_days`) has passed, are not found.

use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::Method;
use crate::session::exchange::Exchange;
use serde_json::json;

/// Answers `method` on the stored response `id`.
pub async fn route<S: Transport>(
    ex: &mut Exchange<'_, S>,
    method: Method,
    id: String,
) -> Result<(), ApiError> {
    ex.log.route = "responses";
    let core = ex.core();
    let app = &core.app;
    let key = app
        .keys
        .authenticate_inference(ex.head.authorization.as_deref(), app.clock.now_ms().div_euclid(1000))?;
    ex.log.key_id = Some(key.id().to_string());
    let not_found = || {
        ApiError::NotFound(format!(
            "Response with id '{}' not found.",
            id.chars().take(128).collect::<String>()
        ))
    };
    let (account, wanted) = (key.account_id().to_string(), id.clone());
    match method {
        Method::Get => {
            let stored = app.control.call(move |st| st.live_response(&account, &wanted)).await??;
            let stored = stored.ok_or_else(not_found)?;
            ex.respond(200, "application/json", stored.response.as_bytes(), &[]).await;
        }
        Method::Delete => {
            if !app.control.call(move |st| st.delete_response(&account, &wanted)).await?? {
                return Err(not_found());
            }
            ex.respond_json(200, &json!({"id": id, "object": "response.deleted", "deleted": true})).await;
        }
        _ => return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD, DELETE" }),
    }
    Ok(())
}
