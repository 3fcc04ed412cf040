//! Signing throughput: the key layer beside the raw operation it wraps.
//!
//! - `soft/*`: the soft store through `KeySigner::sign` vs RustCrypto signing with a
//!   key of the same type made by the same crate;
//! - `softhsm/*`: a SoftHSM2 token through `KeySigner::sign` vs a bare `cryptoki`
//!   loop on one session (hashing included on both sides);
//! - `pool/*`: a SoftHSM2 store with two sessions, one signing thread vs two.
//!
//! After criterion's report, a table of ratios is printed to stderr. Those figures come
//! from a separate interleaved timing loop (layer and raw alternate in short blocks, the
//! median block counts), so slow drift of the machine hits both sides alike.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::Criterion;
use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CryptokiError, RvError},
    mechanism::{
        Mechanism, MechanismType,
        rsa::{PkcsMgfType, PkcsPssParams},
    },
    object::{Attribute, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    types::Ulong,
};
use eid_hsm::{
    KeyLabel, KeyRole, KeySigner, KeySpec, KeyStore, Pkcs11Options, SignatureScheme, SoftSecret,
    SoftStoreOptions, TokenClass, TokenSelector,
};
use sha2::Digest;

// The key-layer tests' harness: the SoftHSM2 environment, the module path, PINs.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{SO_PIN, USER_PIN, module, secret, softhsm_environment};

const MESSAGE: &[u8] = b"a 64-byte message to sign, about the size of a token or a digest";
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn label(s: &str) -> KeyLabel {
    KeyLabel::new(s).unwrap()
}

fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

/// One row of the final table: what was compared and the two per-operation times.
struct Row {
    name: String,
    layer: Duration,
    raw: Duration,
    target: &'static str,
}

/// Median time per call of `layer` and `raw`, alternating blocks of `block` calls.
fn interleaved(
    block: u32,
    rounds: u32,
    mut layer: impl FnMut(),
    mut raw: impl FnMut(),
) -> (Duration, Duration) {
    let mut layer_times = Vec::new();
    let mut raw_times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..block {
            layer();
        }
        layer_times.push(start.elapsed() / block);
        let start = Instant::now();
        for _ in 0..block {
            raw();
        }
        raw_times.push(start.elapsed() / block);
    }
    layer_times.sort();
    raw_times.sort();
    (
        layer_times[layer_times.len() / 2],
        raw_times[raw_times.len() / 2],
    )
}

fn soft_store() -> (tempfile::TempDir, KeyStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SoftStoreOptions::new(
        dir.path().to_path_buf(),
        SoftSecret::Passphrase(secret("bench passphrase")),
        true,
    );
    options.argon2_memory_kib = 1024;
    let store = KeyStore::open_soft(options).unwrap();
    (dir, store)
}

fn bench_soft(c: &mut Criterion, rows: &mut Vec<Row>) {
    use signature::{RandomizedSigner, Signer};
    let (_dir, store) = soft_store();
    for (l, spec) in [
        ("p256", KeySpec::EcP256),
        ("p384", KeySpec::EcP384),
        ("rsa", KeySpec::Rsa3072),
    ] {
        store.generate(&label(l), spec, KeyRole::Service).unwrap();
    }
    let p256_layer = store.signer(&label("p256"), None).unwrap();
    let p384_layer = store.signer(&label("p384"), None).unwrap();
    let rsa_layer = store
        .signer(&label("rsa"), Some(SignatureScheme::RsaPssSha256))
        .unwrap();
    let p256_raw = {
        use p256::elliptic_curve::Generate;
        p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap()
    };
    let p384_raw = {
        use p256::elliptic_curve::Generate;
        p384::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap()
    };
    let rsa_raw = rsa::pss::SigningKey::<sha2::Sha256>::new(
        rsa::RsaPrivateKey::new(&mut rng(), 3072).unwrap(),
    );

    let mut group = c.benchmark_group("soft");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    group.bench_function("p256-sha256/layer", |b| {
        b.iter(|| p256_layer.sign(black_box(MESSAGE)).unwrap())
    });
    group.bench_function("p256-sha256/raw", |b| {
        b.iter(|| -> p256::ecdsa::DerSignature { p256_raw.sign(black_box(MESSAGE)) })
    });
    group.bench_function("p384-sha384/layer", |b| {
        b.iter(|| p384_layer.sign(black_box(MESSAGE)).unwrap())
    });
    group.bench_function("p384-sha384/raw", |b| {
        b.iter(|| -> p384::ecdsa::DerSignature { p384_raw.sign(black_box(MESSAGE)) })
    });
    group.bench_function("rsa3072-pss/layer", |b| {
        b.iter(|| rsa_layer.sign(black_box(MESSAGE)).unwrap())
    });
    group.bench_function("rsa3072-pss/raw", |b| {
        b.iter(|| rsa_raw.sign_with_rng(&mut rng(), black_box(MESSAGE)))
    });
    group.finish();

    let (layer, raw) = interleaved(
        200,
        15,
        || {
            black_box(p256_layer.sign(MESSAGE).unwrap());
        },
        || {
            let _: p256::ecdsa::DerSignature = black_box(p256_raw.sign(MESSAGE));
        },
    );
    rows.push(Row {
        name: "soft P-256 ECDSA-SHA256".into(),
        layer,
        raw,
        target: "<= 1.10",
    });
    let (layer, raw) = interleaved(
        100,
        15,
        || {
            black_box(p384_layer.sign(MESSAGE).unwrap());
        },
        || {
            let _: p384::ecdsa::DerSignature = black_box(p384_raw.sign(MESSAGE));
        },
    );
    rows.push(Row {
        name: "soft P-384 ECDSA-SHA384".into(),
        layer,
        raw,
        target: "<= 1.10",
    });
    let (layer, raw) = interleaved(
        10,
        11,
        || {
            black_box(rsa_layer.sign(MESSAGE).unwrap());
        },
        || {
            black_box(rsa_raw.sign_with_rng(&mut rng(), MESSAGE));
        },
    );
    rows.push(Row {
        name: "soft RSA-3072 PSS".into(),
        layer,
        raw,
        target: "<= 1.10",
    });
}

