//! Inference bodies: inspection of anything a client sends, and the rewrite the gateway forwards. Checks:
//! a body that passes inspection is JSON to serde_json too, and rewrites to valid JSON that passes again,
//! with usage asked for, the node bounded by the limit asked for, and the same model and stream flag.
#![no_main]

use gonka_gateway::api::inference::inspect::{Endpoint, Rewrite, inspect, rewrite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let json = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    for endpoint in [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings] {
        let Ok(first) = inspect(endpoint, data) else { continue };
        assert!(json, "inspection accepted what serde_json refuses");
        let limit = (endpoint != Endpoint::Embeddings).then(|| first.client_max_tokens(endpoint).unwrap_or(77).min(77));
        let rw = Rewrite::for_body(endpoint, &first, limit, &first.model);
        let mut out = Vec::new();
        if rewrite(data, &first, rw, &mut out).is_err() {
            continue;
        }
        let forwarded = if rw.is_noop() { data } else { &out[..] };
        assert!(serde_json::from_slice::<serde_json::Value>(forwarded).is_ok(), "rewrite produced invalid JSON");
        let second = inspect(endpoint, forwarded).expect("the rewrite inspects again");
        assert_eq!(second.model, first.model);
        assert_eq!(second.stream, first.stream);
        if let Some(limit) = limit {
            assert!(second.bounded_by(endpoint, limit), "the node is held to the limit");
        }
        if first.stream {
            assert!(second.include_usage);
        }
    }
});
