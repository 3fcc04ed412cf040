//! Structured logs through `tracing`: text for people, JSON for collectors.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured
/// level. Logs go to stderr so stdout stays for command output (PEM, JSON).
pub fn init_logging(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) => EnvFilter::try_new(directive),
        Err(_) => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| format!("log level `{}`: {e}", config.level))?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| e.to_string())
}
