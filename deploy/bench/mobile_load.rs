//! Load benchmark of mobile ID on the identity provider, through CIBA in ping mode
//! against a running `eid serve` and the SIM gateway simulator (`eid serve
//! sim-gateway`, its own instance, as the operator is not us):
//! - open sessions: `EID_BENCH_SESSIONS` (1,000) CIBA requests at once, each one a
//!   long poll the provider keeps open at the gateway while the phone has not
//!   answered; the provider's resident memory idle and with them all open, then every
//!   one confirmed on the phone and its ping awaited;
//! - session start to result: `EID_BENCH_LATENCY_SESSIONS` (300) requests, one at a
//!   time (`EID_BENCH_LATENCY_CONCURRENCY`, 1: the SIM signs one request at a time,
//!   as a real SIM does), while a robot phone confirms each prompt as soon as it
//!   appears (polling every 20 ms): from the request to the ping that says the tokens
//!   are ready (the SIM's signature, chain, OCSP and grant included), with the
//!   simulated SIM's own time for the same confirmation as the reference.
//!
//! `cargo bench --bench mobile_load` (optimised build; needs SoftHSM2 and curl). SQLite.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::{
    collections::{BTreeMap, HashMap},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{eid, free_address, output, percentile, resident_mb, serving};
use eid_tests::sim;

#[path = "common.rs"]
mod common;

const PHONE: &str = "+18685550199";
const NATIONAL_ID: &str = "3900101777777";
const CIBA: &str = "urn:openid:params:grant-type:ciba";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The processes, stopped when dropped.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// The CIBA client, as the workers use it.
#[derive(Clone)]
struct Caller {
    issuer: String,
    client_id: String,
    secret: String,
}

