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
//! - `message`: what the hooks see (a message, a reply) and what the
//!   chain makes of it (a verdict), in the host's own types.
//!
//! They depend one way: chain → instance → engine → state → bindings, and
//! chain → message; `mod.rs` only re-exports.
//!
//! Calls are async: a guest yields to the runtime at every epoch tick
//! (1 ms), and each call is bounded by its filter's `timeout_ms` and
//! `memory_mb`.

mod bindings;
mod chain;
mod engine;
mod error;
mod instance;
mod message;
mod state;

pub use chain::{FilterChain, LoadStats};
pub use error::FilterError;
pub use message::{Message, PermissionVerdict, Reply, Verdict};
