//! The Responses dialect at the seam: one [`ResponsesTranslation`] per request, a translator per attempt
//! at a node (each with a fresh [`Output`]; the latest attempt's is the one that answered), and the
//! response it keeps when the request asked to `store` it.

use super::output::{Output, ResponseHead};
use super::request::Request;
use crate::error::ApiError;
use crate::http::sse;
use crate::model::StoredResponse;
use crate::translate::{Translate, Translation};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// The largest whole (not streamed) answer translated: one is parsed only once it is complete, so it is
/// held meanwhile. Chat answers are far smaller; a node sending more has failed.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Who keeps a stored response, and until when.
#[derive(Debug, Clone)]
pub struct KeepFor {
    pub account_id: String,
    pub key_id: String,
    pub expires_ms: i64,
}

/// A stored response's owner and its conversation, kept once the answer is complete.
#[derive(Debug)]
struct Keep {
    owner: KeepFor,
    /// The conversation before this response's output (a JSON array).
    input_items: String,
}

/// One `POST /v1/responses` request's translation.
#[derive(Debug)]
pub struct ResponsesTranslation {
    head: Rc<ResponseHead>,
    created_ms: i64,
    client_streams: bool,
    keep: Option<Keep>,
    /// The latest attempt's output.
    current: RefCell<Option<Rc<RefCell<Output>>>>,
}

impl ResponsesTranslation {
    /// The translation of `request`, answering `conversation`, made at `now_ms`; `keep` when the
    /// response is to be stored.
    pub fn new(
        request: &Request,
        conversation: &[Value],
        now_ms: i64,
        keep: Option<KeepFor>,
    ) -> Result<Self, ApiError> {
        let id = format!(
            "resp_{}",
            crate::secret::random_base62(24).map_err(|e| ApiError::Internal(e.to_string()))?
        );
        let keep = match keep {
            Some(owner) => Some(Keep {
                owner,
                input_items: serde_json::to_string(conversation)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            }),
            None => None,
        };
        Ok(Self {
            head: Rc::new(ResponseHead {
                id,
                created_at: now_ms.div_euclid(1000),
                echo: request.echo.clone(),
            }),
            created_ms: now_ms,
            client_streams: request.stream,
            keep,
            current: RefCell::new(None),
        })
    }

    /// The response's id (`resp_…`).
    pub fn id(&self) -> &str {
        &self.head.id
    }
}

impl Translation for ResponsesTranslation {
    fn translator(&self, node_streams: bool) -> Box<dyn Translate> {
        let output = Rc::new(RefCell::new(Output::new(Rc::clone(&self.head), self.client_streams)));
        *self.current.borrow_mut() = Some(Rc::clone(&output));
        Box::new(Translator { output, node_streams, client_streams: self.client_streams })
    }

    fn content_type(&self, _node_streams: bool) -> &'static str {
        // A streaming client gets events even from a node that answered whole.
        if self.client_streams { "text/event-stream" } else { "application/json" }
    }

    fn keep(&self) -> Option<StoredResponse> {
        let keep = self.keep.as_ref()?;
        let current = self.current.borrow();
        let mut output = current.as_ref()?.borrow_mut();
        output.apply_body();
        if output.failed() {
            return None;
        }
        Some(StoredResponse {
            id: self.head.id.clone(),
            account_id: keep.owner.account_id.clone(),
            key_id: keep.owner.key_id.clone(),
            created_ms: self.created_ms,
            expires_ms: keep.owner.expires_ms,
            response: output.object().to_string(),
            input_items: keep.input_items.clone(),
        })
    }
}

/// The conversation a continuation of `stored` starts from: the items it answered, then its output.
pub fn continuation(stored: &StoredResponse) -> Result<Vec<Value>, ApiError> {
    let broken = |e: serde_json::Error| ApiError::Internal(format!("stored response {}: {e}", stored.id));
    let mut items: Vec<Value> = serde_json::from_str(&stored.input_items).map_err(broken)?;
    let response: Value = serde_json::from_str(&stored.response).map_err(broken)?;
    if let Some(Value::Array(output)) = response.get("output") {
        items.extend(output.iter().cloned());
    }
    Ok(items)
}

/// One attempt's translator.
struct Translator {
    output: Rc<RefCell<Output>>,
    node_streams: bool,
    client_streams: bool,
}

