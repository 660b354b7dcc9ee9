//! The one place that knows the WIT: a `bindgen!` for each version the
//! host runs (over the same WIT files as the guest SDK, so the two sides
//! cannot drift apart), which of them a component is, and the conversions
//! between the host's types and each version's.
//!
//! - `opzero:filter@0.1.0` (`guest-sdk/wit`): kept loading unchanged. Its
//!   filters see no files and have no `event` hook.
//! - `opzero:filter@0.2.0` (`guest-sdk/wit-0.2`): what the guest SDK builds.

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use super::message::{
    ClaudeState, Delivery, Event, FileInfo, Message, Outcome, PermissionStep, Reply, Step,
};
use crate::permissions::Request;

/// `opzero:filter@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "opzero-filter",
        // Calls into a filter are async so that a long one yields to the
        // runtime at every epoch tick instead of holding its thread.
        exports: { default: async },
    });

    pub const EXPORT: &str = "opzero:filter/filter@0.1.0";
}

/// `opzero:filter@0.2.0`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit-0.2",
        world: "opzero-filter",
        exports: { default: async },
    });

    pub const EXPORT: &str = "opzero:filter/filter@0.2.0";
}

/// The exports a component may have to be loaded as a filter, newest
/// first, for messages.
pub const FILTER_EXPORTS: &str = "opzero:filter/filter@0.2.0 or @0.1.0";

/// The WIT version a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V0_1,
    V0_2,
}

impl Version {
    /// Which filter export `component` has, if any (0.2.0 first: a
    /// component with both is run as 0.2.0).
    pub fn of(component: &Component) -> Option<Version> {
        let ty = component.component_type();
        let has = |export| ty.get_export(component.engine(), export).is_some();
        has(v0_2::EXPORT).then_some(Version::V0_2).or_else(|| has(v0_1::EXPORT).then_some(Version::V0_1))
    }

    pub fn package(self) -> &'static str {
        match self {
            Version::V0_1 => "opzero:filter@0.1.0",
            Version::V0_2 => "opzero:filter@0.2.0",
        }
    }
}

/// How to make instances of a filter, of either version.
pub enum FilterPre<T: 'static> {
    V0_1(v0_1::OpzeroFilterPre<T>),
    V0_2(v0_2::OpzeroFilterPre<T>),
}

