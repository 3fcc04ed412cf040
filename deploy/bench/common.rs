//! Helpers the load benchmarks share (`#[path = "common.rs"] mod common;`); each bench
//! uses what it needs.
#![allow(dead_code)]

use std::time::Duration;

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
