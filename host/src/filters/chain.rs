//! The chain: loading `[[filter]]` entries (all problems at once, each with
//! its position in opzero.toml) and the one loop that runs a hook through
//! them in file order. The host's types meet the generated ones here, and
//! nowhere else.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;

use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::{self, FILTER_EXPORT, OpzeroFilterPre};
use super::engine::{Runtime, runtime};
use super::error::FilterError;
use super::instance::{Hook, Slot};
use super::state::StoreState;
use super::message::{Message, PermissionVerdict, Reply, Verdict};
use crate::config::{Diagnostic, FilterSpec, Hooks, OnError};
use crate::permissions::Request;

/// The filters of one opzero.toml, ready to run.
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


impl FilterChain {
    /// Loads every filter, compiling each component on a blocking thread
    /// (or reading it from wasmtime's cache in `cache_dir`), and configures
    /// one instance of each. Reports all problems at once.
    pub async fn load(specs: &[FilterSpec], cache_dir: &Path) -> Result<FilterChain, Vec<Diagnostic>> {
        let mut chain = FilterChain::default();
        if specs.is_empty() {
            return Ok(chain);
        }
        let rt = runtime(cache_dir).map_err(|e| vec![specs[0].at.diagnostic("filter", e.to_string())])?;
        let (hits, misses) = rt.cache_counts();
        let mut compiled: HashMap<Vec<u8>, Component> = HashMap::new();
        let mut diagnostics = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            match load_one(rt, &mut compiled, spec).await {
                Ok(slot) => chain.slots.push(slot),
                Err(error) => diagnostics.push(diagnostic(index, spec, &error)),
            }
        }
        if !diagnostics.is_empty() {
            return Err(diagnostics);
        }
        let (hits_now, misses_now) = rt.cache_counts();
        chain.stats = LoadStats {
            compiled: misses_now - misses,
            from_cache: hits_now - hits,
        };
        tracing::info!(
            filters = ?chain.names(),
            compiled = chain.stats.compiled,
            cached = chain.stats.from_cache,
            "filter chain loaded"
        );
        Ok(chain)
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.spec.name.clone()).collect()
    }

    pub fn load_stats(&self) -> LoadStats {
        self.stats
    }

    /// Runs the `inject` filters in file order.
    pub async fn on_inject(&self, message: Message) -> Verdict<Message> {
        self.run(message).await
    }

    /// Runs the `reply` filters in file order.
    pub async fn on_reply(&self, reply: Reply) -> Verdict<Reply> {
        self.run(reply).await
    }

    /// Runs the `permission` filters in file order; `relay` asks the next
    /// filter, and in the end the phone.
    pub async fn on_permission(&self, request: Request) -> PermissionVerdict {
        self.run(request).await
    }

    /// Runs `input` through the filters of its hook, in file order. The
    /// first that decides, or fails with `on_error = "closed"`, ends it.
    async fn run<H: Hook>(&self, input: H) -> H::Verdict {
        let mut input = input.into_guest();
        // A plain loop: an iterator adapter's closure held across the await
        // would make the future not provably Send.
        for slot in &self.slots {
            if !H::runs(&slot.spec.hooks) {
                continue;
            }
            let filter = slot.spec.name.as_str();
            match slot.call::<H>(&input).await {
                Ok(answer) => match H::answered(input, answer, filter) {
                    Ok(next) => input = next,
                    Err(verdict) => return verdict,
                },
                Err(error) => match slot.spec.on_error {
                    OnError::Closed => {
                        tracing::error!(filter, "{error}; {} (on_error = \"closed\")", H::CLOSED);
                        return H::failed(filter.to_string(), error.to_string());
                    }
                    OnError::Open => tracing::warn!(
                        filter,
                        "{error}; the {} goes on unfiltered (on_error = \"open\")",
                        H::WHAT
                    ),
                },
            }
        }
        H::passed(input)
    }
}

/// A drop or a reject, as the inject and reply hooks both answer them.
fn stopped<T>(hook: &str, filter: &str, reason: String, drop: bool) -> Verdict<T> {
    let filter = filter.to_string();
    if drop {
        tracing::info!(filter, %reason, "{hook} dropped");
        Verdict::Drop { filter, reason }
    } else {
        tracing::info!(filter, %reason, "{hook} rejected");
        Verdict::Reject { filter, reason }
    }
}

