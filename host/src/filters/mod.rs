//! The WebAssembly filter chain: components listed under `[[filter]]` in
//! opzero.toml that see, change, drop or reject what flows through the host.
//!
//! - `bindings`: the one place that knows the WIT: a `bindgen!` for each
//!   version (`guest-sdk/wit`, opzero:filter@0.1.0, and `guest-sdk/wit-0.2`,
//!   opzero:filter@0.2.0), which one a component is, and the conversions
//!   from and to the host's types.
//! - `engine`: the engine (with wasmtime's compile cache), the linker, the
//!   deadline ticker.
//! - `state`: one filter's sandbox, the state wasmtime hands to host
//!   functions: a WASI context that grants nothing, limits, captured output.
//! - `instance`: one loaded filter and how a hook calls it; traps become
//!   named errors.
//! - `chain`: loading with positioned diagnostics, the one hook loop, and
//!   the observers that take the event log's events to the `event` hooks,
//!   off the message path (an instance of their own, a bounded queue).
//!
//! - `message`: what the hooks see (a message, a reply) and what the
//!   chain makes of it (a verdict), in the host's own types.
//!
//! They depend one way: chain → instance → engine → state → bindings, and
//! chain, bindings → message; `mod.rs` only re-exports.
//!
//! Calls are async: a guest yields to the runtime at every epoch tick
//! (1 ms), and each call is bounded by its filter's `timeout_ms` (for
//! events, `event_timeout_ms`) and `memory_mb`.

mod bindings;
mod chain;
mod engine;
mod error;
mod instance;
mod message;
mod state;

pub use chain::{FilterChain, LoadStats};
pub use error::FilterError;
pub use message::{ClaudeState, Delivery, EVENT_TYPES, Event, FileInfo, Message, Outcome, PermissionVerdict, Reply, Session, SessionSource, Verdict};
