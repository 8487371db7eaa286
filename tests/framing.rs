//! Malformed and hostile HTTP framing: each case gets its status and a closed connection, never a hang.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use utils::*;

fn gateway() -> (Sim, Gateway) {
    let sim = Sim::start(&[]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        server: "head_timeout_ms = 500\nbody_timeout_ms = 500\nidle_timeout_ms = 800\nmax_body_bytes = 65536\nmax_head_bytes = 4096\nmax_headers = 16\n".into(),
        ..GatewayOpts::default()
    });
    (sim, gw)
}

fn expect_status_and_close(gw: &Gateway, req: &[u8], status: u16) {
    let started = Instant::now();
    let (out, closed) = raw(gw.addr, req, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out);
    assert!(closed, "connection left open after {:?}: {text}", String::from_utf8_lossy(req));
    assert_eq!(statuses(&out), [status], "{:?} → {text}", String::from_utf8_lossy(req));
    assert!(text.contains("Connection: close"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn ambiguous_framing_is_refused() {
    let (_sim, gw) = gateway();
    let auth = gw.auth();
    let cases: Vec<String> = vec![
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        ),
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: gzip\r\n\r\n"
        ),
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
        ),
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".into(),
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc".into(),
        "GARBAGE\r\n\r\n".into(),
        "GET / HTTP/1.1\r\n\r\n".into(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".into(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\n folded: header\r\n\r\n".into(),
    ];
    for c in cases {
        expect_status_and_close(&gw, c.as_bytes(), 400);
    }
}

#[test]
fn bad_chunked_bodies_are_refused() {
    let (_sim, gw) = gateway();
    let auth = gw.auth();
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "11111111111111111\r\n",
    ] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        expect_status_and_close(&gw, req.as_bytes(), 400);
    }
}

#[test]
fn oversized_anything_is_refused() {
    let (_sim, gw) = gateway();
    let auth = gw.auth();
    let long = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(5000));
    expect_status_and_close(&gw, long.as_bytes(), 431);
    let mut many = "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned();
    for i in 0..20 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    expect_status_and_close(&gw, many.as_bytes(), 431);
    let big = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 70000\r\n\r\n"
    );
    expect_status_and_close(&gw, big.as_bytes(), 413);
    let chunk = "a".repeat(40000);
    let big_chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    expect_status_and_close(&gw, big_chunked.as_bytes(), 413);
    expect_status_and_close(&gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", 417);
}

#[test]
fn slow_or_silent_clients_are_cut_off() {
    let (_sim, gw) = gateway();
    // A head that never completes.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(5));
    assert!(closed && started.elapsed() < Duration::from_secs(3), "head timeout");
    // A body that never completes: 408.
    let auth = gw.auth();
    let mut s = TcpStream::connect(gw.addr).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 100\r\n\r\n{{\"model\"").unwrap();
    let (out, closed) = read_until_close(&mut s, Duration::from_secs(5));
    assert!(closed);
    assert_eq!(statuses(&out), [408], "{}", String::from_utf8_lossy(&out));
    // An idle keep-alive connection.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let started = Instant::now();
    let (out, closed) = read_until_close(&mut s, Duration::from_secs(5));
    assert!(closed, "idle connection closed");
    assert_eq!(statuses(&out), [200]);
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[test]
fn the_gateway_survives_a_barrage_of_garbage() {
    let (_sim, gw) = gateway();
    let mut seed: u64 = 0x1234_5678;
    let mut garbage = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 256) as u8
            })
            .collect()
    };
    for i in 0..200 {
        // Garbage in the headers or from the first byte, with or without the end of a head after it:
        // each is a 400 and a closed connection, at once.
        let mut bytes = if i % 2 == 0 {
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n".to_vec()
        } else {
            Vec::new()
        };
        bytes.extend(garbage(64));
        if i % 4 < 2 {
            bytes.extend_from_slice(b"\r\n\r\n");
        }
        let started = Instant::now();
        let (out, closed) = raw(gw.addr, &bytes, Duration::from_secs(5));
        let text = String::from_utf8_lossy(&out);
        assert!(closed, "case {i} left the connection open: {text}");
        assert_eq!(statuses(&out), [400], "case {i}: {:?} → {text}", String::from_utf8_lossy(&bytes));
        assert!(text.contains("Connection: close") && text.contains("\"error\""), "case {i}: {text}");
        assert!(started.elapsed() < Duration::from_secs(3), "case {i} waited for a timeout");
    }
    let r = http(gw.addr, "GET", "/healthz", &[], None);
    assert_eq!(r.status, 200);
}
