//! Responses kept for OpenAI's Responses API (`store`): what `GET /v1/responses/{id}` answers and what
//! `previous_response_id` continues from.

/// One kept response, owned by an account until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// `resp_…`.
    pub id: String,
    pub account_id: String,
    /// The key that made it (a response is the account's: any of its keys may read it).
    pub key_id: String,
    pub created_ms: i64,
    /// After this it is gone (404), and the store's periodic sweep deletes it.
    pub expires_ms: i64,
    /// The response object as the client got it (JSON).
    pub response: String,
    /// The conversation before this response's output, as Responses input items (a JSON array): the
    /// items of the response it continued, that response's output, then this request's input. A
    /// continuation of this response starts from these and its output.
    pub input_items: String,
}
