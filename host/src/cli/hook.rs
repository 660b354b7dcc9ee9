//! The hooks as the filter commands name them (`new-filter --hooks`,
//! `filter test --hook`): the ones `hooks = [...]` takes in opzero.toml,
//! and `event`, which comes with WIT opzero:filter@0.2.0.

use crate::UserError;

/// A filter hook, by its name in opzero.toml.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum HookName {
    /// A message from the phone, on its way to Claude.
    Inject,
    /// Claude's reply (or edit), on its way to the phone.
    Reply,
    /// A tool permission prompt, before it is relayed to the phone.
    Permission,
    /// What happened in the session, for plugins that observe
    /// (opzero:filter@0.2.0; not yet supported). Hidden from the lists of
    /// possible values until it is; given, it is refused with the reason.
    #[value(hide = true)]
    Event,
}

impl HookName {
    /// The hooks in the order a filter's code and `hooks = [...]` list them.
    pub const ALL: [HookName; 4] = [HookName::Inject, HookName::Reply, HookName::Permission, HookName::Event];

    /// The name in `hooks = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookName::Inject => "inject",
            HookName::Reply => "reply",
            HookName::Permission => "permission",
            HookName::Event => "event",
        }
    }

    /// Refuses a hook this host cannot run yet, saying why.
    pub fn supported(self) -> Result<HookName, UserError> {
        match self {
            HookName::Event => Err(UserError(
                "the event hook needs an opzero:filter@0.2.0 component (not yet supported: this host runs opzero:filter@0.1.0, with the inject, reply and permission hooks)".into(),
            )),
            hook => Ok(hook),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_are_the_config_names() {
        for hook in HookName::ALL {
            let value = hook.to_possible_value().unwrap();
            assert_eq!(value.get_name(), hook.as_str());
        }
        assert!(
            HookName::Event
                .supported()
                .unwrap_err()
                .0
                .contains("opzero:filter@0.2.0")
        );
        assert_eq!(HookName::Reply.supported().unwrap(), HookName::Reply);
    }
}
