//! SIGTERM: stop accepting, finish what is in flight, exit 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use utils::*;

#[test]
fn sigterm_lets_streams_finish_then_exits_zero() {
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "20"]);
    let mut gw = Gateway::start(&sim.urls);
    let body = chat_body("drain", 100, true).to_string();
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{body}",
        gw.auth(),
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0);
    // An idle keep-alive connection, which shutdown closes at once.
    let mut idle = TcpStream::connect(gw.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let _ = idle.read(&mut buf).unwrap();

    gw.proc.signal("TERM");
    let (_, idle_closed) = read_until_close(&mut idle, Duration::from_secs(2));
    assert!(idle_closed, "idle connection closed on drain");
    let (rest, closed) = read_until_close(&mut s, Duration::from_secs(5));
    assert!(closed);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("data: [DONE]"), "the in-flight stream finished: {text}");
    let status = gw.proc.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(gw.addr).is_err(), "no longer accepting");
}
