//! Chunked decoding, differentially: decoding the input in one go and in pieces (split where the first
//! byte says) must give the same payload, the same verdict and the same end.
#![no_main]

use gonka_gateway::http::chunked::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ()> {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut consumed_total = 0;
    for piece in input.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        let r = d.decode_in_place(&mut pending).map_err(|_| ())?;
        assert!(r.payload_len <= r.consumed && r.consumed <= pending.len());
        out.extend_from_slice(&pending[..r.payload_len]);
        pending.drain(..r.consumed);
        consumed_total += r.consumed;
        if r.done {
            return Ok((out, consumed_total, true));
        }
    }
    Ok((out, consumed_total, false))
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else { return };
    let whole = decode(input, input.len().max(1));
    let pieces = decode(input, usize::from(step % 17) + 1);
    match (whole, pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        // An error may surface earlier or later, but never one way only when the message completed.
        (Ok((_, _, true)), Err(())) | (Err(()), Ok((_, _, true))) => panic!("verdicts differ on a complete message"),
        _ => {}
    }
});
