//! One loaded filter: its store (see `state` for the sandbox), the running
//! instance, how a hook calls it, and turning traps into named errors.
//!
//! A filter with the `event` hook has two: one for the message hooks and
//! one for events, so its inject hook never waits behind its `on-event`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{Filter, FilterPre};
use super::engine::Runtime;
use super::error::FilterError;
use super::message::SessionSource;
use super::state::StoreState;
use crate::config::{FilterSpec, Hooks};

/// `configure` may compile patterns or build tables: give it at least this
/// long whatever the per-call `timeout_ms`.
const CONFIGURE_TIMEOUT_MS: u64 = 1000;

/// One of the hooks, implemented for the host's input type: which export
/// it calls, and what each answer means for the chain.
pub(super) trait Hook: Sized + Send + Sync {
    /// One filter's answer, in the host's types.
    type Answer: Send;
    /// What the chain decided, in the host's terms.
    type Verdict;
    /// For the log: "inject", "reply", "permission request".
    const WHAT: &'static str;
    /// What a failure does to the message when `on_error` is "closed".
    const CLOSED: &'static str;

    fn runs(hooks: &Hooks) -> bool;
    fn call<'a>(
        &'a self,
        filter: &'a Filter,
        store: &'a mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Answer>> + Send + 'a;
    /// `Ok(input)` goes on to the next filter; `Err(verdict)` ends the chain.
    fn answered(self, answer: Self::Answer, filter: &str) -> Result<Self, Self::Verdict>;
    /// Every filter let it through.
    fn passed(self) -> Self::Verdict;
    fn failed(filter: String, error: String) -> Self::Verdict;
}

/// A running instance. Dropped after any trap: wasmtime will not enter it
/// again, and its state may be half-updated.
struct Live {
    store: Store<StoreState>,
    filter: Filter,
}

/// One filter of the chain: how to make instances, and the current one.
pub struct Slot {
    pub spec: FilterSpec,
    pre: Arc<FilterPre<StoreState>>,
    rt: &'static Runtime,
    /// Each call's deadline: `timeout_ms`, or `event_timeout_ms` for the
    /// instance that takes events.
    timeout_ms: u64,
    /// What the filter's `session()` answers.
    session: SessionSource,
    /// Held across a call, which may yield: an async lock.
    live: tokio::sync::Mutex<Option<Live>>,
}

impl Slot {
    /// Makes the first instance and configures it, so a bad config or a
    /// filter that cannot start is reported at load time.
    pub async fn start(
        spec: FilterSpec,
        pre: Arc<FilterPre<StoreState>>,
        rt: &'static Runtime,
        timeout_ms: u64,
        session: SessionSource,
    ) -> Result<Slot, FilterError> {
        let slot = Slot {
            spec,
            pre,
            rt,
            timeout_ms,
            session,
            live: tokio::sync::Mutex::new(None),
        };
        let live = slot.instantiate().await?;
        *slot.live.lock().await = Some(live);
        Ok(slot)
    }

    async fn instantiate(&self) -> Result<Live, FilterError> {
        let rt = self.rt;
        let s = &self.spec;
        let grant = s.allowed_outbound_hosts.clone().into();
        let mut store = Store::new(&rt.engine, StoreState::new(s.name.as_str().into(), s.memory_mb, grant, self.session.clone()));
        store.limiter(|state| &mut state.limiter);
        // At each epoch tick a running guest yields to the runtime (so a
        // long call holds up nothing else), until its deadline: then it
        // traps.
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let timeout_ms = self.timeout_ms.max(CONFIGURE_TIMEOUT_MS);
        arm(&mut store, timeout_ms);

        let deadline = store.data().deadline;
        let result = {
            let _ticking = rt.ticker.enter();
            let start = async {
                let filter = self.pre.instantiate(&mut store).await?;
                let configured = filter.configure(&mut store, &s.config.to_string()).await?;
                Ok::<_, wasmtime::Error>((filter, configured))
            };
            within(deadline, start).await
        };
        let stderr = store.data_mut().flush_output();
        match result {
            Ok((filter, Ok(()))) => Ok(Live { store, filter }),
            Ok((_, Err(message))) => Err(FilterError::Config {
                filter: s.name.to_string(),
                message,
            }),
            Err(e) => Err(self.classify(e, &store, &stderr, timeout_ms)),
        }
    }

