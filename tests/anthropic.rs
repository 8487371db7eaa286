//! Anthropic's Messages API against the real binary, over plain HTTP: the translation both ways, the
//! event stream, Claude Code's own requests as captured, errors in Anthropic's shape, the same usage
//! records as chat completions, holds released on every ending, budgets fitted, token counts, models.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use utils::*;

fn messages(gw: &Gateway, key: &str, body: &Value) -> Resp {
    let headers = [("x-api-key", key), ("anthropic-version", "2023-06-01")];
    http(gw.addr, "POST", "/v1/messages", &headers, Some(body.to_string().as_bytes()))
}

fn messages_at(gw: &Gateway, path: &str, body: &Value) -> Resp {
    let headers = [("x-api-key", gw.api_key.as_str()), ("anthropic-version", "2023-06-01")];
    http(gw.addr, "POST", path, &headers, Some(body.to_string().as_bytes()))
}

fn ask(content: &str, max_tokens: u64, stream: bool) -> Value {
    json!({"model": MODEL, "max_tokens": max_tokens, "stream": stream,
        "messages": [{"role": "user", "content": content}]})
}

/// The events of an Anthropic stream: (event name, data).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).unwrap());
                }
            }
            (name.unwrap_or_else(|| panic!("an event without its event line: {e}")), data.unwrap())
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// The text of the stream's text deltas.
fn streamed_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect()
}

