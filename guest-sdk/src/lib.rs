//! Write opzero-host filters in Rust.
//!
//! A filter is a WebAssembly component that sits between the phone and
//! Claude. It sees messages injected from the phone (with a description of
//! their files: name, type, size), Claude's replies, and tool permission
//! prompts, and may change, drop or reject them. It may also observe what
//! happens in the session ([`Filter::on_event`]). This crate is all a
//! filter depends on: the WIT bindings (`opzero:filter@0.2.0`), serde and
//! the logging glue come with it.
//!
//! ```
//! use opzero_guest_sdk::prelude::*;
//!
//! #[config]
//! struct Settings {
//!     #[serde(default = "default_prefix")]
//!     prefix: String,
//! }
//!
//! fn default_prefix() -> String {
//!     "[phone]".into()
//! }
//!
//! struct Prefixer {
//!     prefix: String,
//! }
//!
//! impl Filter for Prefixer {
//!     type Config = Settings;
//!
//!     fn new(config: Settings) -> Result<Self, String> {
//!         Ok(Prefixer { prefix: config.prefix })
//!     }
//!
//!     // Hooks not written here pass everything through.
//!     fn on_inject(&mut self, mut message: Message) -> InjectVerdict {
//!         info!("prefixing {} bytes", message.content.len());
//!         message.content = format!("{} {}", self.prefix, message.content);
//!         InjectVerdict::Pass(message)
//!     }
//! }
//!
//! export_filter!(Prefixer);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! `.wasm` under `target/wasm32-wasip2/release/` is the component to list
//! in `opzero.toml`.
//!
//! # Events
//!
//! A filter listed with `hooks = ["event"]` gets [`Filter::on_event`] for
//! each reply sent, permission prompt relayed or answered, change of
//! Claude's status (busy, idle) and receipt (queued, seen, undelivered).
//! The host calls it off the message path, on an instance of its own (so
//! state kept for events is not the state the message hooks see), one
//! event at a time and in order, each call within `event_timeout_ms`
//! (default 5000). It returns nothing: an observer cannot hold up, change
//! or drop a message. If it falls 64 events behind, the oldest are dropped
//! and the host logs how many.
//!
//! # Outbound HTTP
//!
//! [`http`] sends blocking HTTP requests, to the hosts the filter's
//! `[[filter]]` entry lists in `allowed_outbound_hosts` and no others (see
//! the module). Without that list, a filter that sends requests does not
//! load.
//!
//! # Config
//!
//! The filter's `[filter.config]` table arrives as JSON and is deserialized
//! into [`Filter::Config`]. Mark that type with [`#[config]`](config): it
//! derives `Deserialize` through this crate's serde and refuses unknown keys.
//! A bad config fails `opzero-host validate` and `serve` with a message
//! naming the key, for example `limit: invalid type: string "x", expected
//! u32`. A filter without settings uses [`NoConfig`].
//!
//! # Logging
//!
//! [`trace!`], [`debug!`], [`info!`], [`warn!`] and [`error!`] take
//! `format!` arguments and end up in the host's log (stderr) with the filter's
//! name. The host drops lines below its log level, cuts a line at 4 KiB, and
//! keeps 100 lines a call (it logs how many more it dropped). Under `cargo test` (a
//! native build) they print to stderr instead, so a filter's logic can be
//! unit-tested as plain Rust.
//!
//! # Panics
//!
//! A panic aborts the call. The host logs the panic message with the
//! filter's name, applies the filter's `on_error` policy, and replaces the
//! instance with a fresh one (calling [`Filter::new`] again), so state kept
//! in the filter does not survive a panic.

#![deny(unsafe_code)]

extern crate self as opzero_guest_sdk;

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit-0.2",
        world: "opzero-filter-sdk",
        // The wasi:http and wasi:io types the `http` module uses.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_opzero_filter_world",
        default_bindings_module: "::opzero_guest_sdk::__bindings",
        runtime_path: "::opzero_guest_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
        // It holds a resource, which has no equality.
        additional_derives_ignore: ["stream-error"],
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub mod http;

pub use __bindings::exports::opzero::filter::filter::{
    ClaudeState, Delivery, Event, FileInfo, InjectVerdict, Message, PermissionOutcome,
    PermissionRequest, PermissionResolved, PermissionVerdict, Receipt, Reply, ReplySent,
    ReplyVerdict,
};
pub use __bindings::opzero::filter::host::{Level, SessionInfo};
pub use opzero_guest_sdk_macros::config;
/// The serde this crate uses; `#[config]` derives through it.
pub use serde;

