//! The chain: loading `[[filter]]` entries (all problems at once, each with
//! its position in opzero.toml) and running hooks in file order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Component;

use super::bindings::{self, FILTER_EXPORT, OpzeroFilterPre};
use super::cache::{Cache, Origin};
use super::engine::{Runtime, runtime};
use super::error::FilterError;
use super::instance::{Settings, Slot};
use super::{Message, PermissionRequest, PermissionVerdict, Reply, Verdict};
use crate::config::{Diagnostic, FilterSpec, Hooks, OnError};

/// The filters of one opzero.toml, ready to run. `Send + Sync`: each filter
/// instance sits behind its own lock.
#[derive(Default)]
pub struct FilterChain {
    slots: Vec<Slot>,
    stats: LoadStats,
}

/// How the chain's components were obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Compiled by cranelift during this load.
    pub compiled: usize,
    /// Loaded from the on-disk cache.
    pub from_cache: usize,
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterChain")
            .field("filters", &self.names())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Checks `[[filter]]` entries as `opzero-host validate` does: every file
/// exists, is a component exporting `opzero:filter/filter@0.1.0`, starts
/// within its limits, and accepts its config. Empty when all is well.
pub fn check(specs: &[FilterSpec], cache_dir: &Path) -> Vec<Diagnostic> {
    FilterChain::load(specs, cache_dir)
        .err()
        .unwrap_or_default()
}

impl FilterChain {
    pub fn empty() -> FilterChain {
        FilterChain::default()
    }

