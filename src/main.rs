//! `eid`: runs the national identity and trust services, and the operator commands.
#![forbid(unsafe_code)]

mod ca;
mod cli;
mod enrolment;
mod keys;
mod ra;
mod rp;
mod serve;
mod signing;
mod simgateway;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's allocator: the services allocate many small, short-lived
/// buffers per request from several threads, where glibc's arenas spent a tenth of a
/// loaded TSA's time (measured with perf; README, figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
