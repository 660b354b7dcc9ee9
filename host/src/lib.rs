//! opzero-host: a native Claude Code channel host.
//!
//! Data flow (see README): the HTTP `bridge` and the MCP `channel` meet in
//! `core`; outbound events live in `events`, permission prompts in
//! `permissions`, the WebAssembly chain in `filters`.

pub mod bridge;
pub mod channel;
pub mod client;
pub mod config;
pub mod core;
pub mod discovery;
pub mod escape;
pub mod events;
pub mod filters;
pub mod launcher;
pub mod meta;
pub mod permissions;
pub mod serve;
pub mod stdio;
