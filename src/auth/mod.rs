//! Authentication of inference requests.

use crate::app::App;
use crate::error::ApiError;

/// Who is making a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: Option<String>,
}

/// Checks the bearer key of an inference request.
pub fn authenticate_inference(_app: &App, authorization: Option<&str>) -> Result<Principal, ApiError> {
    match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        Some(k) if !k.trim().is_empty() => Ok(Principal { key_id: None }),
        _ => Err(ApiError::InvalidApiKey),
    }
}
