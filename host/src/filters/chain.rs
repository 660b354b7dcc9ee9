//! The chain: loading `[[filter]]` entries (all problems at once, each with
//! its position in opzero.toml), the one loop that runs a hook through
//! them in file order, and the observers that take the event log's events
//! to the `event` hooks, off the message path.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};
use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::{FILTER_EXPORTS, Filter, FilterPre, Version};
use super::engine::{Runtime, runtime};
use super::error::FilterError;
use super::instance::{Hook, Slot};
use super::message::{Event, Message, PermissionStep, PermissionVerdict, Reply, SessionSource, Step, Verdict};
use super::state::StoreState;
use crate::config::{Diagnostic, FilterSpec, Hooks, OnError};
use crate::events::{EVENT_TAP_CAPACITY, EventLog};
use crate::permissions::Request;

/// The filters of one opzero.toml, ready to run.
#[derive(Default)]
pub struct FilterChain {
    /// The instances that take the message hooks, in file order.
    slots: Vec<Slot>,
    /// The instances that take events, one per filter with the `event`
    /// hook, in file order.
    observers: Vec<Arc<Slot>>,
    names: Vec<String>,
    stats: LoadStats,
    /// Dropping it stops the observers (see [`FilterChain::observe`]).
    observing: Mutex<Option<watch::Sender<()>>>,
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
    /// one instance of each (two for a filter with the `event` hook and
    /// others). Reports all problems at once.
    /// `session` is what the filters' `session()` answers.
    pub async fn load(specs: &[FilterSpec], cache_dir: &Path, session: &SessionSource) -> Result<FilterChain, Vec<Diagnostic>> {
        let mut chain = FilterChain::default();
        if specs.is_empty() {
            return Ok(chain);
        }
        let rt = runtime(cache_dir).map_err(|e| vec![specs[0].at.diagnostic("filter", e.to_string())])?;
        let (hits, misses) = rt.cache_counts();
        let mut compiled: HashMap<Vec<u8>, Component> = HashMap::new();
        let mut diagnostics = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            match load_one(rt, &mut compiled, spec, session).await {
                Ok((calls, events)) => {
                    chain.names.push(spec.name.clone());
                    chain.slots.extend(calls);
                    chain.observers.extend(events.map(Arc::new));
                }
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
        self.names.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.names.clone()
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

    /// Hands `event` to each `event` filter in file order, now, and waits
    /// for them (`filter test`; `serve` goes through [`FilterChain::observe`]).
    /// A failure is the first filter's that failed.
    pub async fn on_event(&self, event: Event) -> Verdict<()> {
        for slot in &self.observers {
            if let Err(error) = slot.call(&event).await {
                return Verdict::Failed { filter: slot.spec.name.clone(), error: error.to_string() };
            }
        }
        Verdict::Pass(())
    }

    /// Starts taking `events`' events, as they are published, to the
    /// `event` filters: each in a task of its own, on an instance of its
    /// own, in order, with a queue of [`EVENT_TAP_CAPACITY`] events. A slow
    /// or failing one holds up nothing else; when its queue is full the
    /// oldest events are dropped, and how many is logged. It goes on until
    /// [`FilterChain::stop_observing`], or until the chain is dropped.
    pub fn observe(&self, events: &EventLog) {
        if self.observers.is_empty() {
            return;
        }
        let (stop, _) = watch::channel(());
        for slot in &self.observers {
            let mut queue = events.tap();
            let mut stopped = stop.subscribe();
            let slot = slot.clone();
            tokio::spawn(async move {
                let filter = slot.spec.name.as_str();
                loop {
                    let next = tokio::select! {
                        biased;
                        _ = stopped.changed() => return,
                        next = queue.recv() => next,
                    };
                    let published = match next {
                        Ok(published) => published,
                        Err(broadcast::error::RecvError::Lagged(dropped)) => {
                            tracing::warn!(
                                filter,
                                "{dropped} events dropped: its queue of {EVENT_TAP_CAPACITY} was full (on-event is too slow)"
                            );
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    let event = serde_json::from_str(&published.data)
                        .map_err(|e| e.to_string())
                        .and_then(|data| Event::from_sse(published.id, &data));
                    match event {
                        Ok(Some(event)) => {
                            if let Err(error) = slot.call(&event).await {
                                tracing::warn!(filter, "{error}; on-event missed event {}", published.id);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::debug!(filter, "event {} not observed: {e}", published.id),
                    }
                }
            });
        }
        *self.observing.lock().unwrap() = Some(stop);
    }

    /// Stops the observers [`FilterChain::observe`] started (a reload's
    /// new chain takes over); a call under way finishes.
    pub fn stop_observing(&self) {
        self.observing.lock().unwrap().take();
    }

    /// Runs `input` through the filters of its hook, in file order. The
    /// first that decides, or fails with `on_error = "closed"`, ends it.
    async fn run<H: Hook>(&self, mut input: H) -> H::Verdict {
        // A plain loop: an iterator adapter's closure held across the await
        // would make the future not provably Send.
        for slot in &self.slots {
            if !H::runs(&slot.spec.hooks) {
                continue;
            }
            let filter = slot.spec.name.as_str();
            match slot.call::<H>(&input).await {
                Ok(answer) => match input.answered(answer, filter) {
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
        input.passed()
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
    ($host:ident, $what:literal, $runs:ident, $call:ident) => {
        impl Hook for $host {
            type Answer = Step<$host>;
            type Verdict = Verdict<$host>;
            const WHAT: &'static str = $what;
            const CLOSED: &'static str = concat!("the ", $what, " is stopped");

            fn runs(hooks: &Hooks) -> bool {
                hooks.$runs
            }

            fn call<'a>(
                &'a self,
                filter: &'a Filter,
                store: &'a mut Store<StoreState>,
            ) -> impl Future<Output = wasmtime::Result<Step<$host>>> + Send + 'a {
                filter.$call(store, self)
            }

            fn answered(self, answer: Step<$host>, filter: &str) -> Result<$host, Verdict<$host>> {
                match answer {
                    Step::Pass(next) => Ok(next),
                    Step::Drop(reason) => Err(stopped($what, filter, reason, true)),
                    Step::Reject(reason) => Err(stopped($what, filter, reason, false)),
                }
            }

            fn passed(self) -> Verdict<$host> {
                Verdict::Pass(self)
            }

            fn failed(filter: String, error: String) -> Verdict<$host> {
                Verdict::Failed { filter, error }
            }
        }
    };
}

pass_drop_reject!(Message, "inject", inject, on_inject);
pass_drop_reject!(Reply, "reply", reply, on_reply);

impl Hook for Request {
    type Answer = PermissionStep;
    type Verdict = PermissionVerdict;
    const WHAT: &'static str = "permission request";
    const CLOSED: &'static str = "the prompt goes to the phone instead";

    fn runs(hooks: &Hooks) -> bool {
        hooks.permission
    }

    fn call<'a>(
        &'a self,
        filter: &'a Filter,
        store: &'a mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<PermissionStep>> + Send + 'a {
        filter.on_permission(store, self)
    }

    fn answered(self, answer: PermissionStep, filter: &str) -> Result<Request, PermissionVerdict> {
        let tool = &self.tool_name;
        let filter = filter.to_string();
        match answer {
            PermissionStep::Relay => Ok(self),
            PermissionStep::Allow(reason) => {
                tracing::info!(filter, tool, %reason, "permission allowed");
                Err(PermissionVerdict::Allow { filter, reason })
            }
            PermissionStep::Deny(reason) => {
                tracing::info!(filter, tool, %reason, "permission denied");
                Err(PermissionVerdict::Deny { filter, reason })
            }
        }
    }

    fn passed(self) -> PermissionVerdict {
        PermissionVerdict::Relay
    }

    fn failed(filter: String, error: String) -> PermissionVerdict {
        PermissionVerdict::Failed { filter, error }
    }
}

/// Events go to the observers' instances only (see `FilterChain::observe`):
/// nothing comes back, and nothing is decided.
impl Hook for Event {
    type Answer = ();
    type Verdict = ();
    const WHAT: &'static str = "event";
    const CLOSED: &'static str = "the event is not observed";

    fn runs(hooks: &Hooks) -> bool {
        hooks.event
    }

    fn call<'a>(
        &'a self,
        filter: &'a Filter,
        store: &'a mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<()>> + Send + 'a {
        filter.on_event(store, self)
    }

    fn answered(self, _: (), _: &str) -> Result<Event, ()> {
        Ok(self)
    }

    fn passed(self) {}

    fn failed(_: String, _: String) {}
}

/// The instance for the message hooks (if it has any) and the one for
/// events (if it has that hook).
async fn load_one(
    rt: &'static Runtime,
    compiled: &mut HashMap<Vec<u8>, Component>,
    spec: &FilterSpec,
    session: &SessionSource,
) -> Result<(Option<Slot>, Option<Slot>), FilterError> {
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

    let Some(version) = Version::of(&component) else {
        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(&rt.engine).map(|(name, _)| name).collect();
        let found = if exports.is_empty() {
            "it exports nothing".to_string()
        } else {
            format!("it exports {}", exports.join(", "))
        };
        return Err(FilterError::WrongWorld {
            filter,
            path,
            expected: FILTER_EXPORTS,
            found,
        });
    };
    tracing::debug!(filter, wit = version.package(), "filter component compiled");
    if version == Version::V0_1 && spec.hooks.event {
        return Err(FilterError::NoEventHook { filter, path });
    }
    let sends_http = component
        .component_type()
        .imports(&rt.engine)
        .any(|(name, _)| name.starts_with("wasi:http/outgoing-handler@"));
    if sends_http && spec.allowed_outbound_hosts.is_empty() {
        return Err(FilterError::NoGrant { filter, path });
    }
    let link_error = |e: wasmtime::Error| FilterError::Link {
        filter: filter.clone(),
        path: path.clone(),
        message: link_message(&e),
    };
    let instance_pre = rt.linker.instantiate_pre(&component).map_err(link_error)?;
    let pre = Arc::new(FilterPre::new(version, instance_pre).map_err(link_error)?);

    let calls = match spec.hooks.on_messages() {
        true => Some(Slot::start(spec.clone(), pre.clone(), rt, spec.timeout_ms, session.clone()).await?),
        false => None,
    };
    let events = match spec.hooks.event {
        true => Some(Slot::start(spec.clone(), pre, rt, spec.event_timeout_ms, session.clone()).await?),
        false => None,
    };
    Ok((calls, events))
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
        format!("{text} (a filter may only import WASI p2, wasi:http and opzero:filter/host, @0.1.0 or @0.2.0)")
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
        FilterError::NoEventHook { .. } => spec.hooks_at.diagnostic(format!("{section}.hooks"), message),
        FilterError::NoGrant { .. } => spec.at.diagnostic(format!("{section}.allowed_outbound_hosts"), message),
        FilterError::Config { .. } | FilterError::Panicked { .. } | FilterError::Trapped { .. } => {
            spec.config_at.diagnostic(format!("{section}.config"), message)
        }
        FilterError::OutOfMemory { .. } => spec.at.diagnostic(
            format!("{section}.memory_mb"),
            format!("{message} while starting; raise memory_mb"),
        ),
        FilterError::Timeout { .. } => {
            let key = if spec.hooks.on_messages() { "timeout_ms" } else { "event_timeout_ms" };
            spec.at.diagnostic(format!("{section}.{key}"), format!("{message} while starting"))
        }
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
