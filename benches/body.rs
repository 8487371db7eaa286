//! JSON body inspection and rewrite, the per-request cost of reading what a client sent:
//! - `inspect_small`: a one-message chat body (about 150 bytes), the common SDK call.
//! - `inspect_8k`: a chat body with a 20-turn history (about 8 KiB): the parse scales with the body.
//! - `inspect_64k`: a coding agent's request, a 64 KiB file of code pasted into one message (quotes and
//!   newlines escaped, as JSON encodes them): the size at which the inspection's cost per byte shows.
//! - `rewrite_append`: the usual rewrite of a streamed body without `stream_options`: the members are
//!   appended before the closing brace, no re-serialisation.
//! - `rewrite_stream_options`: a streamed body that carries `stream_options` with `include_usage: false`:
//!   the member's value is replaced where it is.
//! - `inspect_and_rewrite_small`: the whole per-request path on the small body.
//! - `simd_json_64k`: the reference for `inspect_64k`: what inspection did before, a copy of the body
//!   parsed into a simd-json tape (buffers reused), so the two compare in one run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmarks fail loudly")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gonka_gateway::api::inference::inspect::{Endpoint, Rewrite, inspect, rewrite};
use std::hint::black_box;

const SMALL: &[u8] = br#"{"model":"moonshotai/Kimi-K2.6","messages":[{"role":"user","content":"Say something short about the sea."}],"stream":true,"temperature":0.7}"#;
const WITH_OPTIONS: &[u8] = br#"{"model":"moonshotai/Kimi-K2.6","messages":[{"role":"user","content":"Say something short about the sea."}],"stream":true,"stream_options":{"include_usage":false},"max_tokens":64}"#;

fn history() -> Vec<u8> {
    let mut messages = Vec::new();
    for i in 0..20 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let content = format!("Turn {i}: {}", "a sentence of ordinary conversation text, ".repeat(9));
        messages.push(serde_json::json!({"role": role, "content": content}));
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "moonshotai/Kimi-K2.6", "messages": messages, "stream": true, "max_tokens": 512,
        "temperature": 0.2, "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    }))
    .unwrap()
}

/// One user message of 64 KiB of code, like the load harness's `prompt_64k`.
fn pasted_file() -> Vec<u8> {
    let line = "fn main() { println!(\"hello\"); } // a line of code pasted into the prompt\n";
    let text: String = line.repeat(65536 / line.len() + 1).chars().take(65536).collect();
    serde_json::to_vec(&serde_json::json!({
        "model": "moonshotai/Kimi-K2.6", "messages": [{"role": "user", "content": text}], "max_tokens": 16
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut out = Vec::new();
    let mut g = c.benchmark_group("body");

    g.throughput(Throughput::Bytes(SMALL.len() as u64));
    g.bench_function("inspect_small", |b| {
        b.iter(|| inspect(Endpoint::ChatCompletions, black_box(SMALL)).unwrap())
    });

    let big = history();
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("inspect_8k", |b| {
        b.iter(|| inspect(Endpoint::ChatCompletions, black_box(&big)).unwrap())
    });

    let file = pasted_file();
    g.throughput(Throughput::Bytes(file.len() as u64));
    g.bench_function("inspect_64k", |b| {
        b.iter(|| inspect(Endpoint::ChatCompletions, black_box(&file)).unwrap())
    });

    let (mut copy, mut buffers) = (Vec::new(), simd_json::Buffers::default());
    let mut tape = Some(simd_json::Tape::null());
    g.bench_function("simd_json_64k", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(&file));
            let mut t = tape.take().unwrap().reset();
            simd_json::fill_tape(&mut copy, &mut buffers, &mut t).unwrap();
            tape = Some(t.reset());
        })
    });

    let small = inspect(Endpoint::ChatCompletions, SMALL).unwrap();
    let rw = Rewrite { force_include_usage: true, max_tokens: Some(4096), model: None };
    g.throughput(Throughput::Bytes(SMALL.len() as u64));
    g.bench_function("rewrite_append", |b| {
        b.iter(|| rewrite(black_box(SMALL), &small, rw, &mut out).unwrap())
    });

    let opts = inspect(Endpoint::ChatCompletions, WITH_OPTIONS).unwrap();
    assert!(opts.places.stream_options.is_some() && !opts.include_usage);
    let rw_opts = Rewrite { force_include_usage: true, max_tokens: None, model: None };
    g.throughput(Throughput::Bytes(WITH_OPTIONS.len() as u64));
    g.bench_function("rewrite_stream_options", |b| {
        b.iter(|| rewrite(black_box(WITH_OPTIONS), &opts, rw_opts, &mut out).unwrap())
    });

    g.throughput(Throughput::Bytes(SMALL.len() as u64));
    g.bench_function("inspect_and_rewrite_small", |b| {
        b.iter(|| {
            let i = inspect(Endpoint::ChatCompletions, black_box(SMALL)).unwrap();
            rewrite(SMALL, &i, rw, &mut out).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
