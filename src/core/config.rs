//! Plugin configuration: JSON in, validated and compiled once at plugin start.

use std::fmt;

/// A configuration error, naming the field (a JSON path such as
/// `keys[2].limits.rpm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path with `parent` (`parent.field`).
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

use serde::Deserialize;

/// Default cap on a buffered request body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Hard upper bound for `max_body_bytes`: 64 MiB.
pub const MAX_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The plugin configuration as written by users (JSON). Every struct rejects
/// unknown fields; [`Config::compile`] checks values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Largest request body llmgate buffers; larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The compiled configuration: everything the hot path needs, computed once.
#[derive(Debug)]
pub struct Config {
    pub max_body_bytes: u64,
}

impl Config {
    /// Parses and validates a JSON configuration. An empty input means "all
    /// defaults".
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let raw: RawConfig = if first.is_none() {
            RawConfig::default()
        } else if first != Some(&b'{') {
            return Err(ConfigError::new(
                "",
                "the configuration must be a JSON object",
            ));
        } else {
            let de = &mut serde_json::Deserializer::from_slice(bytes);
            match serde_path_to_error::deserialize(de) {
                Ok(raw) => raw,
                Err(e) => {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    let inner = e.into_inner();
                    return Err(ConfigError::new(path, clean_serde_message(&inner)));
                }
            }
        };
        Self::compile(&raw)
    }

    pub fn compile(raw: &RawConfig) -> Result<Config, ConfigError> {
        if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_MAX_BODY_BYTES {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be between 1 and {MAX_MAX_BODY_BYTES}"),
            ));
        }
        Ok(Config {
            max_body_bytes: raw.max_body_bytes,
        })
    }
}

/// serde_json appends " at line L column C"; keep it, it helps, but make sure
/// unknown-field messages name the field first.
fn clean_serde_message(e: &serde_json::Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_defaults() {
        let c = Config::from_json(b"  ").unwrap();
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let c = Config::from_json(b"{}").unwrap();
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::from_json(br#"{"max_body_bytes": 10, "bogus_field": 1}"#).unwrap_err();
        assert!(e.to_string().contains("bogus_field"), "{e}");
    }

    #[test]
    fn invalid_value_is_named() {
        let e = Config::from_json(br#"{"max_body_bytes": 0}"#).unwrap_err();
        assert_eq!(e.field, "max_body_bytes");
        let e = Config::from_json(br#"{"max_body_bytes": "big"}"#).unwrap_err();
        assert_eq!(e.field, "max_body_bytes", "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Config::from_json(b"{not json").is_err());
        assert!(Config::from_json(b"[]").is_err());
        assert!(Config::from_json(&[0xff, 0xfe]).is_err());
    }
}