/// Checks the event sequence is Anthropic's: `message_start`, blocks with indexes 0, 1, 2… each opened,
/// filled and closed, `message_delta`, `message_stop`.
fn assert_anthropic_sequence(ev: &[(String, Value)]) {
    assert_eq!(ev.first().map(|e| e.0.as_str()), Some("message_start"), "{:?}", names(ev));
    let tail: Vec<&str> = names(ev).into_iter().rev().take(2).collect();
    assert_eq!(tail, ["message_stop", "message_delta"], "{:?}", names(ev));
    let mut open: Option<u64> = None;
    let mut next = 0;
    for (name, data) in &ev[1..ev.len() - 2] {
        match name.as_str() {
            "content_block_start" => {
                assert_eq!((open, data["index"].as_u64()), (None, Some(next)), "{:?}", names(ev));
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(data["index"].as_u64(), open),
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            "ping" => {}
            other => panic!("unexpected {other} in {:?}", names(ev)),
        }
    }
    assert_eq!(open, None, "every block is closed");
}

fn record(gw: &Gateway, request_id: &str) -> Value {
    let mut found = None;
    let ok = eventually(Duration::from_secs(20), || {
        found = gw.usage_records(&gw.account_id).into_iter().find(|r| r["request_id"] == request_id);
        found.is_some()
    });
    assert!(ok, "no usage record for {request_id}");
    found.unwrap()
}

fn held(gw: &Gateway) -> String {
    gw.api(&gw.account_token, "GET", "/api/balance", None).json()["held_ngonka"].as_str().unwrap().to_owned()
}

#[test]
fn a_message_is_translated_to_chat_completions_and_back() {
    let sim = Sim::start(&["--completion-tokens", "12"]);
    let gw = Gateway::start(&sim.urls);
    let body = json!({"model": MODEL, "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Gonka"}]}],
        "context_management": {"edits": []}, "output_config": {"effort": "high"}, "some_future_field": 1});
    let headers = [
        ("x-api-key", gw.api_key.as_str()),
        ("anthropic-version", "2026-10-21"),
        ("anthropic-beta", "claude-code-20250219,an-unknown-beta-2099-01-01"),
    ];
    let r = http(gw.addr, "POST", "/v1/messages?beta=true", &headers, Some(body.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let m = r.json();
    let request_id = r.header("x-request-id").unwrap();
    assert_eq!(r.header("request-id"), Some(request_id), "the SDKs read request-id");
    assert_eq!(m["id"].as_str().unwrap(), format!("msg_{}", &request_id["req_".len()..]));
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str(), m["model"].as_str()),
        (Some("message"), Some("assistant"), Some(MODEL))
    );
    assert_eq!(m["content"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["content"][0]["type"], "text");
    assert!(!m["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!((m["stop_reason"].as_str(), &m["stop_sequence"]), (Some("end_turn"), &Value::Null));
    let rec = record(&gw, request_id);
    assert_eq!(
        m["usage"],
        json!({"input_tokens": rec["prompt_tokens"], "output_tokens": rec["completion_tokens"]})
    );
    assert_eq!(rec["completion_tokens"], 12);

    // The same request streamed says the same, as Anthropic's events.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = http(gw.addr, "POST", "/v1/messages", &headers, Some(streamed.to_string().as_bytes()));
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/event-stream")), "{}", r.text());
    let ev = events(&r.text());
    assert_anthropic_sequence(&ev);
    assert_eq!(
        streamed_text(&ev),
        m["content"][0]["text"].as_str().unwrap(),
        "the node answers a prompt alike"
    );
    assert_eq!(ev[0].1["message"]["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"], m["usage"], "the node's usage, at the end");
    assert!(!r.text().contains("[DONE]") && !r.text().contains("chat.completion"));
}

#[test]
fn claude_codes_own_requests_are_accepted_as_sent() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let capture: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/claude-code-2.1.332.json").unwrap())
            .unwrap();
    let path = capture["path"].as_str().unwrap();
    let auth = gw.auth();
    let mut headers: Vec<(&str, &str)> = capture["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap(), h[1].as_str().unwrap()))
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
        .collect();
    headers.push(("Authorization", &auth));
    let mut body = capture["body"].clone();
    body["model"] = json!(MODEL);
    assert_eq!(
        (body["max_tokens"].as_u64(), body["thinking"]["type"].as_str()),
        (Some(32000), Some("adaptive"))
    );
    let r = http(gw.addr, "POST", path, &headers, Some(body.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.text());
    assert_anthropic_sequence(&ev);
    assert!(!streamed_text(&ev).is_empty());

    // After running the Bash tool the model called, Claude Code sends its result back.
    for m in capture["tool_result_followup"].as_array().unwrap() {
        body["messages"].as_array_mut().unwrap().push(m.clone());
    }
    let r = http(gw.addr, "POST", path, &headers, Some(body.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.text());
    assert_anthropic_sequence(&ev);
    assert!(streamed_text(&ev).starts_with("The tool returned: hi."), "{}", streamed_text(&ev));
}

#[test]
fn a_tool_call_streams_as_input_json_deltas_and_its_result_goes_back() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let tools = json!([{"name": "Bash", "description": "Runs a command",
        "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {"command": {"type": "string"}}, "required": ["command"]}}]);
    let mut body = json!({"model": MODEL, "max_tokens": 200, "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "run Bash {\"command\": \"echo gonka\"}"}]});
    let r = messages(&gw, &gw.api_key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.text());
    assert_anthropic_sequence(&ev);
    let start = ev.iter().find(|(n, _)| n == "content_block_start").unwrap();
    let block = &start.1["content_block"];
    assert_eq!(
        (block["type"].as_str(), block["name"].as_str(), &block["input"]),
        (Some("tool_use"), Some("Bash"), &json!({}))
    );
    let fragments: Vec<&str> = ev
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert!(fragments.len() > 1, "the arguments as they arrive, in pieces: {fragments:?}");
    assert_eq!(serde_json::from_str::<Value>(&fragments.concat()).unwrap(), json!({"command": "echo gonka"}));
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");

    let id = block["id"].as_str().unwrap();
    body["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "echo gonka"}}]}),
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "gonka", "is_error": false}]}),
    ]);
    body["stream"] = json!(false);
    let r = messages(&gw, &gw.api_key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert!(m["content"][0]["text"].as_str().unwrap().starts_with("The tool returned: gonka."), "{m}");
    assert_eq!(m["stop_reason"], "end_turn");
}

#[test]
fn usage_records_of_messages_equal_those_of_the_same_chat_completions() {
    let sim = Sim::start(&["--completion-tokens", "20"]);
    let gw = Gateway::start(&sim.urls);
    let tools_anthropic = json!([{"name": "Bash", "input_schema": {"type": "object",
        "properties": {"command": {"type": "string"}}, "required": ["command"]}}]);
    let tools_chat = json!([{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object",
        "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]);
    for stream in [false, true] {
        let pairs = [
            (
                json!({"model": MODEL, "max_tokens": 64, "stream": stream, "system": "Be brief.",
                    "messages": [{"role": "user", "content": "Compare the two approaches."}]}),
                json!({"model": MODEL, "max_tokens": 64, "stream": stream,
                    "messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Compare the two approaches."}]}),
            ),
            (
                json!({"model": MODEL, "max_tokens": 64, "stream": stream, "tools": tools_anthropic,
                    "messages": [{"role": "user", "content": "run Bash {\"command\": \"ls\"}"}]}),
                json!({"model": MODEL, "max_tokens": 64, "stream": stream, "tools": tools_chat,
                    "messages": [{"role": "user", "content": "run Bash {\"command\": \"ls\"}"}]}),
            ),
        ];
        for (anthropic, chat) in pairs {
            let a = messages(&gw, &gw.api_key, &anthropic);
            let c = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat);
            assert_eq!((a.status, c.status), (200, 200), "{} {}", a.text(), c.text());
            let (ra, rc) = (
                record(&gw, a.header("x-request-id").unwrap()),
                record(&gw, c.header("x-request-id").unwrap()),
            );
            for field in ["model", "prompt_tokens", "completion_tokens", "cost_ngonka", "status", "estimated"]
            {
                assert_eq!(ra[field], rc[field], "{field} (stream {stream}): {ra} vs {rc}");
            }
            assert!(ra["completion_tokens"].as_u64().unwrap() > 0 && ra["cost_ngonka"] != "0");
        }
    }
    assert_eq!(held(&gw), "0");
}

/// Sends a streamed Messages request on a raw socket; returns it once `until` appears in what was read.
fn stream_until(gw: &Gateway, body: &Value, until: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-api-key: {}\r\nanthropic-version: 2023-06-01\r\nContent-Length: {}\r\n\r\n{body}",
        gw.api_key,
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before {until}: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    (s, String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn holds_are_released_on_every_ending_the_client_leaving_mid_stream_included() {
    let sim = Sim::start(&["--tokens-per-s", "100", "--completion-tokens", "100"]);
    let gw = Gateway::start(&sim.urls);

    // The client hangs up after the first text: the node's answer is drained and paid for.
    let (s, _) = stream_until(&gw, &ask("stream to me", 500, true), "text_delta");
    drop(s);
    assert!(eventually(Duration::from_secs(10), || held(&gw) == "0"), "held {}", held(&gw));
    let r = gw.usage_records(&gw.account_id);
    assert_eq!((r.len(), r[0]["status"].as_str()), (1, Some("client_gone")), "{r:?}");
    assert_eq!(r[0]["completion_tokens"], 100, "what the node generated: {r:?}");

    // The node breaks off mid-stream: an error event ends the stream, never a message_stop.
    sim.set_faults(0, json!({"drop_rate": 1.0, "completion_tokens": 20}));
    let r = messages(&gw, &gw.api_key, &ask("break please", 100, true));
    assert_eq!(r.status, 200);
    let ev = events(&r.text());
    assert_eq!(ev[0].0, "message_start");
    assert_eq!(ev.last().unwrap().0, "error", "{:?}", names(&ev));
    assert!(!names(&ev).contains(&"message_stop") && !names(&ev).contains(&"message_delta"));
    assert_eq!(ev.last().unwrap().1["error"]["type"], "overloaded_error");
    assert!(eventually(Duration::from_secs(10), || held(&gw) == "0"));

    // The node fails before answering: an Anthropic error, nothing held.
    sim.set_faults(0, json!({"error_rate": 1.0}));
    let r = messages(&gw, &gw.api_key, &ask("fail please", 100, false));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert_eq!(held(&gw), "0");
    assert!(eventually(Duration::from_secs(3), || gw.metric("gateway_requests_in_flight") == 0.0));
}

#[test]
fn errors_are_in_anthropics_shape_and_name_what_is_wrong() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let check = |r: &Resp, status: u16, kind: &str, says: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some(kind)), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{v}");
    };
    let no_max = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let r = messages(&gw, &gw.api_key, &no_max);
    check(&r, 400, "invalid_request_error", "max_tokens");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let image = json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]});
    check(&messages(&gw, &gw.api_key, &image), 400, "invalid_request_error", "messages.0.content.1");
    check(&messages(&gw, &gw.api_key, &image), 400, "invalid_request_error", "serves text models only");
    let r = messages(
        &gw,
        &gw.api_key,
        &json!({"model": "no/such-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    );
    check(&r, 404, "not_found_error", "no/such-model");
    let r = messages(&gw, "gk-prx-not-a-real-key-at-all-000000000000000", &ask("hi", 10, false));
    check(&r, 401, "authentication_error", "Invalid API key");
    assert_eq!(r.header("x-should-retry"), Some("false"), "Claude Code would retry a 401 ten times");
    let r = http(gw.addr, "POST", "/v1/messages", &[("anthropic-version", "2023-06-01")], Some(b"{}"));
    check(&r, 401, "authentication_error", "");
    let r = http(gw.addr, "POST", "/v1/messages", &[("x-api-key", &gw.api_key)], Some(b"not json"));
    check(&r, 400, "invalid_request_error", "not valid JSON");
    // A base URL ending in /v1 is told so, not answered 404 (Claude Code reads a 404 as a bad model).
    let r = messages_at(&gw, "/v1/v1/messages?beta=true", &ask("hi", 10, false));
    check(&r, 400, "invalid_request_error", "must be the gateway's root, without /v1");
    let r = http(gw.addr, "GET", "/v1/messages", &[("x-api-key", &gw.api_key)], None);
    check(&r, 405, "invalid_request_error", "POST");
    assert_eq!(held(&gw), "0");
}

#[test]
fn thinking_and_stop_sequences_reach_the_node_and_come_back() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    sim.set_faults(0, json!({"reasoning_tokens": 5, "completion_tokens": 16}));
    // A thinking model's reasoning is a thinking block before the text, streamed and not.
    let r = messages(&gw, &gw.api_key, &ask("think first", 100, false));
    let m = r.json();
    assert_eq!(
        (m["content"][0]["type"].as_str(), m["content"][1]["type"].as_str()),
        (Some("thinking"), Some("text")),
        "{m}"
    );
    assert!(!m["content"][0]["thinking"].as_str().unwrap().is_empty());
    let ev = events(&messages(&gw, &gw.api_key, &ask("think first", 100, true)).text());
    assert_anthropic_sequence(&ev);
    assert_eq!(ev[1].1["content_block"]["type"], "thinking");
    assert!(ev.iter().any(|(_, d)| d["delta"]["type"] == "thinking_delta"));
    // `thinking: disabled` turns it off at the node.
    let mut off = ask("think first", 100, false);
    off["thinking"] = json!({"type": "disabled"});
    let m = messages(&gw, &gw.api_key, &off).json();
    assert_eq!(m["content"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["content"][0]["type"], "text");

    // A stop sequence the answer contains ends it there, named.
    let text = m["content"][0]["text"].as_str().unwrap().to_owned();
    let word = text.split_whitespace().nth(3).unwrap().to_owned();
    for stream in [false, true] {
        let mut stopped = off.clone();
        stopped["stop_sequences"] = json!(["never-said", word]);
        stopped["stream"] = json!(stream);
        let r = messages(&gw, &gw.api_key, &stopped);
        let (said, stop) = if stream {
            let ev = events(&r.text());
            (streamed_text(&ev), ev[ev.len() - 2].1["delta"].clone())
        } else {
            let m = r.json();
            (m["content"][0]["text"].as_str().unwrap().to_owned(), m)
        };
        assert_eq!(
            (stop["stop_reason"].as_str(), stop["stop_sequence"].as_str()),
            (Some("stop_sequence"), Some(word.as_str())),
            "{stop}"
        );
        assert_eq!(said, text[..text.find(&word).unwrap()], "the text before the stop sequence");
    }
    // max_tokens reached reads as max_tokens.
    let m = messages(&gw, &gw.api_key, &ask("a long one", 3, false)).json();
    assert_eq!(
        (m["stop_reason"].as_str(), m["usage"]["output_tokens"].as_u64()),
        (Some("max_tokens"), Some(3)),
        "{m}"
    );
}

#[test]
fn an_explicit_max_tokens_is_fitted_on_messages_unless_the_key_says_never() {
    let sim = Sim::start(&["--completion-tokens", "100000"]);
    let gw = Gateway::start(&sim.urls);
    // Prices 10/20 per token: 32000 tokens would hold 640,000 ngonka, four times the daily limit.
    let child = gw.create_child(&gw.account_token, json!({"name": "agent", "limit_daily_ngonka": "160000"}));
    let key = child["key"].as_str().unwrap();
    let r = messages(&gw, key, &ask("write a lot", 32000, false));
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    let fitted = m["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(m["stop_reason"], "max_tokens", "{m}");
    assert!((256..8000).contains(&fitted), "sent with what the budget allows: {fitted}");
    // The same on chat completions: an explicit max_tokens is the client's choice under the default policy.
    let auth = format!("Bearer {key}");
    let chat = json!({"model": MODEL, "max_tokens": 32000, "messages": [{"role": "user", "content": "write a lot"}]});
    let r = post(gw.addr, "/v1/chat/completions", &auth, &chat);
    assert_eq!(r.status, 402, "{}", r.text());
    // A key whose policy is "never" is refused on messages too, in Anthropic's shape with the 402 fields.
    let never = gw.create_child(
        &gw.account_token,
        json!({"name": "strict", "limit_daily_ngonka": "160000", "fit_max_tokens": "never"}),
    );
    let r = messages(&gw, never["key"].as_str().unwrap(), &ask("write a lot", 32000, false));
    assert_eq!(r.status, 402, "{}", r.text());
    let e = r.json();
    assert_eq!(
        (e["type"].as_str(), e["error"]["type"].as_str()),
        (Some("error"), Some("child_key_limit")),
        "{e}"
    );
    assert_eq!(e["error"]["daily_remaining"], "160000");
    assert_eq!(r.header("x-should-retry"), Some("false"));
}

#[test]
fn count_tokens_counts_exactly_with_a_tokenizer_and_high_without() {
    // A word-level tokenizer: one token per word.
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    std::fs::write(
        &tokenizer,
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"gonka":2},"unk_token":"[UNK]"}}"#,
    )
    .unwrap();
    let sim = Sim::start(&[]);
    let models = format!(
        "[[models]]\nid = \"{MODEL}\"\ncontext_length = 32768\nprice_prompt_ngonka = 10\nprice_completion_ngonka = 20\ntokenizer = \"{}\"\n",
        tokenizer.display()
    );
    let exact = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        models: vec![],
        extra: models,
        ..GatewayOpts::default()
    });
    let estimated = Gateway::start(&sim.urls);
    let body = json!({"model": MODEL, "system": "be brief",
        "messages": [{"role": "user", "content": "hello gonka hello"}]});
    let count = |gw: &Gateway, body: &Value| {
        let r = http(
            gw.addr,
            "POST",
            "/v1/messages/count_tokens?beta=true",
            &[("x-api-key", &gw.api_key), ("anthropic-beta", "token-counting-2024-11-01")],
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["input_tokens"].as_u64().unwrap()
    };
    // 5 words and the chat template's 4 tokens for each of the 2 messages (system, user).
    assert_eq!(count(&exact, &body), 5 + 2 * 4);
    // Without a tokenizer: a third of the text's 27 bytes (each message on its line), and the same
    // template tokens.
    assert_eq!(count(&estimated, &body), 9 + 2 * 4);
    // Tool definitions are part of the prompt.
    let mut with_tools = body.clone();
    with_tools["tools"] =
        json!([{"name": "Bash", "description": "Runs a shell command", "input_schema": {"type": "object"}}]);
    assert!(count(&exact, &with_tools) > count(&exact, &body));
    assert!(count(&estimated, &with_tools) > count(&estimated, &body));
    let r = http(
        exact.addr,
        "POST",
        "/v1/messages/count_tokens",
        &[("x-api-key", &exact.api_key)],
        Some(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).to_string().as_bytes()),
    );
    assert_eq!((r.status, r.json()["error"]["type"].as_str()), (404, Some("not_found_error")));
    assert!(exact.usage_records(&exact.account_id).is_empty(), "counting is free");
}

