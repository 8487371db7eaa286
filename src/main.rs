//! The `gonka-gateway` command line.

use clap::{Parser, Subcommand};
use gonka_gateway::{config::ConfigFile, dev, sim};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc returns freed memory to the system within milliseconds; with glibc's malloc, whose dynamic
/// mmap threshold moves large blocks onto heaps it seldom trims, a burst of 10 MiB bodies left most of
/// its peak behind (`tests/robustness.rs` measures the peak and what comes back).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "gonka-gateway", version, about = "OpenAI-compatible gateway to the Gonka GPU network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Zero-setup demo: the gateway plus an in-process simulated Gonka network.
    Dev {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        #[arg(long, default_value = "./data/dev")]
        data: PathBuf,
        /// Simulated time to first token, ms.
        #[arg(long, default_value_t = 200)]
        sim_ttft_ms: u64,
        /// Simulated tokens per second.
        #[arg(long, default_value_t = 25.0)]
        sim_tokens_per_s: f64,
        /// How the gateway reaches the simulated nodes: `openai` (Bearer) or `gonka` (signed).
        #[arg(long, default_value = "openai", value_parser = ["openai", "gonka"])]
        upstream_kind: String,
    },
    /// The production server.
    Serve {
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// The Gonka node simulator.
    Sim(SimArgs),
    /// Accounts, credits, keys and prices, through the admin API.
    Admin(AdminArgs),
    /// The Gonka account key in GONKA_PRIVATE_KEY: its address, and request signatures.
    #[command(subcommand)]
    Gonka(GonkaCmd),
}

#[derive(Subcommand, Debug)]
enum GonkaCmd {
    /// Prints the gonka1… address of the key in GONKA_PRIVATE_KEY.
    Address,
    /// Prints the `Authorization` value for the request body read from standard input (its exact bytes).
    Sign {
        /// The node's transfer address the request is sent to.
        #[arg(long)]
        transfer_address: String,
        /// The `X-Timestamp` value, Unix nanoseconds.
        #[arg(long)]
        timestamp_ns: u64,
    },
}

#[derive(clap::Args, Debug)]
struct AdminArgs {
    /// The admin listener.
    #[arg(long, env = "GATEWAY_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    url: String,
    /// The admin token.
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Accounts.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Credits.
    #[command(subcommand)]
    Credits(CreditsCmd),
    /// Keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Model prices.
    #[command(subcommand)]
    Models(ModelsCmd),
}

