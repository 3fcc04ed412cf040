//! SoftHSM2 for tests: a private token folder per test process, and the module's path.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The PKCS#11 module (`EID_TEST_PKCS11_MODULE`, else Debian's SoftHSM2).
pub fn pkcs11_module() -> PathBuf {
    std::env::var_os("EID_TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

/// Points SoftHSM2 at a private token folder, once per test process, before anything
/// loads the module (it reads `SOFTHSM2_CONF` when it initialises); returns the folder
/// that holds the configuration and the tokens.
pub fn softhsm_environment() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder for SoftHSM2 tokens");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("the SoftHSM2 token folder");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("the SoftHSM2 configuration");
        // SAFETY: runs once, before any test loads the module (every SoftHSM path goes
        // through here first); other threads touch the environment only through std,
        // which serialises access with its own lock.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
        }
        dir
    })
    .path()
}

/// Initialises a token labelled `label`, user PIN `pin`, in the private token folder
/// (see [`softhsm_environment`]) with `softhsm2-util`. Call it before this process
/// loads the module: SoftHSM2 sees only the tokens that exist when it loads.
pub fn init_token(label: &str, pin: &str) {
    let conf = softhsm_environment().join("softhsm2.conf");
    let output = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "83910274", "--pin", pin])
        .output()
        .expect("softhsm2-util is installed (Debian package softhsm2)");
    assert!(
        output.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
