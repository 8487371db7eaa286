//! The `gonka-gateway` command line: each command is a type of the library, with its flags derived on it.

use clap::{Parser, Subcommand};
use gonka_gateway::{cli, config::ConfigFile, dev, gateway, logging, rt::data_dir::DataDirLock, sim};
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
    Dev(dev::DevOptions),
    /// The production server.
    Serve {
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// The Gonka node simulator.
    Sim(Box<sim::SimConfig>),
    /// Accounts, credits, keys and prices, through the admin API.
    Admin(cli::Admin),
    /// The Gonka account key in GONKA_PRIVATE_KEY: its address, and request signatures.
    #[command(subcommand)]
    Gonka(cli::GonkaCommand),
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
    logging::flush();
    eprintln!("gonka-gateway: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

fn run(command: Command) -> Result<(), String> {
    let cannot_start = |e: std::io::Error| format!("cannot start: {e}");
    match command {
        Command::Dev(opts) => {
            logging::init(log::LevelFilter::Info);
            let ready = dev::start(&opts).map_err(cannot_start)?;
            ready.lines().iter().for_each(|l| say(l));
            let result = ready.running.run_until_signal();
            ready.sim.stop();
            logging::flush();
            result.map_err(|e| e.to_string())
        }
        Command::Serve { config } => {
            let settings = ConfigFile::load(&config).and_then(|f| f.validate()).map_err(|e| e.to_string())?;
            logging::init(settings.log_level);
            // Before the admin token may be written there: a directory another process holds is refused.
            let lock = DataDirLock::acquire(&settings.data_dir).map_err(cannot_start)?;
            let admin_token = gateway::admin_token(&settings).map_err(|e| format!("admin token: {e}"))?;
            let mut boot = gateway::Boot::new(settings, admin_token);
            boot.lock = Some(lock);
            let (running, ()) = gateway::start(boot, |_| Ok(())).map_err(cannot_start)?;
            say(&format!("GATEWAY_LISTEN={}", running.public_addr));
            say(&format!("GATEWAY_ADMIN_LISTEN={}", running.admin_addr));
            let result = running.run_until_signal();
            logging::flush();
            result.map_err(|e| e.to_string())
        }
        Command::Sim(config) => {
            logging::init(log::LevelFilter::Warn);
            let handle = sim::start(*config).map_err(|e| format!("cannot start the simulator: {e}"))?;
            for i in 0..handle.addrs.len() {
                say(&format!("SIM_NODE={}", handle.base_url(i)));
                if handle.sim.gonka {
                    say(&format!("SIM_NODE_ADDRESS={}", handle.sim.nodes[i].address));
                }
            }
            let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
            let waited = signal_hook::iterator::Signals::new(signals).map(|mut s| s.forever().next());
            handle.stop();
            logging::flush();
            waited.map(drop).map_err(|e| e.to_string())
        }
        Command::Admin(admin) => {
            let (status, body) =
                admin.run().map_err(|e| format!("cannot reach the admin API at {}: {e}", admin.url))?;
            say(&serde_json::to_string_pretty(&body).unwrap_or_default());
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(format!("the admin API answered {status}"))
            }
        }
        Command::Gonka(command) => {
            let key = std::env::var("GONKA_PRIVATE_KEY")
                .map_err(|_| "GONKA_PRIVATE_KEY is not set (the account's private key, hex)".to_owned())?;
            say(&command.run(&key, &mut std::io::stdin())?);
            Ok(())
        }
    }
}
