//! `opzero-host new-filter NAME`: a filter crate that builds at once, from
//! the templates in `host/templates/new-filter/` (compiled into the binary).
//!
//! The crate depends on the guest SDK by path: this binary's own checkout
//! of `guest-sdk/` (or `--sdk`), relative when the crate sits inside that
//! checkout, absolute otherwise. It is a workspace of its own (so it builds
//! wherever it sits), unless an enclosing workspace's `members` already
//! take it in: then it builds as that workspace's member.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::hook::HookName;
use crate::UserError;

/// Where this binary was built from: its guest SDK is the default.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");
const SDK_PACKAGE: &str = "opzero-guest-sdk";

/// The target directory's profile a standalone crate builds with; also the
/// workspace's (see `tests::the_templates_profile_is_the_workspaces`).
const PROFILE: &str = "wasm";

mod template {
    macro_rules! template {
        ($($name:ident = $path:literal;)*) => {
            $(pub const $name: &str = include_str!(concat!("../../templates/new-filter/", $path));)*
            #[cfg(test)]
            pub const ALL: &[(&str, &str)] = &[$(($path, $name)),*];
        };
    }
    template! {
        CARGO_TOML = "Cargo.toml.tmpl";
        WORKSPACE_TOML = "workspace.toml.tmpl";
        GITIGNORE = "gitignore.tmpl";
        LIB_RS = "lib.rs.tmpl";
        README = "README.md.tmpl";
        README_STANDALONE = "README-standalone.md.tmpl";
        README_MEMBER = "README-member.md.tmpl";
        INJECT = "hooks/inject.rs.tmpl";
        INJECT_TEST = "hooks/inject-test.rs.tmpl";
        INJECT_TRY = "hooks/inject-try.sh.tmpl";
        REPLY = "hooks/reply.rs.tmpl";
        REPLY_TEST = "hooks/reply-test.rs.tmpl";
        REPLY_TRY = "hooks/reply-try.sh.tmpl";
        PERMISSION = "hooks/permission.rs.tmpl";
        PERMISSION_TEST = "hooks/permission-test.rs.tmpl";
        PERMISSION_TRY = "hooks/permission-try.sh.tmpl";
        EVENT = "hooks/event.rs.tmpl";
        EVENT_TEST = "hooks/event-test.rs.tmpl";
        EVENT_TRY = "hooks/event-try.sh.tmpl";
    }
}

/// A hook's parts of the crate: its method in `impl Filter`, its unit
/// test, and the README's `filter test` line; and how the README names it.
struct HookTemplates {
    method: &'static str,
    test: &'static str,
    try_it: &'static str,
    prose: &'static str,
}

fn hook_templates(hook: HookName) -> HookTemplates {
    use template::*;
    match hook {
        HookName::Inject => HookTemplates {
            method: INJECT,
            test: INJECT_TEST,
            try_it: INJECT_TRY,
            prose: "every message from the phone (`inject`)",
        },
        HookName::Reply => HookTemplates {
            method: REPLY,
            test: REPLY_TEST,
            try_it: REPLY_TRY,
            prose: "every reply from Claude (`reply`)",
        },
        HookName::Permission => HookTemplates {
            method: PERMISSION,
            test: PERMISSION_TEST,
            try_it: PERMISSION_TRY,
            prose: "every tool permission prompt (`permission`)",
        },
        HookName::Event => HookTemplates {
            method: EVENT,
            test: EVENT_TEST,
            try_it: EVENT_TRY,
            prose: "what happens in the session (`event`: replies sent, permission prompts and their answers, Claude going busy or idle, receipts)",
        },
    }
}

/// `opzero-host new-filter`.
#[derive(clap::Args, Debug)]
#[command(after_help = "The crate builds with the one command its README.md gives \
    (`cargo build --profile wasm --target wasm32-wasip2` for a crate that is a workspace of its \
    own), and the [[filter]] block there passes `opzero-host validate` as is.")]
pub struct NewFilter {
    /// The crate's name, and the filter's in opzero.toml: lowercase
    /// letters, digits, '-' and '_', starting with a letter.
    pub name: String,
    /// The hooks to write, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "inject")]
    pub hooks: Vec<HookName>,
    /// Make the crate in DIR/NAME (DIR is made if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// The guest SDK to depend on: a checkout's `guest-sdk/` directory
    /// [default: the one this opzero-host was built from].
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
}

