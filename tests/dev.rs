//! `gonka-gateway dev`: what it prints is enough to use it, from the SDKs and from the admin command.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use utils::*;

const LINES: [&str; 8] = [
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ADMIN_TOKEN",
    "GATEWAY_ADMIN_URL",
    "GATEWAY_ADMIN_TOKEN",
    "DASHBOARD_URL",
    "ACCOUNT_TOKEN",
];

#[test]
fn exporting_the_lines_dev_prints_makes_the_admin_cli_work() {
    let dir = tempfile::tempdir().unwrap();
    // Each alone on its line, in this order.
    let (mut proc, ports, env) = spawn_dev(dir.path(), &[], &LINES);
    assert_eq!(env["OPENAI_BASE_URL"], format!("http://127.0.0.1:{}/v1", ports[0]));
    assert_eq!(
        env["ANTHROPIC_BASE_URL"],
        format!("http://127.0.0.1:{}", ports[0]),
        "the root: the SDK adds /v1"
    );
    assert_eq!(
        env["GATEWAY_ADMIN_URL"],
        format!("http://127.0.0.1:{}", ports[1]),
        "--admin-listen, not :8081"
    );
    assert_eq!(env["GATEWAY_ADMIN_TOKEN"], env["ADMIN_TOKEN"]);

    // `export` of those lines, then the admin command with nothing else.
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["admin", "accounts", "list"]).current_dir(dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GATEWAY_")) {
        cmd.env_remove(k);
    }
    let out = cmd.envs(&env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let accounts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(accounts["data"][0]["name"], "demo", "{accounts}");

    // And the OpenAI lines reach the demo network with the demo key.
    let addr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let auth = format!("Bearer {}", env["OPENAI_API_KEY"]);
    let r = http(addr, "GET", "/v1/models", &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    proc.signal("TERM");
    assert!(proc.wait_exit(std::time::Duration::from_secs(10)).is_some_and(|s| s.success()));
}
