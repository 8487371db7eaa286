//! Configuration: the file's shape (serde, `deny_unknown_fields`, every field defaulted and documented)
//! converted into validated [`Settings`] (`SocketAddr`, `Duration`, `NonZero*`). `config/gateway.toml`
//! shows every option with its default.
//!
//! # Layout
//! - `file`: [`ConfigFile`] and its tables, as the TOML file is written; loading and parsing.
//! - `settings`: [`Settings`] and its parts, the validated values the gateway runs with.
//! - `validate`: [`ConfigFile::validate`], from the one to the other; the environment variables the
//!   file names are read through [`ConfigFile::validate_with`]'s parameter.

mod file;
mod settings;
mod validate;

pub use file::{
    AdminFile, BillingFile, ClusterFile, ConfigFile, GonkaFile, JournalFile, KeysFile, LimitsFile, LogFile,
    ModelFile, NodeFile, ServerFile, ServerTlsFile, StoreFile, UpstreamFile, UpstreamTlsFile,
};
pub use settings::{
    BillingSettings, ClusterSettings, GonkaSettings, KeySettings, NodeKind, NodeSpec, NodeUrl,
    PostgresSettings, Secret, ServerTimeouts, Settings, StoreSettings, Synchronous, UpstreamSettings,
    WaitFor,
};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}
