//! Claude Code itself (npm `@anthropic-ai/claude-code`, the version the gateway was checked against),
//! installed on first use into `target/claude-code` (once across test processes), and run headless as a
//! user runs it against a gateway: `claude -p PROMPT --model MODEL` with `ANTHROPIC_BASE_URL` (the
//! gateway's root) and `ANTHROPIC_AUTH_TOKEN` (a gateway key), in a temporary HOME, with
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` so that it talks to nothing else.

use super::once_across_processes;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const VERSION: &str = "2.1.332";

/// The `claude` binary, installed with npm when missing (needs `npm` and access to the npm registry).
pub fn binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/claude-code");
    let bin = root.join("node_modules/.bin/claude");
    let ready = root.join(".ready");
    let is_ready = || std::fs::read_to_string(&ready).is_ok_and(|v| v == VERSION) && bin.exists();
    once_across_processes("claude-code-install", is_ready, || {
        std::fs::create_dir_all(&root).unwrap();
        let installed = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&root)
            .arg(format!("@anthropic-ai/claude-code@{VERSION}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let runs = installed
            && Command::new(&bin)
                .arg("--version")
                .env("HOME", &root)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with(VERSION));
        if runs {
            std::fs::write(&ready, VERSION).unwrap();
        }
    });
    assert!(
        is_ready(),
        "Claude Code {VERSION} is not installed in {} and `npm install` did not install it (it needs npm and \
         access to the npm registry)",
        root.display()
    );
    bin
}

/// How a run of Claude Code ended.
#[derive(Debug)]
pub struct Run {
    pub status: Option<std::process::ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// The directory it worked in.
    pub work: tempfile::TempDir,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `claude -p PROMPT --model MODEL ARGS…` against `base_url` with the gateway key `token`, with
/// nothing of this process's environment but `PATH`; killed after two minutes.
pub fn run(base_url: &str, token: &str, model: &str, prompt: &str, args: &[&str]) -> Run {
    let bin = binary();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join(".claude-stdout");
    let err = work.path().join(".claude-stderr");
    let mut child = Command::new(bin)
        .args(["-p", prompt, "--model", model])
        .args(args)
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .env("HOME", home.path())
        .env("TERM", "dumb")
        .env("ANTHROPIC_BASE_URL", base_url)
        .env("ANTHROPIC_AUTH_TOKEN", token)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = super::wait_or_kill(&mut child, Duration::from_secs(120));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Run { status, stdout: read(&out), stderr: read(&err), work }
}
