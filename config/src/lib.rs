//! Typed configuration shared by every part of edge.
//!
//! Entry points: [`load_str`] (pure: text in, resolved [`Config`] or every problem out) and
//! [`load_file`]. The TOML is parsed into the `raw` types (serde, unknown keys refused), then
//! [`raw::RawConfig::validate`] checks every value and returns the resolved types the rest of
//! the code uses, or the complete list of [`Problem`]s, each naming the key's path.
//!
//! Caveat: TOML syntax and type errors stop the parse at the first one (that is how the TOML
//! parser works); value problems are all collected and reported together.

pub mod raw;
mod resolved;

pub use resolved::*;

use std::{fmt, path::Path};

/// The dev config that `edge dev` embeds; also shipped as `config/examples/dev.toml`.
pub const DEV_CONFIG: &str = include_str!("../examples/dev.toml");

/// One thing wrong with a config file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `streams[1].playback_id`; empty for a file-level problem.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// The file parsed but values are wrong; every problem is listed.
    #[error("{file}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem as `file: path: message` lines, for `edge config check`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { file, problems } => {
                problems.iter().map(|p| format!("{file}: {p}")).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

/// Parse and validate config text. `file` names the source in messages.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_string(),
        message: parse_message(text, &e),
    })?;
    raw.validate().map_err(|problems| ConfigError::Invalid {
        file: file.to_string(),
        problems,
    })
}

/// Parse and validate a balancer config.
pub fn load_balancer_str(text: &str, file: &str) -> Result<BalancerConfig, ConfigError> {
    let raw: raw::RawBalancerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_string(),
        message: parse_message(text, &e),
    })?;
    raw.validate().map_err(|problems| ConfigError::Invalid {
        file: file.to_string(),
        problems,
    })
}

/// Read, parse and validate a balancer config file.
pub fn load_balancer_file(path: &Path) -> Result<BalancerConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    load_balancer_str(&text, &file)
}

/// Read, parse and validate a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    load_str(&text, &file)
}

/// The TOML error as one line with its line:column, keeping the parser's key path.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests;
