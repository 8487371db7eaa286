//! A node's response head: whatever a node sends must parse or be refused, never panic, and a parsed
//! head lies within the input.
#![no_main]

use gonka_gateway::http::response::parse_response_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = parse_response_head(data) {
        assert!(head.head_len <= data.len());
    }
});
