//! `chat-bench`: parse flags, raise the open-file limit, run the load, idle or presence
//! mode, print the summary on stderr and one JSON line on stdout (and append it to
//! `--output`).
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use chat_bench::{BenchArgs, BenchError, run_idle, run_load, run_presence};
use clap::Parser;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // Every connection is a file descriptor; the soft limit is often far below the hard one.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: could not raise the open-file limit: {error}");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let line = if args.presence {
        let report = run_presence(args).await?;
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        serde_json::to_string(&report)
    } else if args.idle {
        let report = run_idle(args).await?;
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        serde_json::to_string(&report)
    } else {
        let report = run_load(args).await?;
        eprintln!("{report}");
        serde_json::to_string(&report)
    }
    .map_err(|e| BenchError::InvalidArgs(format!("cannot serialise the report: {e}")))?;
    println!("{line}");
    if let Some(path) = &args.output {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = appended {
            eprintln!("chat-bench: cannot append to {}: {error}", path.display());
        }
    }
    Ok(())
}