/// The inject and reply hooks: the same shape, each with its own types.
macro_rules! pass_drop_reject {
    ($host:ident, $guest:ident, $answer:ident, $what:literal, $runs:ident, $call:ident, [$($field:ident),+]) => {
        impl Hook for $host {
            type Guest = bindings::$guest;
            type Answer = bindings::$answer;
            type Verdict = Verdict<$host>;
            const WHAT: &'static str = $what;
            const CLOSED: &'static str = concat!("the ", $what, " is stopped");

            fn runs(hooks: &Hooks) -> bool {
                hooks.$runs
            }

            fn into_guest(self) -> bindings::$guest {
                bindings::$guest { $($field: self.$field),+ }
            }

            fn call<'a>(
                input: &'a bindings::$guest,
                filter: &'a bindings::Guest,
                store: &'a mut Store<StoreState>,
            ) -> impl Future<Output = wasmtime::Result<bindings::$answer>> + Send + 'a {
                filter.$call(store, input)
            }

            fn answered(_: bindings::$guest, answer: bindings::$answer, filter: &str) -> Result<bindings::$guest, Verdict<$host>> {
                match answer {
                    bindings::$answer::Pass(next) => Ok(next),
                    bindings::$answer::Drop(reason) => Err(stopped($what, filter, reason, true)),
                    bindings::$answer::Reject(reason) => Err(stopped($what, filter, reason, false)),
                }
            }

            fn passed(input: bindings::$guest) -> Verdict<$host> {
                Verdict::Pass($host { $($field: input.$field),+ })
            }

            fn failed(filter: String, error: String) -> Verdict<$host> {
                Verdict::Failed { filter, error }
            }
        }
    };
}

pass_drop_reject!(Message, Message, InjectVerdict, "inject", inject, call_on_inject, [content, meta]);
pass_drop_reject!(Reply, Reply, ReplyVerdict, "reply", reply, call_on_reply, [chat_id, text]);

impl Hook for Request {
    type Guest = bindings::PermissionRequest;
    type Answer = bindings::PermissionVerdict;
    type Verdict = PermissionVerdict;
    const WHAT: &'static str = "permission request";
    const CLOSED: &'static str = "the prompt goes to the phone instead";

    fn runs(hooks: &Hooks) -> bool {
        hooks.permission
    }

    fn into_guest(self) -> bindings::PermissionRequest {
        bindings::PermissionRequest {
            request_id: self.request_id,
            tool_name: self.tool_name,
            description: self.description,
            input_preview: self.input_preview,
        }
    }

    fn call<'a>(
        input: &'a bindings::PermissionRequest,
        filter: &'a bindings::Guest,
        store: &'a mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<bindings::PermissionVerdict>> + Send + 'a {
        filter.call_on_permission_request(store, input)
    }

    fn answered(
        input: bindings::PermissionRequest,
        answer: bindings::PermissionVerdict,
        filter: &str,
    ) -> Result<bindings::PermissionRequest, PermissionVerdict> {
        let tool = &input.tool_name;
        let filter = filter.to_string();
        match answer {
            bindings::PermissionVerdict::Relay => Ok(input),
            bindings::PermissionVerdict::Allow(reason) => {
                tracing::info!(filter, tool, %reason, "permission allowed");
                Err(PermissionVerdict::Allow { filter, reason })
            }
            bindings::PermissionVerdict::Deny(reason) => {
                tracing::info!(filter, tool, %reason, "permission denied");
                Err(PermissionVerdict::Deny { filter, reason })
            }
        }
    }

    fn passed(_: bindings::PermissionRequest) -> PermissionVerdict {
        PermissionVerdict::Relay
    }

    fn failed(filter: String, error: String) -> PermissionVerdict {
        PermissionVerdict::Failed { filter, error }
    }
}

async fn load_one(
    rt: &'static Runtime,
    compiled: &mut HashMap<Vec<u8>, Component>,
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
    let not_a_component = |message: String| FilterError::NotAComponent {
        filter: filter.clone(),
        path: path.clone(),
        message,
    };
    if let Some(message) = not_a_component_header(&wasm) {
        return Err(not_a_component(message.into()));
    }
    // The same file listed twice (say with two configs) is compiled once.
    let component = match compiled.get(&wasm) {
        Some(component) => component.clone(),
        None => {
            // Cranelift takes a while: off the runtime's thread, so Claude
            // Code's requests are answered meanwhile.
            let bytes = wasm.clone();
            let component = tokio::task::spawn_blocking(move || Component::new(&rt.engine, bytes))
                .await
                .map_err(|e| not_a_component(format!("compiling it failed: {e}")))?
                .map_err(|e| not_a_component(format!("{e:#}")))?;
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

    Slot::start(spec.clone(), pre, rt).await
}

/// Tells a core module or a non-wasm file from a component by the header,
/// for a message that says what to do.
fn not_a_component_header(bytes: &[u8]) -> Option<&'static str> {
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
            spec.config_at.diagnostic(format!("{section}.config"), message)
        }
        FilterError::OutOfMemory { .. } => spec.at.diagnostic(
            format!("{section}.memory_mb"),
            format!("{message} while starting; raise memory_mb"),
        ),
        FilterError::Timeout { .. } => spec.at.diagnostic(format!("{section}.timeout_ms"), format!("{message} while starting")),
        FilterError::Runtime(_) => spec.at.diagnostic(section, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert_eq!(not_a_component_header(b"hello world"), Some("not a WebAssembly file"));
        assert!(not_a_component_header(b"\0asm\x01\0\0\0").unwrap().contains("core WebAssembly module"));
        assert_eq!(not_a_component_header(b"\0asm\x0d\0\x01\0"), None);
    }
}