    /// Calls into the current instance (making one if the last trapped).
    /// After a failure the instance is replaced at once, so the next call
    /// finds a fresh, configured one.
    pub(super) async fn call<H: Hook>(&self, input: &H) -> Result<H::Answer, FilterError> {
        let mut live = self.live.lock().await;
        if live.is_none() {
            *live = Some(self.instantiate().await?);
        }
        let current = live.as_mut().expect("an instance was just made");
        arm(&mut current.store, self.timeout_ms);
        let deadline = current.store.data().deadline;
        let result = {
            let _ticking = self.rt.ticker.enter();
            let call = input.call(&current.filter, &mut current.store);
            within(deadline, call).await
        };
        let stderr = current.store.data_mut().flush_output();
        match result {
            Ok(verdict) => Ok(verdict),
            Err(e) => {
                let error = self.classify(e, &current.store, &stderr, self.timeout_ms);
                *live = None;
                match self.instantiate().await {
                    Ok(fresh) => *live = Some(fresh),
                    Err(again) => tracing::warn!(
                        filter = self.spec.name.as_str(),
                        "could not replace the failed instance yet: {again}"
                    ),
                }
                Err(error)
            }
        }
    }

    /// Names what stopped the guest: the deadline, the memory cap, a panic
    /// (its message read back from stderr), or another trap.
    fn classify(
        &self,
        error: wasmtime::Error,
        store: &Store<StoreState>,
        stderr: &str,
        timeout_ms: u64,
    ) -> FilterError {
        let filter = self.spec.name.to_string();
        let trap = error.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::Interrupt) {
            return FilterError::Timeout { filter, timeout_ms };
        }
        if store.data().limiter.hit {
            return FilterError::OutOfMemory {
                filter,
                limit_mb: self.spec.memory_mb,
            };
        }
        if let Some(message) = panic_message(stderr) {
            return FilterError::Panicked { filter, message };
        }
        let message = trap.map_or_else(|| error.root_cause().to_string(), |trap| trap.to_string());
        FilterError::Trapped { filter, message }
    }
}

/// `call`, stopped at `deadline` even while the guest waits in a host call
/// (a sleep, say), where the epoch callback never runs: as a timeout trap.
/// The instance is then unusable, and is replaced like after any trap.
async fn within<T>(deadline: Instant, call: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    tokio::time::timeout_at(deadline.into(), call).await.unwrap_or_else(|_| Err(Trap::Interrupt.into()))
}

/// Gives the next call `timeout_ms`, counted from now.
fn arm(store: &mut Store<StoreState>, timeout_ms: u64) {
    store.data_mut().deadline = Instant::now() + Duration::from_millis(timeout_ms);
    store.set_epoch_deadline(1);
}

/// The message of a Rust panic as std prints it:
/// `thread '<unnamed>' panicked at src/lib.rs:3:5:\nMESSAGE\nnote: ...`.
fn panic_message(stderr: &str) -> Option<String> {
    let at = stderr.rfind("panicked at ")?;
    let rest = &stderr[at..];
    let body = rest.split_once('\n').map_or("", |(_, body)| body);
    let message: Vec<&str> = body
        .lines()
        .take_while(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let message = message.join("\n").trim().to_string();
    if message.is_empty() {
        // Older std format: `panicked at 'MESSAGE', src/lib.rs:3:5`.
        let first = rest.lines().next().unwrap_or(rest);
        Some(first.trim_start_matches("panicked at ").trim().to_string())
    } else {
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_std_output() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:27:13:\nboom: it broke\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("boom: it broke"));
        let multi = "thread 'main' panicked at a.rs:1:1:\nline one\nline two\n";
        assert_eq!(panic_message(multi).as_deref(), Some("line one\nline two"));
        assert_eq!(panic_message("just some logging\n"), None);
    }
}
