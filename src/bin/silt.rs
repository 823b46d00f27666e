//! The `silt` command line.
//!
//! ```text
//! silt check DIR    verify a data directory without modifying it (exit 0 clean, 1 damaged, 2 unreadable)
//! ```
//!
//! Each subcommand is a variant of [`Command`] with its own arguments struct and a `run` function that
//! returns the process exit code or an error; `main` renders an error exactly once, on stderr.

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
    /// Verify a data directory (manifest, WAL segments, head files, page descriptors) without modifying it.
    ///
    /// Safe on a directory a running process holds: files are opened read-only and the lock is not taken.
    /// Exit status: 0 if nothing is damaged (warnings allowed), 1 if something is, 2 if DIR cannot be read.
    Check(CheckArgs),
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("silt: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
