//! The admin listener's own routes. Every route needs `Authorization: Bearer <admin token>`.

use crate::app::App;
use crate::error::ApiError;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Checks the admin bearer token in constant time.
pub fn check_token(app: &App, authorization: Option<&str>) -> Result<(), ApiError> {
    let given = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if !given.is_empty() && constant_time_eq(given.as_bytes(), app.admin_token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::InvalidApiKey)
    }
}

/// Equal-length comparison that does not stop at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /metrics`.
pub fn metrics(app: &App) -> String {
    let mut extra = String::new();
    extra.push_str("# HELP gateway_node_up 1 when the node is not ejected.\n# TYPE gateway_node_up gauge\n");
    let nodes = app.nodes.nodes();
    let now = crate::clock::monotonic_ms();
    for n in nodes.iter() {
        let _ = writeln!(
            extra,
            "gateway_node_up{{node=\"{}\"}} {}",
            crate::metrics::escape(&n.url.to_string()),
            u8::from(!n.is_ejected(now))
        );
    }
    extra.push_str("# HELP gateway_node_outstanding Requests in flight per node.\n# TYPE gateway_node_outstanding gauge\n");
    for n in nodes.iter() {
        let _ = writeln!(
            extra,
            "gateway_node_outstanding{{node=\"{}\"}} {}",
            crate::metrics::escape(&n.url.to_string()),
            n.outstanding()
        );
    }
    extra.push_str("# HELP gateway_node_failures_total Failed attempts per node.\n# TYPE gateway_node_failures_total counter\n");
    for n in nodes.iter() {
        let _ = writeln!(
            extra,
            "gateway_node_failures_total{{node=\"{}\"}} {}",
            crate::metrics::escape(&n.url.to_string()),
            n.failures_total.load(Ordering::Relaxed)
        );
    }
    app.metrics.render(&extra)
}
