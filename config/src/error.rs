//! What can be wrong with a config: [`Problem`] (one value, with its key path) and
//! [`ConfigError`] (why a file could not be loaded). Every message reads
//! `file: key.path: message`.

use std::fmt;

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

/// Problems collected while validating, each with its key path.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// `Err` with every problem, or `Ok(value())` when there is none.
    pub(crate) fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.0)
        }
    }
}
