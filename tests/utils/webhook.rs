//! A webhook receiver for tests: an HTTP/1.1 listener on a thread that checks each POST's
//! `X-Gateway-Signature` (HMAC-SHA256 of `"<t>.<body>"` under the shared secret, `t` within 5 minutes
//! of now) and records every attempt; with `fail_first`, the first attempt of each event id is
//! answered 500, so the gateway must retry it.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The signing secret the test gateways get (`GATEWAY_WEBHOOK_SECRET`).
pub const SECRET: &str = "webhook-test-secret-0123456789";

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub event_id: String,
    pub event_type: String,
    pub body: Value,
    /// The signature checked out (and `t` was recent).
    pub signed: bool,
    /// What the receiver answered.
    pub status: u16,
}

pub struct Webhook {
    pub port: u16,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

/// Whether `header` (`t=<unix>,v1=<hex>`) signs `body` under `secret`, with `t` within 300 s of now.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    // A test: no need for a constant-time comparison.
    expected == v1
}

impl Webhook {
    pub fn start(fail_first: bool) -> Webhook {
        let listener: TcpListener = super::bind_free_port();
        let port = listener.local_addr().unwrap().port();
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let log = Arc::clone(&attempts);
        std::thread::spawn(move || {
            let mut failed: HashSet<String> = HashSet::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end().to_owned();
                    if line.is_empty() {
                        break;
                    }
                    headers.push(line);
                }
                let header = |name: &str| {
                    headers.iter().find_map(|h| {
                        let (k, v) = h.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let event_id = header("x-gateway-event-id").unwrap_or_default();
                let signed = header("x-gateway-signature").is_some_and(|s| verify(SECRET, &s, &body));
                let status = if fail_first && failed.insert(event_id.clone()) { 500 } else { 200 };
                log.lock().unwrap().push(Attempt {
                    event_id,
                    event_type: header("x-gateway-event").unwrap_or_default(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    signed,
                    status,
                });
                let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Webhook { port, attempts }
    }

    /// The `[notifications]` table that sends here (checks every 100 ms, first retry after 200 ms).
    pub fn config(&self, low_balance_ngonka: u64) -> String {
        format!(
            "[notifications]\nurl = \"http://127.0.0.1:{}/hooks/gateway\"\nlow_balance_ngonka = {low_balance_ngonka}\n\
             check_interval_ms = 100\nbackoff_ms = 200\ntimeout_ms = 2000\n",
            self.port
        )
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// The attempts the receiver accepted (200), in order.
    pub fn delivered(&self) -> Vec<Attempt> {
        self.attempts().into_iter().filter(|a| a.status == 200).collect()
    }

    /// Waits until `n` events were accepted (or 10 s pass); the accepted ones.
    pub fn wait_for(&self, n: usize) -> Vec<Attempt> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.delivered().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.delivered()
    }
}