/// Everything a filter usually needs: `use opzero_guest_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ClaudeState, Delivery, Event, FileInfo, Filter, InjectVerdict, Message, NoConfig,
        PermissionOutcome, PermissionRequest, PermissionResolved, PermissionVerdict, Receipt,
        Reply, ReplySent, ReplyVerdict, SessionInfo, config, debug, error, export_filter, info, session,
        trace, warn,
    };
}

/// The Claude Code session the filter runs in: its id, its name (when
/// Claude Code's session file gives one; it may change) and its working
/// directory. Under `opzero-host filter test` the id is empty; in a native
/// build (`cargo test`) it is empty too, with the current directory.
pub fn session() -> SessionInfo {
    __rt::session()
}

/// A filter. Implement [`Filter::new`] and the hooks you care about, then
/// name the type in [`export_filter!`].
///
/// The host calls `new` once per instance with the deserialized config, then
/// the hooks listed under `hooks` in `opzero.toml`. Every hook defaults to
/// passing its input through unchanged.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a filter: it does not implement `opzero_guest_sdk::Filter`",
    label = "export_filter! needs a type that implements `Filter`",
    note = "add `impl opzero_guest_sdk::Filter for {Self} {{ type Config = ...; fn new(config: Self::Config) -> Result<Self, String> {{ ... }} }}`"
)]
pub trait Filter: Sized + 'static {
    /// What `[filter.config]` deserializes into; [`NoConfig`] if nothing.
    type Config: serde::de::DeserializeOwned;

    /// Builds the filter from its config. An `Err` refuses the config: the
    /// host reports it (with the config's position in `opzero.toml`) and
    /// does not start. Name the key the message is about.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// A message from the phone, before it reaches Claude. `message.files`
    /// describes its files; changing that list changes nothing.
    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        InjectVerdict::Pass(message)
    }

    /// Claude's reply, before it reaches the phone.
    fn on_reply(&mut self, reply: Reply) -> ReplyVerdict {
        ReplyVerdict::Pass(reply)
    }

    /// A tool permission prompt, before it is relayed to the phone.
    fn on_permission_request(&mut self, request: PermissionRequest) -> PermissionVerdict {
        let _ = request;
        PermissionVerdict::Relay
    }

    /// Something that happened in the session (see [Events](crate#events)).
    fn on_event(&mut self, event: Event) {
        let _ = event;
    }
}

/// The config of a filter that takes none: any key is an error.
#[config]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NoConfig {}

/// Deserializes a filter's config the way the host's `configure` call does;
/// errors name the key (`limits.max: invalid type: ...`).
///
/// Useful in a filter's unit tests: `parse_config::<Settings>(r#"{"max": 3}"#)`.
pub fn parse_config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = without_json_position(e.inner().to_string());
        if path.is_empty() || path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// serde_json appends "at line 1 column 37" of the JSON the host generated;
/// the user never sees that JSON, so the position only misleads.
fn without_json_position(mut message: String) -> String {
    if let Some(at) = message.rfind(" at line ")
        && message[at..].contains(" column ")
    {
        message.truncate(at);
    }
    message
}

/// Exports `$filter` as this component's filter. Use it once per crate.
///
/// ```compile_fail
/// struct NotAFilter;
/// opzero_guest_sdk::export_filter!(NotAFilter); // NotAFilter does not implement Filter
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_filter {
    ($filter:ty $(,)?) => {
        /// Generated by `export_filter!`; a second `export_filter!` in the
        /// same module fails here.
        #[doc(hidden)]
        pub struct __OpzeroFilterExport;

        // Every export goes through one generic function, so a type that
        // does not implement Filter is reported once.
        impl $crate::__bindings::exports::opzero::filter::filter::Guest for __OpzeroFilterExport {
            fn configure(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__rt::dispatch::<$filter>($crate::__rt::Call::Configure(config)).configured()
            }
            fn on_inject(message: $crate::Message) -> $crate::InjectVerdict {
                $crate::__rt::dispatch::<$filter>($crate::__rt::Call::Inject(message)).inject()
            }
            fn on_reply(reply: $crate::Reply) -> $crate::ReplyVerdict {
                $crate::__rt::dispatch::<$filter>($crate::__rt::Call::Reply(reply)).reply()
            }
            fn on_permission_request(
                request: $crate::PermissionRequest,
            ) -> $crate::PermissionVerdict {
                $crate::__rt::dispatch::<$filter>($crate::__rt::Call::Permission(request))
                    .permission()
            }
            fn on_event(event: $crate::Event) {
                $crate::__rt::dispatch::<$filter>($crate::__rt::Call::Event(event)).event()
            }
        }

        $crate::__bindings::__export_opzero_filter_world!(
            __OpzeroFilterExport with_types_in $crate::__bindings
        );
    };
    () => {
        ::core::compile_error!(
            "export_filter! needs the type of your filter: export_filter!(MyFilter);"
        );
    };
    ($($other:tt)*) => {
        ::core::compile_error!(
            "export_filter! takes exactly one type, the one that implements Filter: export_filter!(MyFilter);"
        );
    };
}