fn softhsm_store(token: &str, sessions: usize) -> KeyStore {
    eid_hsm::initialize_token(&module(), token, &secret(SO_PIN), &secret(USER_PIN)).unwrap();
    KeyStore::open_pkcs11(Pkcs11Options {
        module: module(),
        token: TokenSelector::Label(token.into()),
        pin: secret(USER_PIN),
        sessions,
        class: TokenClass::Hsm,
    })
    .unwrap()
}

/// A bare cryptoki session on the token, logged in, outside the key layer. The module
/// is already initialised by the key layer in this process, which is fine: its state
/// is process-wide.
fn bare_session(token: &str) -> Session {
    let pkcs11 = Pkcs11::new(module()).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == token)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&secret(USER_PIN))) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

fn private_key(session: &Session, l: &str) -> ObjectHandle {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(l.as_bytes().to_vec()),
        ])
        .unwrap()[0]
}

fn pss() -> Mechanism<'static> {
    Mechanism::RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: Ulong::from(32u64),
    })
}

fn bench_softhsm(c: &mut Criterion, rows: &mut Vec<Row>) {
    let token = "bench-layer";
    let store = softhsm_store(token, 1);
    for (l, spec) in [
        ("p256", KeySpec::EcP256),
        ("p384", KeySpec::EcP384),
        ("rsa", KeySpec::Rsa3072),
    ] {
        store.generate(&label(l), spec, KeyRole::Service).unwrap();
    }
    let session = bare_session(token);
    type Bare = Box<dyn Fn(&Session) -> Vec<u8>>;
    let cases: Vec<(&str, KeySigner, Bare, u32)> = vec![
        (
            "p256-sha256",
            store.signer(&label("p256"), None).unwrap(),
            {
                let key = private_key(&session, "p256");
                Box::new(move |s: &Session| {
                    let digest = sha2::Sha256::digest(MESSAGE);
                    s.sign(&Mechanism::Ecdsa, key, &digest).unwrap()
                })
            },
            100,
        ),
        (
            "p384-sha384",
            store.signer(&label("p384"), None).unwrap(),
            {
                let key = private_key(&session, "p384");
                Box::new(move |s: &Session| {
                    let digest = sha2::Sha384::digest(MESSAGE);
                    s.sign(&Mechanism::Ecdsa, key, &digest).unwrap()
                })
            },
            50,
        ),
        (
            "rsa3072-pkcs1",
            store
                .signer(&label("rsa"), Some(SignatureScheme::RsaPkcs1Sha256))
                .unwrap(),
            {
                let key = private_key(&session, "rsa");
                Box::new(move |s: &Session| {
                    let digest = sha2::Sha256::digest(MESSAGE);
                    let data = [SHA256_DIGEST_INFO, digest.as_slice()].concat();
                    s.sign(&Mechanism::RsaPkcs, key, &data).unwrap()
                })
            },
            10,
        ),
        (
            "rsa3072-pss",
            store
                .signer(&label("rsa"), Some(SignatureScheme::RsaPssSha256))
                .unwrap(),
            {
                let key = private_key(&session, "rsa");
                Box::new(move |s: &Session| {
                    let digest = sha2::Sha256::digest(MESSAGE);
                    s.sign(&pss(), key, &digest).unwrap()
                })
            },
            10,
        ),
    ];

    let mut group = c.benchmark_group("softhsm");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    for (name, signer, bare, _) in &cases {
        group.bench_function(format!("{name}/layer"), |b| {
            b.iter(|| signer.sign(black_box(MESSAGE)).unwrap())
        });
        group.bench_function(format!("{name}/bare-cryptoki"), |b| {
            b.iter(|| bare(&session))
        });
    }
    group.finish();

    for (name, signer, bare, block) in &cases {
        let (layer, raw) = interleaved(
            *block,
            11,
            || {
                black_box(signer.sign(MESSAGE).unwrap());
            },
            || {
                black_box(bare(&session));
            },
        );
        rows.push(Row {
            name: format!("SoftHSM2 {name}"),
            layer,
            raw,
            target: "<= 1.10",
        });
    }
}

