//! A request as it arrives on a connection: the head (httparse plus the framing rules), then a chunked
//! body when the head says so. Checks: no panic; a parsed head lies within the input; a chunked body
//! never yields more payload than the bytes it consumed.
#![no_main]

use gonka_gateway::http::body::Framing;
use gonka_gateway::http::chunked::ChunkedDecoder;
use gonka_gateway::http::request::{HttpLimits, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = HttpLimits { max_head_bytes: 4096, max_headers: 32, max_body_bytes: 1 << 20 };
    let Ok(head) = parse_head(data, &limits) else { return };
    assert!(head.head_len <= data.len());
    assert!(head.head_len <= limits.max_head_bytes);
    match head.framing {
        Framing::Chunked => {
            let mut rest = data[head.head_len..].to_vec();
            if let Ok(d) = ChunkedDecoder::new().decode_in_place(&mut rest) {
                assert!(d.payload_len <= d.consumed && d.consumed <= data.len() - head.head_len);
            }
        }
        Framing::Length(n) => assert!(n as usize <= limits.max_body_bytes),
        Framing::Empty => {}
        Framing::UntilClose => panic!("a request body is never delimited by the connection closing"),
    }
});