#[derive(Subcommand, Debug)]
enum AccountsCmd {
    /// Creates an account; prints its token (shown once).
    Create {
        #[arg(long)]
        name: String,
    },
    List,
    Get {
        id: String,
    },
    /// Issues a new account token; the old one stops working.
    RotateToken {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum CreditsCmd {
    /// Credits an account; the same reference twice credits once.
    Add {
        account: String,
        #[arg(long)]
        amount_ngonka: String,
        #[arg(long)]
        reference: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Every key of an account.
    List {
        account: String,
    },
    /// Creates a managed (default) or management key; prints it (shown once).
    Create {
        account: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "managed", value_parser = ["managed", "management"])]
        kind: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// New secret; the old one stops working at once.
    Rotate {
        id: String,
    },
    /// Permanent.
    Archive {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCmd {
    /// Sets a model's prices (ngonka per token).
    Set {
        model: String,
        #[arg(long)]
        price_prompt_ngonka: String,
        #[arg(long)]
        price_completion_ngonka: String,
    },
    /// Removes a model's stored prices: a configured model goes back to its config prices, a model
    /// only the store had is gone.
    Delete {
        model: String,
    },
    List,
}

#[derive(clap::Args, Debug)]
struct SimArgs {
    /// Address of a simulated node; repeat for several nodes (port 0 picks a free port).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Additional simulated nodes on free ports of the first address's host.
    #[arg(long, default_value_t = 0)]
    extra_nodes: usize,
    /// Models served, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "gonka/sim-small")]
    models: Vec<String>,
    /// Require this Bearer key.
    #[arg(long)]
    api_key: Option<String>,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    tokens_per_s: f64,
    #[arg(long, default_value_t = 16)]
    completion_tokens: u64,
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    capacity_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    stall_rate: f64,
    /// A misbehaving node: completion tokens generated past the max_tokens it was sent.
    #[arg(long, default_value_t = 0)]
    overrun_tokens: u64,
    /// Check Gonka signatures (each node has a gonka1… address; participants and the allowlist are served).
    #[arg(long)]
    gonka: bool,
    /// Gonka mode: the nodes (by index, comma separated) on the Transfer Agent allowlist; default all.
    #[arg(long, value_delimiter = ',')]
    allowlist: Option<Vec<usize>>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Models of each node, nodes separated by `;`, models by `,` (e.g. `a;a,b;b`); default: --models.
    #[arg(long)]
    node_models: Option<String>,
    /// Gonka mode: participants listed at addresses where nothing runs.
    #[arg(long, default_value_t = 0)]
    dead_participants: usize,
}

/// The documented ready lines go to stdout, each on its own line.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[expect(clippy::print_stderr, reason = "start-up failures are reported before logging exists")]
fn fail(msg: &str) -> ExitCode {
    gonka_gateway::logging::flush();
    eprintln!("gonka-gateway: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev { listen, admin_listen, data, sim_ttft_ms, sim_tokens_per_s, upstream_kind } => {
            gonka_gateway::logging::init(log::LevelFilter::Info);
            let opts = dev::DevOptions {
                listen,
                admin_listen,
                data_dir: data,
                sim_ttft_ms,
                sim_tokens_per_s,
                upstream_kind,
            };
            let ready = match dev::start(&opts) {
                Ok(r) => r,
                Err(e) => return fail(&format!("cannot start: {e}")),
            };
            for line in ready.lines() {
                say(&line);
            }
            let result = ready.running.run_until_signal();
            ready.sim.stop();
            gonka_gateway::logging::flush();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Serve { config } => {
            let settings = match ConfigFile::load(&config).and_then(|f| f.validate()) {
                Ok(s) => s,
                Err(e) => return fail(&e.to_string()),
            };
            gonka_gateway::logging::init(settings.log_level);
            // Before the admin token may be written there: a directory another process holds is refused.
            let lock = match gonka_gateway::rt::data_dir::DataDirLock::acquire(&settings.data_dir) {
                Ok(l) => l,
                Err(e) => return fail(&format!("cannot start: {e}")),
            };
            let admin_token = match gonka_gateway::gateway::admin_token(&settings) {
                Ok(t) => t,
                Err(e) => return fail(&format!("admin token: {e}")),
            };
            let mut boot = gonka_gateway::gateway::Boot::new(settings, admin_token);
            boot.lock = Some(lock);
            let running = match gonka_gateway::gateway::start(boot, |_| Ok(())) {
                Ok((r, ())) => r,
                Err(e) => return fail(&format!("cannot start: {e}")),
            };
            say(&format!("GATEWAY_LISTEN={}", running.public_addr));
            say(&format!("GATEWAY_ADMIN_LISTEN={}", running.admin_addr));
            let result = running.run_until_signal();
            gonka_gateway::logging::flush();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Sim(args) => run_sim(args),
        Command::Admin(args) => run_admin(args),
        Command::Gonka(cmd) => run_gonka(cmd),
    }
}

fn run_gonka(cmd: GonkaCmd) -> ExitCode {
    use gonka_gateway::gonka::signer::GonkaSigner;
    let Ok(key) = std::env::var("GONKA_PRIVATE_KEY") else {
        return fail("GONKA_PRIVATE_KEY is not set (the account's private key, hex)");
    };
    let signer = match GonkaSigner::from_hex(&key) {
        Ok(s) => s,
        Err(e) => return fail(&format!("GONKA_PRIVATE_KEY: {e}")),
    };
    match cmd {
        GonkaCmd::Address => say(signer.address()),
        GonkaCmd::Sign { transfer_address, timestamp_ns } => {
            use std::io::Read;
            let mut body = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut body) {
                return fail(&format!("cannot read the body from standard input: {e}"));
            }
            say(&signer.sign(&body, timestamp_ns, &transfer_address));
        }
    }
    ExitCode::SUCCESS
}

fn run_admin(args: AdminArgs) -> ExitCode {
    use gonka_gateway::cli::{AdminCommand as C, AdminTarget, send};
    let command = match args.command {
        AdminCmd::Accounts(AccountsCmd::Create { name }) => C::AccountCreate { name },
        AdminCmd::Accounts(AccountsCmd::List) => C::AccountList,
        AdminCmd::Accounts(AccountsCmd::Get { id }) => C::AccountGet { id },
        AdminCmd::Accounts(AccountsCmd::RotateToken { id }) => C::AccountRotateToken { id },
        AdminCmd::Credits(CreditsCmd::Add { account, amount_ngonka, reference }) => {
            C::CreditAdd { account, amount_ngonka, reference }
        }
        AdminCmd::Keys(KeysCmd::List { account }) => C::KeyList { account },
        AdminCmd::Keys(KeysCmd::Create { account, name, kind }) => C::KeyCreate { account, name, kind },
        AdminCmd::Keys(KeysCmd::Pause { id }) => C::KeyAction { id, action: "pause".into() },
        AdminCmd::Keys(KeysCmd::Resume { id }) => C::KeyAction { id, action: "resume".into() },
        AdminCmd::Keys(KeysCmd::Rotate { id }) => C::KeyAction { id, action: "rotate".into() },
        AdminCmd::Keys(KeysCmd::Archive { id }) => C::KeyAction { id, action: "archive".into() },
        AdminCmd::Models(ModelsCmd::Set { model, price_prompt_ngonka, price_completion_ngonka }) => {
            C::ModelSet { model, price_prompt_ngonka, price_completion_ngonka }
        }
        AdminCmd::Models(ModelsCmd::Delete { model }) => C::ModelDelete { model },
        AdminCmd::Models(ModelsCmd::List) => C::ModelList,
    };
    let target = AdminTarget { url: args.url, token: args.token };
    match send(&target, &command.call()) {
        Ok((status, body)) => {
            say(&serde_json::to_string_pretty(&body).unwrap_or_default());
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                fail(&format!("the admin API answered {status}"))
            }
        }
        Err(e) => fail(&format!("cannot reach the admin API at {}: {e}", target.url)),
    }
}

fn run_sim(args: SimArgs) -> ExitCode {
    gonka_gateway::logging::init(log::LevelFilter::Warn);
    let mut listen = args.listen.clone();
    if let Some(first) = args.listen.first() {
        for _ in 0..args.extra_nodes {
            listen.push(SocketAddr::new(first.ip(), 0));
        }
    }
    let config = sim::SimConfig {
        listen,
        models: args.models,
        api_key: args.api_key,
        gonka: args.gonka,
        allowlist: args.allowlist,
        tls: args.tls_cert.zip(args.tls_key),
        node_models: args
            .node_models
            .map(|s| {
                s.split(';')
                    .map(|n| n.split(',').map(str::to_owned).filter(|m| !m.is_empty()).collect())
                    .collect()
            })
            .unwrap_or_default(),
        dead_participants: args.dead_participants,
        workers: args.workers,
        params: sim::SimParams {
            ttft_ms: args.ttft_ms,
            tokens_per_s: args.tokens_per_s,
            completion_tokens: args.completion_tokens,
            error_rate: args.error_rate,
            capacity_rate: args.capacity_rate,
            drop_rate: args.drop_rate,
            stall_rate: args.stall_rate,
            overrun_tokens: args.overrun_tokens,
        },
    };
    let handle = match sim::start(config) {
        Ok(h) => h,
        Err(e) => return fail(&format!("cannot start the simulator: {e}")),
    };
    for i in 0..handle.addrs.len() {
        say(&format!("SIM_NODE={}", handle.base_url(i)));
        if handle.sim.gonka {
            say(&format!("SIM_NODE_ADDRESS={}", handle.sim.nodes[i].address));
        }
    }
    let waited =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .map(|mut s| s.forever().next());
    handle.stop();
    gonka_gateway::logging::flush();
    match waited {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}
