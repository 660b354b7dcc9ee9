//! The WebAssembly filter chain. Placeholder with the final API: an empty
//! chain passes everything through. The filter platform replaces the body.

use std::path::Path;

use crate::config::{Diagnostic, FilterSpec};

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

#[derive(Default)]
pub struct FilterChain {}

impl FilterChain {
    pub fn empty() -> FilterChain {
        FilterChain {}
    }

    pub fn load(specs: &[FilterSpec], _cache_dir: &Path) -> Result<FilterChain, Vec<Diagnostic>> {
        if specs.is_empty() {
            return Ok(FilterChain {});
        }
        Err(specs
            .iter()
            .map(|s| s.at.diagnostic(format!("filter {}", s.name), "filters are not supported by this build yet"))
            .collect())
    }

    pub fn is_empty(&self) -> bool {
        true
    }

    pub fn names(&self) -> Vec<String> {
        Vec::new()
    }

    pub fn on_inject(&self, msg: Message) -> Verdict<Message> {
        Verdict::Pass(msg)
    }

    pub fn on_reply(&self, reply: Reply) -> Verdict<Reply> {
        Verdict::Pass(reply)
    }

    pub fn on_permission(&self, _req: &PermissionRequest) -> PermissionVerdict {
        PermissionVerdict::Relay
    }
}
