//! Typed configuration shared by every part of edge.
//!
//! Entry points: [`load_str`] (pure: text in, resolved [`Config`] or every problem out) and
//! [`load_file`]. The TOML is parsed into the `raw` types (serde, unknown keys refused), then
//! [`raw::RawConfig::validate`] checks every value and returns the resolved types the rest of
//! the code uses, or the complete list of [`Problem`]s, each naming the key's path.
//!
//! Layout: [`raw`] holds the file's serde types and their validation (node, balancer, and the
//! URI check they use), `resolved` the validated types, `defaults` every setting's default
//! (one `DEFAULT_*` constant each), `error` the problem and error types.
//!
//! Caveat: TOML syntax and type errors stop the parse at the first one (that is how the TOML
//! parser works); value problems are all collected and reported together.

mod defaults;
mod error;
pub mod raw;
mod resolved;

pub use defaults::*;
pub use error::{ConfigError, Problem};
pub use resolved::*;

use std::path::Path;

/// The dev config that `edge dev` embeds; also shipped as `config/examples/dev.toml`.
pub const DEV_CONFIG: &str = include_str!("../examples/dev.toml");

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
