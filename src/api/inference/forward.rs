//! Forwarding: nodes are tried, least busy first, until one answers, as long as nothing has reached the
//! client. Each attempt's failure says what may be tried next ([`Retry`]); this is the one place that
//! acts on it (a node's health, the attempts left, the error the client gets if no node helps).

use crate::app::App;
use crate::config::NodeKind;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::model::ModelSpec;
use crate::session::Core;
use crate::upstream::attempt::{self, Answer, AttemptError, AttemptParams, Retry};
use crate::upstream::client::write_request_head;
use crate::upstream::pool::InFlight;
use crate::upstream::watch::ClientSide;
use crate::upstream::{Node, NodeId, Pick};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Bodies up to this size are copied behind the request head and sent in one write; larger ones are
/// sent from where they are.
const MERGE_BODY_MAX: usize = 16 * 1024;

/// What the node is sent.
#[derive(Debug)]
pub struct NodeRequest<'a> {
    /// The path under a node's base URL (`/chat/completions`).
    pub path: &'static str,
    pub body: &'a bytes::Bytes,
    /// The client wants a stream (the node is asked for `text/event-stream`).
    pub stream: bool,
    pub request_id: &'a str,
}

/// A node answered (2xx).
#[derive(Debug)]
pub struct Answered {
    pub node: Arc<Node>,
    pub answer: Answer,
    /// Counts the request against the node while it is relayed.
    pub in_flight: InFlight,
    pub started: std::time::Instant,
}

/// How forwarding ended when no node answered.
#[derive(Debug)]
pub enum NotAnswered {
    /// The client left before any answer came (within the drain bound).
    ClientGone,
    /// No node could serve: the error the client gets.
    Failed(ApiError),
}

/// The nodes tried for one request, and what is left of its attempts.
#[derive(Debug)]
pub struct Tries<'a> {
    app: &'a App,
    core: &'a Core,
    model: &'a ModelSpec,
    tried: Vec<NodeId>,
    attempts: u32,
    fresh_only: bool,
    last_error: Option<ApiError>,
}

impl<'a> Tries<'a> {
    pub fn new(core: &'a Core, model: &'a ModelSpec) -> Self {
        Self {
            app: &core.app,
            core,
            model,
            tried: Vec::new(),
            attempts: 0,
            fresh_only: false,
            last_error: None,
        }
    }

    /// The first answer a node gives (see the module docs). `buf` is the relay buffer (it comes back
    /// holding the answer's first body bytes), `head` a buffer for the request head.
    pub async fn forward<S: Transport>(
        &mut self,
        client: &mut ClientSide<'_, S>,
        request: &NodeRequest<'_>,
        buf: &mut Vec<u8>,
        head: &mut Vec<u8>,
    ) -> Result<Answered, NotAnswered> {
        let app = self.app;
        let up = &app.settings.upstream;
        let params = AttemptParams {
            connect_timeout: up.connect_timeout,
            head_timeout: up.head_timeout,
            read_timeout: up.read_timeout,
            tls: &app.upstream_tls,
        };
        loop {
            if self.attempts >= up.max_attempts.get() {
                return Err(self.no_node());
            }
            let node = match app.nodes.pick(&self.model.id, &self.tried, self.core.rotation()) {
                Pick::Node(n) => n,
                Pick::NoneServes => {
                    return Err(NotAnswered::Failed(ApiError::ModelNotFound(self.model.id.clone())));
                }
                Pick::NoneAvailable => return Err(self.no_node()),
            };
            self.attempts += 1;
            if self.attempts > 1 {
                app.metrics.upstream_retries.fetch_add(1, Ordering::Relaxed);
            }
            let in_flight = InFlight::new(Arc::clone(&node));
            let started = std::time::Instant::now();
            if let Err(e) = self.write_head(&node, request, head) {
                return Err(NotAnswered::Failed(e));
            }
            let body = (request.body.len() > MERGE_BODY_MAX).then(|| request.body.clone());
            if body.is_none() {
                head.extend_from_slice(request.body);
            }
            let pooled =
                if self.fresh_only { None } else { self.core.upstream_conns.borrow_mut().take(node.id) };
            let (res, h, b) = attempt::attempt(
                client,
                &node,
                pooled,
                std::mem::take(head),
                body,
                std::mem::take(buf),
                &params,
            )
            .await;
            *head = h;
            *buf = b;
            match res {
                Ok(answer) => return Ok(Answered { node, answer, in_flight, started }),
                Err(e) => {
                    if let Some(r) = self.failed(&node, e, client.is_gone()) {
                        return Err(r);
                    }
                }
            }
        }
    }

    /// A node answered but broke off before any byte reached the client: another may be tried.
    pub fn broke_before_reply(&mut self, node: &Node, why: &str) {
        self.app.nodes.report_failure(node, "broke before the answer reached the client");
        self.tried.push(node.id);
        self.last_error = Some(ApiError::UpstreamUnavailable {
            status: 502,
            message: format!("A node failed: {why}"),
            retry_after_secs: None,
        });
    }

    /// Acts on a failed attempt; `Some` when forwarding is over.
    fn failed(&mut self, node: &Node, e: AttemptError, client_gone: bool) -> Option<NotAnswered> {
        let app = self.app;
        if e.node_failed {
            app.nodes.report_failure(node, &e.failure.to_string());
        } else if matches!(e.failure, attempt::Failure::Status { .. }) && e.retry == Retry::Never {
            // The node answered, with its own 4xx: it is healthy.
            app.nodes.report_success(node);
        }
        let mut e = e;
        if let Some(c) = e.reusable.take() {
            self.core.upstream_conns.borrow_mut().put(node.id, c);
        }
        if client_gone {
            return Some(NotAnswered::ClientGone);
        }
        match e.retry {
            Retry::Never => Some(NotAnswered::Failed(e.to_api())),
            Retry::SameNode => {
                app.metrics.upstream_stale_connections.fetch_add(1, Ordering::Relaxed);
                self.attempts -= 1;
                self.fresh_only = true;
                None
            }
            Retry::OtherNode => {
                self.tried.push(node.id);
                self.last_error = Some(e.to_api());
                None
            }
        }
    }

    fn no_node(&mut self) -> NotAnswered {
        NotAnswered::Failed(self.last_error.take().unwrap_or_else(|| ApiError::UpstreamUnavailable {
            status: 503,
            message: "No node is available to serve this model right now.".into(),
            retry_after_secs: Some(1),
        }))
    }

    /// The request head for `node` (signed per attempt for Gonka nodes: each has its own transfer
    /// address, and a signature is single-use).
    fn write_head(&self, node: &Node, request: &NodeRequest<'_>, out: &mut Vec<u8>) -> Result<(), ApiError> {
        let accept = if request.stream { "text/event-stream" } else { "application/json" };
        let mut headers: Vec<(&str, String)> =
            vec![("Accept", accept.to_owned()), ("X-Request-Id", request.request_id.to_owned())];
        if node.kind == NodeKind::Gonka {
            let (Some(signer), Some(transfer)) =
                (self.app.gonka.as_deref(), node.transfer_address.as_deref())
            else {
                return Err(ApiError::Internal("a gonka node without a signing key or address".into()));
            };
            let ts = signer.next_timestamp_ns();
            headers.push(("Authorization", signer.sign(request.body, ts, transfer)));
            headers.push(("X-Requester-Address", signer.address().to_owned()));
            headers.push(("X-Timestamp", ts.to_string()));
        }
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_request_head(out, "POST", &node.path(request.path), node, Some(request.body.len()), &refs);
        Ok(())
    }
}
