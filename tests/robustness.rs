//! Issue 11: every answer is paid for, every process owns its data, bad input costs the gateway little.
//! One process per data directory and per address, bounded connections and body memory, strict but
//! standard request targets, private data files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use std::time::{Duration, Instant};
use utils::*;

/// Splits `bytes` into its HTTP answers: (head text, body) each, using the Content-Length of each head
/// except for answers to HEAD, which `heads` marks.
fn answers(bytes: &[u8], heads: &[bool]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &is_head in heads {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let body_len = if is_head { 0 } else { len };
        out.push((head, rest[end..end + body_len].to_vec()));
        rest = &rest[end + body_len..];
    }
    assert!(rest.is_empty(), "bytes after the last answer: {}", String::from_utf8_lossy(rest));
    out
}

#[test]
fn absolute_form_request_targets_are_served() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let body = chat_body("absolute", 3, false).to_string();
    let req = format!(
        "POST http://{}/v1/chat/completions HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        gw.addr,
        gw.addr,
        gw.auth(),
        body.len()
    );
    let (out, closed) = raw(gw.addr, req.as_bytes(), Duration::from_secs(10));
    assert!(closed);
    assert_eq!(statuses(&out), [200], "{}", String::from_utf8_lossy(&out));
    let req =
        format!("GET http://{}/healthz?probe=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", gw.addr);
    let (out, _) = raw(gw.addr, req.as_bytes(), Duration::from_secs(5));
    assert_eq!(statuses(&out), [200], "{}", String::from_utf8_lossy(&out));
}

#[test]
fn answers_to_head_carry_the_length_but_no_body() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    // Two HEADs, then a GET, pipelined on one connection: the second and third answers start exactly
    // where the head of the one before ends.
    let req = "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (out, closed) = raw(gw.addr, req.as_bytes(), Duration::from_secs(5));
    assert!(closed, "{}", String::from_utf8_lossy(&out));
    let got = answers(&out, &[true, true, false]);
    for (head, _) in &got[..2] {
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        let len: usize =
            head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().trim().parse().unwrap();
        assert!(len > 0, "the length of the body a GET would get: {head}");
    }
    assert!(got[2].0.starts_with("HTTP/1.1 200"), "{}", got[2].0);
    assert_eq!(got[2].1, br#"{"status":"ok"}"#);
}

#[test]
fn a_chunk_size_past_the_body_limit_is_refused_at_its_size_line() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    for size in ["FFFFFFFF", "A00001", "ffffffffffffffff"] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n",
            gw.auth()
        );
        let started = Instant::now();
        let (out, closed) = raw(gw.addr, req.as_bytes(), Duration::from_secs(5));
        assert!(closed, "{size}: connection left open: {}", String::from_utf8_lossy(&out));
        assert_eq!(statuses(&out), [413], "{size}: {}", String::from_utf8_lossy(&out));
        assert!(started.elapsed() < Duration::from_secs(2), "{size}: took {:?}", started.elapsed());
    }
}

/// `serve --config` with this config text in a directory of its own; waits for it to exit.
fn serve_expecting_failure(config: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let mut p = Proc::spawn(
        &["serve", "--config", path.to_str().unwrap()],
        dir.path(),
        &[("TEST_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let status = p.wait_exit(Duration::from_secs(15)).expect("the gateway exits instead of serving");
    (status, p.stderr())
}

#[test]
fn a_second_gateway_on_the_same_data_directory_exits_naming_it_and_its_holder() {
    let sim = Sim::start(&[]);
    let mut gw = Gateway::start(&sim.urls);
    let data = gw.dir.path().join("data");
    let holder = format!("pid {}", gw.proc.child.id());
    // The same data directory and the very same addresses: the lock is checked before anything is bound.
    let (status, err) = serve_expecting_failure(&format!(
        "data_dir = \"{}\"\n[server]\nlisten = \"{}\"\n[admin]\nlisten = \"{}\"\ntoken_env = \"TEST_ADMIN_TOKEN\"\n",
        data.display(),
        gw.addr,
        gw.admin_addr
    ));
    assert!(!status.success());
    assert!(err.contains(&data.display().to_string()) && err.contains(&holder), "{err}");
    assert!(!err.contains(&gw.addr.to_string()), "refused for its data directory, not an address: {err}");

    let other = tempfile::tempdir().unwrap();
    let data_arg = data.to_str().unwrap();
    let args = ["dev", "--data", data_arg, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let mut dev = Proc::spawn(&args, other.path(), &[]);
    let status = dev.wait_exit(Duration::from_secs(15)).expect("dev exits instead of serving");
    assert!(!status.success());
    let err = dev.stderr();
    assert!(err.contains(&data.display().to_string()) && err.contains(&holder), "{err}");

    // The holder kept serving, and its lock goes with it: a restart after kill -9 takes the directory.
    assert_eq!(http(gw.addr, "GET", "/healthz", &[], None).status, 200);
    gw.restart();
    assert_eq!(http(gw.addr, "GET", "/healthz", &[], None).status, 200);
}
