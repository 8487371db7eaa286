//! Configuration: the file's shape (serde, `deny_unknown_fields`, every field defaulted and documented)
//! converted into validated [`Settings`] (`SocketAddr`, `Duration`, `NonZero*`). `config/gateway.toml`
//! shows every option with its default.
//!
//! # Layout
//! - `error`: [`ConfigError`], what loading or validating can refuse.
//! - `file`: [`ConfigFile`] and its tables, as the TOML file is written; loading and parsing.
//! - `settings`: [`Settings`] and its parts, the validated values the gateway runs with.
//! - `validate`: [`ConfigFile::validate`], from the one to the other; the environment variables the
//!   file names are read through [`ConfigFile::validate_with`]'s parameter.

mod error;
mod file;
mod settings;
mod validate;

pub use error::ConfigError;

pub use file::{
    AdminFile, BillingFile, ChainFile, ClusterFile, ConfigFile, GonkaFile, JournalFile, KeysFile, LimitsFile,
    LogFile, ModelFile, NodeFile, NotificationsFile, ReferralsFile, ResponsesFile, ServerFile, ServerTlsFile,
    SignupFile, StoreFile, UpstreamFile, UpstreamTlsFile,
};
pub use settings::{
    BillingSettings, ChainSettings, ClusterSettings, DepositSettings, GonkaSettings, KeySettings, NodeKind,
    NodeSpec, NodeUrl, NotificationSettings, PostgresSettings, Secret, ServerTimeouts, Settings,
    SignupSettings, StoreSettings, Synchronous, UpstreamSettings, WaitFor,
};
