//! Claude Code itself, unchanged, against the gateway: `claude -p` with `ANTHROPIC_BASE_URL` and
//! `ANTHROPIC_AUTH_TOKEN` as its users set them, against `gonka-gateway dev` (which prints both). A
//! prompt is answered and billed to the key; a tool the simulated model calls is run by Claude Code and
//! its result sent back; a child key whose daily budget is below Claude Code's 32000-token hold still
//! works.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use utils::claude_code::{self, Run};
use utils::*;

/// The demo model, as Claude Code's users would name it (the slash included).
const KIMI: &str = "moonshotai/Kimi-K2.6";

/// `gonka-gateway dev` on free ports, with the lines it printed.
struct Dev {
    proc: Proc,
    public: SocketAddr,
    admin: SocketAddr,
    env: HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let extra = ["--sim-ttft-ms", "20", "--sim-tokens-per-s", "500"];
        let (proc, ports, env) =
            spawn_dev(dir.path(), &extra, &["OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ADMIN_TOKEN"]);
        let addr = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
        Dev { proc, public: addr(ports[0]), admin: addr(ports[1]), env, _dir: dir }
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {}", self.env["ADMIN_TOKEN"]);
        let body = body.map(|b| b.to_string());
        http(self.admin, method, path, &[("Authorization", &auth)], body.as_deref().map(str::as_bytes))
    }

    fn account(&self) -> String {
        self.admin("GET", "/admin/accounts", None).json()["data"][0]["id"].as_str().unwrap().to_owned()
    }

    /// The usage records of the demo account.
    fn records(&self) -> Vec<Value> {
        let path = format!("/admin/accounts/{}/usage?from=1970-01-01&to=2100-01-01", self.account());
        self.admin("GET", &path, None).json()["data"].as_array().unwrap().clone()
    }

    /// The id of the demo account's key whose secret is `secret`.
    fn key_id(&self, secret: &str) -> String {
        let keys = self.admin("GET", &format!("/admin/accounts/{}/keys", self.account()), None).json();
        let key = keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| secret.starts_with(k["prefix"].as_str().unwrap()));
        key.unwrap_or_else(|| panic!("no key for {secret}: {keys}"))["id"].as_str().unwrap().to_owned()
    }

    fn claude(&self, token: &str, prompt: &str, args: &[&str]) -> Run {
        claude_code::run(&self.env["ANTHROPIC_BASE_URL"], token, KIMI, prompt, args)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.proc.signal("TERM");
        let _ = self.proc.wait_exit(std::time::Duration::from_secs(10));
    }
}

fn assert_ok(run: &Run) {
    assert!(
        run.succeeded(),
        "claude failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

#[test]
fn claude_code_completes_a_prompt_against_dev_and_the_key_is_billed() {
    let dev = Dev::start();
    let key = dev.env["OPENAI_API_KEY"].clone();
    assert_eq!(
        dev.env["ANTHROPIC_BASE_URL"],
        format!("http://{}", dev.public),
        "the root: Claude Code adds /v1"
    );
    let run = dev.claude(&key, "Say hello", &[]);
    assert_ok(&run);
    assert!(run.stdout.split_whitespace().count() >= 10, "the simulated model's answer: {}", run.stdout);
    let records = dev.records();
    assert_eq!(records.len(), 1, "one request in -p mode: {records:?}");
    let r = &records[0];
    assert_eq!((r["model"].as_str(), r["status"].as_str()), (Some(KIMI), Some("completed")), "{r}");
    assert_eq!(r["key_id"].as_str().unwrap(), dev.key_id(&key), "billed to the key Claude Code used");
    assert_eq!(r["completion_tokens"], 32, "dev's simulated answers are 32 tokens: {r}");
    assert!(r["prompt_tokens"].as_u64().unwrap() > 1000, "Claude Code's system prompt and tools: {r}");
    assert_eq!(r["estimated"], false);
    assert_ne!(r["cost_ngonka"], "0");
}

#[test]
fn claude_code_runs_the_tool_the_model_calls_and_sends_its_result_back() {
    let dev = Dev::start();
    let key = dev.env["OPENAI_API_KEY"].clone();
    let marker = format!("gonka-cc-{}", std::process::id());
    // The simulated model calls the tool the prompt names, with the JSON written after its name.
    let prompt = format!(r#"run Bash {{"command": "echo {marker} > proof.txt && cat proof.txt"}}"#);
    let run = dev.claude(&key, &prompt, &["--allowedTools", "Bash"]);
    assert_ok(&run);
    let proof = std::fs::read_to_string(run.work.path().join("proof.txt")).unwrap_or_default();
    assert_eq!(proof.trim(), marker, "Claude Code ran the command; stdout: {}", run.stdout);
    // The model's answer to the tool's result starts with it: the result reached the node.
    assert!(run.stdout.contains(&format!("The tool returned: {marker}")), "{}", run.stdout);
    let records = dev.records();
    assert_eq!(records.len(), 2, "the tool call, then the answer to its result: {records:?}");
    assert!(records.iter().all(|r| r["status"] == "completed"), "{records:?}");
}

#[test]
fn claude_code_works_on_a_child_key_whose_budget_is_below_its_32000_token_hold() {
    let dev = Dev::start();
    let account = dev.account();
    let token = dev.admin("POST", &format!("/admin/accounts/{account}/token"), None).json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = |method: &str, path: &str, body: Value| {
        let auth = format!("Bearer {token}");
        http(dev.public, method, path, &[("Authorization", &auth)], Some(body.to_string().as_bytes()))
    };
    let management = api("POST", "/api/management/keys", json!({"name": "agents"})).json();
    // Kimi's demo completion price is 4000 ngonka a token: Claude Code's max_tokens of 32000 would hold
    // 128,000,000 ngonka (and its ~50 KB prompt some 50,000,000 more). The child has 100,000,000 a day.
    let limit: u64 = 100_000_000;
    let models = dev.admin("GET", "/admin/models", None).json();
    let price = models["data"].as_array().unwrap().iter().find(|m| m["id"] == KIMI).unwrap()["price_completion_ngonka"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(limit < 32_000 * price, "the daily budget is below 32000 × the completion price");
    let child = api(
        "POST",
        &format!("/api/management/keys/{}/children", management["id"].as_str().unwrap()),
        json!({"name": "claude-code", "limit_daily_ngonka": limit.to_string()}),
    );
    assert_eq!(child.status, 201, "{}", child.text());
    let child = child.json();
    let run = dev.claude(child["key"].as_str().unwrap(), "Say hello", &[]);
    assert_ok(&run);
    let records = dev.records();
    let r = records.iter().find(|r| r["key_id"] == child["id"]).unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(r["status"], "completed", "{r}");
    let cost: u64 = r["cost_ngonka"].as_str().unwrap().parse().unwrap();
    assert!(cost > 0 && cost <= limit, "{cost}");
}