    /// Loads every filter, compiling (or reading from `cache_dir`) each
    /// component, and configures one instance of each. Reports all problems
    /// at once. Not from inside a tokio runtime: it runs one of its own.
    pub fn load(specs: &[FilterSpec], cache_dir: &Path) -> Result<FilterChain, Vec<Diagnostic>> {
        if specs.is_empty() {
            return Ok(FilterChain::empty());
        }
        let rt = runtime().map_err(|e| vec![specs[0].at.diagnostic("filter", e.to_string())])?;
        let cache = Cache::open(cache_dir);
        let mut compiled: HashMap<Vec<u8>, Component> = HashMap::new();
        let mut chain = FilterChain::default();
        let mut diagnostics = Vec::new();
        // Starting an instance runs the guest's configure, which is async;
        // loading happens before serving, so on a runtime of its own.
        let starter = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| vec![specs[0].at.diagnostic("filter", format!("cannot start a runtime: {e}"))])?;
        for (index, spec) in specs.iter().enumerate() {
            match starter.block_on(load_one(rt, &cache, &mut compiled, &mut chain.stats, spec)) {
                Ok(slot) => chain.slots.push(slot),
                Err(error) => diagnostics.push(diagnostic(index, spec, &error)),
            }
        }
        if diagnostics.is_empty() {
            tracing::info!(
                filters = ?chain.names(),
                compiled = chain.stats.compiled,
                cached = chain.stats.from_cache,
                "filter chain loaded"
            );
            Ok(chain)
        } else {
            Err(diagnostics)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| s.settings.name.to_string())
            .collect()
    }

    /// Which hooks any filter in the chain runs on.
    pub fn hooks(&self) -> Hooks {
        self.slots.iter().fold(Hooks::default(), |h, s| Hooks {
            inject: h.inject || s.settings.hooks.inject,
            reply: h.reply || s.settings.hooks.reply,
            permission: h.permission || s.settings.hooks.permission,
        })
    }

    pub fn load_stats(&self) -> LoadStats {
        self.stats
    }

    /// Runs the `inject` filters in file order. The first drop, reject or
    /// (closed) failure ends the chain.
    pub async fn on_inject(&self, msg: Message) -> Verdict<Message> {
        let mut current = bindings::Message {
            content: msg.content,
            meta: msg.meta,
        };
        // Plain loops: an iterator adapter's closure held across an await
        // makes the future not provably Send.
        for slot in &self.slots {
            if !slot.settings.hooks.inject {
                continue;
            }
            let name = &slot.settings.name;
            match slot.call(&current).await {
                Ok(bindings::InjectVerdict::Pass(next)) => current = next,
                Ok(bindings::InjectVerdict::Drop(reason)) => {
                    tracing::info!(filter = &**name, %reason, "inject dropped");
                    return Verdict::Drop {
                        filter: name.to_string(),
                        reason,
                    };
                }
                Ok(bindings::InjectVerdict::Reject(reason)) => {
                    tracing::info!(filter = &**name, %reason, "inject rejected");
                    return Verdict::Reject {
                        filter: name.to_string(),
                        reason,
                    };
                }
                Err(error) => {
                    if let Some(failed) = failed(slot, error, "inject", "the inject is stopped") {
                        return Verdict::Failed {
                            filter: name.to_string(),
                            error: failed,
                        };
                    }
                }
            }
        }
        Verdict::Pass(Message {
            content: current.content,
            meta: current.meta,
        })
    }

    /// Runs the `reply` filters in file order.
    pub async fn on_reply(&self, reply: Reply) -> Verdict<Reply> {
        let mut current = bindings::Reply {
            chat_id: reply.chat_id,
            text: reply.text,
        };
        for slot in &self.slots {
            if !slot.settings.hooks.reply {
                continue;
            }
            let name = &slot.settings.name;
            match slot.call(&current).await {
                Ok(bindings::ReplyVerdict::Pass(next)) => current = next,
                Ok(bindings::ReplyVerdict::Drop(reason)) => {
                    tracing::info!(filter = &**name, %reason, "reply dropped");
                    return Verdict::Drop {
                        filter: name.to_string(),
                        reason,
                    };
                }
                Ok(bindings::ReplyVerdict::Reject(reason)) => {
                    tracing::info!(filter = &**name, %reason, "reply rejected");
                    return Verdict::Reject {
                        filter: name.to_string(),
                        reason,
                    };
                }
                Err(error) => {
                    if let Some(failed) = failed(slot, error, "reply", "the reply is stopped") {
                        return Verdict::Failed {
                            filter: name.to_string(),
                            error: failed,
                        };
                    }
                }
            }
        }
        Verdict::Pass(Reply {
            chat_id: current.chat_id,
            text: current.text,
        })
    }

    /// Runs the `permission` filters in file order; the first allow or deny
    /// decides, `relay` asks the next filter, and in the end the phone.
    pub async fn on_permission(&self, req: &PermissionRequest) -> PermissionVerdict {
        if !self.slots.iter().any(|s| s.settings.hooks.permission) {
            return PermissionVerdict::Relay;
        }
        let request = bindings::PermissionRequest {
            request_id: req.request_id.clone(),
            tool_name: req.tool_name.clone(),
            description: req.description.clone(),
            input_preview: req.input_preview.clone(),
        };
        for slot in &self.slots {
            if !slot.settings.hooks.permission {
                continue;
            }
            let name = &slot.settings.name;
            match slot.call(&request).await {
                Ok(bindings::PermissionVerdict::Relay) => {}
                Ok(bindings::PermissionVerdict::Allow(reason)) => {
                    tracing::info!(filter = &**name, tool = %req.tool_name, %reason, "permission allowed");
                    return PermissionVerdict::Allow {
                        filter: name.to_string(),
                        reason,
                    };
                }
                Ok(bindings::PermissionVerdict::Deny(reason)) => {
                    tracing::info!(filter = &**name, tool = %req.tool_name, %reason, "permission denied");
                    return PermissionVerdict::Deny {
                        filter: name.to_string(),
                        reason,
                    };
                }
                Err(error) => {
                    if let Some(failed) = failed(slot, error, "permission request", "the prompt goes to the phone instead") {
                        return PermissionVerdict::Failed {
                            filter: name.to_string(),
                            error: failed,
                        };
                    }
                }
            }
        }
        PermissionVerdict::Relay
    }
}

/// Logs a failed call; `Some(message)` if the filter fails closed.
/// Logs a failed call (the one place that does) and says whether it stops
/// the chain; `closed` is what then happens to the message.
fn failed(slot: &Slot, error: FilterError, what: &str, closed: &str) -> Option<String> {
    let filter = &*slot.settings.name;
    match slot.settings.on_error {
        OnError::Closed => {
            tracing::error!(
                filter,
                "{error}; {closed} (on_error = \"closed\")"
            );
            Some(error.to_string())
        }
        OnError::Open => {
            tracing::warn!(
                filter,
                "{error}; the {what} goes on unfiltered (on_error = \"open\")"
            );
            None
        }
    }
}

