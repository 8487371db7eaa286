//! `gonka-gateway dev`: the gateway with an in-process simulated Gonka network, a data directory and
//! demo credentials, ready in one command.

use crate::config::{ConfigFile, ModelFile, NodeFile};
use crate::control::ControlState;
use crate::control::accounts::KeySpec;
use crate::error::ApiError;
use crate::model::KeyKind;
use crate::sim::{self, SimConfig, SimParams};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The `dev` command's options.
#[derive(Debug, Clone, clap::Args)]
pub struct DevOptions {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// The data directory (store, journal, secrets).
    #[arg(long = "data", default_value = "./data/dev")]
    pub data_dir: PathBuf,
    /// Simulated time to first token, ms.
    #[arg(long, default_value_t = 200)]
    pub sim_ttft_ms: u64,
    /// Simulated tokens per second.
    #[arg(long, default_value_t = 25.0)]
    pub sim_tokens_per_s: f64,
    /// How the gateway reaches the simulated nodes: `openai` (Bearer) or `gonka` (signed).
    #[arg(long, default_value = "openai", value_parser = ["openai", "gonka"])]
    pub upstream_kind: String,
}

/// Models of the demo network: id, context length, demo prices (ngonka per token), an alias without `/`.
pub const DEV_MODELS: [(&str, u64, u64, u64, &str); 2] = [
    ("moonshotai/Kimi-K2.6", 262_144, 1_000, 4_000, "kimi-k2.6"),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", 262_144, 500, 2_000, "qwen3-235b"),
];

/// What `dev` has running once it is ready.
#[derive(Debug)]
pub struct DevReady {
    pub base_url: String,
    pub api_key: String,
    /// The demo account's token: it signs in to the dashboard.
    pub account_token: String,
    pub admin_token: String,
    pub running: crate::gateway::Running,
    pub sim: sim::SimHandle,
}

impl DevReady {
    /// The lines `dev` prints, each `NAME=value`, so `export` of them sets up the OpenAI and Anthropic
    /// SDKs and the `admin` command, and say where the dashboard is and what signs in to it.
    pub fn lines(&self) -> Vec<String> {
        let mut lines =
            ready_lines(self.running.public_addr, self.running.admin_addr, &self.api_key, &self.admin_token);
        lines.push(format!("DASHBOARD_URL={}/dashboard", client_url(self.running.public_addr)));
        lines.push(format!("ACCOUNT_TOKEN={}", self.account_token));
        lines
    }
}

/// A URL a client on this machine reaches `addr` by: an unspecified address (`0.0.0.0`, `::`) is
/// reached on loopback.
fn client_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `ANTHROPIC_BASE_URL` (the root: the Anthropic SDK adds `/v1`
/// itself), `ADMIN_TOKEN`, and what the `admin` command reads: `GATEWAY_ADMIN_URL`,
/// `GATEWAY_ADMIN_TOKEN`.
pub fn ready_lines(public: SocketAddr, admin: SocketAddr, api_key: &str, admin_token: &str) -> Vec<String> {
    let root = client_url(public);
    vec![
        format!("OPENAI_BASE_URL={root}/v1"),
        format!("OPENAI_API_KEY={api_key}"),
        format!("ANTHROPIC_BASE_URL={root}"),
        format!("ADMIN_TOKEN={admin_token}"),
        format!("GATEWAY_ADMIN_URL={}", client_url(admin)),
        format!("GATEWAY_ADMIN_TOKEN={admin_token}"),
    ]
}

/// Locks the data directory, then starts the simulator and the gateway.
pub fn start(opts: &DevOptions) -> io::Result<DevReady> {
    // Before the simulator binds anything or a secret is written: one process per data directory.
    let lock = crate::rt::data_dir::DataDirLock::acquire(&opts.data_dir)?;
    let gonka = match opts.upstream_kind.as_str() {
        "openai" => false,
        "gonka" => true,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--upstream-kind {other}: openai or gonka"),
            ));
        }
    };
    // In gonka mode the simulated network has three nodes, found by discovery and reached signed.
    let nodes = if gonka { 3 } else { 1 };
    let sim = sim::start(SimConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0)); nodes],
        models: DEV_MODELS.iter().map(|m| m.0.to_owned()).collect(),
        gonka,
        params: SimParams {
            ttft_ms: opts.sim_ttft_ms,
            tokens_per_s: opts.sim_tokens_per_s,
            completion_tokens: 32,
            ..SimParams::default()
        },
        ..SimConfig::default()
    })?;

    let mut file =
        ConfigFile { data_dir: opts.data_dir.to_string_lossy().into_owned(), ..ConfigFile::default() };
    file.server.listen = opts.listen.to_string();
    file.admin.listen = opts.admin_listen.to_string();
    file.models = DEV_MODELS
        .iter()
        .map(|(id, ctx, pp, pc, alias)| ModelFile {
            id: (*id).to_owned(),
            context_length: Some(*ctx),
            price_prompt_ngonka: *pp,
            price_completion_ngonka: *pc,
            tokenizer: String::new(),
            aliases: vec![(*alias).to_owned()],
        })
        .collect();
    if !gonka {
        file.upstream.nodes = vec![NodeFile {
            url: sim.base_url(0),
            kind: "openai".into(),
            api_key_env: None,
            models: Vec::new(),
            transfer_address: None,
        }];
    }
    let mut settings =
        file.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if gonka {
        // A demo Gonka account key, generated once into the data directory.
        let key = crate::secret::load_or_create(&settings.data_dir.join("dev_gonka_key"), || {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
            Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
        })?;
        let seed = crate::config::NodeUrl::parse(&sim.sim.nodes[0].inference_url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        settings.upstream.gonka = Some(crate::config::GonkaSettings {
            private_key: crate::config::Secret(key),
            seeds: vec![seed],
            use_allowlist: true,
            refresh: std::time::Duration::from_secs(30),
        });
    }
    let admin_token = crate::gateway::admin_token(&settings)?;
    let data_dir = settings.data_dir.clone();
    let mut boot = crate::gateway::Boot::new(settings, admin_token.clone());
    boot.lock = Some(lock);
    let (running, (api_key, account_token)) =
        crate::gateway::start(boot, move |st| demo_account(st, &data_dir))?;
    Ok(DevReady {
        base_url: format!("{}/v1", client_url(running.public_addr)),
        api_key,
        account_token,
        admin_token,
        running,
        sim,
    })
}

