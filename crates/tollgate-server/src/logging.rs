//! The process's log: to standard error, filtered and formatted as the
//! configuration says (`TOLLGATE_LOG`, `TOLLGATE_LOG_FORMAT`).

use anyhow::Context;

use crate::config::{Config, LogFormat};

/// Installs the log as `config` says; once per process.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("TOLLGATE_LOG: {:?} is not a log filter", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}
