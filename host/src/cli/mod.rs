//! The commands a person types: `launch` (Claude Code with the channel
//! attached) and the client of a running host's bridge (`sessions`,
//! `send`, `tail`, `status`, `open`). `serve`, what Claude Code runs, is
//! `crate::serve`; the command line itself is `main.rs`.

pub mod client;
pub mod launcher;
pub mod qr;