/// `iterations` signatures split over `threads` threads; wall time.
fn sign_on_threads(signer: &KeySigner, threads: u64, iterations: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..iterations / threads {
                    black_box(signer.sign(MESSAGE).unwrap());
                }
            });
        }
    });
    start.elapsed()
}

fn bench_pool(c: &mut Criterion, rows: &mut Vec<Row>) {
    let store = softhsm_store("bench-pool", 2);
    let mut group = c.benchmark_group("pool");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    // P-256 is cheap enough that SoftHSM2's own per-call work dominates; P-384 shows
    // the pool when the token's arithmetic dominates.
    for (name, spec, block) in [
        ("p256", KeySpec::EcP256, 400u32),
        ("p384", KeySpec::EcP384, 60),
    ] {
        store
            .generate(&label(name), spec, KeyRole::Service)
            .unwrap();
        let signer = store.signer(&label(name), None).unwrap();
        for threads in [1u64, 2] {
            group.bench_function(format!("{name}/{threads}-thread"), |b| {
                b.iter_custom(|iterations| {
                    // Whole per-thread shares, so both runs do the same work per iteration.
                    sign_on_threads(&signer, threads, iterations.max(threads))
                })
            });
        }

        let mut one = Vec::new();
        let mut two = Vec::new();
        for _ in 0..7 {
            one.push(sign_on_threads(&signer, 1, u64::from(block)) / block);
            two.push(sign_on_threads(&signer, 2, u64::from(block)) / block);
        }
        one.sort();
        two.sort();
        rows.push(Row {
            name: format!("SoftHSM2 pool(2) {name}: 1 thread / 2 threads"),
            layer: one[one.len() / 2],
            raw: two[two.len() / 2],
            target: ">= 1.70 (speed-up)",
        });

        // SoftHSM2's own ceiling on this machine: bare cryptoki, one session per thread.
        let digest = spec.default_scheme().digest(MESSAGE);
        let bare_on_threads = |threads: u32| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        let session = bare_session("bench-pool");
                        let key = private_key(&session, name);
                        for _ in 0..block / threads {
                            black_box(session.sign(&Mechanism::Ecdsa, key, &digest).unwrap());
                        }
                    });
                }
            });
            start.elapsed() / block
        };
        let mut one = Vec::new();
        let mut two = Vec::new();
        for _ in 0..7 {
            one.push(bare_on_threads(1));
            two.push(bare_on_threads(2));
        }
        one.sort();
        two.sort();
        rows.push(Row {
            name: format!("bare cryptoki {name}: 1 / 2 threads"),
            layer: one[one.len() / 2],
            raw: two[two.len() / 2],
            target: "(SoftHSM2's own ceiling)",
        });
    }
    group.finish();
}

fn main() {
    softhsm_environment();
    let mut criterion = Criterion::default().configure_from_args();
    let mut rows = Vec::new();
    bench_soft(&mut criterion, &mut rows);
    bench_softhsm(&mut criterion, &mut rows);
    bench_pool(&mut criterion, &mut rows);
    criterion.final_summary();

    eprintln!();
    eprintln!("Key layer vs raw operation (interleaved timing, median per call)");
    eprintln!(
        "{:<46} {:>12} {:>12} {:>8}  target",
        "case", "layer", "raw", "ratio"
    );
    for row in &rows {
        eprintln!(
            "{:<46} {:>12.2?} {:>12.2?} {:>8.3}  {}",
            row.name,
            row.layer,
            row.raw,
            row.layer.as_secs_f64() / row.raw.as_secs_f64(),
            row.target
        );
    }
    eprintln!("(pool row: 'layer' = one thread, 'raw' = two threads, ratio = speed-up)");
}
