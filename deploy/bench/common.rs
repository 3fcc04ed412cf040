//! Helpers the load benchmarks share (`#[path = "common.rs"] mod common;`); each bench
//! uses what it needs.
#![allow(dead_code)]

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

/// The `p` quantile (0..=1) of sorted latencies, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A loopback address that was free a moment ago.
pub(crate) fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// The `eid` command on the instance in `dir` (its own database when given).
pub(crate) fn eid(
    dir: &Path,
    database_url: Option<&str>,
    envs: &BTreeMap<&str, String>,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eid"));
    command
        .env("EID_DATA", dir.join("data"))
        .env("EID_LOG", "warn")
        .env_remove("EID_DATABASE_URL")
        .env_remove("RUST_LOG")
        .envs(envs);
    if let Some(url) = database_url {
        command.env("EID_DATABASE_URL", url);
    }
    command
}

/// Runs `command` to success; its standard output.
pub(crate) fn output(mut command: Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The resident memory of process `pid`, MB.
pub(crate) fn resident_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Spawns `eid serve` and returns once it has printed its listeners (the ID-card one
/// last); the rest of its output is drained in the background.
pub(crate) fn serving(mut serve: Command) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    serve
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = serve.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.contains("idp-card") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}
