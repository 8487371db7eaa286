//! OpenAI's dialects that Gonka nodes do not speak themselves. Nodes serve chat completions, completions
//! and embeddings, which pass through untouched; the Responses API ([`responses`]) is translated to chat
//! completions and back at the dialect seam ([`crate::translate`]), so it is authenticated, limited,
//! held, forwarded, relayed and billed exactly as chat completions are.

pub mod responses;
