//! OpenAI's Responses API (`/v1/responses`) against the real binary and the simulator, over plain HTTP:
//! the response object and its stream, stored responses, what is refused, that a response is billed
//! exactly as the same chat completion, and that every ending releases its hold. The official SDKs,
//! LangChain and Codex drive it in `openai_sdk.rs` and `codex.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::time::Duration;
use utils::*;

fn respond(gw: &Gateway, body: &Value) -> Resp {
    post(gw.addr, "/v1/responses", &gw.auth(), body)
}

/// The events of a Responses stream, each checked to name its type in its `event:` line.
fn events(body: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(d.to_owned());
            }
        }
        let v: Value = serde_json::from_str(&data.unwrap()).unwrap();
        assert_eq!(name.as_deref(), v["type"].as_str(), "{block}");
        out.push(v);
    }
    out
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[test]
fn a_response_answers_streamed_and_not_and_is_kept_until_deleted() {
    let sim = Sim::start(&["--completion-tokens", "7"]);
    let gw = Gateway::start(&sim.urls);
    let chat = post(
        gw.addr,
        "/v1/chat/completions",
        &gw.auth(),
        &json!({"model": MODEL, "messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me about Gonka."}]}),
    );
    let expected = chat.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let request = json!({"model": MODEL, "instructions": "Be brief.", "input": "Tell me about Gonka.",
        "metadata": {"ticket": "42"}});

    let r = respond(&gw, &request);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("response"), Some("completed")));
    assert_eq!((v["model"].as_str(), v["instructions"].as_str()), (Some(MODEL), Some("Be brief.")));
    assert_eq!(v["metadata"], json!({"ticket": "42"}));
    assert_eq!(output_text(&v), expected, "the node's answer, as a message item");
    assert_eq!(v["output"][0]["role"], "assistant");
    assert_eq!(v["usage"]["output_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(v["usage"]["input_tokens"].as_u64().unwrap() + 7));

    let path = format!("/v1/responses/{id}");
    let got = http(gw.addr, "GET", &path, &[("Authorization", &gw.auth())], None);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), v, "kept as the client got it");
    let deleted = http(gw.addr, "DELETE", &path, &[("Authorization", &gw.auth())], None);
    assert_eq!(deleted.json(), json!({"id": id, "object": "response.deleted", "deleted": true}));
    for method in ["GET", "DELETE"] {
        let gone = http(gw.addr, method, &path, &[("Authorization", &gw.auth())], None);
        assert_eq!(gone.status, 404, "{method}: {}", gone.text());
        assert_eq!(gone.json()["error"]["type"], "invalid_request_error");
    }

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let r = respond(&gw, &streamed);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let all = events(&r.text());
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{e}");
    }
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &types[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(types.iter().filter(|t| **t == "response.output_text.delta").count(), 7);
    assert_eq!(
        &types[types.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let deltas: String = all.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(deltas, expected);
    let completed = &all.last().unwrap()["response"];
    assert_eq!(output_text(completed), expected);
    assert_eq!(completed["usage"]["output_tokens"], 7);
    let stream_id = completed["id"].as_str().unwrap();
    assert_eq!(all[0]["response"]["id"], stream_id);
    let got =
        http(gw.addr, "GET", &format!("/v1/responses/{stream_id}"), &[("Authorization", &gw.auth())], None);
    assert_eq!(&got.json(), completed, "a streamed response is kept as it completed");

    // Stopped by max_output_tokens: incomplete, streamed or not.
    let mut short = request.clone();
    short["max_output_tokens"] = json!(3);
    let v = respond(&gw, &short).json();
    assert_eq!(v["status"], "incomplete", "{v}");
    assert_eq!(v["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!((v["usage"]["output_tokens"].as_u64(), v["max_output_tokens"].as_u64()), (Some(3), Some(3)));
    short["stream"] = json!(true);
    let last = events(&respond(&gw, &short).text()).pop().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["response"]["status"].as_str()),
        (Some("response.incomplete"), Some("incomplete"))
    );

    let mut unstored = request.clone();
    unstored["store"] = json!(false);
    let v = respond(&gw, &unstored).json();
    assert_eq!(v["store"], false);
    let got = http(
        gw.addr,
        "GET",
        &format!("/v1/responses/{}", v["id"].as_str().unwrap()),
        &[("Authorization", &gw.auth())],
        None,
    );
    assert_eq!(got.status, 404, "store: false keeps nothing");
}

#[test]
fn a_continued_conversation_reaches_the_node_whole_and_belongs_to_its_account() {
    let sim = Sim::start(&["--completion-tokens", "16"]);
    let gw = Gateway::start(&sim.urls);
    let tools = json!([{"type": "function", "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let first =
        respond(&gw, &json!({"model": MODEL, "tools": tools, "input": "get_weather {\"city\":\"Paris\"}"}))
            .json();
    assert_eq!(first["status"], "completed", "{first}");
    let call = &first["output"][0];
    assert_eq!((call["type"].as_str(), call["name"].as_str()), (Some("function_call"), Some("get_weather")));
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let call_id = call["call_id"].as_str().unwrap();

    // Only the tool's output is sent: the call it answers comes from the stored response.
    let second = respond(
        &gw,
        &json!({"model": MODEL, "tools": tools, "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call_id, "output": "18 degrees and sunny"}]}),
    );
    assert_eq!(second.status, 200, "{}", second.text());
    let second = second.json();
    assert!(output_text(&second).starts_with("The tool returned: 18 degrees and sunny."), "{second}");
    assert_eq!(second["previous_response_id"], first["id"]);

    // Another account's keys cannot see it, continue it or delete it.
    let (_, other_token) = gw.create_account("other");
    let other = gw.create_key(&other_token, "k");
    let other_auth = format!("Bearer {other}");
    let id = second["id"].as_str().unwrap();
    let r = post(
        gw.addr,
        "/v1/responses",
        &other_auth,
        &json!({"model": MODEL, "previous_response_id": id, "input": "hi"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        (r.json()["error"]["code"].as_str(), r.json()["error"]["param"].as_str()),
        (Some("previous_response_not_found"), Some("previous_response_id"))
    );
    for method in ["GET", "DELETE"] {
        let r =
            http(gw.addr, method, &format!("/v1/responses/{id}"), &[("Authorization", &other_auth)], None);
        assert_eq!(r.status, 404, "{method}");
    }
    // Every key of the owning account may read it.
    let sibling = gw.create_key(&gw.account_token, "sibling");
    let r = http(
        gw.addr,
        "GET",
        &format!("/v1/responses/{id}"),
        &[("Authorization", &format!("Bearer {sibling}"))],
        None,
    );
    assert_eq!(r.status, 200);
}

/// `(prompt_tokens, completion_tokens, cost_ngonka, status, estimated, model)` of the record of the
/// request `x-request-id` names.
fn record_of(records: &[Value], r: &Resp) -> (Value, Value, Value, Value, Value, Value) {
    let id = r.header("x-request-id").unwrap();
    let rec = records.iter().find(|rec| rec["request_id"] == id).unwrap_or_else(|| panic!("no record {id}"));
    let f = |k: &str| rec[k].clone();
    (f("prompt_tokens"), f("completion_tokens"), f("cost_ngonka"), f("status"), f("estimated"), f("model"))
}

#[test]
fn usage_records_of_a_response_equal_those_of_the_same_chat_completion() {
    let sim = Sim::start(&["--completion-tokens", "9", "--reasoning-tokens", "3"]);
    let gw = Gateway::start(&sim.urls);
    let tool = json!({"name": "lookup", "description": "Looks a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}});
    let pairs = [
        (
            json!({"model": MODEL, "instructions": "Answer in French.", "input": "What is Gonka?", "max_output_tokens": 40}),
            json!({"model": MODEL, "max_tokens": 40, "messages": [{"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "What is Gonka?"}]}),
        ),
        (
            json!({"model": MODEL, "input": [{"role": "developer", "content": "Be terse."},
                {"role": "user", "content": [{"type": "input_text", "text": "lookup {\"word\":\"gpu\"}"}]}],
                "tools": [{"type": "function", "name": tool["name"], "description": tool["description"], "parameters": tool["parameters"]}]}),
            json!({"model": MODEL, "messages": [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "lookup {\"word\":\"gpu\"}"}],
                "tools": [{"type": "function", "function": tool}]}),
        ),
        (
            json!({"model": MODEL, "input": [{"role": "user", "content": "lookup gpu"},
                {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{\"word\":\"gpu\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "graphics processing unit"}]}),
            json!({"model": MODEL, "messages": [{"role": "user", "content": "lookup gpu"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"word\":\"gpu\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "graphics processing unit"}]}),
        ),
    ];
    let mut answered = Vec::new();
    for (responses_body, chat_body) in &pairs {
        for stream in [false, true] {
            let (mut a, mut b) = (responses_body.clone(), chat_body.clone());
            a["stream"] = json!(stream);
            b["stream"] = json!(stream);
            let ra = respond(&gw, &a);
            let rb = post(gw.addr, "/v1/chat/completions", &gw.auth(), &b);
            assert_eq!((ra.status, rb.status), (200, 200), "{} / {}", ra.text(), rb.text());
            answered.push((ra, rb));
        }
    }
    let records = gw.usage_records(&gw.account_id);
    assert_eq!(records.len(), answered.len() * 2);
    for (i, (ra, rb)) in answered.iter().enumerate() {
        let (a, b) = (record_of(&records, ra), record_of(&records, rb));
        assert_eq!(a, b, "pair {i}: the response is billed as the chat completion");
        assert_eq!(a.3, "completed");
        assert_eq!(a.4, false, "the node's own usage, not an estimate");
    }
    let whole = answered[0].0.json();
    let reasoning = &whole["output"][0];
    assert_eq!(reasoning["type"], "reasoning", "the node's reasoning_content: {whole}");
    assert!(reasoning["content"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{reasoning}");
    assert_eq!(whole["output"][1]["type"], "message");
    let streamed = events(&answered[1].0.text());
    assert!(streamed.iter().any(|e| e["type"] == "response.reasoning_text.delta"));
    let usage = &streamed.last().unwrap()["response"]["usage"];
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 3, "{usage}");
    assert_eq!(json!(usage["input_tokens"]), record_of(&records, &answered[1].0).0);
}

/// Sends a streamed response request on a raw connection, reads until `until` shows up, then hangs up.
fn hang_up_after(gw: &Gateway, body: &Value, until: &str) {
    drop(open_stream(gw.addr, &gw.auth(), "/v1/responses", &body.to_string(), |seen| seen.contains(until)));
}

#[test]
fn every_ending_of_a_response_releases_its_hold_and_is_billed_once() {
    let sim = Sim::start(&["--tokens-per-s", "50", "--completion-tokens", "20"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        upstream: "read_timeout_ms = 500\nmax_attempts = 1\n".into(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    let holds_released =
        || eventually(Duration::from_secs(15), || gw.metric("gateway_holds_outstanding") == 0.0);
    let body = |stream: bool| json!({"model": MODEL, "input": "a long answer, please", "stream": stream});

    // Completed, streamed and not.
    for stream in [false, true] {
        assert_eq!(respond(&gw, &body(stream)).status, 200);
        assert!(holds_released(), "completed, stream {stream}");
    }
    // The client hangs up mid-stream: the node's answer is drained and billed.
    hang_up_after(&gw, &body(true), "response.output_text.delta");
    assert!(holds_released(), "client gone");
    // The node breaks off mid-stream: the client's stream ends with response.failed.
    sim.set_faults(0, json!({"tokens_per_s": 50.0, "completion_tokens": 20, "drop_rate": 1.0}));
    let r = respond(&gw, &body(true));
    let last = events(&r.text()).pop().unwrap();
    assert_eq!(last["type"], "response.failed", "{last}");
    assert!(holds_released(), "node dropped");
    // The node stalls past the read timeout.
    sim.set_faults(0, json!({"tokens_per_s": 50.0, "completion_tokens": 20, "stall_rate": 1.0}));
    let r = respond(&gw, &body(true));
    assert_eq!(events(&r.text()).pop().unwrap()["type"], "response.failed");
    assert!(holds_released(), "node stalled");
    // The node refuses before answering: the client gets the error, in OpenAI's shape.
    sim.set_faults(0, json!({"error_rate": 1.0}));
    let r = respond(&gw, &body(false));
    assert!(r.status >= 500, "{}", r.text());
    assert!(r.json()["error"]["message"].is_string());
    assert!(holds_released(), "node error");

    let records = gw.usage_records(&gw.account_id);
    let statuses: Vec<&str> = records.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "completed").count(), 2, "{statuses:?}");
    for ending in ["client_gone", "upstream_failed", "timeout"] {
        assert!(statuses.contains(&ending), "{ending}: {statuses:?}");
    }
    assert_eq!(records.len(), 6, "one record each, the error before any answer included: {statuses:?}");
    let b = gw.api(&gw.account_token, "GET", "/api/balance", None).json();
    assert_eq!(b["held_ngonka"], "0");
}

#[test]
fn codex_shaped_requests_are_accepted_and_what_cannot_run_is_refused_by_name() {
    let sim = Sim::start(&["--completion-tokens", "4"]);
    let gw = Gateway::start(&sim.urls);
    // As Codex 0.171 sends it: developer messages first, ids on every item, its default tool kinds,
    // store false, encrypted reasoning asked for, fields the API added for it.
    let codex = json!({
        "model": MODEL, "stream": true, "store": false, "tool_choice": "auto", "parallel_tool_calls": true,
        "reasoning": {"effort": "medium", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-thread", "text": {"verbosity": "medium"},
        "client_metadata": {"session_id": "0199-thread", "turn_id": "t1"},
        "input": [
            {"type": "message", "id": "msg_1", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "id": "msg_2", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}, {"type": "input_text", "text": "</permissions>"}]},
            {"type": "message", "id": "msg_3", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]},
            {"type": "message", "id": "msg_4", "role": "user", "content": [{"type": "input_text", "text": "say hello"}]},
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a command.", "strict": false,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"], "additionalProperties": false}},
            {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.",
             "tools": [{"type": "function", "name": "close_agent", "parameters": {"type": "object", "properties": {}}}]},
            {"type": "web_search", "external_web_access": false},
        ],
    });
    let r = respond(&gw, &codex);
    assert_eq!(r.status, 200, "{}", r.text());
    let last = events(&r.text()).pop().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["tools"].as_array().unwrap().len(), 1, "dropped tools are not echoed");
    assert!(
        gw.proc.stderr().contains("dropped tools a node cannot run: namespace multi_agent_v1, web_search")
    );

    let mut custom = codex.clone();
    custom["tools"] = json!([{"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}}]);
    let r = respond(&gw, &custom);
    assert_eq!(r.status, 400);
    let e = &r.json()["error"];
    assert_eq!((e["type"].as_str(), e["param"].as_str()), (Some("invalid_request_error"), Some("tools[0]")));
    assert!(e["message"].as_str().unwrap().contains("`custom` (`apply_patch`)"), "{e}");

    let r = respond(&gw, &json!({"model": MODEL, "input": "hi", "previous_response_id": "resp_nope"}));
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("previous_response_not_found")));
    let r = respond(&gw, &json!({"model": "no/such-model", "input": "hi"}));
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("model_not_found")));
    let r = respond(
        &gw,
        &json!({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
    );
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("input[0].content[0]")));
    let r = http(gw.addr, "PUT", "/v1/responses", &[("Authorization", &gw.auth())], Some(b"{}"));
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = http(gw.addr, "GET", "/v1/responses/resp_1", &[("Authorization", "Bearer gk-prx-nope")], None);
    assert_eq!(r.status, 401);
    assert!(gw.usage_records(&gw.account_id).len() == 1, "refusals are not billed");
}

#[test]
fn a_continued_conversation_is_held_to_the_body_limit() {
    let sim = Sim::start(&["--completion-tokens", "3"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        server: "max_body_bytes = 16384\n".into(),
        ..GatewayOpts::default()
    });
    let words = "gonka ".repeat(1000);
    let mut previous = Value::Null;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = respond(&gw, &json!({"model": MODEL, "input": words, "previous_response_id": previous}));
        statuses.push(r.status);
        if r.status != 200 {
            assert_eq!(r.json()["error"]["code"], "request_too_large", "{}", r.text());
            break;
        }
        previous = r.json()["id"].clone();
    }
    assert_eq!(statuses, [200, 200, 413], "each request is small; the third conversation is not");
}

#[test]
fn the_control_plane_sweeps_expired_responses_from_the_store() {
    use gonka_gateway::model::StoredResponse;
    use gonka_gateway::time::{Clock, DAY_MS, ManualClock, SystemClock};
    use std::sync::Arc;
    let sim = Sim::start(&[]);
    let now = SystemClock.now_ms();
    let kept = |id: &str, expires_ms: i64| StoredResponse {
        id: id.into(),
        account_id: "acc_elsewhere".into(),
        key_id: "key_elsewhere".into(),
        created_ms: now - 31 * DAY_MS,
        expires_ms,
        response: "{}".into(),
        input_items: "[]".into(),
    };
    // Two responses in the store before the gateway starts: one expired, one not.
    let gw = InProc::start(
        GatewayOpts { node_urls: sim.urls.clone(), ..GatewayOpts::default() },
        |mut store| {
            store.put_response(&kept("resp_expired", now - 1)).unwrap();
            store.put_response(&kept("resp_live", now + DAY_MS)).unwrap();
            store
        },
        Arc::new(ManualClock::new(now)) as Arc<dyn Clock>,
    );
    let db = rusqlite::Connection::open(gw.dir.path().join("data/gateway.db")).unwrap();
    let ids = || -> Vec<String> {
        let mut stmt = db.prepare("SELECT id FROM responses ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert!(eventually(Duration::from_secs(10), || ids() == ["resp_live"]), "{:?}", ids());
}
