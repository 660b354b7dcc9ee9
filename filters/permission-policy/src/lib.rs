//! `permission-policy`: answers some permission prompts without bothering
//! the phone. Listed read-only tools are allowed; inputs matching a deny
//! rule are denied; everything else is relayed as usual. Deny rules win.
//!
//! ```toml
//! [[filter]]
//! name = "policy"
//! path = "filters/permission_policy.wasm"
//! hooks = ["permission"]
//! [filter.config]
//! allow_tools = ["Read", "Glob", "Grep", "mcp__docs__*"]   # a trailing * matches a prefix
//! [[filter.config.deny]]
//! tool = "Bash"                                  # optional; same matching as allow_tools
//! pattern = "\\brm\\s+-[a-zA-Z]*[rf]"            # a regex over the input preview
//! reason = "no recursive or forced rm from the phone"  # optional
//! ```

#![deny(unsafe_code)]

use opzero_guest_sdk::prelude::*;
use regex_lite::Regex;

#[config]
struct Settings {
    #[serde(default)]
    allow_tools: Vec<String>,
    #[serde(default)]
    deny: Vec<DenyRule>,
}

#[config]
struct DenyRule {
    #[serde(default)]
    tool: Option<String>,
    pattern: String,
    #[serde(default)]
    reason: Option<String>,
}

struct Deny {
    tool: Option<String>,
    pattern: Regex,
    reason: String,
}

struct Policy {
    allow_tools: Vec<String>,
    deny: Vec<Deny>,
}

/// `Read` matches only `Read`; `mcp__docs__*` matches any tool starting
/// with `mcp__docs__`; `*` matches every tool.
fn tool_matches(pattern: &str, tool: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => tool.starts_with(prefix),
        None => pattern == tool,
    }
}

impl Filter for Policy {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        if config.allow_tools.is_empty() && config.deny.is_empty() {
            return Err(
                "set allow_tools or [[filter.config.deny]]: with neither every prompt is relayed"
                    .into(),
            );
        }
        if let Some(i) = config.allow_tools.iter().position(|t| t.is_empty()) {
            return Err(format!("allow_tools[{i}]: must not be empty"));
        }
        let mut deny = Vec::with_capacity(config.deny.len());
        for (i, rule) in config.deny.into_iter().enumerate() {
            let pattern = Regex::new(&rule.pattern)
                .map_err(|e| format!("deny[{i}].pattern: invalid regex: {e}"))?;
            let reason = rule.reason.unwrap_or_else(|| match &rule.tool {
                Some(tool) => format!("{tool} input matches the deny pattern {:?}", rule.pattern),
                None => format!("input matches the deny pattern {:?}", rule.pattern),
            });
            deny.push(Deny {
                tool: rule.tool,
                pattern,
                reason,
            });
        }
        Ok(Policy {
            allow_tools: config.allow_tools,
            deny,
        })
    }

    fn on_permission_request(&mut self, request: PermissionRequest) -> PermissionVerdict {
        let tool = request.tool_name.as_str();
        for rule in &self.deny {
            let tool_ok = rule.tool.as_deref().is_none_or(|t| tool_matches(t, tool));
            if tool_ok && rule.pattern.is_match(&request.input_preview) {
                info!("denied {tool}: {}", rule.reason);
                return PermissionVerdict::Deny(rule.reason.clone());
            }
        }
        if let Some(pattern) = self.allow_tools.iter().find(|p| tool_matches(p, tool)) {
            let reason = if pattern == tool {
                format!("{tool} is on the allow list")
            } else {
                format!("{tool} matches {pattern:?} on the allow list")
            };
            info!("allowed {tool}");
            return PermissionVerdict::Allow(reason);
        }
        PermissionVerdict::Relay
    }
}

export_filter!(Policy);

#[cfg(test)]
mod tests {
    use super::*;
    use opzero_guest_sdk::parse_config;

    fn policy(json: &str) -> Result<Policy, String> {
        Policy::new(parse_config(json)?)
    }

    fn request(tool: &str, input: &str) -> PermissionRequest {
        PermissionRequest {
            request_id: "r1".into(),
            tool_name: tool.into(),
            description: format!("run {tool}"),
            input_preview: input.into(),
        }
    }

    const CONFIG: &str = r#"{
        "allow_tools": ["Read", "Grep", "mcp__docs__*"],
        "deny": [
            {"tool": "Bash", "pattern": "\\brm\\s+-[a-zA-Z]*[rf]"},
            {"pattern": "/etc/shadow", "reason": "never"}
        ]
    }"#;

    #[test]
    fn read_only_tools_are_allowed() {
        let mut p = policy(CONFIG).unwrap();
        assert_eq!(
            p.on_permission_request(request("Read", "src/main.rs")),
            PermissionVerdict::Allow("Read is on the allow list".into())
        );
        assert_eq!(
            p.on_permission_request(request("mcp__docs__search", "q")),
            PermissionVerdict::Allow(
                r#"mcp__docs__search matches "mcp__docs__*" on the allow list"#.into()
            )
        );
    }

    #[test]
    fn dangerous_inputs_are_denied_even_for_allowed_tools() {
        let mut p = policy(CONFIG).unwrap();
        assert_eq!(
            p.on_permission_request(request("Bash", "cd /tmp && rm -rf build")),
            PermissionVerdict::Deny(
                r#"Bash input matches the deny pattern "\\brm\\s+-[a-zA-Z]*[rf]""#.into()
            )
        );
        assert_eq!(
            p.on_permission_request(request("Read", "/etc/shadow")),
            PermissionVerdict::Deny("never".into())
        );
    }

    #[test]
    fn everything_else_is_relayed() {
        let mut p = policy(CONFIG).unwrap();
        assert_eq!(
            p.on_permission_request(request("Bash", "ls -la")),
            PermissionVerdict::Relay
        );
        // The Bash rule is for Bash only.
        assert_eq!(
            p.on_permission_request(request("Write", "rm -rf notes")),
            PermissionVerdict::Relay
        );
        assert_eq!(
            p.on_permission_request(request("ReadAll", "x")),
            PermissionVerdict::Relay
        );
    }

    #[test]
    fn config_mistakes_name_the_key() {
        assert!(
            policy(r#"{"deny": [{"pattern": "ok"}, {"pattern": "(oops"}]}"#)
                .err()
                .unwrap()
                .starts_with("deny[1].pattern: invalid regex:")
        );
        assert_eq!(
            policy(r#"{"deny": [{"tool": "Bash"}]}"#).err().unwrap(),
            "deny[0]: missing field `pattern`"
        );
        assert!(policy("{}").err().unwrap().starts_with("set allow_tools"));
    }
}