/// Makes the crate, after checking everything that can be checked first;
/// returns what was made, as its summary for stdout.
pub fn run(args: &NewFilter) -> Result<String, UserError> {
    check_name(&args.name)?;
    let hooks = hooks(&args.hooks)?;
    let sdk = sdk_dir(args.sdk.as_deref())?;
    let cwd = std::env::current_dir().map_err(|e| UserError(format!("cannot read the current directory: {e}")))?;
    // Without the `.` of `--dir .`, for messages.
    let parent: PathBuf = cwd.join(&args.dir).components().collect();
    let wanted = parent.join(&args.name);
    match std::fs::read_dir(&wanted) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(UserError(format!(
                    "{} already exists and is not empty: pick another name, or another --dir",
                    wanted.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(UserError(format!(
                "{} already exists and is not a directory",
                wanted.display()
            )));
        }
        Err(e) => return Err(UserError(format!("cannot read {}: {e}", wanted.display()))),
    }
    std::fs::create_dir_all(wanted.join("src"))
        .map_err(|e| UserError(format!("cannot make {}: {e}", wanted.display())))?;
    let dir = wanted
        .canonicalize()
        .map_err(|e| UserError(format!("cannot resolve {}: {e}", wanted.display())))?;

    let layout = Layout::of(&dir);
    let plan = Plan::new(&args.name, &hooks, &dir, &sdk, &layout);
    for (path, text) in plan.files() {
        let path = dir.join(path);
        std::fs::write(&path, text).map_err(|e| UserError(format!("cannot write {}: {e}", path.display())))?;
    }
    let hooks: Vec<&str> = hooks.iter().map(|h| h.as_str()).collect();
    let summary = [
        format!("made {} (hooks: {})", dir.display(), hooks.join(", ")),
        format!("build it:  cd {} && {}", sh_word(&dir.to_string_lossy()), plan.build),
        format!("it builds {}; README.md has the [[filter]] block for opzero.toml", plan.wasm.display()),
    ];
    Ok(summary.join("\n"))
}

/// A crate name cargo takes without a warning, which is also a filter
/// name opzero.toml takes.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let refuse = |why: &str| Err(UserError(format!("{name:?} is not a valid filter name: {why}")));
    let Some(first) = name.chars().next() else {
        return refuse("it is empty");
    };
    if !first.is_ascii_lowercase() {
        return refuse("start it with a lowercase letter (a-z)");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return refuse(&format!(
            "{c:?} is not allowed (use lowercase letters, digits, '-' and '_')"
        ));
    }
    if name.len() > 64 {
        return refuse("keep it to 64 characters");
    }
    let ident = name.replace('-', "_");
    if RESERVED.split_whitespace().any(|w| w == ident) {
        return refuse("it is a Rust keyword or the name of a crate every Rust program sees");
    }
    if ident == SDK_PACKAGE.replace('-', "_") {
        return refuse("that is the SDK's own name");
    }
    Ok(())
}

/// Rust's keywords (the crate's library would be named so), and the names
/// of the crates of the standard distribution.
const RESERVED: &str = "abstract as async await become box break const continue crate do dyn else enum extern \
    false final fn for gen if impl in let loop macro match mod move mut override priv pub \
    ref return self static struct super trait true try type typeof unsafe unsized use \
    virtual where while yield alloc core proc_macro std test";

/// The hooks, in their usual order, once each.
fn hooks(given: &[HookName]) -> Result<Vec<HookName>, UserError> {
    let hooks: BTreeSet<HookName> = given.iter().copied().collect();
    if hooks.is_empty() {
        return Err(UserError(
            "--hooks: name at least one of inject, reply, permission, event".into(),
        ));
    }
    Ok(hooks.into_iter().collect())
}

/// The SDK's directory, canonical, checked to be the SDK.
fn sdk_dir(flag: Option<&Path>) -> Result<PathBuf, UserError> {
    let given = flag.unwrap_or(Path::new(BUILT_SDK));
    let manifest = given.join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| Some(t.get("package")?.get("name")?.as_str()? == SDK_PACKAGE))
        .unwrap_or(false);
    if !is_sdk {
        let hint = match flag {
            Some(_) => "give --sdk the guest-sdk/ directory of an opzero-host checkout".to_string(),
            None => format!(
                "this opzero-host was built from {}, which is gone or moved: give --sdk the guest-sdk/ directory of an opzero-host checkout",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .display()
            ),
        };
        return Err(UserError(format!(
            "no opzero guest SDK ({SDK_PACKAGE}) at {}: {hint}",
            given.display()
        )));
    }
    given
        .canonicalize()
        .map_err(|e| UserError(format!("cannot resolve {}: {e}", given.display())))
}

