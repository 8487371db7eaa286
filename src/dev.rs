//! `gonka-gateway dev`: the gateway with an in-process simulated Gonka network, a data directory and
//! demo credentials, ready in one command.

use crate::app::App;
use crate::config::{ConfigFile, ModelFile, NodeFile};
use crate::sim::{self, SimConfig, SimParams};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The `dev` command's options.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub sim_ttft_ms: u64,
    pub sim_tokens_per_s: f64,
    pub upstream_kind: String,
}

/// Models of the demo network, with demo prices (ngonka per token).
pub const DEV_MODELS: [(&str, u64, u64, u64); 2] = [
    ("moonshotai/Kimi-K2.6", 262_144, 1_000, 4_000),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", 262_144, 500, 2_000),
];

/// What `dev` prints once it is ready.
#[derive(Debug)]
pub struct DevReady {
    pub base_url: String,
    pub api_key: String,
    pub admin_token: String,
    pub running: crate::runtime::Running,
    pub sim: sim::SimHandle,
}

/// Starts the simulator and the gateway.
pub fn start(opts: &DevOptions) -> io::Result<DevReady> {
    if opts.upstream_kind != "openai" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--upstream-kind {}: only openai is available in this build",
                opts.upstream_kind
            ),
        ));
    }
    let sim = sim::start(SimConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        models: DEV_MODELS.iter().map(|m| m.0.to_owned()).collect(),
        api_key: None,
        workers: 1,
        params: SimParams {
            ttft_ms: opts.sim_ttft_ms,
            tokens_per_s: opts.sim_tokens_per_s,
            completion_tokens: 32,
            ..SimParams::default()
        },
    })?;

    let mut file = ConfigFile {
        data_dir: opts.data_dir.to_string_lossy().into_owned(),
        ..ConfigFile::default()
    };
    file.server.listen = opts.listen.to_string();
    file.admin.listen = opts.admin_listen.to_string();
    file.models = DEV_MODELS
        .iter()
        .map(|(id, ctx, pp, pc)| ModelFile {
            id: (*id).to_owned(),
            context_length: Some(*ctx),
            price_prompt_ngonka: *pp,
            price_completion_ngonka: *pc,
        })
        .collect();
    file.upstream.nodes = vec![NodeFile {
        url: sim.base_url(0),
        kind: "openai".into(),
        api_key_env: None,
        models: Vec::new(),
    }];
    let settings = file
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let admin_token = admin_token(&settings)?;
    let api_key = crate::secret::load_or_create(&settings.data_dir.join("dev_api_key"), || {
        Ok(format!("gk-prx-{}", crate::secret::random_base62(40)?))
    })?;
    let app = Arc::new(App::new(settings, admin_token.clone(), crate::control::resolve));
    let running = crate::runtime::start(app)?;
    Ok(DevReady {
        base_url: format!("http://{}/v1", running.public_addr),
        api_key,
        admin_token,
        running,
        sim,
    })
}

/// The admin token: from the environment (`admin.token_env`), else generated once into the data dir.
pub fn admin_token(settings: &crate::config::Settings) -> io::Result<String> {
    match &settings.admin_token {
        Some(t) => Ok(t.clone()),
        None => crate::secret::load_or_create(&settings.data_dir.join("admin_token"), || {
            Ok(format!("gadm-{}", crate::secret::random_base62(40)?))
        }),
    }
}
