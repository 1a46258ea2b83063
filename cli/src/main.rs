//! `blockstore`: look inside a block store from a shell, move it, and measure it.

mod bench;
mod common;
mod copy;
mod get;
mod health;
mod ls;
mod put;
mod rm;
mod scrub;
mod stat;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the store or the system failed (I/O, network, unhealthy store, corrupt blocks)
  2  invalid input: bad arguments, key, range or configuration
  3  not found: no such block, or no store at the configured path

Configuration: --config FILE, else $BLOCKSTORE_CONFIG, else the filesystem store in
./blockstore-data. Commands that only read never create a store.";

/// Inspect, copy and benchmark a block store.
#[derive(Parser, Debug)]
#[command(name = "blockstore", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// The store's TOML configuration (default: $BLOCKSTORE_CONFIG, else ./blockstore-data).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print nothing but results and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Show what the store does on stderr: -v each call (a line per span, with its
    /// key, bytes, outcome and time, and every S3 attempt), -vv also the HTTP layer.
    /// RUST_LOG (e.g. `blockstore=debug`) overrides. Warnings (retries, throttling,
    /// slow calls, clean-ups that gave up) show by default.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a block from FILE (or standard input).
    Put(put::Args),
    /// Write a block (or a range of it) to standard output or a file.
    Get(get::Args),
    /// Print a block's size in bytes.
    Stat(stat::Args),
    /// List the keys under a prefix.
    Ls(ls::Args),
    /// Delete blocks, or every block under a prefix.
    Rm(rm::Args),
    /// Check that the store can serve reads and writes.
    Health,
    /// Copy every block under a prefix to another store.
    Copy(copy::Args),
    /// Measure the store's throughput and latency under a temporary prefix.
    Bench(bench::Args),
    /// Check every block under a prefix against its checksums; exit 1 if any is corrupt.
    Scrub(scrub::Args),
}

/// Logs on stderr: RUST_LOG if set, else by `-v` (`-q`: errors only).
fn init_logs(verbose: u8, quiet: bool) {
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::EnvFilter;
    let default = match (verbose, quiet) {
        (0, true) => "error",
        (0, false) => "warn",
        (1, _) => "warn,blockstore=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.verbose, cli.quiet);
    common::QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let out = common::Output {
        quiet: cli.quiet,
        json: cli.json,
    };
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Put(args) => put::run(config, &out, args),
        Command::Get(args) => get::run(config, &out, args),
        Command::Stat(args) => stat::run(config, &out, args),
        Command::Ls(args) => ls::run(config, &out, args),
        Command::Rm(args) => rm::run(config, &out, args),
        Command::Health => health::run(config, &out),
        Command::Copy(args) => copy::run(config, &out, args),
        Command::Bench(args) => bench::run(config, &out, args),
        Command::Scrub(args) => scrub::run(config, &out, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.code == common::EXIT_QUIET => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("blockstore: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