/// How the new crate builds: alone, or as a member of a workspace that
/// already takes it in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    Standalone,
    Member { root: PathBuf, profile: &'static str },
}

impl Layout {
    /// Like cargo: the first manifest with `[workspace]` above `dir`
    /// decides; its `members` (globs) and `exclude` (paths) say whether
    /// `dir` is in.
    fn of(dir: &Path) -> Layout {
        for root in dir.ancestors().skip(1) {
            let Some(manifest) = std::fs::read_to_string(root.join("Cargo.toml"))
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
            else {
                continue;
            };
            let Some(workspace) = manifest.get("workspace").and_then(|w| w.as_table()) else {
                continue;
            };
            let rel = dir.strip_prefix(root).expect("an ancestor");
            let strings = |key| {
                workspace
                    .get(key)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
            };
            let excluded = strings("exclude").any(|e| rel.starts_with(normalize(Path::new(e))));
            if excluded || !strings("members").any(|m| glob_match(m, rel)) {
                return Layout::Standalone;
            }
            let has_wasm_profile = manifest.get("profile").and_then(|p| p.get(PROFILE)).is_some();
            let profile = if has_wasm_profile { PROFILE } else { "release" };
            return Layout::Member {
                root: root.to_path_buf(),
                profile,
            };
        }
        Layout::Standalone
    }
}

/// `./a/b` as `a/b`.
fn normalize(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// A workspace `members` entry (a glob: `*`, `?`, and `**` for any number
/// of directories) against a path relative to the workspace root.
fn glob_match(pattern: &str, path: &Path) -> bool {
    fn parts(p: &Path) -> Vec<String> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    }
    /// `p` against `s`, where a `star` matches any run of `s` and `one`
    /// matches one item: a name's characters, or a path's names.
    fn wild<T>(p: &[T], s: &[T], star: &impl Fn(&T) -> bool, one: &impl Fn(&T, &T) -> bool) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(a), _) if star(a) => {
                wild(&p[1..], s, star, one) || (!s.is_empty() && wild(p, &s[1..], star, one))
            }
            (Some(a), Some(b)) => one(a, b) && wild(&p[1..], &s[1..], star, one),
            _ => false,
        }
    }
    let name = |a: &String, b: &String| {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        wild(&a, &b, &|c| *c == '*', &|a, b| *a == '?' || a == b)
    };
    wild(&parts(Path::new(pattern)), &parts(path), &|d| d == "**", &name)
}

/// `to` relative to `from` (both absolute and canonical).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel: PathBuf = std::iter::repeat_n(Component::ParentDir, from.len() - common).collect();
    rel.extend(&to[common..]);
    rel
}

/// `MyFilter` for `my-filter` (a checked name, so ASCII); a name the
/// prelude or the template already uses gets a `My` in front.
fn type_name(name: &str) -> String {
    let camel: String = name
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
        .collect();
    const TAKEN: &str = "Filter InjectVerdict Message NoConfig PermissionRequest PermissionVerdict Reply ReplyVerdict Settings Self \
        Result String Ok Err Option Some None Vec Box";
    if TAKEN.split_whitespace().any(|w| w == camel) {
        format!("My{camel}")
    } else {
        camel
    }
}

