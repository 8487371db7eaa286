//! The simulator's deterministic text: the same prompt always yields the same tokens, so a test can
//! compare what a client received through the gateway with what the simulator produced.

/// One token per word; the first without a leading space.
const WORDS: [&str; 64] = [
    "the", "gonka", "network", "serves", "tokens", "from", "many", "nodes", "each", "with", "its", "own",
    "gpu", "and", "a", "ledger", "of", "work", "done", "for", "every", "request", "that", "arrives", "at",
    "gateway", "which", "checks", "keys", "limits", "then", "streams", "answer", "back", "as", "it", "is",
    "produced", "while", "billing", "owner", "in", "ngonka", "so", "nothing", "lost", "when", "client",
    "leaves", "early", "or", "node", "fails", "mid", "stream", "because", "usage", "settles", "hold",
    "exactly", "once", "per", "record", "today",
];

/// FNV-1a, the seed of a prompt.
pub fn seed(prompt: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in prompt {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

/// The `n` tokens generated for `prompt`.
pub fn tokens(prompt: &[u8], n: usize) -> Vec<String> {
    let mut x = seed(prompt);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = WORDS[(x % WORDS.len() as u64) as usize];
            if i == 0 { w.to_owned() } else { format!(" {w}") }
        })
        .collect()
}

/// The whole completion for `prompt`.
pub fn completion(prompt: &[u8], n: usize) -> String {
    tokens(prompt, n).concat()
}

/// Prompt tokens as the simulator counts them: a quarter of the text's bytes, plus 4 per message.
/// Always at most the request body's length in bytes.
pub fn prompt_tokens(prompt_bytes: usize, messages: usize) -> u64 {
    (prompt_bytes.div_ceil(4) + 4 * messages).max(1) as u64
}

/// A deterministic unit-ish embedding of `text`.
pub fn embedding(text: &[u8], dims: usize) -> Vec<f32> {
    let mut x = seed(text);
    (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % 20_001) as f32 / 10_000.0) - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_prompt_dependent() {
        assert_eq!(completion(b"hello", 8), completion(b"hello", 8));
        assert_ne!(completion(b"hello", 8), completion(b"hellp", 8));
        assert!(completion(b"hello", 8).starts_with(&tokens(b"hello", 3).concat()));
        assert_eq!(tokens(b"x", 5).len(), 5);
        assert!(!tokens(b"x", 1)[0].starts_with(' '));
    }
}
