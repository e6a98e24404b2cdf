//! `quorum-tgt`: the storage target daemon, with `spdk_tgt`'s options so SPDK users' scripts
//! and habits carry over.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::filter::{Directive, EnvFilter};

use quorum_bdev::control::app::{self, AppOptions};
use quorum_bdev::control::server::SocketAccess;
use quorum_bdev::runtime::cpumask::parse_cpumask;

/// Storage target: reactors, bdevs (malloc, null, uring, aio, error, delay, quorum), a
/// JSON-RPC server compatible with SPDK's `spdk-rpc`, and NBD exports.
#[derive(Parser, Debug)]
#[command(
    name = "quorum-tgt",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("QUORUM_GIT_REV"), ")")
)]
struct Args {
    /// Reactor cores: a hex mask (0x3) or a list ([0,1], [0-3]).
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    cpumask: String,

    /// JSON-RPC Unix socket, created with mode 0600 whatever the umask.
    #[arg(short = 'r', long = "rpc-socket", default_value = "/var/tmp/spdk.sock")]
    rpc_socket: PathBuf,

    /// Let the daemon's group use the JSON-RPC socket too (mode 0660): whoever can connect
    /// controls the target.
    #[arg(long = "rpc-group-access")]
    rpc_group_access: bool,

    /// SPDK-format JSON config applied at start-up, before RPC is served.
    #[arg(short = 'c', long = "json")]
    json: Option<PathBuf>,

    /// Directory for vhost-user sockets, accepted as spdk_tgt's option (it must exist);
    /// this target has no vhost-user export yet.
    #[arg(short = 'S', long = "vhost-sock-dir")]
    vhost_sock_dir: Option<PathBuf>,

    /// Reactors sleep on events instead of busy-polling (laptops, CI).
    #[arg(long = "interrupt-mode")]
    interrupt_mode: bool,

    /// On SIGINT/SIGTERM, wait at most this many seconds for in-flight I/O to drain, then
    /// at most as long again for the final flush; what is left is logged and the exit status
    /// is a failure.
    #[arg(long = "shutdown-timeout", value_name = "SECONDS", default_value_t = app::DEFAULT_SHUTDOWN_TIMEOUT.as_secs_f64(), value_parser = parse_seconds)]
    shutdown_timeout: f64,

    /// Debug logs for a part of the target: "all", SPDK's "rpc" or "reactor", a module path
    /// of the library (bdev, control, runtime, modules::quorum...), or any tracing directive
    /// (target=level). Repeatable; RUST_LOG is honoured too.
    #[arg(short = 'L', long = "logflag")]
    logflag: Vec<String>,
}

/// A non-negative, finite number of seconds.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds")),
    }
}

fn log_directive(flag: &str) -> Result<Directive, String> {
    let text = match flag {
        "all" => "quorum_bdev=debug".to_string(),
        "rpc" => "quorum_bdev::control=debug".to_string(),
        "reactor" => "quorum_bdev::runtime=debug".to_string(),
        f if f.contains('=') => f.to_string(),
        f => format!("quorum_bdev::{f}=debug"),
    };
    text.parse()
        .map_err(|e| format!("invalid log flag '{flag}': {e}"))
}

fn init_logging(flags: &[String]) -> Result<(), String> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for flag in flags {
        filter = filter.add_directive(log_directive(flag)?);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(&args.logflag) {
        eprintln!("quorum-tgt: {e}");
        return ExitCode::from(2);
    }
    let cores = match parse_cpumask(&args.cpumask) {
        Ok(cores) => cores,
        Err(e) => {
            eprintln!("quorum-tgt: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = args.vhost_sock_dir.as_ref().filter(|d| !d.is_dir()) {
        eprintln!(
            "quorum-tgt: vhost socket directory {} does not exist",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let opts = AppOptions {
        cores,
        rpc_socket: args.rpc_socket,
        rpc_access: if args.rpc_group_access {
            SocketAccess::Group
        } else {
            SocketAccess::Owner
        },
        config: args.json,
        interrupt_mode: args.interrupt_mode,
        vhost_sock_dir: args.vhost_sock_dir,
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
    };
    match app::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quorum-tgt: {e}");
            ExitCode::FAILURE
        }
    }
}