/// A TOML string literal.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A word for sh: as is when it is plain, else in single quotes.
fn sh_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Fills `{{key}}` in one pass (a value is never read as a template).
/// Every key must be given: the templates are ours.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some((before, after)) = rest.split_once("{{") {
        out.push_str(before);
        let (key, after) = after.split_once("}}").expect("unclosed {{ in a template");
        let value = vars
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no value for {{{{{key}}}}}"))
            .1;
        out.push_str(value);
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Everything the templates are filled with, and the files they make.
struct Plan {
    vars: Vec<(&'static str, String)>,
    hooks: Vec<HookName>,
    layout: Layout,
    build: String,
    wasm: PathBuf,
}

impl Plan {
    fn new(name: &str, hooks: &[HookName], dir: &Path, sdk: &Path, layout: &Layout) -> Plan {
        // Inside the SDK's checkout a relative path moves with it.
        let checkout = sdk.parent().unwrap_or(sdk);
        let sdk_path = if dir.starts_with(checkout) {
            relative(dir, sdk)
        } else {
            sdk.to_path_buf()
        };
        let sdk_path = sdk_path.to_string_lossy().into_owned();
        let (target, profile) = match layout {
            Layout::Standalone => (dir.join("target"), PROFILE),
            Layout::Member { root, profile } => (root.join("target"), *profile),
        };
        let build = match profile {
            "release" => "cargo build --release --target wasm32-wasip2".to_string(),
            profile => format!("cargo build --profile {profile} --target wasm32-wasip2"),
        };
        let wasm = target
            .join("wasm32-wasip2")
            .join(profile)
            .join(format!("{}.wasm", name.replace('-', "_")));
        let wasm_text = wasm.to_string_lossy().into_owned();
        let names: Vec<&str> = hooks.iter().map(|h| h.as_str()).collect();
        let hooks_toml = toml::Value::from(names).to_string();
        let prose: Vec<&str> = hooks.iter().map(|h| hook_templates(*h).prose).collect();
        let hooks_prose = match prose.as_slice() {
            [one] => one.to_string(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
            [] => unreachable!("at least one hook"),
        };
        let workspace_root = match layout {
            Layout::Member { root, .. } => root.to_string_lossy().into_owned(),
            Layout::Standalone => String::new(),
        };
        let vars = vec![
            ("name", name.to_string()),
            ("type", type_name(name)),
            ("sdk_path", sdk_path.clone()),
            ("sdk_path_toml", toml_string(&sdk_path)),
            ("hooks_toml", hooks_toml),
            ("hooks_prose", hooks_prose),
            ("build", build.clone()),
            ("wasm", wasm_text.clone()),
            ("wasm_toml", toml_string(&wasm_text)),
            ("wasm_sh", sh_word(&wasm_text)),
            ("workspace_root", workspace_root),
        ];
        Plan {
            vars,
            hooks: hooks.to_vec(),
            layout: layout.clone(),
            build,
            wasm,
        }
    }

    fn fill(&self, template: &str) -> String {
        self.fill_with(template, &[])
    }

    /// Fills `template` with the plan's values and `extra`.
    fn fill_with(&self, template: &str, extra: &[(&str, String)]) -> String {
        let mut vars: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        render(template, &vars)
    }

    /// The hooks' fragments of one kind, filled and joined.
    fn each_hook(&self, part: impl Fn(&HookTemplates) -> &'static str) -> String {
        self.hooks
            .iter()
            .map(|h| self.fill(part(&hook_templates(*h))))
            .collect()
    }

    /// The crate's files, relative to its directory.
    fn files(&self) -> Vec<(&'static str, String)> {
        let (workspace, layout) = match self.layout {
            Layout::Standalone => (
                self.fill(template::WORKSPACE_TOML),
                self.fill(template::README_STANDALONE),
            ),
            Layout::Member { .. } => (String::new(), self.fill(template::README_MEMBER)),
        };
        let cargo = self.fill_with(template::CARGO_TOML, &[("workspace", workspace)]);
        let lib = self.fill_with(
            template::LIB_RS,
            &[
                ("hooks", self.each_hook(|t| t.method)),
                ("tests", self.each_hook(|t| t.test)),
            ],
        );
        let readme = self.fill_with(
            template::README,
            &[
                ("layout", layout.trim_end().to_string()),
                ("try", self.each_hook(|t| t.try_it)),
            ],
        );
        vec![
            ("Cargo.toml", cargo),
            (".gitignore", self.fill(template::GITIGNORE)),
            ("README.md", readme),
            ("src/lib.rs", lib),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "my-filter", "redact_2", "x-y_z9"] {
            check_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("My", "lowercase letter"),
            ("1st", "lowercase letter"),
            ("-a", "lowercase letter"),
            ("a b", "' ' is not allowed"),
            ("a/b", "'/' is not allowed"),
            ("a.b", "'.' is not allowed"),
            ("café", "'é' is not allowed"),
            ("fn", "keyword"),
            ("self", "keyword"),
            ("std", "keyword"),
            ("proc-macro", "keyword"),
            ("opzero-guest-sdk", "the SDK's own name"),
        ] {
            let e = check_name(bad).unwrap_err().0;
            assert!(
                e.contains("is not a valid filter name") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name("my-filter"), "MyFilter");
        assert_eq!(type_name("redact_2x"), "Redact2x");
        assert_eq!(type_name("a--b"), "AB");
        assert_eq!(type_name("filter"), "MyFilter");
        assert_eq!(type_name("message"), "MyMessage");
        assert_eq!(type_name("settings"), "MySettings");
    }

    #[test]
    fn hooks_are_ordered_once_each() {
        use HookName::*;
        assert_eq!(hooks(&[Permission, Inject, Permission]).unwrap(), [Inject, Permission]);
        assert_eq!(hooks(&[Event, Inject]).unwrap(), [Inject, Event]);
        assert!(hooks(&[]).is_err());
    }

    #[test]
    fn relative_paths() {
        let rel = |a: &str, b: &str| relative(Path::new(a), Path::new(b));
        assert_eq!(rel("/r/filters/x", "/r/guest-sdk"), Path::new("../../guest-sdk"));
        assert_eq!(rel("/r/x", "/r/x/y"), Path::new("y"));
        assert_eq!(rel("/r", "/r"), Path::new(""));
    }

    #[test]
    fn member_globs() {
        let m = |p: &str, s: &str| glob_match(p, Path::new(s));
        assert!(m("filters/*", "filters/mine"));
        assert!(m("./filters/*", "filters/mine"));
        assert!(!m("filters/*", "filters/mine/deeper"));
        assert!(!m("filters/*", "examples/mine"));
        assert!(m("examples/hello-filter", "examples/hello-filter"));
        assert!(m("host/tests/guests/*", "host/tests/guests/sleepy"));
        assert!(m("plugins/**", "plugins/a/b"));
        assert!(m("f?lters/m*e", "filters/mine"));
        assert!(!m("f?lters/m*e", "filters/mind"));
    }

    #[test]
    fn layout_follows_the_enclosing_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let write = |p: &str, text: &str| {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            std::fs::write(root.join(p), text).unwrap();
        };
        // Not in any workspace.
        assert_eq!(Layout::of(&root.join("x/new")), Layout::Standalone);
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"plugins/*\", \"one\"]\nexclude = [\"plugins/old\"]\n",
        );
        let member = |profile| Layout::Member {
            root: root.clone(),
            profile,
        };
        assert_eq!(Layout::of(&root.join("plugins/new")), member("release"));
        assert_eq!(Layout::of(&root.join("one")), member("release"));
        assert_eq!(Layout::of(&root.join("plugins/old")), Layout::Standalone);
        assert_eq!(Layout::of(&root.join("elsewhere/new")), Layout::Standalone);
        // A package manifest in between (no [workspace]) does not stop the search.
        write("plugins/Cargo.toml", "[package]\nname = \"p\"\n");
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"plugins/*\"]\n[profile.wasm]\ninherits = \"release\"\n",
        );
        assert_eq!(Layout::of(&root.join("plugins/new")), member("wasm"));
        // This repository's filters/ is a member glob.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap();
        assert_eq!(
            Layout::of(&repo.join("filters/new-one")),
            Layout::Member {
                root: repo.clone(),
                profile: "wasm"
            }
        );
        assert_eq!(Layout::of(&repo.join("target/tmp/new-one")), Layout::Standalone);
    }

