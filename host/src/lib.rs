//! opzero-host: a native Claude Code channel host.
//!
//! Data flow (see README): the HTTP `bridge` and the MCP `channel` meet in
//! `core`; outbound events live in `events`, permission prompts in
//! `permissions`, the WebAssembly chain in `filters` (loaded again by
//! `reload`); what Claude's transcript says (receipts, unanswered turns,
//! activity) in `mirror`.

#![forbid(unsafe_code)]

pub mod bridge;
pub mod channel;
pub mod cli;
pub mod config;
pub mod core;
pub mod discovery;
pub mod events;
pub mod files;
pub mod filters;
pub mod hub;
pub mod meta;
pub mod mirror;
pub mod permissions;
pub mod private;
pub mod reload;
pub mod serve;
pub mod status;
pub mod transcripts;

/// A problem to show the user as is: `opzero-host: <message>`, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);
