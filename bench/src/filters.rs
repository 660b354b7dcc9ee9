//! The four built-in filters as the benchmark configures them.

use std::fs;
use std::path::{Path, PathBuf};

/// A built-in filter: its crate name, the hooks it is given here, and a
/// `[filter.config]` like a user's (the default patterns for
/// redact-secrets) that lets every benchmark message through unchanged, so
/// the figures are the cost of looking, not of rejecting.
pub struct Builtin {
    pub name: &'static str,
    pub hooks: &'static [&'static str],
    pub config: &'static str,
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "redact-secrets",
        hooks: &["inject", "reply"],
        config: "",
    },
    Builtin {
        name: "sender-allowlist",
        hooks: &["inject"],
        config: "users = [\"ana\", \"bench\"]\nchat_ids = [\"family\", \"bench\"]\naction = \"reject\"",
    },
    Builtin {
        name: "max-length",
        hooks: &["inject", "reply"],
        config: "inject = { max_chars = 4000, action = \"reject\" }\nreply = { max_chars = 8000 }",
    },
    Builtin {
        name: "permission-policy",
        hooks: &["permission"],
        config: "allow_tools = [\"Read\", \"Glob\", \"Grep\"]\n\n[[filter.config.deny]]\ntool = \"Bash\"\npattern = '\\brm\\s+-[a-zA-Z]*[rf]'",
    },
];

/// Where the built filters are looked for, first match wins.
pub fn default_wasm_dirs(workspace: &Path) -> Vec<PathBuf> {
    let base = workspace.join("target/wasm/wasm32-wasip2");
    ["wasm", "release", "debug"]
        .iter()
        .map(|p| base.join(p))
        .chain(std::iter::once(
            workspace.join("target/wasm32-wasip2/release"),
        ))
        .collect()
}

/// The `.wasm` of each built-in that is built, and the names of the others.
pub fn locate(dirs: &[PathBuf]) -> (Vec<(&'static Builtin, PathBuf)>, Vec<&'static str>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for b in BUILTINS {
        let names = [
            format!("{}.wasm", b.name),
            format!("{}.wasm", b.name.replace('-', "_")),
        ];
        match dirs
            .iter()
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .find(|p| p.is_file())
        {
            Some(p) => found.push((b, p)),
            None => missing.push(b.name),
        }
    }
    (found, missing)
}

/// An `opzero.toml` with the given filters, in order.
pub fn toml(filters: &[(&Builtin, PathBuf)]) -> String {
    let mut s = String::from("# Written by opzero-bench.\n");
    for (b, path) in filters {
        let hooks: Vec<String> = b.hooks.iter().map(|h| format!("\"{h}\"")).collect();
        s.push_str(&format!(
            "\n[[filter]]\nname = \"{}\"\npath = {:?}\nhooks = [{}]\n",
            b.name,
            path.display().to_string(),
            hooks.join(", ")
        ));
        if !b.config.is_empty() {
            s.push_str(&format!("\n[filter.config]\n{}\n", b.config.trim()));
        }
    }
    s
}

pub fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let p = dir.join(name);
    fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_toml_lists_filters_in_order() {
        let f: Vec<_> = BUILTINS
            .iter()
            .map(|b| (b, PathBuf::from(format!("/w/{}.wasm", b.name))))
            .collect();
        let t = toml(&f);
        let names: Vec<usize> = BUILTINS
            .iter()
            .map(|b| t.find(&format!("name = \"{}\"", b.name)).unwrap())
            .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert!(t.contains("path = \"/w/redact-secrets.wasm\""));
        assert!(t.contains("hooks = [\"inject\", \"reply\"]"));
    }
}