    #[test]
    fn rendering_fills_every_placeholder() {
        assert_eq!(render("a {{x}} b {{y}}", &[("x", "{{y}}"), ("y", "2")]), "a {{y}} b 2");
        let sdk = Path::new(BUILT_SDK).canonicalize().unwrap();
        for layout in [
            Layout::Standalone,
            Layout::Member {
                root: "/w".into(),
                profile: "wasm",
            },
        ] {
            for hooks in [
                vec![HookName::Inject],
                vec![HookName::Inject, HookName::Reply, HookName::Permission, HookName::Event],
            ] {
                let plan = Plan::new("my-filter", &hooks, Path::new("/tmp/x/my-filter"), &sdk, &layout);
                for (file, text) in plan.files() {
                    assert!(!text.contains("{{"), "{file}:\n{text}");
                }
            }
        }
        // Every template is used.
        let all: String = template::ALL.iter().map(|(_, t)| *t).collect();
        assert!(all.contains("{{"));
        assert_eq!(template::ALL.len(), 19);
    }

    #[test]
    fn the_crate_names_its_hooks_sdk_and_component() {
        let sdk = Path::new(BUILT_SDK).canonicalize().unwrap();
        let repo = sdk.parent().unwrap();
        let hooks = [HookName::Reply, HookName::Permission];
        let file = |plan: &Plan, name: &str| plan.files().into_iter().find(|(f, _)| *f == name).unwrap().1;

        let outside = Plan::new(
            "my-filter",
            &hooks,
            Path::new("/elsewhere/my-filter"),
            &sdk,
            &Layout::Standalone,
        );
        let cargo = file(&outside, "Cargo.toml");
        assert!(
            cargo.contains(&format!(
                "opzero-guest-sdk = {{ path = {} }}",
                toml_string(&sdk.to_string_lossy())
            )),
            "{cargo}"
        );
        assert!(
            cargo.contains("\n[workspace]\n") && cargo.contains("[profile.wasm]"),
            "{cargo}"
        );
        cargo.parse::<toml::Table>().unwrap();
        let lib = file(&outside, "src/lib.rs");
        assert!(
            lib.contains("fn on_reply(") && lib.contains("fn on_permission_request(") && !lib.contains("fn on_inject(")
        );
        assert!(lib.contains("struct MyFilter {}") && lib.contains("export_filter!(MyFilter);"));
        let readme = file(&outside, "README.md");
        assert!(readme.contains("hooks = [\"reply\", \"permission\"]"), "{readme}");
        assert!(
            readme.contains("path = \"/elsewhere/my-filter/target/wasm32-wasip2/wasm/my_filter.wasm\""),
            "{readme}"
        );
        assert!(
            readme.contains("\ncargo build --profile wasm --target wasm32-wasip2\n"),
            "{readme}"
        );
        assert!(
            readme.contains("--hook reply")
                && readme.contains("--hook permission")
                && !readme.contains("--hook inject")
        );
        assert!(readme.contains("every reply from Claude (`reply`) and every tool permission prompt (`permission`)"));
        assert_eq!(
            outside.wasm,
            Path::new("/elsewhere/my-filter/target/wasm32-wasip2/wasm/my_filter.wasm")
        );

        let inside = Plan::new(
            "mine",
            &hooks,
            &repo.join("filters/mine"),
            &sdk,
            &Layout::Member {
                root: repo.to_path_buf(),
                profile: "wasm",
            },
        );
        let cargo = file(&inside, "Cargo.toml");
        assert!(
            cargo.contains("opzero-guest-sdk = { path = \"../../guest-sdk\" }") && !cargo.contains("[workspace]"),
            "{cargo}"
        );
        assert_eq!(inside.wasm, repo.join("target/wasm32-wasip2/wasm/mine.wasm"));
        assert!(file(&inside, "README.md").contains("a member of the workspace at"));

        let release = Plan::new(
            "mine",
            &hooks,
            Path::new("/w/p/mine"),
            &sdk,
            &Layout::Member {
                root: "/w".into(),
                profile: "release",
            },
        );
        assert_eq!(release.build, "cargo build --release --target wasm32-wasip2");
        assert_eq!(release.wasm, Path::new("/w/target/wasm32-wasip2/release/mine.wasm"));
    }