struct Stand {
    processes: Running,
    idp_pid: u32,
    gateway: String,
    caller: Caller,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn wait_for(address: &str) {
    for _ in 0..300 {
        if std::net::TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {address}");
}

fn start(ping_url: &str) -> Stand {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let envs = BTreeMap::from([
        ("EID_IDP_LISTEN", free_address()),
        ("EID_CA_LISTEN", free_address()),
        ("EID_IDP_CARD_LISTEN", free_address()),
        ("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_SIGNING_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_ENROLMENT_LISTEN", "127.0.0.1:0".to_owned()),
    ]);
    let command = |args: &[&str]| {
        let mut command = eid(path, None, &envs);
        command.args(args);
        command
    };
    output(command(&["init"]));
    // The SIM: keys on it, the authentication certificate from this instance's CA.
    let card = format!("SIM-BENCH-{}", std::process::id());
    let personalised = sim::personalise(&card).unwrap();
    let csr = path.join("sim.csr");
    std::fs::write(&csr, &personalised.requests[0]).unwrap();
    let mut issue = command(&["ca", "issue", "--profile", "citizen-auth"]);
    issue
        .args(["--national-id", NATIONAL_ID, "--given-name", "Bench"])
        .args(["--surname", "Citizen", "--csr"])
        .arg(&csr);
    let certificate = output(issue);
    personalised.finish(&certificate, None).unwrap();

    // The operator's gateway, an instance of its own.
    let gateway_dir = tempfile::tempdir().unwrap();
    let gateway_address = free_address();
    let gateway_envs = BTreeMap::from([
        (
            "EID_SIM_GATEWAY_MODULE",
            eid_tests::softhsm::pkcs11_module().display().to_string(),
        ),
        ("EID_SIM_GATEWAY_LISTEN", gateway_address.clone()),
        ("EID_SIM_GATEWAY_ANSWER_SECS", "600".to_owned()),
        ("EID_IDP_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_CA_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_IDP_CARD_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_SIGNING_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_ENROLMENT_LISTEN", "127.0.0.1:0".to_owned()),
    ]);
    let gateway_command = |args: &[&str]| {
        let mut command = eid(gateway_dir.path(), None, &gateway_envs);
        command.args(args);
        command
    };
    output(gateway_command(&["init"]));
    output(gateway_command(&[
        "sim-gateway",
        "add-sim",
        "--phone",
        PHONE,
        "--national-id",
        NATIONAL_ID,
        "--card",
        &card,
    ]));
    let pin = output(gateway_command(&["sim-gateway", "pin"]))
        .trim()
        .to_owned();
    let mut serve_gateway = gateway_command(&["serve", "sim-gateway"]);
    serve_gateway.stdout(Stdio::null());
    let gateway_child = serve_gateway.spawn().unwrap();
    wait_for(&gateway_address);

    let mut register = command(&["rp", "add", "--name", "Bench call centre"]);
    register
        .args(["--grant", CIBA, "--ciba-mode", "ping"])
        .args(["--ciba-notification-endpoint", ping_url]);
    let client: serde_json::Value = serde_json::from_str(&output(register)).unwrap();

    let gateway = format!("https://{gateway_address}");
    let mut serve = command(&["serve"]);
    serve
        .env("EID_MOBILE_ID_GATEWAY_URL", &gateway)
        .env("EID_MOBILE_ID_GATEWAY_PIN", &pin);
    let idp = serving(serve);
    Stand {
        idp_pid: idp.id(),
        processes: Running(vec![idp, gateway_child]),
        gateway,
        caller: Caller {
            issuer: format!("http://{}", envs["EID_IDP_LISTEN"]),
            client_id: client["client_id"].as_str().unwrap().to_owned(),
            secret: client["client_secret"].as_str().unwrap().to_owned(),
        },
        _dirs: (dir, gateway_dir),
    }
}

/// When each auth_req_id's ping arrived.
type Pings = Arc<Mutex<HashMap<String, Instant>>>;

async fn ping_receiver() -> (String, Pings) {
    use axum::{Json, http::StatusCode, routing::post};
    let pings: Pings = Arc::default();
    let sink = pings.clone();
    let app = axum::Router::new().route(
        "/ping",
        post(move |Json(body): Json<serde_json::Value>| async move {
            if let Some(id) = body["auth_req_id"].as_str() {
                sink.lock().unwrap().insert(id.to_owned(), Instant::now());
            }
            StatusCode::NO_CONTENT
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ping", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, pings)
}

/// The phone's JSON API over TLS (curl: the simulator's certificate is self-signed).
async fn phone(gateway: &str, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    let mut command = tokio::process::Command::new("curl");
    command
        .args([
            "-sS",
            "-k",
            "-X",
            method,
            "-H",
            "content-type: application/json",
        ])
        .arg(format!("{gateway}{path}"));
    if let Some(body) = body {
        command.args(["--data", body]);
    }
    let out = command.output().await.unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Confirms with PIN1 every prompt waiting on the phone; returns how many it confirmed
/// and how long each confirmation took (the simulated SIM's signature included).
async fn confirm_all(gateway: &str) -> Vec<Duration> {
    let number = PHONE.replace('+', "%2B");
    let pending = phone(
        gateway,
        "GET",
        &format!("/phone/api/{number}/pending"),
        None,
    )
    .await;
    let mut took = Vec::new();
    for prompt in pending.as_array().cloned().unwrap_or_default() {
        let id = prompt["session_id"].as_str().unwrap();
        let started = Instant::now();
        let answer = phone(
            gateway,
            "POST",
            &format!("/phone/api/{number}/sessions/{id}/confirm"),
            Some(&format!("{{\"pin\": \"{}\"}}", sim::PIN1)),
        )
        .await;
        if answer["outcome"] == "signed" {
            took.push(started.elapsed());
        }
    }
    took
}

async fn request(http: &reqwest::Client, caller: &Caller, n: usize) -> String {
    let hint = format!("phone={PHONE};national_id={NATIONAL_ID}");
    let token = format!("bench-ping-token-{n:08}");
    let response: serde_json::Value = http
        .post(format!("{}/backchannel/authenticate", caller.issuer))
        .basic_auth(&caller.client_id, Some(&caller.secret))
        .form(&[
            ("scope", "openid"),
            ("login_hint", &hint),
            ("client_notification_token", &token),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["auth_req_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"))
        .to_owned()
}

fn report(name: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    if latencies.is_empty() {
        println!("{name}: none");
        return;
    }
    println!(
        "{name}: n={} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}

fn main() {
    let sessions = env_number("EID_BENCH_SESSIONS", 1000);
    let latency_sessions = env_number("EID_BENCH_LATENCY_SESSIONS", 300);
    let concurrency = env_number("EID_BENCH_CONCURRENCY", 16);
    let latency_concurrency = env_number("EID_BENCH_LATENCY_CONCURRENCY", 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (ping_url, pings) = runtime.block_on(ping_receiver());
    let stand = start(&ping_url);
    let http = reqwest::Client::new();
    let idle = resident_mb(stand.idp_pid);
    println!("mobile ID through CIBA (ping), SQLite; idp resident memory idle {idle:.1} MB");

    // 1. Many sessions open at once.
    runtime.block_on(async {
        let started = Instant::now();
        let ids = Arc::new(Mutex::new(Vec::new()));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..concurrency {
            let (http, ids, caller) = (http.clone(), ids.clone(), stand.caller.clone());
            workers.spawn(async move {
                let mut n = worker;
                while n < sessions {
                    let id = request(&http, &caller, n).await;
                    ids.lock().unwrap().push(id);
                    n += concurrency;
                }
            });
        }
        while workers.join_next().await.is_some() {}
        let opened = started.elapsed();
        // Every watcher is waiting at the gateway now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let number = PHONE.replace('+', "%2B");
        let waiting = phone(
            &stand.gateway,
            "GET",
            &format!("/phone/api/{number}/pending"),
            None,
        )
        .await
        .as_array()
        .map_or(0, Vec::len);
        let loaded = resident_mb(stand.idp_pid);
        println!(
            "{sessions} sessions opened in {:.1} s; {waiting} waiting on the phone; \
             idp resident memory {loaded:.1} MB ({:.1} KB per open session)",
            opened.as_secs_f64(),
            (loaded - idle) * 1024.0 / sessions as f64
        );
        let confirming = Instant::now();
        let confirmations = confirm_all(&stand.gateway).await;
        let ids = ids.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(300);
        while pings.lock().unwrap().len() < ids.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "all confirmed on the phone: {} SIM signatures, {} pings in {:.1} s",
            confirmations.len(),
            pings.lock().unwrap().len(),
            confirming.elapsed().as_secs_f64()
        );
        report("  the SIM's confirmation alone", confirmations);
        pings.lock().unwrap().clear();
    });

    // 2. Session start to result, a robot phone confirming at once.
    runtime.block_on(async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let robot = {
            let (gateway, stop) = (stand.gateway.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sim_times = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sim_times.extend(confirm_all(&gateway).await);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                sim_times
            })
        };
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..latency_concurrency {
            let (http, pings, latencies) = (http.clone(), pings.clone(), latencies.clone());
            let caller = stand.caller.clone();
            workers.spawn(async move {
                let mut n = sessions + worker;
                while n < sessions + latency_sessions {
                    let started = Instant::now();
                    let id = request(&http, &caller, n).await;
                    let done = loop {
                        if let Some(at) = pings.lock().unwrap().get(&id) {
                            break *at;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    };
                    latencies.lock().unwrap().push(done - started);
                    n += latency_concurrency;
                }
            });
        }
        while workers.join_next().await.is_some() {}
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sim_times = robot.await.unwrap();
        let latencies = latencies.lock().unwrap().clone();
        report(
            &format!("session start to result ({latency_concurrency} at a time)"),
            latencies,
        );
        report("  reference: the simulated SIM's confirmation", sim_times);
        println!(
            "idp resident memory after: {:.1} MB",
            resident_mb(stand.idp_pid)
        );
    });
    drop(stand.processes);
}
