//! The hooks as the filter commands name them (`new-filter --hooks`,
//! `filter test --hook`): the ones `hooks = [...]` takes in opzero.toml.

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
    /// (opzero:filter@0.2.0).
    Event,
}

impl HookName {
    /// The name in `hooks = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookName::Inject => "inject",
            HookName::Reply => "reply",
            HookName::Permission => "permission",
            HookName::Event => "event",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_are_the_config_names() {
        for hook in HookName::value_variants() {
            let value = hook.to_possible_value().unwrap();
            assert_eq!(value.get_name(), hook.as_str());
        }
    }
}
