//! Compressed request bodies (`Content-Encoding: zstd | gzip | deflate`) on the inference routes: decoded
//! before anything reads them, held to `server.max_body_bytes` after decoding, refused when the coding is
//! unknown (415) or the bytes do not decode (400).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::io::Write;
use utils::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// POSTs `body` encoded as `coding` with the gateway's key.
fn post_encoded(gw: &Gateway, path: &str, coding: &str, body: &[u8]) -> Resp {
    post_to(gw.addr, &gw.auth(), path, coding, body)
}

fn post_to(addr: std::net::SocketAddr, auth: &str, path: &str, coding: &str, body: &[u8]) -> Resp {
    http(addr, "POST", path, &[("Authorization", auth), ("Content-Encoding", coding)], Some(body))
}

/// The peak resident memory of a process, bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn zstd_gzip_and_deflate_chat_completions_are_decoded_and_answered_as_sent_plain() {
    let sim = Sim::start(&["--completion-tokens", "6"]);
    let gw = Gateway::start(&sim.urls);
    let body = chat_body("compressed, then decompressed by the gateway", 50, false).to_string();
    let plain = post(gw.addr, "/v1/chat/completions", &gw.auth(), &serde_json::from_str(&body).unwrap());
    assert_eq!(plain.status, 200, "{}", plain.text());
    let expected = plain.json()["choices"][0]["message"]["content"].clone();
    for (coding, encoded) in [
        ("zstd", zstd(body.as_bytes())),
        ("gzip", gzip(body.as_bytes())),
        ("deflate", zlib(body.as_bytes())),
        ("identity", body.clone().into_bytes()),
    ] {
        let r = post_encoded(&gw, "/v1/chat/completions", coding, &encoded);
        assert_eq!(r.status, 200, "{coding}: {}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"], expected, "{coding}");
    }
    // A streamed one too: the decoded body is what is inspected (stream, usage) and forwarded.
    let stream = chat_body("a compressed stream", 50, true).to_string();
    let r = post_encoded(&gw, "/v1/chat/completions", "zstd", &zstd(stream.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sse_text(&r.text()).split_whitespace().count(), 6, "{}", r.text());
    let records = gw.usage_records(&gw.account_id);
    assert_eq!(records.len(), 6, "every compressed request was billed: {records:?}");
    assert!(records.iter().all(|r| r["status"] == "completed" && r["prompt_tokens"].as_u64() > Some(0)));
}

#[test]
fn zstd_and_gzip_responses_requests_are_decoded_and_answered() {
    let sim = Sim::start(&["--completion-tokens", "5"]);
    let gw = Gateway::start(&sim.urls);
    let body =
        json!({"model": MODEL, "instructions": "Be brief.", "input": "compressed like Codex sends it"});
    let plain = post(gw.addr, "/v1/responses", &gw.auth(), &body);
    assert_eq!(plain.status, 200, "{}", plain.text());
    let text = |v: &Value| v["output"][0]["content"][0]["text"].clone();
    let expected = text(&plain.json());
    let bytes = body.to_string();
    for (coding, encoded) in [("zstd", zstd(bytes.as_bytes())), ("gzip", gzip(bytes.as_bytes()))] {
        let r = post_encoded(&gw, "/v1/responses", coding, &encoded);
        assert_eq!(r.status, 200, "{coding}: {}", r.text());
        assert_eq!(text(&r.json()), expected, "{coding}");
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post_encoded(&gw, "/v1/responses", "zstd", &zstd(streamed.to_string().as_bytes()));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("event: response.completed"), "{}", r.text());
    let r = post_encoded(&gw, "/v1/responses", "br", bytes.as_bytes());
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (415, Some("unsupported_encoding")));
}

#[test]
fn an_unknown_or_stacked_encoding_is_415_and_a_corrupt_body_is_400() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let body = chat_body("x", 5, false).to_string();
    for coding in ["br", "compress", "gzip, zstd"] {
        let r = post_encoded(&gw, "/v1/chat/completions", coding, body.as_bytes());
        assert_eq!(r.status, 415, "{coding}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["code"], "unsupported_encoding", "{e}");
        assert!(e["message"].as_str().unwrap().contains(coding.split(',').next().unwrap()), "{e}");
    }
    for coding in ["zstd", "gzip", "deflate"] {
        let r = post_encoded(&gw, "/v1/chat/completions", coding, body.as_bytes());
        assert_eq!(r.status, 400, "{coding}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{e}");
        assert!(e["message"].as_str().unwrap().contains(coding), "{e}");
    }
    let mut cut = gzip(body.as_bytes());
    cut.truncate(cut.len() - 4);
    assert_eq!(post_encoded(&gw, "/v1/chat/completions", "gzip", &cut).status, 400, "a truncated body");
    assert!(gw.usage_records(&gw.account_id).is_empty(), "nothing refused was billed");
    // The connection stays usable after a refusal of a body that was read whole.
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("after", 5, false));
    assert_eq!(r.status, 200);
}

#[test]
fn a_small_body_that_inflates_past_the_cap_is_413_without_a_memory_spike() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        server: "max_body_bytes = 262144\n".into(),
        ..GatewayOpts::default()
    });
    // A valid request whose `messages` text is megabytes of spaces.
    let huge = |n: usize| {
        let mut b = br#"{"model":"gonka/sim-small","messages":[{"role":"user","content":""#.to_vec();
        b.extend(std::iter::repeat_n(b' ', n));
        b.extend_from_slice(br#""}]}"#);
        b
    };
    // Inflated whole, either would take the gateway's memory up by more than the bound below.
    let zstd_bomb = zstd(&huge(24 << 20));
    let gzip_bomb = gzip(&huge(1 << 20));
    assert!(zstd_bomb.len() <= 1024 && gzip_bomb.len() <= 1200, "{} {}", zstd_bomb.len(), gzip_bomb.len());
    let before = peak_rss(gw.proc.child.id());
    let (addr, auth) = (gw.addr, gw.auth());
    std::thread::scope(|s| {
        for i in 0..8 {
            let (auth, zstd_bomb, gzip_bomb) = (&auth, &zstd_bomb, &gzip_bomb);
            s.spawn(move || {
                let (coding, bomb) = if i % 2 == 0 { ("zstd", zstd_bomb) } else { ("gzip", gzip_bomb) };
                let r = post_to(addr, auth, "/v1/chat/completions", coding, bomb);
                assert_eq!(r.status, 413, "{coding}: {}", r.text());
                assert_eq!(r.json()["error"]["code"], "request_too_large");
            });
        }
    });
    let grew = peak_rss(gw.proc.child.id()).saturating_sub(before);
    assert!(grew < 12 << 20, "the gateway's peak memory grew by {} MiB", grew >> 20);
    // Under the cap it is served.
    let fits = zstd(&huge(200_000));
    let r = post_encoded(&gw, "/v1/chat/completions", "zstd", &fits);
    assert_eq!(r.status, 200, "{}", r.text());
    let _: Value = r.json();
    assert_eq!(gw.usage_records(&gw.account_id).len(), 1, "{:?}", json!(gw.usage_records(&gw.account_id)));
}