async fn load_one(
    rt: &Runtime,
    cache: &Cache,
    compiled: &mut HashMap<Vec<u8>, Component>,
    stats: &mut LoadStats,
    spec: &FilterSpec,
) -> Result<Slot, FilterError> {
    let filter = spec.name.clone();
    let path = spec.path.clone();
    let wasm = std::fs::read(&path).map_err(|e| FilterError::Read {
        filter: filter.clone(),
        path: path.clone(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file (build the filter first?)".into(),
            _ => e.to_string(),
        },
    })?;
    if let Some(message) = not_a_component(&wasm) {
        return Err(FilterError::NotAComponent {
            filter,
            path,
            message: message.into(),
        });
    }
    // The same file listed twice (say with two configs) is compiled once.
    let component = match compiled.get(&wasm) {
        Some(component) => component.clone(),
        None => {
            let (component, origin) = cache.load_or_compile(&rt.engine, &wasm).map_err(|e| {
                FilterError::NotAComponent {
                    filter: filter.clone(),
                    path: path.clone(),
                    message: format!("{e:#}"),
                }
            })?;
            match origin {
                Origin::Cached => stats.from_cache += 1,
                Origin::Compiled => stats.compiled += 1,
            }
            compiled.insert(wasm, component.clone());
            component
        }
    };

    let ty = component.component_type();
    if ty.get_export(&rt.engine, FILTER_EXPORT).is_none() {
        let exports: Vec<&str> = ty.exports(&rt.engine).map(|(name, _)| name).collect();
        let found = if exports.is_empty() {
            "it exports nothing".to_string()
        } else {
            format!("it exports {}", exports.join(", "))
        };
        return Err(FilterError::WrongWorld {
            filter,
            path,
            expected: FILTER_EXPORT,
            found,
        });
    }
    let link_error = |e: wasmtime::Error| FilterError::Link {
        filter: filter.clone(),
        path: path.clone(),
        message: link_message(&e),
    };
    let instance_pre = rt.linker.instantiate_pre(&component).map_err(link_error)?;
    let pre = OpzeroFilterPre::new(instance_pre).map_err(link_error)?;

    let settings = Settings {
        name: Arc::from(spec.name.as_str()),
        hooks: spec.hooks,
        timeout_ms: spec.timeout_ms,
        memory_mb: spec.memory_mb,
        on_error: spec.on_error,
        config_json: spec.config.to_string(),
    };
    Slot::start(settings, pre).await
}

/// Tells a core module or a non-wasm file from a component by the header,
/// for a message that says what to do.
fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Some("not a WebAssembly file");
    }
    // Bytes 4..8: version 1 layer 0 is a core module; layer 1 a component.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Some(
            "it is a core WebAssembly module; build the filter with `--target wasm32-wasip2` to get a component",
        );
    }
    None
}

/// wasmtime's link errors name the missing import in their chain; keep the
/// whole chain, it is short and says which interface is missing.
fn link_message(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    if text.contains("matching implementation was not found") || text.contains("import") {
        format!("{text} (a filter may only import WASI p2 and opzero:filter/host@0.1.0)")
    } else {
        text
    }
}

/// Where in opzero.toml a load error belongs.
fn diagnostic(index: usize, spec: &FilterSpec, error: &FilterError) -> Diagnostic {
    let section = format!("filter[{index}]");
    let message = error.to_string();
    match error {
        FilterError::Read { .. }
        | FilterError::NotAComponent { .. }
        | FilterError::WrongWorld { .. }
        | FilterError::Link { .. } => spec.path_at.diagnostic(format!("{section}.path"), message),
        FilterError::Config { .. } | FilterError::Panicked { .. } | FilterError::Trapped { .. } => {
            spec.config_at
                .diagnostic(format!("{section}.config"), message)
        }
        FilterError::OutOfMemory { .. } => spec.at.diagnostic(
            format!("{section}.memory_mb"),
            format!("{message} while starting; raise memory_mb"),
        ),
        FilterError::Timeout { .. } => spec.at.diagnostic(
            format!("{section}.timeout_ms"),
            format!("{message} while starting"),
        ),
        FilterError::Runtime(_) => spec.at.diagnostic(section, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert_eq!(
            not_a_component(b"hello world"),
            Some("not a WebAssembly file")
        );
        assert!(
            not_a_component(b"\0asm\x01\0\0\0")
                .unwrap()
                .contains("core WebAssembly module")
        );
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
    }
}
