//! Just enough URI parsing to check a webhook address without pulling in a URL crate.

/// The parts of a URI a webhook check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lowercase scheme (`http`).
    pub scheme: String,
    /// `host[:port]`, possibly empty.
    pub authority: String,
}

impl std::str::FromStr for Uri {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (scheme, rest) = s.split_once("://").ok_or(())?;
        let authority = rest.split('/').next().unwrap_or("").to_string();
        if authority.contains(char::is_whitespace) {
            return Err(());
        }
        Ok(Uri {
            scheme: scheme.to_ascii_lowercase(),
            authority,
        })
    }
}