#[test]
fn models_answer_in_anthropics_shape_to_its_clients_and_aliases_name_models() {
    let sim = Sim::start(&[]);
    let models = format!(
        "[[models]]\nid = \"{MODEL}\"\ncontext_length = 32768\nprice_prompt_ngonka = 10\nprice_completion_ngonka = 20\naliases = [\"sim-small\"]\n"
    );
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        models: vec![],
        extra: models,
        ..GatewayOpts::default()
    });
    let bearer = gw.auth();
    for headers in [
        vec![("x-api-key", gw.api_key.as_str())],
        vec![("Authorization", bearer.as_str()), ("anthropic-version", "2026-10-21")],
    ] {
        let r = http(gw.addr, "GET", "/v1/models?limit=1000", &headers, None);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(
            (v["has_more"].as_bool(), v["first_id"].as_str(), v["last_id"].as_str()),
            (Some(false), Some(MODEL), Some(MODEL)),
            "{v}"
        );
        let m = &v["data"][0];
        assert_eq!(
            (m["type"].as_str(), m["id"].as_str(), m["display_name"].as_str()),
            (Some("model"), Some(MODEL), Some(MODEL))
        );
        assert!(gonka_gateway::time::parse_rfc3339(m["created_at"].as_str().unwrap()).is_some(), "{m}");
        assert_eq!(m["aliases"], json!(["sim-small"]));
        let one = http(gw.addr, "GET", "/v1/models/sim-small", &headers, None).json();
        assert_eq!((one["type"].as_str(), one["id"].as_str()), (Some("model"), Some(MODEL)));
    }
    let openai = http(gw.addr, "GET", "/v1/models", &[("Authorization", bearer.as_str())], None).json();
    assert_eq!(
        (openai["object"].as_str(), openai["data"][0]["object"].as_str()),
        (Some("list"), Some("model"))
    );
    let r = http(gw.addr, "GET", "/v1/models", &[("x-api-key", "gk-prx-wrong")], None);
    assert_eq!((r.status, r.json()["error"]["type"].as_str()), (401, Some("authentication_error")));

    // A request naming the alias is served, billed and recorded as the model's id.
    let mut body = ask("hi", 10, true);
    body["model"] = json!("sim-small");
    let r = messages(&gw, &gw.api_key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.text());
    assert_eq!(ev[0].1["message"]["model"], "sim-small", "the model as the client named it");
    let rec = record(&gw, r.header("x-request-id").unwrap());
    assert_eq!(rec["model"], MODEL);
    let chat =
        json!({"model": "sim-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.addr, "/v1/chat/completions", &bearer, &chat);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(record(&gw, r.header("x-request-id").unwrap())["model"], MODEL);
}

#[test]
fn the_root_answers_and_claude_codes_telemetry_is_dropped() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    assert_eq!(http(gw.addr, "HEAD", "/", &[], None).status, 200);
    assert_eq!(http(gw.addr, "GET", "/", &[], None).status, 200);
    let batch =
        br#"{"events":[{"event_type":"ClaudeCodeInternalEvent","event_data":{"secret":"do-not-log-me"}}]}"#;
    let r = http(gw.addr, "POST", "/api/event_logging/batch", &[], Some(batch));
    assert_eq!(r.status, 204);
    assert!(!gw.proc.stderr().contains("do-not-log-me"));
}

#[test]
fn a_silent_node_gets_the_client_pings() {
    let sim = Sim::start(&["--ttft-ms", "11500", "--completion-tokens", "3"]);
    let gw = Gateway::start(&sim.urls);
    let started = Instant::now();
    let (mut s, got) = stream_until(&gw, &ask("take your time", 10, true), "event: ping");
    let pinged = started.elapsed();
    assert!(pinged >= Duration::from_secs(9) && pinged < Duration::from_secs(11), "{pinged:?}");
    assert!(got.find("event: message_start").unwrap() < got.find("event: ping").unwrap());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let all = got + &String::from_utf8_lossy(&rest);
    assert!(all.contains("event: message_stop"), "{all}");
}
