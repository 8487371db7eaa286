//! JSON parsed on a core without an allocation per request: simd-json parses in place, so it parses a
//! copy, into a per-core [`JsonScratch`] whose buffers and tape are reused.

/// Reusable parse state: the copy simd-json parses in place, its buffers and tape. One per core.
#[derive(Default)]
pub struct JsonScratch {
    copy: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
}

impl JsonScratch {
    /// Frees the parse state when it grew past `keep` bytes (after a large body), so a core does not keep
    /// three copies of the largest body it ever parsed.
    pub fn shrink(&mut self, keep: usize) {
        if self.copy.capacity() > keep {
            *self = Self::default();
        }
    }
}

impl std::fmt::Debug for JsonScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonScratch").field("copy_capacity", &self.copy.capacity()).finish()
    }
}

impl JsonScratch {
    /// Parses a copy of `doc` and hands its root value to `f`.
    pub fn parse<T>(
        &mut self,
        doc: &[u8],
        f: impl FnOnce(simd_json::tape::Value<'_, '_>) -> T,
    ) -> Result<T, simd_json::Error> {
        self.copy.clear();
        self.copy.extend_from_slice(doc);
        let mut tape = self.tape.take().unwrap_or_else(simd_json::Tape::null).reset();
        let result =
            simd_json::fill_tape(&mut self.copy, &mut self.buffers, &mut tape).map(|()| f(tape.as_value()));
        self.tape = Some(tape.reset());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_frees_a_scratch_grown_by_a_large_body() {
        let mut scratch = JsonScratch::default();
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(4 << 20));
        let model = |s: &mut JsonScratch| {
            s.parse(body.as_bytes(), |v| {
                use simd_json::prelude::*;
                v.as_object().and_then(|o| o.get("model")).and_then(|m| m.as_str().map(str::to_owned))
            })
            .unwrap()
        };
        assert_eq!(model(&mut scratch).as_deref(), Some("m"));
        scratch.shrink(8 << 20);
        assert!(scratch.copy.capacity() >= 4 << 20, "kept while within the bound");
        scratch.shrink(1 << 20);
        assert_eq!(scratch.copy.capacity(), 0);
        assert_eq!(model(&mut scratch).as_deref(), Some("m"), "and it works again");
    }
}