/// The demo account's starting balance: 1,000 GNK.
pub const DEV_CREDIT_NGONKA: u64 = 1_000 * 1_000_000_000;

/// Makes sure the data directory holds a demo account with a balance, an account token and an active
/// managed key, and returns the key and the token. Their secrets are kept in `<data>/dev_api_key` and
/// `<data>/dev_account_token` (mode 0600) so a restart prints the same working ones; the store itself
/// only has their hashes.
fn demo_account(st: &mut ControlState, data_dir: &Path) -> Result<(String, String), ApiError> {
    let io = |e: io::Error| ApiError::Internal(e.to_string());
    let account_file = data_dir.join("dev_account");
    let token_file = data_dir.join("dev_account_token");
    let known = read_trimmed(&account_file).filter(|id| st.has_account(id));
    let account_id = match known {
        Some(id) => id,
        None => {
            let (account, token) = st.create_account("demo")?;
            write_secret(&account_file, &account.id).map_err(io)?;
            let secret = token.secret.ok_or_else(|| ApiError::Internal("a new token has a secret".into()))?;
            write_secret(&token_file, &secret).map_err(io)?;
            account.id
        }
    };
    st.credit(&account_id, DEV_CREDIT_NGONKA, "dev-initial-credit")?;
    let account_token = match read_trimmed(&token_file) {
        Some(t) if st.is_live_key(&t, KeyKind::AccountToken, &account_id) => t,
        // A token rotated away, or an account made before its token was kept: a new one.
        _ => {
            let token = st.rotate_account_token(&account_id)?;
            let secret = token.secret.ok_or_else(|| ApiError::Internal("a new token has a secret".into()))?;
            write_secret(&token_file, &secret).map_err(io)?;
            secret
        }
    };
    let key_file = data_dir.join("dev_api_key");
    if let Some(secret) = read_trimmed(&key_file)
        && st.is_live_key(&secret, KeyKind::Managed, &account_id)
    {
        return Ok((secret, account_token));
    }
    let key = st.create_key(
        &account_id,
        KeyKind::Managed,
        None,
        KeySpec { name: "demo".into(), ..KeySpec::default() },
    )?;
    let secret = key.secret.ok_or_else(|| ApiError::Internal("a new key has a secret".into()))?;
    write_secret(&key_file, &secret).map_err(io)?;
    Ok((secret, account_token))
}

#[expect(clippy::disallowed_methods, reason = "start-up, before anything is served")]
fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

#[expect(clippy::disallowed_methods, reason = "start-up, before anything is served")]
fn write_secret(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::rt::data_dir::create_private(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(value.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_are_what_the_sdks_and_the_admin_command_read() {
        let lines = ready_lines(
            "0.0.0.0:9080".parse().unwrap(),
            "127.0.0.1:9081".parse().unwrap(),
            "gk-prx-k",
            "gadm-t",
        );
        assert_eq!(
            lines,
            [
                "OPENAI_BASE_URL=http://127.0.0.1:9080/v1",
                "OPENAI_API_KEY=gk-prx-k",
                "ANTHROPIC_BASE_URL=http://127.0.0.1:9080",
                "ADMIN_TOKEN=gadm-t",
                "GATEWAY_ADMIN_URL=http://127.0.0.1:9081",
                "GATEWAY_ADMIN_TOKEN=gadm-t",
            ]
        );
        assert_eq!(client_url("[::]:1".parse().unwrap()), "http://[::1]:1");
    }
}