/// Logs at [`Level::Trace`]; takes `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::__rt::log($crate::Level::Trace, ::std::format!($($arg)+)) };
}

/// Logs at [`Level::Debug`]; takes `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::__rt::log($crate::Level::Debug, ::std::format!($($arg)+)) };
}

/// Logs at [`Level::Info`]; takes `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::__rt::log($crate::Level::Info, ::std::format!($($arg)+)) };
}

/// Logs at [`Level::Warn`]; takes `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::__rt::log($crate::Level::Warn, ::std::format!($($arg)+)) };
}

/// Logs at [`Level::Error`]; takes `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::__rt::log($crate::Level::Error, ::std::format!($($arg)+)) };
}

/// What the macros expand to. Not API.
#[doc(hidden)]
pub mod __rt {
    use std::any::Any;
    use std::cell::RefCell;

    use crate::{
        Event, Filter, InjectVerdict, Level, Message, PermissionRequest, PermissionVerdict, Reply,
        ReplyVerdict,
    };

    // A component runs one filter on one thread; the host calls `configure`
    // before any hook.
    thread_local! {
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub enum Call {
        Configure(String),
        Inject(Message),
        Reply(Reply),
        Permission(PermissionRequest),
        Event(Event),
    }

    pub enum Answer {
        Configured(Result<(), String>),
        Inject(InjectVerdict),
        Reply(ReplyVerdict),
        Permission(PermissionVerdict),
        Event,
    }

    impl Answer {
        pub fn configured(self) -> Result<(), String> {
            match self {
                Answer::Configured(r) => r,
                _ => unreachable!("dispatch answers in kind"),
            }
        }
        pub fn inject(self) -> InjectVerdict {
            match self {
                Answer::Inject(v) => v,
                _ => unreachable!("dispatch answers in kind"),
            }
        }
        pub fn reply(self) -> ReplyVerdict {
            match self {
                Answer::Reply(v) => v,
                _ => unreachable!("dispatch answers in kind"),
            }
        }
        pub fn permission(self) -> PermissionVerdict {
            match self {
                Answer::Permission(v) => v,
                _ => unreachable!("dispatch answers in kind"),
            }
        }
        pub fn event(self) {
            match self {
                Answer::Event => {}
                _ => unreachable!("dispatch answers in kind"),
            }
        }
    }

    /// Runs one export for the filter `F`.
    pub fn dispatch<F: Filter>(call: Call) -> Answer {
        match call {
            Call::Configure(json) => Answer::Configured(configure::<F>(&json)),
            Call::Inject(m) => Answer::Inject(with::<F, _>(|f| f.on_inject(m))),
            Call::Reply(r) => Answer::Reply(with::<F, _>(|f| f.on_reply(r))),
            Call::Permission(p) => Answer::Permission(with::<F, _>(|f| f.on_permission_request(p))),
            Call::Event(e) => {
                with::<F, _>(|f| f.on_event(e));
                Answer::Event
            }
        }
    }

    fn configure<F: Filter>(json: &str) -> Result<(), String> {
        let config: F::Config = crate::parse_config(json)?;
        let filter = F::new(config)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(filter)));
        Ok(())
    }

    fn with<F: Filter, R>(hook: impl FnOnce(&mut F) -> R) -> R {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            let filter = slot
                .as_mut()
                .and_then(|f| f.downcast_mut::<F>())
                .expect("opzero-host called a hook before configure");
            hook(filter)
        })
    }

    #[cfg(target_arch = "wasm32")]
    pub fn session() -> crate::SessionInfo {
        crate::__bindings::opzero::filter::host::session()
    }

    /// Native builds (a filter's unit tests): no session, this directory.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn session() -> crate::SessionInfo {
        let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
        crate::SessionInfo { id: String::new(), name: None, cwd }
    }

    #[cfg(target_arch = "wasm32")]
    pub fn log(level: Level, message: String) {
        crate::__bindings::opzero::filter::host::log(level, &message);
    }

    /// Native builds (a filter's unit tests) have no host to log to.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn log(level: Level, message: String) {
        eprintln!("{level:?}: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[config]
    #[derive(Debug)]
    struct Settings {
        limit: u32,
        #[serde(default)]
        inner: Inner,
    }

    #[config]
    #[derive(Debug, Default)]
    struct Inner {
        #[serde(default)]
        mode: Mode,
    }

    #[config]
    #[derive(Debug, Default, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        #[default]
        Truncate,
        Reject,
    }

    #[test]
    fn config_parses() {
        let s: Settings = parse_config(r#"{"limit": 3, "inner": {"mode": "reject"}}"#).unwrap();
        assert_eq!(s.limit, 3);
        assert_eq!(s.inner.mode, Mode::Reject);
    }

    #[test]
    fn config_errors_name_the_key_without_json_positions() {
        let e = parse_config::<Settings>(r#"{"limit": "x"}"#).unwrap_err();
        assert_eq!(e, r#"limit: invalid type: string "x", expected u32"#);
        let e =
            parse_config::<Settings>(r#"{"limit": 1, "inner": {"mode": "sideways"}}"#).unwrap_err();
        assert_eq!(
            e,
            "inner.mode: unknown variant `sideways`, expected `truncate` or `reject`"
        );
        let e = parse_config::<Settings>(r#"{}"#).unwrap_err();
        assert_eq!(e, "missing field `limit`");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse_config::<Settings>(r#"{"limit": 1, "limt": 2}"#).unwrap_err();
        assert!(e.contains("unknown field `limt`"), "{e}");
        let e = parse_config::<NoConfig>(r#"{"anything": 1}"#).unwrap_err();
        assert!(e.contains("unknown field `anything`"), "{e}");
        parse_config::<NoConfig>("{}").unwrap();
    }

    struct Counter {
        seen: u32,
    }

    impl Filter for Counter {
        type Config = NoConfig;
        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(Counter { seen: 0 })
        }
        fn on_reply(&mut self, mut reply: Reply) -> ReplyVerdict {
            self.seen += 1;
            reply.text = format!("{} #{}", reply.text, self.seen);
            ReplyVerdict::Pass(reply)
        }
    }

    #[test]
    fn hooks_default_to_pass_through_and_state_persists() {
        use __rt::{Call, dispatch};
        dispatch::<Counter>(Call::Configure("{}".into()))
            .configured()
            .unwrap();
        let m = Message {
            content: "hi".into(),
            meta: vec![("user".into(), "ana".into())],
            files: vec![FileInfo {
                name: "a.png".into(),
                mime: "image/png".into(),
                size: 3,
            }],
        };
        assert_eq!(
            dispatch::<Counter>(Call::Inject(m.clone())).inject(),
            InjectVerdict::Pass(m)
        );
        let r = Reply {
            chat_id: "c".into(),
            text: "t".into(),
        };
        let first = dispatch::<Counter>(Call::Reply(r.clone())).reply();
        let second = dispatch::<Counter>(Call::Reply(r.clone())).reply();
        assert_eq!(
            (first, second),
            (
                ReplyVerdict::Pass(Reply {
                    text: "t #1".into(),
                    ..r.clone()
                }),
                ReplyVerdict::Pass(Reply {
                    text: "t #2".into(),
                    ..r
                })
            )
        );
        let p = PermissionRequest {
            request_id: "r".into(),
            tool_name: "Bash".into(),
            description: "d".into(),
            input_preview: "ls".into(),
        };
        assert_eq!(
            dispatch::<Counter>(Call::Permission(p)).permission(),
            PermissionVerdict::Relay
        );
        dispatch::<Counter>(Call::Event(Event::StatusChanged(ClaudeState::Idle))).event();
    }
}
