//! SSE scanning and usage extraction: event boundaries and classification of whatever bytes a node sends,
//! and the streaming usage scanner, which must find the same usage whether the body comes whole or in
//! pieces.
#![no_main]

use gonka_gateway::billing::UsageScanner;
use gonka_gateway::billing::stream::classify;
use gonka_gateway::http::sse::event_end;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Some(len) = event_end(&data[at..]) {
        assert!(len > 0 && at + len <= data.len());
        let _ = classify(&data[at..at + len]);
        at += len;
    }
    let _ = classify(&data[at..]);

    let mut whole = UsageScanner::new();
    whole.feed(data);
    let mut split = UsageScanner::new();
    let step = data.first().map_or(1, |b| usize::from(b % 13) + 1);
    for piece in data.chunks(step) {
        split.feed(piece);
    }
    assert_eq!(whole.usage(), split.usage());
});
