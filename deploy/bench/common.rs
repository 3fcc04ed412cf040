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

/// A server process, stopped (SIGTERM, then reaped) when dropped.
pub(crate) struct Served(pub(crate) std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
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

/// A test ID card for national id `national_id` in `dir` (`card.key`, `card.pem`: a
/// P-256 key made by openssl, certified by `eid ca issue`), and the CA certificates in
/// `dir/pki`.
pub(crate) fn test_card(
    dir: &Path,
    database_url: Option<&str>,
    envs: &BTreeMap<&str, String>,
    national_id: &str,
) {
    let key = dir.join("card.key");
    let csr = dir.join("card.csr");
    assert!(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out"
            ])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("openssl")
            .args(["req", "-new", "-subj", "/CN=x", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .status()
            .unwrap()
            .success()
    );
    let mut issue = eid(dir, database_url, envs);
    issue.args([
        "ca",
        "issue",
        "--profile",
        "citizen-auth",
        "--national-id",
        national_id,
    ]);
    issue
        .args(["--given-name", "Bench", "--surname", "Citizen", "--csr"])
        .arg(&csr);
    std::fs::write(dir.join("card.pem"), output(issue)).unwrap();
    let mut export = eid(dir, database_url, envs);
    export.args(["ca", "export", "--out"]).arg(dir.join("pki"));
    output(export);
}

/// One login with the test card of `dir` (curl plays the browser, cookies in
/// `dir/jar`): opens `authorize`, logs in at the card listener, allows consent, and
/// returns the redirect back to the client (with the code).
pub(crate) fn card_login(dir: &Path, card_listen: &str, authorize: &str) -> String {
    let jar = dir.join("jar");
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{redirect_url}", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args(args)
            .output()
            .expect("curl is installed");
        String::from_utf8(out.stdout).unwrap()
    };
    let login = curl(&[authorize]);
    let id = login.rsplit('/').next().unwrap().to_owned();
    let pki = dir.join("pki/root.pem").display().to_string();
    let cert = dir.join("card.pem").display().to_string();
    let key = dir.join("card.key").display().to_string();
    let card_url = format!("https://{card_listen}/card-login/{id}");
    let handoff = curl(&["--cacert", &pki, "--cert", &cert, "--key", &key, &card_url]);
    let consent = curl(&[&handoff]);
    let page = Command::new("curl")
        .args(["-s", "-b"])
        .arg(&jar)
        .arg(&consent)
        .output()
        .unwrap();
    let page = String::from_utf8(page.stdout).unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no consent form at {consent}"))
        .to_owned();
    let done = curl(&["-d", &format!("csrf={csrf}&decision=allow"), &consent]);
    assert!(done.contains("code="), "{done}");
    done
}
