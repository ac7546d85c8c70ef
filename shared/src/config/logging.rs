//! Log level and format (`LogConfig`).

use super::{ConfigError, Source};

/// Where the log lines go and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production default: log shippers parse it).
    Json,
    /// Human-readable coloured text for a terminal.
    Pretty,
}

/// Log level and format.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `RUST_LOG` filter directives (default `info`).
    pub filter: String,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub format: LogFormat,
}

impl LogConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let format = match env.raw("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    reason: format!("{other:?} is not json or pretty"),
                });
            }
        };
        Ok(Self {
            filter: env.raw("RUST_LOG").unwrap_or_else(|| "info".into()),
            format,
        })
    }
}
