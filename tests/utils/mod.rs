//! Shared helpers for the integration tests: start the real binary (simulator, gateway) on ephemeral
//! loopback ports, talk HTTP to it (raw bytes, or `ureq` as an independent client), run the official
//! OpenAI and Anthropic Python SDKs, and Claude Code ([`claude_code`]); a webhook receiver ([`webhook`]).
#![allow(dead_code, reason = "each test crate uses a different part of the helpers")]

pub mod claude_code;
pub mod webhook;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gonka-gateway");
pub const MODEL: &str = "gonka/sim-small";

/// Ports tests listen on themselves: below the kernel's ephemeral range (32768 and up), where no
/// outgoing connection of another test can take one meanwhile.
pub const TEST_PORTS: std::ops::Range<u16> = 20000..32768;

/// A random port of [`TEST_PORTS`] that nothing listens on right now on 127.0.0.1 (a probe bind). Another
/// process may still take it before the caller binds it: see [`with_free_ports`].
pub fn free_port() -> u16 {
    bind_free_port().local_addr().unwrap().port()
}

/// A listener on 127.0.0.1 at a random free port of [`TEST_PORTS`].
pub fn bind_free_port() -> std::net::TcpListener {
    use std::hash::{BuildHasher, Hasher};
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = TEST_PORTS.start + u16::try_from(random % span).unwrap();
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// Runs `start` with `n` free ports until it does not fail for a port that was taken meanwhile (its
/// error mentions "in use"); any other error panics.
pub fn with_free_ports<T>(n: usize, mut start: impl FnMut(&[u16]) -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..5 {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        match start(&ports) {
            Ok(v) => return v,
            Err(e) if e.contains("in use") => last = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("ports kept being taken: {last}");
}

/// `gonka-gateway dev` on two free ports with data under `dir` and `extra` arguments: the process, its
/// public and admin ports, and the values of the `NAME=` lines it prints for `names` (read in this order).
pub fn spawn_dev(
    dir: &Path,
    extra: &[&str],
    names: &[&'static str],
) -> (Proc, Vec<u16>, std::collections::HashMap<&'static str, String>) {
    let data = dir.join("data");
    with_free_ports(2, |ports| {
        let (listen, admin) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
        let mut args =
            vec!["dev", "--listen", &listen, "--admin-listen", &admin, "--data", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(&args, dir, &[]);
        let mut lines = std::collections::HashMap::new();
        for name in names {
            lines.insert(*name, proc.try_wait_line(&format!("{name}="))?);
        }
        Ok((proc, ports.to_vec(), lines))
    })
}

/// A child process killed on drop; its stdout lines arrive on a channel, stderr goes to a file.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr_path: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> Proc {
        let stderr_path = dir.join(format!("stderr-{}.log", args.first().copied().unwrap_or("x")));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(dir).stdout(Stdio::piped()).stderr(stderr);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, stderr_path }
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        self.try_wait_line(prefix).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same; when the process ends (or 30 s pass) without printing it, an error with its stderr.
    pub fn try_wait_line(&mut self, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line[prefix.len()..].to_owned()),
                Ok(_) => {}
                Err(_) => {
                    // The stdout reader ends with the process; let it finish writing stderr.
                    let _ = self.wait_exit(Duration::from_secs(2));
                    return Err(format!("no {prefix} line; stderr: {}", self.stderr()));
                }
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_child(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits up to `timeout` for `child` to exit, and kills it if it has not; `None` then.
pub fn wait_or_kill(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let status = wait_child(child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulator process.
pub struct Sim {
    pub proc: Proc,
    pub urls: Vec<String>,
    /// Gonka mode: each node's `gonka1…` address.
    pub addresses: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Sim {
    /// `sim --listen 127.0.0.1:0 --models gonka/sim-small <args>`.
    pub fn start(args: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["sim", "--listen", "127.0.0.1:0", "--models", MODEL];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn(&all, dir.path(), &[]);
        let extra: usize = args
            .iter()
            .position(|a| *a == "--extra-nodes")
            .map(|i| args[i + 1].parse().unwrap())
            .unwrap_or(0);
        let gonka = args.contains(&"--gonka");
        let mut urls = Vec::new();
        let mut addresses = Vec::new();
        for _ in 0..=extra {
            urls.push(proc.wait_line("SIM_NODE="));
            if gonka {
                addresses.push(proc.wait_line("SIM_NODE_ADDRESS="));
            }
        }
        Sim { proc, urls, addresses, dir }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        let hostport = self.urls[i].split("://").nth(1).unwrap().trim_end_matches("/v1");
        hostport.replace("localhost", "127.0.0.1").parse().unwrap()
    }

    /// The node's base URL without `/v1` (a Gonka participant's `inference_url`).
    pub fn root(&self, i: usize) -> String {
        self.urls[i].trim_end_matches("/v1").to_owned()
    }

    pub fn stats(&self) -> Value {
        let r = http(self.addr(0), "GET", "/sim/stats", &[], None);
        serde_json::from_slice(&r.body).unwrap()
    }

    pub fn set_faults(&self, i: usize, params: Value) {
        let r = http(self.addr(i), "POST", "/sim/faults", &[], Some(params.to_string().as_bytes()));
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// A gateway started with `serve --config`, with a provisioned account (well funded) and managed key.
pub struct Gateway {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    envs: Vec<(String, String)>,
    pub account_id: String,
    pub account_token: String,
    pub api_key: String,
}

/// What goes into the test config besides the defaults.
pub struct GatewayOpts {
    pub node_urls: Vec<String>,
    pub models: Vec<&'static str>,
    /// Extra TOML appended to `[server]`.
    pub server: String,
    /// Extra TOML appended to `[upstream]`.
    pub upstream: String,
    /// Extra TOML appended to `[keys]`.
    pub keys: String,
    /// Extra top-level TOML sections.
    pub extra: String,
    pub workers: usize,
    /// The `models` of every node (empty: all models).
    pub node_models: Vec<&'static str>,
    /// Extra environment for the gateway process.
    pub envs: Vec<(&'static str, String)>,
    /// Credit the provisioned account gets, ngonka.
    pub credit_ngonka: u64,
}

impl Default for GatewayOpts {
    fn default() -> Self {
        Self {
            node_urls: Vec::new(),
            models: vec![MODEL],
            server: String::new(),
            upstream: String::new(),
            keys: String::new(),
            extra: String::new(),
            workers: 2,
            node_models: Vec::new(),
            envs: Vec::new(),
            credit_ngonka: 1_000_000_000_000_000,
        }
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The config file a test gateway runs with.
fn config_toml(opts: &GatewayOpts, dir: &Path) -> String {
    let mut toml = format!(
        "workers = {}\ndata_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"TEST_ADMIN_TOKEN\"\n[keys]\n{}\n[upstream]\nconnect_timeout_ms = 1000\neject_ms = 500\nprobe_interval_ms = 100\n{}\n{}\n",
        opts.workers,
        dir.join("data").display(),
        opts.server,
        opts.keys,
        opts.upstream,
        opts.extra,
    );
    for m in &opts.models {
        toml.push_str(&format!(
            "[[models]]\nid = \"{m}\"\ncontext_length = 32768\nprice_prompt_ngonka = 10\nprice_completion_ngonka = 20\n"
        ));
    }
    for url in &opts.node_urls {
        toml.push_str(&format!(
            "[[upstream.nodes]]\nurl = \"{url}\"\nkind = \"openai\"\nmodels = {:?}\n",
            opts.node_models
        ));
    }
    toml
}

/// The HTTP side of a test gateway, in a process or in this one.
pub trait GatewayApi {
    fn public(&self) -> SocketAddr;
    fn admin_address(&self) -> SocketAddr;

    /// A request to the admin API.
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = body.map(|b| b.to_string());
        http(
            self.admin_address(),
            method,
            path,
            &[("Authorization", &auth)],
            body.as_deref().map(str::as_bytes),
        )
    }

    /// A request to the account API with `token`.
    fn api(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| b.to_string());
        http(self.public(), method, path, &[("Authorization", &auth)], body.as_deref().map(str::as_bytes))
    }

    /// Creates an account through the admin API, referred by the account whose referral code is `code`
    /// when given: its JSON (with its `token`, `referral_code` and `referrer_id`).
    fn create_referred_account(&self, name: &str, code: Option<&str>) -> Value {
        let mut body = serde_json::json!({ "name": name });
        if let Some(c) = code {
            body["referral_code"] = serde_json::json!(c);
        }
        let r = self.admin("POST", "/admin/accounts", Some(body));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// Creates an account; returns its id and token.
    fn create_account(&self, name: &str) -> (String, String) {
        let v = self.create_referred_account(name, None);
        (v["id"].as_str().unwrap().to_owned(), v["token"].as_str().unwrap().to_owned())
    }

    fn credit(&self, account: &str, amount: u64, reference: &str) -> Value {
        let r = self.admin(
            "POST",
            &format!("/admin/accounts/{account}/credits"),
            Some(serde_json::json!({ "amount_ngonka": amount.to_string(), "reference": reference })),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Creates a managed key through the admin API; returns the secret.
    fn admin_key(&self, account: &str, name: &str) -> String {
        let r = self.admin(
            "POST",
            &format!("/admin/accounts/{account}/keys"),
            Some(serde_json::json!({ "name": name })),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["key"].as_str().unwrap().to_owned()
    }

    /// Creates a managed key with the account token; returns the secret.
    fn create_key(&self, account_token: &str, name: &str) -> String {
        let r = self.api(account_token, "POST", "/api/keys", Some(serde_json::json!({ "name": name })));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["key"].as_str().unwrap().to_owned()
    }

    /// Creates a management key and one child of it with `spec` (`name`, limits, …) with the account
    /// token; returns the child as created (`id`, `key`, …).
    fn create_child(&self, account_token: &str, spec: Value) -> Value {
        let m =
            self.api(account_token, "POST", "/api/management/keys", Some(serde_json::json!({"name": "m"})));
        assert_eq!(m.status, 201, "{}", m.text());
        let mid = m.json()["id"].as_str().unwrap().to_owned();
        let r = self.api(account_token, "POST", &format!("/api/management/keys/{mid}/children"), Some(spec));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    fn metrics(&self) -> String {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let r = http(self.admin_address(), "GET", "/metrics", &[("Authorization", &auth)], None);
        assert_eq!(r.status, 200);
        r.text()
    }

    /// A gauge or counter value from `/metrics` (the first series whose line starts with `name`).
    fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Every usage record of `account` (admin API; applies the journal first).
    fn usage_records(&self, account: &str) -> Vec<Value> {
        let r = self.admin(
            "GET",
            &format!("/admin/accounts/{account}/usage?from=1970-01-01&to=2100-01-01&limit=100000"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"].as_array().unwrap().clone()
    }

    /// The live balance of `account`.
    fn balance(&self, account: &str) -> i64 {
        let r = self.admin("GET", &format!("/admin/accounts/{account}"), None);
        r.json()["balance_ngonka"].as_str().unwrap().parse().unwrap()
    }
}

impl GatewayApi for Gateway {
    fn public(&self) -> SocketAddr {
        self.addr
    }
    fn admin_address(&self) -> SocketAddr {
        self.admin_addr
    }
}

impl Gateway {
    /// Runs `gonka-gateway admin --url <this gateway's admin listener> ARGS` with its admin token; its JSON
    /// answer (it must succeed).
    pub fn admin_cli(&self, args: &[&str]) -> Value {
        let out = Command::new(BIN)
            .args(["admin", "--url", &format!("http://{}", self.admin_addr)])
            .args(args)
            .env("GATEWAY_ADMIN_TOKEN", &self.admin_token)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn start(node_urls: &[String]) -> Gateway {
        Self::start_with(GatewayOpts { node_urls: node_urls.to_vec(), ..GatewayOpts::default() })
    }

    pub fn start_with(opts: GatewayOpts) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config_toml(&opts, dir.path())).unwrap();
        let envs: Vec<(String, String)> =
            opts.envs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let (proc, addr, admin_addr) = Self::spawn(dir.path(), &config_path, &envs);
        let mut gw = Gateway {
            proc,
            addr,
            admin_addr,
            admin_token: ADMIN_TOKEN.to_owned(),
            dir,
            config_path,
            envs,
            account_id: String::new(),
            account_token: String::new(),
            api_key: String::new(),
        };
        let (id, token) = gw.create_account("test");
        gw.credit(&id, opts.credit_ngonka, "test-initial");
        gw.api_key = gw.admin_key(&id, "test key");
        gw.account_id = id;
        gw.account_token = token;
        gw
    }

    fn spawn(dir: &Path, config: &Path, envs: &[(String, String)]) -> (Proc, SocketAddr, SocketAddr) {
        let mut all: Vec<(&str, &str)> = vec![("TEST_ADMIN_TOKEN", ADMIN_TOKEN)];
        all.extend(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut proc = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], dir, &all);
        let addr = proc.wait_line("GATEWAY_LISTEN=").parse().unwrap();
        let admin_addr = proc.wait_line("GATEWAY_ADMIN_LISTEN=").parse().unwrap();
        (proc, addr, admin_addr)
    }

    /// Starts the gateway again on the same data directory (after it stopped or was killed).
    pub fn restart(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let (proc, addr, admin_addr) = Self::spawn(self.dir.path(), &self.config_path, &self.envs);
        self.proc = proc;
        self.addr = addr;
        self.admin_addr = admin_addr;
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn api_key(&self) -> String {
        self.api_key.clone()
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.api_key)
    }
}

/// A gateway running inside the test process (so the test can hand it a store wrapper or a clock).
pub struct InProc {
    pub running: Option<gonka_gateway::gateway::Running>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub account_id: String,
    pub account_token: String,
    pub api_key: String,
}

impl GatewayApi for InProc {
    fn public(&self) -> SocketAddr {
        self.addr
    }
    fn admin_address(&self) -> SocketAddr {
        self.admin_addr
    }
}

impl InProc {
    pub fn start(
        opts: GatewayOpts,
        wrap: impl FnOnce(Box<dyn gonka_gateway::store::Store>) -> Box<dyn gonka_gateway::store::Store>,
        clock: std::sync::Arc<dyn gonka_gateway::time::Clock>,
    ) -> InProc {
        let dir = tempfile::tempdir().unwrap();
        let file = gonka_gateway::config::ConfigFile::parse(&config_toml(&opts, dir.path())).unwrap();
        let settings = file.validate().unwrap();
        let store = gonka_gateway::store::open(&settings.store).unwrap();
        let mut boot = gonka_gateway::gateway::Boot::new(settings, ADMIN_TOKEN.to_owned());
        boot.store = Some(wrap(store));
        boot.clock = clock;
        let (running, ()) = gonka_gateway::gateway::start(boot, |_| Ok(())).unwrap();
        let mut gw = InProc {
            addr: running.public_addr,
            admin_addr: running.admin_addr,
            running: Some(running),
            dir,
            account_id: String::new(),
            account_token: String::new(),
            api_key: String::new(),
        };
        let (id, token) = gw.create_account("test");
        gw.credit(&id, opts.credit_ngonka, "test-initial");
        gw.api_key = gw.create_key(&token, "test key");
        gw.account_id = id;
        gw.account_token = token;
        gw
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.api_key)
    }

    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// One request with `ureq` (an independent HTTP implementation).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let url = format!("http://{addr}{path}");
    let agent = agent();
    let mut req = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let result = match body {
        Some(b) => agent.run(req.header("Content-Type", "application/json").body(b.to_vec()).unwrap()),
        None => agent.run(req.body(()).unwrap()),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = resp.body_mut().with_config().limit(64 * 1024 * 1024).read_to_vec().unwrap();
    Resp { status, headers, body }
}

/// POST JSON with the given bearer.
pub fn post(addr: SocketAddr, path: &str, auth: &str, body: &Value) -> Resp {
    http(addr, "POST", path, &[("Authorization", auth)], Some(body.to_string().as_bytes()))
}

pub fn chat_body(content: &str, max_tokens: u64, stream: bool) -> Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

/// The text of the `data:` events of an SSE body, concatenating `choices[0].delta.content`.
pub fn sse_text(body: &str) -> String {
    let mut text = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
    }
    text
}

/// POSTs `body` to `path` on a raw connection and reads the streamed answer until what arrived satisfies
/// `until`; returns the connection, still open (for a test that hangs up, or reads on).
pub fn open_stream(
    addr: SocketAddr,
    auth: &str,
    path: &str,
    body: &str,
    until: impl Fn(&str) -> bool,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !until(&String::from_utf8_lossy(&seen)) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

/// Writes `bytes` on a fresh connection and reads until the server closes (or `timeout`).
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(bytes).unwrap();
    read_until_close(&mut s, timeout)
}

/// Reads until EOF; the flag says whether the server closed (false: timed out with the socket open).
pub fn read_until_close(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return (out, false);
        }
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
}

/// Status codes of every response head found in `bytes`, in order.
pub fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text[i + 9..].get(..3).and_then(|s| s.parse().ok()))
        .collect()
}

/// Sends again while the answer is 429 `budget_in_flight` (holds of requests in flight leave no room
/// for now, as a client honouring Retry-After would), at most `tries` times: the last status and how
/// many such refusals came before it.
pub fn retry_in_flight(tries: u32, mut send: impl FnMut() -> Resp) -> (u16, u32) {
    let mut retries = 0;
    loop {
        let r = send();
        if r.status == 429 && retries < tries {
            assert_eq!(r.json()["error"]["code"], "budget_in_flight", "{}", r.text());
            assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
            retries += 1;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return (r.status, retries);
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Runs `f` once across every test process (nextest runs each test in a process of its own): the first
/// to take the lock directory `target/<name>.lock` runs it while the others wait, then each sees `done()`.
fn once_across_processes(name: &str, done: impl Fn() -> bool, f: impl FnOnce()) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let lock = target.join(format!("{name}.lock"));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if done() {
            return;
        }
        if std::fs::create_dir(&lock).is_ok() {
            break;
        }
        // A lock older than any install is one whose process was killed.
        let age = std::fs::metadata(&lock).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > Duration::from_secs(900)) {
            let _ = std::fs::remove_dir(&lock);
        }
        assert!(Instant::now() < deadline, "waited too long for another test to finish {name}");
        std::thread::sleep(Duration::from_millis(200));
    }
    struct Unlock(PathBuf);
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unlock = Unlock(lock);
    if !done() {
        f();
    }
}

/// Installs Debian's `package` with apt-get unless `installed()` (once across test processes; needs
/// root and the package mirrors; `apt-get update` only when the lists are too old to find it).
fn debian_package(package: &str, installed: impl Fn() -> bool) {
    once_across_processes(&format!("test-{package}-install"), &installed, || {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", package])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).stdout(Stdio::null()).status();
            install();
        }
    });
    assert!(
        installed(),
        "{package} is not installed and `apt-get install -y -q {package}` did not install it (it needs root \
         and network access to the package mirrors)"
    );
}

/// nginx (Debian's package), installed on first use when missing.
pub fn nginx_binary() -> PathBuf {
    let find = || ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().map(PathBuf::from).find(|p| p.exists());
    debian_package("nginx", || find().is_some());
    find().unwrap()
}

/// Panics, saying how to start it, unless PostgreSQL answers at `url` (the conformance and several-
/// instances tests need it: 127.0.0.1:5432, user postgres, trust auth, database `test`).
pub fn require_postgres(url: &str) {
    let config: postgres::Config = url.parse().unwrap();
    let reachable = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => {
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let addr = format!("{host}:{port}");
            let to = |a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_secs(2));
            match std::net::ToSocketAddrs::to_socket_addrs(&addr.as_str()).map(|mut a| a.next()) {
                Ok(Some(a)) => to(a).map(drop).map_err(|e| format!("{addr}: {e}")),
                _ => Err(format!("{addr}: cannot resolve")),
            }
        }
        _ => Ok(()),
    };
    if let Err(e) = reachable {
        panic!(
            "PostgreSQL is not reachable at {e}. These tests need a local PostgreSQL (user postgres, trust \
             auth, database test); start it with:\n    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        );
    }
    if let Err(e) = postgres::Client::connect(url, postgres::NoTls) {
        let why = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
        let db = config.get_dbname().unwrap_or("postgres");
        panic!(
            "PostgreSQL at {url} refused the tests' connection: {why}. They connect as user postgres \
             (trust auth) to database {db}; create it with:\n    createdb -h 127.0.0.1 -U postgres {db}"
        );
    }
}

/// Panics, saying how to start it, unless Redis answers at 127.0.0.1:6379 (the leases tests need it).
pub fn require_redis() {
    let addr: SocketAddr = "127.0.0.1:6379".parse().unwrap();
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        panic!(
            "Redis is not reachable at {addr} ({e}). The tests of several instances with leases need a local \
             Redis; start it with:\n    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" \
             --appendonly no"
        );
    }
}

/// A Python interpreter with the official `openai` and `anthropic` SDKs installed (a venv under
/// `target/`, from `tests/python/requirements.txt`, created on first use and shared by every test run).
pub fn python_with_openai() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/test-venv");
    let python = venv.join("bin/python");
    // The marker holds the requirements the venv was built from; other requirements rebuild it.
    let ready = venv.join(".ready");
    let requirements = root.join("tests/python/requirements.txt");
    let requirements_text = std::fs::read_to_string(&requirements).unwrap();
    let is_ready = || std::fs::read_to_string(&ready).is_ok_and(|r| r == requirements_text);
    once_across_processes("test-venv", is_ready, || {
        let ok = (|| {
            if !python.exists() {
                let s = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().ok()?;
                if !s.success() {
                    return None;
                }
            }
            let s = Command::new(&python)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"])
                .arg(&requirements)
                .status()
                .ok()?;
            s.success().then_some(())
        })();
        if ok.is_some() {
            std::fs::write(&ready, &requirements_text).unwrap();
        }
    });
    assert!(is_ready(), "could not install the Python test requirements into {}", venv.display());
    python
}

/// Runs `tests/python/<script>` with the SDK venv; panics with its output unless it exits 0.
pub fn run_python(script: &str, envs: &[(&str, String)]) -> String {
    run_python_args(script, &[], envs)
}

/// The same, with arguments for the script.
pub fn run_python_args(script: &str, args: &[&str], envs: &[(&str, String)]) -> String {
    let python = python_with_openai();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let mut cmd = Command::new(python);
    cmd.arg(path).args(args);
    run_script(cmd, script, envs)
}

/// Runs `cmd` (a test script) with `envs`; panics with its output unless it exits 0. Its stdout.
fn run_script(mut cmd: Command, script: &str, envs: &[(&str, String)]) -> String {
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Debian's Chromium (`/usr/bin/chromium`), installed on first use when missing.
pub fn chromium_binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    debian_package("chromium", || path.exists());
    path
}

/// The npm packages the browser tests run with (`tests/browser/package.json`: playwright-core and
/// axe-core), installed with `npm ci` into `target/browser-node/` on first use and whenever the lock
/// file changes; returns its `node_modules`.
pub fn browser_node_modules() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/browser-node");
    let lock = std::fs::read_to_string(root.join("tests/browser/package-lock.json")).unwrap();
    let ready = dir.join(".ready");
    let is_ready = || std::fs::read_to_string(&ready).is_ok_and(|r| r == lock);
    once_across_processes("test-browser-node", is_ready, || {
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(root.join("tests/browser").join(f), dir.join(f)).unwrap();
        }
        let ok = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            std::fs::write(&ready, &lock).unwrap();
        }
    });
    assert!(is_ready(), "could not install the browser test packages into {} (npm ci)", dir.display());
    dir.join("node_modules")
}

/// Runs `node tests/browser/<script>` against Chromium with `envs`; panics with its output unless it
/// exits 0. Returns its stdout.
pub fn run_browser_script(script: &str, envs: &[(&str, String)]) -> String {
    let chromium = chromium_binary();
    let modules = browser_node_modules();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/browser").join(script))
        .env("CHROMIUM", chromium)
        .env("NODE_DEPS", modules)
        .env("SCREENSHOTS", root.join("target/dashboard-screenshots"));
    run_script(cmd, script, envs)
}

/// The Codex CLI version the tests run (npm `@openai/codex`).
pub const CODEX_VERSION: &str = "0.171.0";

/// The Codex CLI, installed with npm under `target/test-codex` on first use (its npm cache there too) and
/// shared by every test run; another version rebuilds it.
pub fn codex_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/test-codex");
    let bin = dir.join("node_modules/.bin/codex");
    let ready = dir.join(".ready");
    let is_ready = || bin.exists() && std::fs::read_to_string(&ready).is_ok_and(|v| v == CODEX_VERSION);
    once_across_processes("test-codex", is_ready, || {
        std::fs::create_dir_all(&dir).unwrap();
        let installed = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&dir)
            .arg(format!("@openai/codex@{CODEX_VERSION}"))
            .env("npm_config_cache", dir.join("npm-cache"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if installed {
            std::fs::write(&ready, CODEX_VERSION).unwrap();
        }
    });
    assert!(
        is_ready(),
        "could not install @openai/codex@{CODEX_VERSION} into {} (it needs npm and access to the npm registry)",
        dir.display()
    );
    bin
}
