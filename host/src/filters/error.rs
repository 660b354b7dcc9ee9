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

    #[error("the WebAssembly runtime could not start: {0}")]
    Runtime(String),
}