    #[test]
    fn odd_paths_are_quoted() {
        assert_eq!(sh_word("/a/b_c-1.wasm"), "/a/b_c-1.wasm");
        assert_eq!(sh_word("/a b/it's.wasm"), r"'/a b/it'\''s.wasm'");
        for odd in [r#"C:\a "b""#, "it's", "a\nb"] {
            let table: toml::Table = format!("k = {}", toml_string(odd)).parse().unwrap();
            assert_eq!(table["k"].as_str(), Some(odd));
        }
    }

    /// A standalone crate builds with the workspace's `wasm` profile, so
    /// the scaffold test (which builds one into the workspace's target
    /// directory) reuses what is compiled there.
    #[test]
    fn the_templates_profile_is_the_workspaces() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let workspace: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let template: toml::Table = template::WORKSPACE_TOML.parse().unwrap();
        let profile = |t: &toml::Table, name: &str| {
            t.get("profile")
                .and_then(|p| p.get(name))
                .and_then(|p| p.as_table())
                .cloned()
                .unwrap_or_default()
        };
        // The workspace's: its release profile, overridden by its wasm profile.
        let mut effective = profile(&workspace, "release");
        effective.extend(profile(&workspace, PROFILE));
        let mut ours = profile(&template, "release");
        ours.extend(profile(&template, PROFILE));
        effective.remove("inherits");
        ours.remove("inherits");
        assert_eq!(ours, effective);
    }
}