impl<T: Send + 'static> FilterPre<T> {
    pub fn new(version: Version, pre: InstancePre<T>) -> wasmtime::Result<FilterPre<T>> {
        Ok(match version {
            Version::V0_1 => FilterPre::V0_1(v0_1::OpzeroFilterPre::new(pre)?),
            Version::V0_2 => FilterPre::V0_2(v0_2::OpzeroFilterPre::new(pre)?),
        })
    }

    pub async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<Filter> {
        Ok(match self {
            FilterPre::V0_1(pre) => Filter::V0_1(pre.instantiate_async(store).await?),
            FilterPre::V0_2(pre) => Filter::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

/// A running filter instance's exports, of either version, called in the
/// host's types.
pub enum Filter {
    V0_1(v0_1::OpzeroFilter),
    V0_2(v0_2::OpzeroFilter),
}

impl Filter {
    pub async fn configure<T: Send>(&self, store: &mut Store<T>, config: &str) -> wasmtime::Result<Result<(), String>> {
        match self {
            Filter::V0_1(f) => f.opzero_filter_filter().call_configure(store, config).await,
            Filter::V0_2(f) => f.opzero_filter_filter().call_configure(store, config).await,
        }
    }

    /// A 0.1.0 filter sees no files; either way the files stay as they came.
    pub async fn on_inject<T: Send>(&self, store: &mut Store<T>, message: &Message) -> wasmtime::Result<Step<Message>> {
        let (content, meta) = (message.content.clone(), message.meta.clone());
        let files = || message.files.clone();
        macro_rules! call {
            ($f:expr, $w:ident, $m:expr) => {
                match $f.opzero_filter_filter().call_on_inject(store, &$m).await? {
                    $w::InjectVerdict::Pass(m) => {
                        Step::Pass(Message { content: m.content, meta: m.meta, files: files() })
                    }
                    $w::InjectVerdict::Drop(reason) => Step::Drop(reason),
                    $w::InjectVerdict::Reject(reason) => Step::Reject(reason),
                }
            };
        }
        Ok(match self {
            Filter::V0_1(f) => {
                use v0_1::exports::opzero::filter::filter as w;
                call!(f, w, w::Message { content, meta })
            }
            Filter::V0_2(f) => {
                use v0_2::exports::opzero::filter::filter as w;
                let info = |i: &FileInfo| w::FileInfo { name: i.name.clone(), mime: i.mime.clone(), size: i.size };
                call!(f, w, w::Message { content, meta, files: message.files.iter().map(info).collect() })
            }
        })
    }

    pub async fn on_reply<T: Send>(&self, store: &mut Store<T>, reply: &Reply) -> wasmtime::Result<Step<Reply>> {
        macro_rules! call {
            ($f:expr, $w:path) => {{
                use $w as w;
                let r = w::Reply { chat_id: reply.chat_id.clone(), text: reply.text.clone() };
                match $f.opzero_filter_filter().call_on_reply(store, &r).await? {
                    w::ReplyVerdict::Pass(r) => Step::Pass(Reply { chat_id: r.chat_id, text: r.text }),
                    w::ReplyVerdict::Drop(reason) => Step::Drop(reason),
                    w::ReplyVerdict::Reject(reason) => Step::Reject(reason),
                }
            }};
        }
        Ok(match self {
            Filter::V0_1(f) => call!(f, v0_1::exports::opzero::filter::filter),
            Filter::V0_2(f) => call!(f, v0_2::exports::opzero::filter::filter),
        })
    }

    pub async fn on_permission<T: Send>(&self, store: &mut Store<T>, request: &Request) -> wasmtime::Result<PermissionStep> {
        macro_rules! call {
            ($f:expr, $w:path) => {{
                use $w as w;
                let p = w::PermissionRequest {
                    request_id: request.request_id.clone(),
                    tool_name: request.tool_name.clone(),
                    description: request.description.clone(),
                    input_preview: request.input_preview.clone(),
                };
                match $f.opzero_filter_filter().call_on_permission_request(store, &p).await? {
                    w::PermissionVerdict::Relay => PermissionStep::Relay,
                    w::PermissionVerdict::Allow(reason) => PermissionStep::Allow(reason),
                    w::PermissionVerdict::Deny(reason) => PermissionStep::Deny(reason),
                }
            }};
        }
        Ok(match self {
            Filter::V0_1(f) => call!(f, v0_1::exports::opzero::filter::filter),
            Filter::V0_2(f) => call!(f, v0_2::exports::opzero::filter::filter),
        })
    }

    /// A 0.1.0 filter has no event hook: loading refuses `hooks = ["event"]`
    /// for one, so this is never asked of it.
    pub async fn on_event<T: Send>(&self, store: &mut Store<T>, event: &Event) -> wasmtime::Result<()> {
        use v0_2::exports::opzero::filter::filter as w;
        let Filter::V0_2(f) = self else {
            wasmtime::bail!("an opzero:filter@0.1.0 component has no event hook");
        };
        let event = match event.clone() {
            Event::ReplySent { id, chat_id, text, edit_of } => w::Event::ReplySent(w::ReplySent { id, chat_id, text, edit_of }),
            Event::PermissionRelayed(r) => w::Event::PermissionRelayed(w::PermissionRequest {
                request_id: r.request_id,
                tool_name: r.tool_name,
                description: r.description,
                input_preview: r.input_preview,
            }),
            Event::PermissionResolved { request_id, outcome, by, reason } => {
                w::Event::PermissionResolved(w::PermissionResolved {
                    request_id,
                    outcome: match outcome {
                        Outcome::Allow => w::PermissionOutcome::Allow,
                        Outcome::Deny => w::PermissionOutcome::Deny,
                        Outcome::Expired => w::PermissionOutcome::Expired,
                    },
                    by,
                    reason,
                })
            }
            Event::Status(state) => w::Event::StatusChanged(match state {
                ClaudeState::Busy => w::ClaudeState::Busy,
                ClaudeState::Idle => w::ClaudeState::Idle,
            }),
            Event::Receipt { message_id, chat_id, state, reason } => w::Event::Receipt(w::Receipt {
                message_id,
                chat_id,
                state: match state {
                    Delivery::Queued => w::Delivery::Queued,
                    Delivery::Seen => w::Delivery::Seen,
                    Delivery::Undelivered => w::Delivery::Undelivered,
                },
                reason,
            }),
        };
        f.opzero_filter_filter().call_on_event(store, &event).await
    }
}