impl Translate for Translator {
    fn event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let Some(data) = sse::event_data(event) else { return };
        let mut output = self.output.borrow_mut();
        if &*data == b"[DONE]" {
            output.end();
        } else if let Ok(chunk) = serde_json::from_slice::<Value>(&data) {
            output.apply(&chunk);
        }
        output.take_events(out);
    }

    fn body(&mut self, piece: &[u8]) {
        let mut output = self.output.borrow_mut();
        if output.failed() {
            return;
        }
        if output.body.len() + piece.len() > MAX_ANSWER_BYTES {
            output.fail("the node's answer is larger than the gateway translates");
            output.body = Vec::new();
            return;
        }
        output.body.extend_from_slice(piece);
    }

    fn end(&mut self, failure: Option<&str>, out: &mut Vec<u8>) {
        let mut output = self.output.borrow_mut();
        match failure {
            None => {
                if !self.node_streams {
                    output.apply_body();
                }
                output.end();
            }
            Some(message) => output.fail(message),
        }
        if self.client_streams {
            output.take_events(out);
        } else {
            // A map of JSON values always serializes.
            let _ = serde_json::to_writer(&mut *out, &output.object());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translation(body: Value, keep: bool) -> ResponsesTranslation {
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let conversation = request.conversation(Vec::new());
        let owner = KeepFor { account_id: "acc_1".into(), key_id: "key_1".into(), expires_ms: 99 };
        ResponsesTranslation::new(&request, &conversation, 5_000, keep.then_some(owner)).unwrap()
    }

    const STREAM: &[&str] = &[
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n",
        "data: [DONE]\n\n",
    ];

    #[test]
    fn a_stream_is_translated_event_by_event_and_kept_whole() {
        let t = translation(json!({"model": "m", "input": "hello", "stream": true}), true);
        assert_eq!(t.content_type(true), "text/event-stream");
        let mut tr = t.translator(true);
        let mut first = Vec::new();
        tr.event(STREAM[0].as_bytes(), &mut first);
        assert!(String::from_utf8_lossy(&first).contains("response.output_text.delta"), "written at once");
        let mut rest = Vec::new();
        for e in &STREAM[1..] {
            tr.event(e.as_bytes(), &mut rest);
        }
        let kept = t.keep().unwrap();
        tr.end(None, &mut rest);
        let text = String::from_utf8(rest).unwrap();
        assert_eq!(text.matches("event: response.completed").count(), 1, "{text}");
        let stored: Value = serde_json::from_str(&kept.response).unwrap();
        assert_eq!((kept.id.as_str(), kept.account_id.as_str(), kept.expires_ms), (t.id(), "acc_1", 99));
        assert_eq!(stored["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(stored["usage"]["input_tokens"], 4);
        assert_eq!(stored["created_at"], 5);
        let items: Value = serde_json::from_str(&kept.input_items).unwrap();
        assert_eq!(items, json!([{"type": "message", "role": "user", "content": "hello"}]));
    }

    #[test]
    fn a_whole_answer_becomes_the_response_object_and_a_retry_starts_over() {
        let t = translation(json!({"model": "m", "input": "hello", "store": false}), false);
        assert_eq!(t.content_type(false), "application/json");
        // A first attempt that broke before reaching the client leaves nothing behind.
        let mut broken = t.translator(false);
        broken.body(b"{\"choices\":[{\"message\":{\"content\":\"lost\"}}");
        let mut tr = t.translator(false);
        let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Whole."},
            "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        let bytes = body.to_string();
        let (a, b) = bytes.as_bytes().split_at(10);
        tr.body(a);
        tr.body(b);
        let mut out = Vec::new();
        tr.end(None, &mut out);
        let r: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((r["object"].as_str(), r["status"].as_str()), (Some("response"), Some("completed")));
        assert_eq!(r["output"][0]["content"][0]["text"], "Whole.");
        assert_eq!(r["id"], t.id());
        assert!(t.keep().is_none(), "store: false keeps nothing");
    }

    #[test]
    fn a_streaming_client_gets_events_from_a_node_that_answered_whole() {
        let t = translation(json!({"model": "m", "input": "hello", "stream": true}), true);
        let mut tr = t.translator(false);
        tr.body(br#"{"choices":[{"index":0,"message":{"content":"One piece."},"finish_reason":"stop"}]}"#);
        let kept = t.keep().unwrap();
        let mut out = Vec::new();
        tr.end(None, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: response.created"), "{text}");
        assert!(text.contains("\"delta\":\"One piece.\""), "{text}");
        assert!(text.trim_end().rsplit("\n\n").next().unwrap().starts_with("event: response.completed"));
        assert!(kept.response.contains("One piece."));
    }

    #[test]
    fn a_continuation_is_the_kept_conversation_and_its_output() {
        let t = translation(json!({"model": "m", "input": [{"role": "user", "content": "hi"}]}), true);
        let mut tr = t.translator(false);
        tr.body(br#"{"choices":[{"index":0,"message":{"content":"hello"},"finish_reason":"stop"}]}"#);
        let items = continuation(&t.keep().unwrap()).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], json!({"role": "user", "content": "hi"}));
        assert_eq!(
            (items[1]["type"].as_str(), items[1]["role"].as_str()),
            (Some("message"), Some("assistant"))
        );
        assert_eq!(items[1]["content"][0]["text"], "hello");
    }

    #[test]
    fn a_whole_answer_past_the_bound_fails_instead_of_growing() {
        let t = translation(json!({"model": "m", "input": "hello"}), true);
        let mut tr = t.translator(false);
        let piece = vec![b' '; 1 << 20];
        for _ in 0..(MAX_ANSWER_BYTES >> 20) + 2 {
            tr.body(&piece);
        }
        let mut out = Vec::new();
        tr.end(None, &mut out);
        let r: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(r["status"], "failed");
        assert!(r["error"]["message"].as_str().unwrap().contains("larger"), "{r}");
        assert!(t.keep().is_none());
    }

    #[test]
    fn a_stream_that_breaks_ends_with_response_failed_and_keeps_nothing() {
        let t = translation(json!({"model": "m", "input": "hello", "stream": true}), true);
        let mut tr = t.translator(true);
        let mut out = Vec::new();
        tr.event(STREAM[0].as_bytes(), &mut out);
        tr.end(Some("the node closed the connection mid-answer"), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("event: response.failed"), "{text}");
        assert!(t.keep().is_none());
    }
}
