//! Anthropic's Messages API: a client's request body and a node's stream, both as anything the network
//! delivers. Checks: a request that translates becomes a chat-completions body the request path inspects
//! with the same model, stream flag and `max_tokens`; a node's stream, cut into events wherever it ends
//! them, translates into Anthropic events that start with `message_start`, end with `message_stop` or an
//! `error`, and open and close their blocks in order.
#![no_main]

use gonka_gateway::anthropic::events::Reply;
use gonka_gateway::anthropic::request::{Purpose, to_chat};
use gonka_gateway::anthropic::stream::StreamTranslator;
use gonka_gateway::api::inference::inspect::{Endpoint, inspect};
use gonka_gateway::http::sse;
use gonka_gateway::translate::Translate;
use libfuzzer_sys::fuzz_target;
use std::rc::Rc;

fuzz_target!(|data: &[u8]| {
    if let Ok(chat) = to_chat(data, Purpose::Message) {
        let i = inspect(Endpoint::ChatCompletions, &chat.body).expect("a translated request inspects");
        let asked: serde_json::Value = serde_json::from_slice(data).expect("it was JSON");
        assert_eq!((i.model.as_str(), i.stream), (chat.model.as_str(), chat.stream));
        assert_eq!(i.max_tokens, asked["max_tokens"].as_u64());
        assert!(!i.stream || i.include_usage, "a stream asks for the node's usage");
    }

    let mut t = StreamTranslator::new(Rc::new(Reply::new("req_fuzz", "m".into(), true)));
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = sse::event_end(&data[at..]) {
        t.event(&data[at..at + len], &mut out);
        at += len;
    }
    t.end(None, &mut out);
    let text = String::from_utf8(out).expect("events are UTF-8");
    let mut names = Vec::new();
    let mut open: Option<u64> = None;
    let mut next = 0;
    for event in text.split_terminator("\n\n") {
        let (name, data) = event.split_once('\n').expect("an event line and a data line");
        let name = name.strip_prefix("event: ").expect("an event line");
        let data: serde_json::Value =
            serde_json::from_str(data.strip_prefix("data: ").expect("a data line")).expect("JSON data");
        assert_eq!(data["type"], name);
        match name {
            "content_block_start" => {
                assert_eq!((open, data["index"].as_u64()), (None, Some(next)));
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(data["index"].as_u64(), open),
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            _ => {}
        }
        names.push(name.to_owned());
    }
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    let last = names.last().map(String::as_str);
    assert!(last == Some("message_stop") || last == Some("error"), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "message_start").count(), 1);
});
