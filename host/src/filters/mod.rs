//! The WebAssembly filter chain: components listed under `[[filter]]` in
//! opzero.toml that see, change, drop or reject what flows through the host.
//!
//! - `bindings`: the one `bindgen!`, over `guest-sdk/wit` (opzero:filter@0.1.0).
//! - `engine`: the process-wide engine, the linker, the deadline ticker.
//! - `cache`: compiled components on disk.
//! - `instance`: one filter's sandbox; traps become named errors.
//! - `chain`: loading with positioned diagnostics, and running the hooks.
//!
//! Calls are short (a few microseconds) and run on the host's own thread:
//! they are async, and a guest yields to the runtime at every epoch tick
//! (1 ms), so one running to its `timeout_ms` holds up nothing else. Each is
//! bounded by the filter's `timeout_ms` and `memory_mb`.

mod bindings;
mod cache;
mod chain;
mod engine;
mod error;
mod instance;

pub use chain::{FilterChain, LoadStats, check};
pub use error::FilterError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub content: String,
    pub meta: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub chat_id: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRequest {
    pub request_id: String,
    pub tool_name: String,
    pub description: String,
    pub input_preview: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    Pass(T),
    Drop { filter: String, reason: String },
    Reject { filter: String, reason: String },
    Failed { filter: String, error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionVerdict {
    Relay,
    Allow { filter: String, reason: String },
    Deny { filter: String, reason: String },
    Failed { filter: String, error: String },
}
