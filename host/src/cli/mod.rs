//! The commands a person types: `launch` (Claude Code with the channel
//! attached), the client of a running host's bridge (`sessions`, `send`,
//! `tail`, `status`, `open`), and the filter author's tools (`new-filter`,
//! `filter test`). `serve`, what Claude Code runs, is `crate::serve`; the
//! command line itself is `main.rs`.

pub mod client;
pub mod filter_test;
pub mod hook;
pub mod launcher;
pub mod new_filter;
pub mod qr;
