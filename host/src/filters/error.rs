//! What can go wrong with a filter, worded for the person who configured it.

use std::path::PathBuf;

/// A filter failed to load or to run. Every variant names the filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter {filter:?} timed out after {timeout_ms} ms")]
    Timeout { filter: String, timeout_ms: u64 },

    #[error("filter {filter:?} ran out of memory (limit {limit_mb} MiB)")]
    OutOfMemory { filter: String, limit_mb: u64 },

    #[error("filter {filter:?} panicked: {message}")]
    Panicked { filter: String, message: String },

    #[error("filter {filter:?} trapped: {message}")]
    Trapped { filter: String, message: String },

    #[error("filter {filter:?} rejected its config: {message}")]
    Config { filter: String, message: String },

    #[error("filter {filter:?}: cannot read {}: {message}", path.display())]
    Read {
        filter: String,
        path: PathBuf,
        message: String,
    },

    #[error("filter {filter:?}: {} is not a WebAssembly component: {message}", path.display())]
    NotAComponent {
        filter: String,
        path: PathBuf,
        message: String,
    },

    #[error(
        "filter {filter:?}: {} does not export {expected} ({found})",
        path.display()
    )]
    WrongWorld {
        filter: String,
        path: PathBuf,
        expected: &'static str,
        found: String,
    },

    #[error("filter {filter:?}: {} cannot be instantiated: {message}", path.display())]
    Link {
        filter: String,
        path: PathBuf,
        message: String,
    },

    #[error(
        "filter {filter:?}: {} is built for opzero:filter@0.1.0, which has no event hook (rebuild it with the guest SDK for opzero:filter@0.2.0, or take \"event\" out of hooks)",
        path.display()
    )]
    NoEventHook { filter: String, path: PathBuf },

    #[error(
        "missing: filter {filter:?}: {} sends HTTP requests (it imports wasi:http/outgoing-handler), so its entry must list the hosts it may reach, e.g. allowed_outbound_hosts = [\"https://ntfy.sh\"]",
        path.display()
    )]
    NoGrant { filter: String, path: PathBuf },

    #[error("the WebAssembly runtime could not start: {0}")]
    Runtime(String),
}
