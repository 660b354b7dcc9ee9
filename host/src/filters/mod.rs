//! The WebAssembly filter chain: components listed under `[[filter]]` in
//! opzero.toml that see, change, drop or reject what flows through the host.
//!
//! - `bindings`: the one `bindgen!`, over `guest-sdk/wit` (opzero:filter@0.1.0).
//! - `engine`: the engine (with wasmtime's compile cache), the linker, the
//!   deadline ticker.
//! - `state`: one filter's sandbox, the state wasmtime hands to host
//!   functions: a WASI context that grants nothing, limits, captured output.
//! - `instance`: one loaded filter and how a hook calls it; traps become
//!   named errors.
//! - `chain`: loading with positioned diagnostics, and the one hook loop,
//!   where the host's types meet the generated ones.
//!
//! They depend one way: chain → instance → engine → state → bindings.
//!
//! Calls are async: a guest yields to the runtime at every epoch tick
//! (1 ms), and each call is bounded by its filter's `timeout_ms` and
//! `memory_mb`.

mod bindings;
mod chain;
mod engine;
mod error;
mod instance;
mod state;

pub use chain::{FilterChain, LoadStats};
pub use error::FilterError;

/// A message from the phone, as the inject filters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub content: String,
    pub meta: Vec<(String, String)>,
}

/// Claude's reply, as the reply filters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub chat_id: String,
    pub text: String,
}

/// What the inject or reply filters made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    Pass(T),
    Drop { filter: String, reason: String },
    Reject { filter: String, reason: String },
    /// A filter failed and its `on_error` is "closed".
    Failed { filter: String, error: String },
}

/// What the permission filters made of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionVerdict {
    Relay,
    Allow { filter: String, reason: String },
    Deny { filter: String, reason: String },
    Failed { filter: String, error: String },
}
