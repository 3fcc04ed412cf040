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

/// Signatures per second on one core of `algorithm` in ring, the library the soft key
/// store signs ECDSA with: the reference the servers' figures are set against.
pub(crate) fn ring_signing_rate(algorithm: &'static ring::signature::EcdsaSigningAlgorithm) -> f64 {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(algorithm, &rng).unwrap();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), &rng).unwrap();
    let message = b"a TBS certificate, response data or JWS signing input of about this length";
    let started = std::time::Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        std::hint::black_box(key.sign(&rng, message).unwrap());
        n += 1;
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}
