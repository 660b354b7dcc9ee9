//! The host's one `bindgen!`: it reads the same WIT files as the guest SDK,
//! so the two sides cannot drift apart.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "opzero-filter",
    // Calls into a filter are async so that a long one yields to the
    // runtime at every epoch tick instead of holding its thread.
    exports: { default: async },
});

/// The export a component must have to be loaded as a filter.
pub const FILTER_EXPORT: &str = "opzero:filter/filter@0.1.0";

pub use exports::opzero::filter::filter::{
    Guest, InjectVerdict, Message, PermissionRequest, PermissionVerdict, Reply, ReplyVerdict,
};
pub use opzero::filter::host::{Host, Level};
