//! OpenAI's Codex CLI (npm `@openai/codex`, installed under `target/` on first use) against
//! `gonka-gateway dev`, configured with exactly the files the README shows (`config/codex/`): a prompt
//! completes on a Gonka model the catalog describes, and a turn where the model calls Codex's
//! `exec_command` runs the command and sends its output back. The demo key's usage shows every request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use utils::*;

const CONFIG: &str = include_str!("../config/codex/config.toml");

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `gonka-gateway dev` on free ports, with what it printed.
struct Dev {
    proc: Proc,
    base_url: String,
    api_key: String,
    admin: std::net::SocketAddr,
    admin_token: String,
    _dir: tempfile::TempDir,
}

fn start_dev() -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--sim-ttft-ms", "0", "--sim-tokens-per-s", "0"];
    let (proc, ports, lines) =
        spawn_dev(dir.path(), &extra, &["OPENAI_BASE_URL", "OPENAI_API_KEY", "ADMIN_TOKEN"]);
    let admin = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    let [base_url, api_key, admin_token] =
        ["OPENAI_BASE_URL", "OPENAI_API_KEY", "ADMIN_TOKEN"].map(|name| lines[name].clone());
    Dev { proc, base_url, api_key, admin, admin_token, _dir: dir }
}

/// What a `codex exec` run left.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// `codex exec --skip-git-repo-check --ephemeral --sandbox read-only -C DIR PROMPT` with a fresh HOME and
/// CODEX_HOME whose `config.toml` is the shipped one pointed at `dev`.
fn codex_exec(dev: &Dev, prompt: &str) -> Run {
    let codex = codex_binary();
    let home = tempfile::tempdir().unwrap();
    let codex_home = home.path().join(".codex");
    let work = home.path().join("work");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let catalog = repo_file("config/codex/model_catalog.json");
    let config = CONFIG
        .replace("http://127.0.0.1:8080/v1", &dev.base_url)
        .replace("/path/to/gonka-gateway/config/codex/model_catalog.json", catalog.to_str().unwrap());
    assert!(config.contains(&dev.base_url) && config.contains(catalog.to_str().unwrap()), "{config}");
    std::fs::write(codex_home.join("config.toml"), config).unwrap();
    let (out, err) = (home.path().join("stdout"), home.path().join("stderr"));
    let mut child = Command::new(codex)
        .args(["exec", "--skip-git-repo-check", "--ephemeral", "--sandbox", "read-only", "-C"])
        .arg(&work)
        .arg(prompt)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CODEX_HOME", &codex_home)
        .env("GONKA_API_KEY", &dev.api_key)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, Duration::from_secs(180));
    let run = Run {
        success: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "codex exec did not finish in time\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// Every usage record of the demo account, through the admin API.
fn demo_usage(dev: &Dev) -> Vec<Value> {
    let auth = format!("Bearer {}", dev.admin_token);
    let accounts = http(dev.admin, "GET", "/admin/accounts", &[("Authorization", &auth)], None).json();
    let demo = accounts["data"].as_array().unwrap().iter().find(|a| a["name"] == "demo").unwrap();
    let path = format!(
        "/admin/accounts/{}/usage?from=1970-01-01&to=2100-01-01&limit=1000",
        demo["id"].as_str().unwrap()
    );
    let r = http(dev.admin, "GET", &path, &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().unwrap().clone()
}

fn assert_no_fallback(run: &Run) {
    for said in [&run.stdout, &run.stderr] {
        assert!(!said.contains("Model metadata for"), "Codex fell back to default metadata:\n{said}");
        assert!(!said.contains("not found. Defaulting"), "{said}");
    }
}

#[test]
fn codex_exec_completes_a_prompt_on_a_gonka_model_the_shipped_catalog_describes() {
    let dev = start_dev();
    let run = codex_exec(&dev, "Say hello to the Gonka network.");
    assert!(run.success, "codex exec failed\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_no_fallback(&run);
    assert!(!run.stdout.trim().is_empty(), "no final message\nstderr:\n{}", run.stderr);
    // Codex's own tool kinds were dropped, not refused.
    let log = dev.proc.stderr();
    assert!(log.contains("dropped tools a node cannot run: namespace multi_agent_v1, web_search"), "{log}");
    let records = demo_usage(&dev);
    assert!(!records.is_empty(), "the request is on the key's usage");
    assert!(
        records.iter().all(|r| r["model"] == "moonshotai/Kimi-K2.6" && r["status"] == "completed"),
        "{records:?}"
    );
    assert!(
        records.iter().all(|r| r["prompt_tokens"].as_u64() > Some(1000)),
        "Codex's whole prompt reached the node: {records:?}"
    );
}

#[test]
fn codex_runs_exec_command_for_the_model_and_sends_the_output_back() {
    let dev = start_dev();
    // The simulated model calls the tool the prompt names, with the object written after it.
    let run = codex_exec(&dev, r#"exec_command {"cmd": "echo gonka-$((6*7))"}"#);
    assert!(run.success, "codex exec failed\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_no_fallback(&run);
    assert!(
        run.stderr.contains("gonka-42"),
        "Codex ran the command (the shell did the arithmetic):\n{}",
        run.stderr
    );
    // The node's answer to the tool's output starts with that output: Codex sent it back.
    assert!(run.stdout.contains("The tool returned:"), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let records = demo_usage(&dev);
    assert_eq!(records.len(), 2, "the call and the answer to its output: {records:?}");
    assert!(records.iter().all(|r| r["status"] == "completed"));
}

#[test]
fn the_shipped_codex_catalog_describes_the_demo_models_with_the_shipped_instructions() {
    let catalog: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file("config/codex/model_catalog.json")).unwrap())
            .unwrap();
    let instructions = std::fs::read_to_string(repo_file("config/codex/instructions.md")).unwrap();
    let models = catalog["models"].as_array().unwrap();
    let slugs: Vec<&str> = models.iter().map(|m| m["slug"].as_str().unwrap()).collect();
    for (id, context, _, _, _) in gonka_gateway::dev::DEV_MODELS {
        let m = models.iter().find(|m| m["slug"] == id).unwrap_or_else(|| panic!("{id} is not in {slugs:?}"));
        assert_eq!(m["context_window"], context, "{id}");
    }
    for m in models {
        assert_eq!(
            m["base_instructions"].as_str(),
            Some(instructions.as_str()),
            "{}: the prompt is instructions.md",
            m["slug"]
        );
        // What Codex 0.171 refuses a catalog entry without.
        for field in [
            "slug",
            "display_name",
            "supported_reasoning_levels",
            "shell_type",
            "visibility",
            "supported_in_api",
            "priority",
            "support_verbosity",
            "truncation_policy",
            "experimental_supported_tools",
        ] {
            assert!(m.get(field).is_some(), "{}: {field}", m["slug"]);
        }
        assert!(
            m["apply_patch_tool_type"].is_null(),
            "no freeform tool: the gateway runs function tools only"
        );
    }
}

#[test]
fn the_readme_shows_the_shipped_codex_config() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let section = &readme[readme.find("## Codex").unwrap()..];
    let block = section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let settings: Vec<&str> =
        CONFIG.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
    let shown: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(shown, settings, "the README's block is config/codex/config.toml without its comments");
}
