//! Signed inference paid from the simulated chain ([`super::chain`]): before the answer, the requester's
//! worst case is escrowed from its balance; as the answer is generated, a meter counts its tokens; when
//! the request ends (the answer sent, the client gone, or a fault), [`Bill`]'s drop charges what was
//! generated and refunds the rest.
//!
//! # Design
//! The escrow is `(prompt estimate + max_tokens) × price`, the prompt estimate being the simulator's own
//! prompt count (characters / 4, plus 4 per chat message) and `max_tokens` (5000 when the request does not
//! set it) counted for every choice generated (`n`, `best_of`, each prompt of a list). So the usage the
//! answer reports never exceeds the escrow and the requester's balance drops by exactly usage × price
//! (only a node set to overrun `max_tokens` generates more, and then the escrow is all it can charge, as
//! on the network). The signature was already checked against the requester's address, which is the
//! hash of its public key on chain: checking it against that key again would prove nothing more.

use super::chain::{Chain, Escrow, Refusal};
use super::prompt::{completion_prompts, embedding_inputs, prompt_of};
use super::text;
use serde_json::Value;
use std::cell::Cell;

/// The default `max_tokens` a node escrows for when the request does not set one.
const DEFAULT_MAX_TOKENS: u64 = 5000;

/// The tokens escrowed for `req` on `path`.
pub fn worst_case_tokens(req: &Value, path: &str) -> u64 {
    let get = |k: &str| req.get(k).and_then(Value::as_u64);
    match path {
        "/v1/embeddings" => {
            embedding_inputs(req).unwrap_or_default().iter().map(|s| text::prompt_tokens(s.len(), 0)).sum()
        }
        "/v1/chat/completions" => {
            let (prompt, messages) = prompt_of(req, true);
            let max =
                get("max_completion_tokens").or_else(|| get("max_tokens")).unwrap_or(DEFAULT_MAX_TOKENS);
            let n = get("n").unwrap_or(1).clamp(1, 128);
            text::prompt_tokens(prompt.len(), messages).saturating_add(max.saturating_mul(n))
        }
        _ => {
            let prompts = completion_prompts(req);
            let n = get("n").unwrap_or(1).clamp(1, 128);
            let generated = get("best_of").map_or(n, |b| b.max(n));
            let max = get("max_tokens").unwrap_or(DEFAULT_MAX_TOKENS);
            let prompt: u64 = prompts.iter().map(|p| text::prompt_tokens(p.len(), 0)).sum();
            prompt.saturating_add(max.saturating_mul(generated).saturating_mul(prompts.len() as u64))
        }
    }
}

/// An escrow in progress: dropped, it charges `meter`'s tokens to the node and refunds the rest.
pub struct Bill<'a> {
    chain: &'a Chain,
    escrow: Escrow,
    node: &'a str,
    meter: &'a Cell<u64>,
}

impl Drop for Bill<'_> {
    fn drop(&mut self) {
        self.chain.settle(&self.escrow, self.meter.get(), self.node);
    }
}

/// Opens the bill of a signed request by `requester` to `node` (its address); `Ok(None)` when the chain
/// does not govern the requester (it has no account there).
pub fn open<'a>(
    chain: &'a Chain,
    node: &'a str,
    requester: &str,
    req: &Value,
    path: &str,
    meter: &'a Cell<u64>,
) -> Result<Option<Bill<'a>>, Refusal> {
    let escrow = chain.escrow(requester, worst_case_tokens(req, path))?;
    Ok(escrow.map(|escrow| Bill { chain, escrow, node, meter }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_worst_case_covers_every_choice_and_the_default_max() {
        let chat = json!({"messages": [{"role": "user", "content": "12345678"}], "max_tokens": 10});
        assert_eq!(worst_case_tokens(&chat, "/v1/chat/completions"), (9usize.div_ceil(4) + 4) as u64 + 10);
        let chat_n = json!({"messages": [{"role": "user", "content": "12345678"}], "max_tokens": 10, "n": 3});
        assert_eq!(worst_case_tokens(&chat_n, "/v1/chat/completions"), 7 + 30);
        let unset = json!({"messages": []});
        assert_eq!(worst_case_tokens(&unset, "/v1/chat/completions"), 1 + 5000);
        let list = json!({"prompt": ["abcd", "efgh"], "max_tokens": 5, "best_of": 2});
        assert_eq!(worst_case_tokens(&list, "/v1/completions"), 2 + 5 * 2 * 2);
        assert_eq!(worst_case_tokens(&json!({"input": ["abcd", "ef"]}), "/v1/embeddings"), 1 + 1);
    }
}
