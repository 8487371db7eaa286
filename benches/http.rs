//! Parsers on the hot path, each on realistic input:
//! - `parse_head`: a typical OpenAI SDK request head (10 headers).
//! - `chunked_decode`: decoding a 4 KiB chunked body in place.
//! - `sse_scan`: event boundaries and classification of one streamed chunk (the per-token cost of the
//!   relay), and of the final usage chunk.
//! - `usage_scan`: the streaming top-level `usage` finder over a 2 KiB non-stream completion body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmarks fail loudly")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gonka_gateway::billing::UsageScanner;
use gonka_gateway::http::chunked::{ChunkedDecoder, LAST_CHUNK, encode_chunk};
use gonka_gateway::http::request::{HttpLimits, parse_head};
use gonka_gateway::http::sse;
use std::hint::black_box;

const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python 1.54.0\r\n\
X-Stainless-Lang: python\r\nX-Stainless-Retry-Count: 0\r\nAuthorization: Bearer gk-prx-0123456789abcdefghijABCDEFGHIJ0123456789\r\n\
Content-Length: 142\r\n\r\n";

const CONTENT_EVENT: &[u8] = br#"data: {"id":"chatcmpl-0000000000000001","object":"chat.completion.chunk","created":1763800000,"model":"moonshotai/Kimi-K2.6","choices":[{"index":0,"delta":{"content":" tokens"},"finish_reason":null}],"usage":null}

"#;
const USAGE_EVENT: &[u8] = br#"data: {"id":"chatcmpl-0000000000000001","object":"chat.completion.chunk","created":1763800000,"model":"moonshotai/Kimi-K2.6","choices":[],"usage":{"prompt_tokens":31,"completion_tokens":16,"total_tokens":47}}

"#;

fn bench(c: &mut Criterion) {
    let limits = HttpLimits::default();
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Bytes(HEAD.len() as u64));
    g.bench_function("parse_head", |b| b.iter(|| parse_head(black_box(HEAD), &limits)));

    let mut wire = Vec::new();
    for piece in vec![b'x'; 4096].chunks(512) {
        encode_chunk(&mut wire, piece);
    }
    wire.extend_from_slice(LAST_CHUNK);
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("chunked_decode_4k", |b| {
        let mut buf = wire.clone();
        b.iter(|| {
            buf.copy_from_slice(&wire);
            let mut d = ChunkedDecoder::new();
            black_box(d.decode_in_place(&mut buf))
        })
    });

    g.throughput(Throughput::Bytes(CONTENT_EVENT.len() as u64));
    g.bench_function("sse_scan_content_event", |b| {
        b.iter(|| {
            let end = sse::event_end(black_box(CONTENT_EVENT));
            black_box(end.map(|e| gonka_gateway::billing::stream::classify(&CONTENT_EVENT[..e])))
        })
    });
    g.throughput(Throughput::Bytes(USAGE_EVENT.len() as u64));
    g.bench_function("sse_scan_usage_event", |b| {
        b.iter(|| {
            let end = sse::event_end(black_box(USAGE_EVENT));
            black_box(end.map(|e| gonka_gateway::billing::stream::classify(&USAGE_EVENT[..e])))
        })
    });

    let text = "lorem ipsum dolor sit amet ".repeat(64);
    let body = format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":31,"completion_tokens":400,"total_tokens":431}}}}"#
    );
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("usage_scan_2k_body", |b| {
        b.iter(|| {
            let mut s = UsageScanner::new();
            s.feed(black_box(body.as_bytes()));
            black_box(s.usage())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
