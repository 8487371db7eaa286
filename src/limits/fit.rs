//! Fitting a request to its budgets: when its worst case does not fit what is left of its child key's
//! limits or its account's balance, it is sent with a lower `max_tokens` (the most that fits) instead of
//! being refused, so a small budget still gets (shorter) answers.

/// What a request asks of its budgets: its prompt's worst case, the price of one more completion token
/// in every choice, and the completion tokens it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// The prompt's worst-case cost, ngonka.
    pub prompt_ngonka: u64,
    /// One completion token in every choice the node generates (`choices × completion price`), ngonka.
    pub per_token_ngonka: u64,
    /// The completion tokens per choice asked for (explicit or the default).
    pub max_tokens: u64,
    /// `Some(min)` when the request may be sent with fewer tokens, at least `min`.
    pub fit_floor: Option<u64>,
}

impl Quote {
    /// The worst case with `max_tokens` completion tokens per choice (saturating).
    pub fn cost(&self, max_tokens: u64) -> u64 {
        self.prompt_ngonka.saturating_add(self.per_token_ngonka.saturating_mul(max_tokens))
    }

    /// The completion tokens per choice asked for when fitting goes as low as it may.
    pub fn least_tokens(&self) -> u64 {
        self.fit_floor.map_or(self.max_tokens, |f| f.min(self.max_tokens))
    }

    /// The most completion tokens per choice that `room` ngonka pays for, within what was asked;
    /// `None` when not even the floor fits.
    pub fn fit(&self, room: u64) -> Option<u64> {
        if room < self.cost(self.least_tokens()) {
            return None;
        }
        if self.per_token_ngonka == 0 {
            return Some(self.max_tokens);
        }
        let tokens = (room - self.prompt_ngonka) / self.per_token_ngonka;
        Some(tokens.min(self.max_tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_the_most_tokens_the_room_pays_for() {
        let q = Quote { prompt_ngonka: 1_000, per_token_ngonka: 20, max_tokens: 4096, fit_floor: Some(256) };
        assert_eq!(q.cost(4096), 1_000 + 20 * 4096);
        assert_eq!(q.fit(u64::MAX), Some(4096), "never more than asked");
        assert_eq!(q.fit(1_000 + 20 * 300 + 19), Some(300));
        assert_eq!(q.fit(1_000 + 20 * 256), Some(256));
        assert_eq!(q.fit(1_000 + 20 * 256 - 1), None, "below the floor");
        let explicit = Quote { fit_floor: None, ..q };
        assert_eq!(explicit.fit(1_000 + 20 * 4095), None);
        let small = Quote { max_tokens: 10, ..q };
        assert_eq!(small.least_tokens(), 10, "the floor never raises what was asked");
        let free = Quote { per_token_ngonka: 0, ..q };
        assert_eq!(free.fit(1_000), Some(4096));
    }
}
