//! The `silt` command line.
//!
//! ```text
//! silt serve [--config config.json] [--data DIR] [--addr ADDR] [--metric NAME=FREQ:AGG]...
//!                   run the HTTP server (cc-metric-store's API) on loopback, data in ./silt-data
//! silt check DIR    verify a data directory without modifying it (exit 0 clean, 1 damaged, 2 unreadable)
//! silt export --from T --to T [--selector CLUSTER[:HOST[:COMPONENT]]] [--data DIR] OUT.parquet
//!                   write series to a Parquet file in cc-metric-store's long format
//! silt import [--data DIR] [--config config.json] FILE.parquet...
//!                   write the rows of archive files into a data directory
//! ```
//!
//! Each subcommand is a variant of [`Command`] with its own arguments struct and a `run` function that
//! returns the process exit code or an error; `main` renders an error exactly once, on stderr.

#[path = "silt/malloc.rs"]
mod malloc;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use silt::storage::check::check;
use silt::storage::io::StdVfs;

/// silt: an embedded time-series database for cluster and job metrics.
#[derive(Debug, Parser)]
#[command(name = "silt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server: cc-metric-store's API over a data directory. Stops cleanly (checkpoint, exit 0)
    /// on SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Verify a data directory (manifest, WAL segments, head files, page descriptors) without modifying it.
    ///
    /// Safe on a directory a running process holds: files are opened read-only and the lock is not taken.
    /// Exit status: 0 if nothing is damaged (warnings allowed), 1 if something is, 2 if DIR cannot be read.
    Check(CheckArgs),
    /// Write the samples of every series below a selector in [from, to) to a Parquet file in
    /// cc-metric-store's long format (cluster, hostname, metric, scope, scope_id, timestamp, frequency,
    /// value), from the head and the blocks. Needs the data directory to itself (stop the server first).
    Export(ExportArgs),
    /// Write the rows of Parquet archive files (as `export` or long-term retention writes them, or
    /// cc-metric-store's) into a data directory. Undeclared metrics are declared with the file's frequency
    /// and `avg`, unless the config declares them.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The data directory.
    #[arg(long, default_value = "silt-data")]
    data: PathBuf,
    /// Start of the range, unix seconds (inclusive).
    #[arg(long, allow_hyphen_values = true)]
    from: i64,
    /// End of the range, unix seconds (exclusive).
    #[arg(long, allow_hyphen_values = true)]
    to: i64,
    /// Levels to export, `:`-separated from the cluster down (`emmy`, `emmy:n0001`, `emmy:*:hwthread0`);
    /// `*` matches any name. Default: every host of every cluster.
    #[arg(long, default_value = "*")]
    selector: String,
    /// The Parquet file to write (replaced atomically).
    out: PathBuf,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The data directory.
    #[arg(long, default_value = "silt-data")]
    data: PathBuf,
    /// cc-metric-store's config.json, whose `metrics` are declared first.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The Parquet files to read.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn parse_selector(s: &str) -> Result<silt::Selector, CliError> {
    let elements = s
        .split(':')
        .map(|e| if e == "*" { silt::SelectorElement::Any } else { silt::SelectorElement::Name(e.to_owned()) })
        .collect();
    Ok(silt::Selector::new(silt::keys::Namespace::Host, elements)?)
}

fn open_offline(dir: &std::path::Path) -> Result<silt::Db, CliError> {
    if !dir.join("MANIFEST").exists() && !dir.join("wal").exists() {
        return Err(format!("{}: not a silt data directory", dir.display()).into());
    }
    Ok(silt::Db::open(dir, silt::Options { checkpoint_interval: None, ..silt::Options::default() })?)
}

fn run_export(args: &ExportArgs) -> Result<ExitCode, CliError> {
    let sel = parse_selector(&args.selector)?;
    let db = open_offline(&args.data)?;
    let n = db.export_parquet(&sel, args.from, args.to, &args.out)?;
    db.close()?;
    print(format!("exported {n} samples to {}", args.out.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn run_import(args: &ImportArgs) -> Result<ExitCode, CliError> {
    let db = silt::Db::open(&args.data, silt::Options { checkpoint_interval: None, ..silt::Options::default() })?;
    if let Some(path) = &args.config {
        for (name, config) in silt::server::config::Config::load(path)?.metric_configs() {
            db.declare_metric(&name, config)?;
        }
    }
    let mut total = 0;
    for f in &args.files {
        total += db.import_parquet(f)?;
    }
    db.close()?;
    print(format!("imported {total} samples from {} files", args.files.len()))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// cc-metric-store's config.json (sections main, metrics, metric-store, nats).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory [default: the config's metric-store.checkpoints.directory, else ./silt-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on [default: the config's main.addr, else 127.0.0.1:8082].
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// A metric to declare: NAME=FREQUENCY:AGGREGATION with AGGREGATION sum, avg, max, min or none.
    /// Repeatable.
    #[arg(long = "metric", value_parser = parse_metric)]
    metrics: Vec<(String, silt::MetricConfig)>,
    /// Worker slots (threads) of the stream engine [default: the number of cores, at least 2].
    #[arg(long)]
    stream_slots: Option<usize>,
    /// When a write is acknowledged: `sync` (after its WAL fsync, shared by the writes that arrive
    /// together), `<N>ms` (once written to the OS, fsync at most N ms later: a crash of the machine may
    /// lose the last N ms, a crash of silt alone loses nothing), or `none` (fsync only at checkpoints)
    /// [default: sync].
    #[arg(long, value_parser = parse_durability)]
    durability: Option<silt::Durability>,
}

fn parse_durability(s: &str) -> Result<silt::Durability, String> {
    match s {
        "sync" => Ok(silt::Durability::Sync),
        "none" => Ok(silt::Durability::None),
        _ => s
            .strip_suffix("ms")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&n| n > 0)
            .map(silt::Durability::IntervalMs)
            .ok_or_else(|| format!("{s:?}: expected sync, none, or a positive interval such as 100ms")),
    }
}

fn parse_metric(s: &str) -> Result<(String, silt::MetricConfig), String> {
    let (name, rest) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=FREQUENCY:AGGREGATION"))?;
    let (freq, agg) = rest.split_once(':').unwrap_or((rest, "none"));
    let frequency: i64 = freq.parse().map_err(|_| format!("{s:?}: frequency {freq:?} is not an integer"))?;
    let aggregation = match agg {
        "null" => silt::Aggregation::None,
        other => other.parse::<silt::Aggregation>().map_err(|e| format!("{s:?}: {e}"))?,
    };
    Ok((name.to_owned(), silt::MetricConfig { frequency, aggregation }))
}

fn run_serve(args: &ServeArgs) -> Result<ExitCode, CliError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    let config = match &args.config {
        Some(path) => silt::server::config::Config::load(path)?,
        None => silt::server::config::Config::default_loopback(),
    };
    let addr = match args.addr {
        Some(a) => a,
        None if args.config.is_some() => config.main.listen_addr()?,
        None => silt::server::config::DEFAULT_LOOPBACK_ADDR.parse()?,
    };
    let mut metrics = config.metric_configs();
    metrics.extend(args.metrics.iter().cloned());
    let opts = silt::server::ServeOptions {
        data_dir: args.data.clone().unwrap_or_else(|| config.data_dir()),
        addr,
        metrics,
        db: match args.durability {
            Some(durability) => silt::Options { durability, ..config.db_options() },
            None => config.db_options(),
        },
        jwt_public_key: config.main.jwt_public_key.clone(),
        nats: config.nats.clone().map(|n| (n, config.metric_store.nats_subscriptions.clone())),
        tls: config.main.tls_files().map(|(c, k)| (c.to_owned(), k.to_owned())),
        pipelines: config.pipelines.clone(),
        stream_slots: args.stream_slots.unwrap_or_else(silt::server::default_stream_slots),
        write_workers: config.main.write_workers.unwrap_or_else(silt::server::default_write_workers),
    };
    // Before any thread starts: the allocator's arenas and thresholds, then a thread that returns freed memory.
    malloc::tune();
    malloc::spawn_trimmer()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(silt::server::serve(opts, None))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The data directory.
    dir: PathBuf,
}

/// Exit status when the directory cannot be read at all (also used for any other error).
const EXIT_ERROR: u8 = 2;

/// Any error a subcommand returns; `main` renders it once.
type CliError = Box<dyn std::error::Error>;

/// Writes to stdout; a closed pipe (`silt check DIR | head`) is not an error.
fn print(text: impl std::fmt::Display) -> Result<(), CliError> {
    match writeln!(io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("writing to stdout: {e}").into()),
        _ => Ok(()),
    }
}

fn run_check(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let report = check(&StdVfs, &args.dir).map_err(silt::Error::from)?;
    print(&report)?;
    Ok(if report.is_damaged() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check(args) => run_check(args),
        Command::Serve(args) => run_serve(args),
        Command::Export(args) => run_export(args),
        Command::Import(args) => run_import(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("silt: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
