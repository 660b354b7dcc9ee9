//! `opzero.toml`: the schema, its defaults, and the one place that maps TOML
//! spans to error messages.
//!
//! The file is walked by hand over toml's spanned tree instead of going
//! through serde, so that `validate` can report *every* problem at once, each
//! with file:line:col and the key it is about.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Claude Code truncates longer server instructions silently.
pub const MAX_INSTRUCTIONS_CHARS: usize = 2048;

pub const DEFAULT_INSTRUCTIONS: &str = "Messages from the user's phone arrive as <channel> tags from this channel (its source attribute names it), each with a chat_id attribute: <channel source=\"...\" chat_id=\"...\" ...>text</channel>. They come from a remote web UI, not from this terminal. The remote user sees nothing you write in the terminal: the reply tool is the only way to answer them. Answer every channel message by calling reply with the chat_id of the message you are answering, every time, even for a short acknowledgement. Keep replies readable on a phone. For longer work, reply with a short \"working on it\" first, then update that message with edit_message (reply answers with its id) as you go. The user may attach files: they are saved on this machine, and a tag's image_path, file_path, or file_path_1, file_path_2, ... (with file_count) attribute is the path of one you may Read. To send files back, give reply their absolute paths in files.";

/// `name` or `name:port`, as a Host header carries it (no user, no
/// scheme, no path).
fn host_name(s: &str) -> Option<Authority> {
    let authority = s.parse::<Authority>().ok()?;
    // A port that is not one (`name:`, `name:99999`) is dropped by the parser.
    let port_ok = authority.port().is_some() || s == authority.host();
    (!s.contains('@') && !authority.host().is_empty() && port_ok).then_some(authority)
}

/// Where a problem is: shown as `file:line:col: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.key,
            self.message
        )
    }
}

/// A position in a config file, kept so later checks (a filter's component,
/// its `configure`) can point back at the line that declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl Location {
    pub fn diagnostic(&self, key: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// All problems found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// `[host] discovery_dir`; `OPZERO_HOME` takes precedence (see discovery).
    pub discovery_dir: Option<PathBuf>,
    pub instructions: String,
    /// `[bridge] allowed_hosts`: names besides loopback the bridge answers
    /// to (a tunnel's), each `name` (any port) or `name:port`.
    pub allowed_hosts: Vec<Authority>,
    /// `[bridge] sign_in_hours`: how long a page's sign-in lasts.
    pub sign_in: Duration,
    /// `[files] send_from`: directories a reply may send files from, besides
    /// Claude's working directory and the system temporary directory.
    pub send_from: Vec<PathBuf>,
    pub events: EventsConfig,
    pub limits: Limits,
    pub permissions: PermissionsConfig,
    pub filters: Vec<FilterSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventsConfig {
    /// How many outbound events are kept for replay.
    pub replay_buffer: usize,
    /// How far a subscriber may fall behind before it is disconnected.
    pub subscriber_lag: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_content_chars: usize,
    pub max_meta_keys: usize,
    /// How many recent `message_id`s are remembered for duplicate detection.
    pub idempotency_window: usize,
    /// A client gets this long to send a request's headers, and again its
    /// body, before the bridge gives up on it (`read_timeout_ms`).
    pub read_timeout: Duration,
    /// One file, either way.
    pub max_file_bytes: u64,
    /// Files in one message, either way (0: no files).
    pub max_files: usize,
    /// All of one message's files together.
    pub max_files_bytes: u64,
}

impl Limits {
    /// The largest `POST /inject` body: `max_body_bytes`, plus room for
    /// `max_files_bytes` of files in base64 (4 bytes for 3) and a little
    /// framing for each.
    pub fn inject_body_bytes(&self) -> usize {
        if self.max_files == 0 {
            return self.max_body_bytes;
        }
        let files = self.max_files_bytes.div_ceil(3) * 4 + self.max_files as u64 * 1024;
        self.max_body_bytes.saturating_add(usize::try_from(files).unwrap_or(usize::MAX))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PermissionsConfig {
    /// Declare `claude/channel/permission` and relay prompts to the bridge.
    pub relay: bool,
    /// Pending prompts older than this are dropped with `permission_expired`.
    pub expire_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// A failing filter stops the message (the default).
    Closed,
    /// A failing filter is skipped with a warning.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hooks {
    pub inject: bool,
    pub reply: bool,
    pub permission: bool,
}

/// One `[[filter]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSpec {
    pub name: String,
    /// Resolved against the config file's directory.
    pub path: PathBuf,
    pub hooks: Hooks,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub on_error: OnError,
    /// `[filter.config]` as JSON (an empty object when absent).
    pub config: serde_json::Value,
    /// The `[[filter]]` header, the `path` value and the `config` table.
    pub at: Location,
    pub path_at: Location,
    pub config_at: Location,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            discovery_dir: None,
            instructions: DEFAULT_INSTRUCTIONS.to_string(),
            allowed_hosts: Vec::new(),
            sign_in: Duration::from_secs(12 * 3600),
            send_from: Vec::new(),
            events: EventsConfig {
                replay_buffer: 1000,
                subscriber_lag: 256,
            },
            limits: Limits {
                max_body_bytes: 1024 * 1024,
                max_content_chars: 256 * 1024,
                max_meta_keys: 64,
                idempotency_window: 1000,
                read_timeout: Duration::from_secs(10),
                max_file_bytes: 20 << 20,
                max_files: 10,
                max_files_bytes: 50 << 20,
            },
            permissions: PermissionsConfig {
                relay: true,
                expire_after: Duration::from_secs(600),
            },
            filters: Vec::new(),
        }
    }
}

impl Config {
    /// `--config FILE`, else `./opzero.toml` if present, else the defaults.
    pub fn resolve(explicit: Option<&Path>) -> Result<Config, ConfigErrors> {
        let local = Path::new("opzero.toml");
        match explicit {
            Some(path) => Config::load(path),
            None if local.is_file() => Config::load(local),
            None => Ok(Config::default()),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let at = Location { file: path.to_path_buf(), line: 0, col: 0 };
            ConfigErrors(vec![at.diagnostic("(file)", format!("cannot read config file: {e}"))])
        })?;
        Config::parse(&text, path)
    }

    /// Parse `text` as if read from `path` (used for messages and to resolve
    /// filter paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut w = Walker {
            file: path.to_path_buf(),
            text,
            diags: Vec::new(),
        };
        let (root, parse_errors) = DeTable::parse_recoverable(text);
        for e in parse_errors {
            let span = e.span().unwrap_or(0..0);
            w.error(span, "(syntax)", e.message().trim().to_string());
        }
        let mut config = Config {
            source: Some(path.to_path_buf()),
            ..Config::default()
        };
        w.root(root.get_ref(), &mut config, path.parent().unwrap_or(Path::new(".")));
        if w.diags.is_empty() {
            Ok(config)
        } else {
            w.diags.sort_by_key(|d| (d.line, d.col));
            Err(ConfigErrors(w.diags))
        }
    }
}

struct Walker<'t> {
    file: PathBuf,
    text: &'t str,
    diags: Vec<Diagnostic>,
}

type Item<'i> = (&'i Spanned<toml::de::DeString<'i>>, &'i Spanned<DeValue<'i>>);

impl Walker<'_> {
    fn location(&self, span: Range<usize>) -> Location {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location {
            file: self.file.clone(),
            line,
            col,
        }
    }

    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let d = self.location(span).diagnostic(key, message);
        self.diags.push(d);
    }

    fn unknown(&mut self, section: &str, item: Item<'_>, known: &[&str]) {
        let key = qualified(section, item.0.get_ref());
        self.error(
            item.0.span(),
            &key,
            format!("unknown key (expected one of: {})", known.join(", ")),
        );
    }

    fn root(&mut self, root: &DeTable<'_>, config: &mut Config, base_dir: &Path) {
        const KNOWN: &[&str] = &["host", "bridge", "files", "events", "limits", "permissions", "filter"];
        for item in root.iter() {
            let key: &str = item.0.get_ref().as_ref();
            match key {
                "host" | "bridge" | "files" | "events" | "limits" | "permissions" => {
                    let Some(t) = self.typed(key, item.1, "a table", DeValue::as_table) else { continue };
                    match key {
                        "host" => self.host(t, config),
                        "bridge" => self.bridge(t, config),
                        "files" => self.files(t, config, base_dir),
                        "events" => self.events(t, &mut config.events),
                        "limits" => self.limits(t, &mut config.limits),
                        _ => self.permissions(t, &mut config.permissions),
                    }
                }
                "filter" => {
                    let what = "an array of tables ([[filter]])";
                    let Some(entries) = self.typed(key, item.1, what, DeValue::as_array) else { continue };
                    for (i, entry) in entries.iter().enumerate() {
                        if let Some(t) = self.typed(&format!("filter[{i}]"), entry, "a table", DeValue::as_table)
                            && let Some(f) = self.filter(i, entry.span(), t, base_dir)
                        {
                            config.filters.push(f);
                        }
                    }
                    self.unique_filter_names(&config.filters);
                }
                _ => self.unknown("", item, KNOWN),
            }
        }
    }

    /// The value as `get` reads it, or an "expected ..." error at it.
    fn typed<'a, 'i, T>(
        &mut self,
        key: &str,
        v: &'a Spanned<DeValue<'i>>,
        what: &str,
        get: impl FnOnce(&'a DeValue<'i>) -> Option<T>,
    ) -> Option<T> {
        let got = get(v.get_ref());
        if got.is_none() {
            self.error(v.span(), key, format!("expected {what}, found {}", v.get_ref().type_str()));
        }
        got
    }

    fn host(&mut self, t: &DeTable<'_>, config: &mut Config) {
        const KNOWN: &[&str] = &["discovery_dir", "instructions"];
        for item in t.iter() {
            let key = qualified("host", item.0.get_ref());
            match item.0.get_ref().as_ref() {
                "discovery_dir" => {
                    if let Some(s) = self.string(&key, item) {
                        if s.is_empty() {
                            self.error(item.1.span(), &key, "must not be empty");
                        } else {
                            config.discovery_dir = Some(expand_home(&s));
                        }
                    }
                }
                "instructions" => {
                    if let Some(s) = self.string(&key, item) {
                        let n = s.chars().count();
                        if n == 0 {
                            self.error(item.1.span(), &key, "must not be empty");
                        } else if n > MAX_INSTRUCTIONS_CHARS {
                            self.error(
                                item.1.span(),
                                &key,
                                format!(
                                    "is {n} characters; Claude Code silently truncates instructions past {MAX_INSTRUCTIONS_CHARS}"
                                ),
                            );
                        } else {
                            config.instructions = s;
                        }
                    }
                }
                _ => self.unknown("host", item, KNOWN),
            }
        }
    }

    fn bridge(&mut self, t: &DeTable<'_>, config: &mut Config) {
        for item in t.iter() {
            let key = qualified("bridge", item.0.get_ref());
            match item.0.get_ref().as_ref() {
                "allowed_hosts" => {
                    let Some(names) = self.typed(&key, item.1, "an array of host names", DeValue::as_array) else { continue };
                    for name in names.iter() {
                        let Some(s) = self.typed(&key, name, "a string", DeValue::as_str) else { continue };
                        match host_name(s) {
                            Some(host) => config.allowed_hosts.push(host),
                            None => self.error(
                                name.span(),
                                &key,
                                format!("{s:?} is not a host name (give name or name:port, with no scheme or path)"),
                            ),
                        }
                    }
                }
                "sign_in_hours" => {
                    if let Some(n) = self.int_in(&key, item, 1, 24 * 365) {
                        config.sign_in = Duration::from_secs(n as u64 * 3600);
                    }
                }
                _ => self.unknown("bridge", item, &["allowed_hosts", "sign_in_hours"]),
            }
        }
    }

    /// `[files] send_from`: each an existing directory, absolute, `~/`, or
    /// relative to the config file.
    fn files(&mut self, t: &DeTable<'_>, config: &mut Config, base_dir: &Path) {
        for item in t.iter() {
            let key = qualified("files", item.0.get_ref());
            if item.0.get_ref().as_ref() != "send_from" {
                self.unknown("files", item, &["send_from"]);
                continue;
            }
            let Some(dirs) = self.typed(&key, item.1, "an array of directories", DeValue::as_array) else { continue };
            for dir in dirs.iter() {
                let Some(s) = self.typed(&key, dir, "a string", DeValue::as_str) else { continue };
                let path = expand_home(s);
                let path = if path.is_absolute() { path } else { base_dir.join(path) };
                match std::fs::metadata(&path) {
                    _ if s.is_empty() => self.error(dir.span(), &key, "must not be empty"),
                    Ok(m) if m.is_dir() => config.send_from.push(path),
                    Ok(_) => self.error(dir.span(), &key, format!("{} is not a directory", path.display())),
                    Err(e) => self.error(dir.span(), &key, format!("{}: {e}", path.display())),
                }
            }
        }
    }

    fn events(&mut self, t: &DeTable<'_>, events: &mut EventsConfig) {
        self.numbers("events", t, &mut [
            ("replay_buffer", 1, 1_000_000, &mut |n| events.replay_buffer = n as usize),
            ("subscriber_lag", 1, 1_000_000, &mut |n| events.subscriber_lag = n as usize),
        ]);
    }

    fn limits(&mut self, t: &DeTable<'_>, limits: &mut Limits) {
        self.numbers("limits", t, &mut [
            ("max_body_bytes", 64, 64 * 1024 * 1024, &mut |n| limits.max_body_bytes = n as usize),
            ("max_content_chars", 1, 64 * 1024 * 1024, &mut |n| limits.max_content_chars = n as usize),
            ("max_meta_keys", 0, 10_000, &mut |n| limits.max_meta_keys = n as usize),
            ("idempotency_window", 0, 1_000_000, &mut |n| limits.idempotency_window = n as usize),
            ("read_timeout_ms", 100, 600_000, &mut |n| limits.read_timeout = Duration::from_millis(n as u64)),
            ("max_file_bytes", 1, 1 << 30, &mut |n| limits.max_file_bytes = n as u64),
            ("max_files", 0, 1000, &mut |n| limits.max_files = n as usize),
            ("max_files_bytes", 1, 4 << 30, &mut |n| limits.max_files_bytes = n as u64),
        ]);
    }

    /// A table of whole numbers: each key with its bounds and where it goes.
    fn numbers(&mut self, section: &str, t: &DeTable<'_>, keys: &mut [(&str, i64, i64, &mut dyn FnMut(i64))]) {
        let known: Vec<&str> = keys.iter().map(|k| k.0).collect();
        for item in t.iter() {
            let key = qualified(section, item.0.get_ref());
            match keys.iter_mut().find(|k| k.0 == item.0.get_ref().as_ref()) {
                Some((_, min, max, set)) => {
                    if let Some(n) = self.int_in(&key, item, *min, *max) {
                        set(n);
                    }
                }
                None => self.unknown(section, item, &known),
            }
        }
    }

    fn permissions(&mut self, t: &DeTable<'_>, p: &mut PermissionsConfig) {
        const KNOWN: &[&str] = &["relay", "expire_after_secs"];
        for item in t.iter() {
            let key = qualified("permissions", item.0.get_ref());
            match item.0.get_ref().as_ref() {
                "relay" => {
                    if let Some(b) = self.typed(&key, item.1, "true or false", DeValue::as_bool) {
                        p.relay = b;
                    }
                }
                "expire_after_secs" => {
                    if let Some(n) = self.int_in(&key, item, 1, 7 * 24 * 3600) {
                        p.expire_after = Duration::from_secs(n as u64);
                    }
                }
                _ => self.unknown("permissions", item, KNOWN),
            }
        }
    }

    fn filter(
        &mut self,
        index: usize,
        span: Range<usize>,
        t: &DeTable<'_>,
        base_dir: &Path,
    ) -> Option<FilterSpec> {
        const KNOWN: &[&str] = &[
            "name",
            "path",
            "hooks",
            "timeout_ms",
            "memory_mb",
            "on_error",
            "config",
        ];
        let errors_before = self.diags.len();
        let at = self.location(span.clone());
        let mut name: Option<String> = None;
        let mut path: Option<(PathBuf, Location)> = None;
        let mut hooks: Option<Hooks> = None;
        let mut spec_timeout = 50;
        let mut spec_memory = 32;
        let mut on_error = OnError::Closed;
        let mut config = serde_json::Value::Object(Default::default());
        let mut config_at = at.clone();
        let section = format!("filter[{index}]");
        for item in t.iter() {
            let key = qualified(&section, item.0.get_ref());
            match item.0.get_ref().as_ref() {
                "name" => {
                    if let Some(s) = self.string(&key, item) {
                        if s.is_empty()
                            || !s
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                        {
                            self.error(
                                item.1.span(),
                                &key,
                                format!("{s:?} is not a valid name (use letters, digits, '-' and '_')"),
                            );
                        } else {
                            name = Some(s);
                        }
                    }
                }
                "path" => {
                    if let Some(s) = self.string(&key, item) {
                        if s.is_empty() {
                            self.error(item.1.span(), &key, "must not be empty");
                        } else {
                            let p = expand_home(&s);
                            let p = if p.is_absolute() { p } else { base_dir.join(p) };
                            path = Some((p, self.location(item.1.span())));
                        }
                    }
                }
                "hooks" => hooks = self.hooks(&key, item),
                "timeout_ms" => {
                    if let Some(n) = self.int_in(&key, item, 1, 10_000) {
                        spec_timeout = n as u64;
                    }
                }
                "memory_mb" => {
                    if let Some(n) = self.int_in(&key, item, 1, 4096) {
                        spec_memory = n as u64;
                    }
                }
                "on_error" => {
                    if let Some(s) = self.string(&key, item) {
                        match s.as_str() {
                            "closed" => on_error = OnError::Closed,
                            "open" => on_error = OnError::Open,
                            _ => self.error(
                                item.1.span(),
                                &key,
                                format!("{s:?} is not one of \"closed\", \"open\""),
                            ),
                        }
                    }
                }
                "config" => {
                    if self.typed(&key, item.1, "a table", DeValue::as_table).is_some() {
                        config = to_json(item.1.get_ref());
                        config_at = self.location(item.1.span());
                    }
                }
                _ => self.unknown(&section, item, KNOWN),
            }
        }
        // A key that is there but wrong has its own error already.
        for (given, k, what) in [
            (name.is_some(), "name", "every filter needs a name"),
            (path.is_some(), "path", "the .wasm component to load"),
            (hooks.is_some(), "hooks", "a subset of [\"inject\", \"reply\", \"permission\"]"),
        ] {
            if !given && !t.iter().any(|(key, _)| key.get_ref().as_ref() == k) {
                self.error(span.clone(), &format!("{section}.{k}"), format!("missing ({what})"));
            }
        }
        if self.diags.len() != errors_before {
            return None;
        }
        let (path, path_at) = path?;
        Some(FilterSpec {
            name: name?,
            path,
            hooks: hooks?,
            timeout_ms: spec_timeout,
            memory_mb: spec_memory,
            on_error,
            config,
            at,
            path_at,
            config_at,
        })
    }

    fn hooks(&mut self, key: &str, item: Item<'_>) -> Option<Hooks> {
        let items = self.typed(key, item.1, "an array of strings", DeValue::as_array)?;
        let mut hooks = Hooks::default();
        let mut ok = true;
        for v in items.iter() {
            match self.typed(key, v, "a string", DeValue::as_str) {
                Some("inject") => hooks.inject = true,
                Some("reply") => hooks.reply = true,
                Some("permission") => hooks.permission = true,
                Some(other) => {
                    ok = false;
                    let message = format!("unknown hook {other:?} (expected \"inject\", \"reply\" or \"permission\")");
                    self.error(v.span(), key, message);
                }
                None => ok = false,
            }
        }
        if ok && hooks == Hooks::default() {
            self.error(item.1.span(), key, "is empty: the filter would never run");
            return None;
        }
        ok.then_some(hooks)
    }

    fn unique_filter_names(&mut self, filters: &[FilterSpec]) {
        for (i, f) in filters.iter().enumerate() {
            if filters[..i].iter().any(|g| g.name == f.name) {
                let d = f.at.diagnostic(
                    format!("filter[{i}].name"),
                    format!("filter name {:?} is used twice", f.name),
                );
                self.diags.push(d);
            }
        }
    }

    fn string(&mut self, key: &str, item: Item<'_>) -> Option<String> {
        self.typed(key, item.1, "a string", DeValue::as_str).map(str::to_string)
    }

    fn int_in(&mut self, key: &str, item: Item<'_>, min: i64, max: i64) -> Option<i64> {
        let i = self.typed(key, item.1, "an integer", DeValue::as_integer)?;
        let n = i64::from_str_radix(i.as_str(), i.radix()).ok().filter(|n| (min..=max).contains(n));
        if n.is_none() {
            self.error(item.1.span(), key, format!("must be between {min} and {max}"));
        }
        n
    }
}

fn qualified(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

/// A leading `~/` means the user's home directory.
pub fn expand_home(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest),
        None if s == "~" => home_dir(),
        None => PathBuf::from(s),
    }
}

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `[filter.config]` goes to the filter's `configure` as JSON.
fn to_json(v: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value;
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        // toml has taken out the `_`s: what is left is Rust's syntax.
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).map_or(Value::Null, Value::from),
        DeValue::Float(f) => f.as_str().parse().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|x| to_json(x.get_ref())).collect()),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, x)| (k.get_ref().to_string(), to_json(x.get_ref())))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("x/opzero.toml")) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse("", Path::new("opzero.toml")).unwrap();
        assert_eq!(c.limits, Config::default().limits);
        assert!(c.permissions.relay);
        assert!(c.filters.is_empty());
    }

    #[test]
    fn default_instructions_fit_claude_codes_limit() {
        assert!(DEFAULT_INSTRUCTIONS.chars().count() <= MAX_INSTRUCTIONS_CHARS);
    }

    #[test]
    fn every_problem_is_reported_with_line_col_and_key() {
        let text = "[host]\nbogus = 1\n\n[limits]\nmax_body_bytes = \"big\"\nmax_meta_keys = -1\n\n[surprise]\n";
        assert_eq!(
            errors(text),
            vec![
                "x/opzero.toml:2:1: host.bogus: unknown key (expected one of: discovery_dir, instructions)",
                "x/opzero.toml:5:18: limits.max_body_bytes: expected an integer, found string",
                "x/opzero.toml:6:17: limits.max_meta_keys: must be between 0 and 10000",
                "x/opzero.toml:8:2: surprise: unknown key (expected one of: host, bridge, files, events, limits, permissions, filter)",
            ]
        );
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = errors("[host\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("x/opzero.toml:1:"), "{e:?}");
    }

    #[test]
    fn filters_keep_file_order_and_resolve_paths() {
        let text = r#"
[[filter]]
name = "a"
path = "f/a.wasm"
hooks = ["inject", "reply"]
[filter.config]
words = ["x", "y"]
limit = 3_000
ratio = 1_0.5

[[filter]]
name = "b"
path = "/abs/b.wasm"
hooks = ["permission"]
timeout_ms = 10
memory_mb = 8
on_error = "open"
"#;
        let c = Config::parse(text, Path::new("/etc/op/opzero.toml")).unwrap();
        assert_eq!(c.filters.len(), 2);
        let a = &c.filters[0];
        assert_eq!(a.path, PathBuf::from("/etc/op/f/a.wasm"));
        assert!(a.hooks.inject && a.hooks.reply && !a.hooks.permission);
        assert_eq!((a.timeout_ms, a.memory_mb, a.on_error), (50, 32, OnError::Closed));
        assert_eq!(a.config, serde_json::json!({"words": ["x", "y"], "limit": 3000, "ratio": 10.5}));
        assert_eq!((a.at.line, a.path_at.line, a.config_at.line), (2, 4, 6));
        let b = &c.filters[1];
        assert_eq!(b.path, PathBuf::from("/abs/b.wasm"));
        assert_eq!((b.timeout_ms, b.memory_mb, b.on_error), (10, 8, OnError::Open));
    }

    #[test]
    fn filter_mistakes_name_the_entry_and_key() {
        let text = "[[filter]]\nname = \"a b\"\nhooks = [\"inject\", \"sideways\"]\ntimeout_ms = 0\nextra = true\n";
        assert_eq!(
            errors(text),
            vec![
                "x/opzero.toml:1:1: filter[0].path: missing (the .wasm component to load)",
                "x/opzero.toml:2:8: filter[0].name: \"a b\" is not a valid name (use letters, digits, '-' and '_')",
                "x/opzero.toml:3:20: filter[0].hooks: unknown hook \"sideways\" (expected \"inject\", \"reply\" or \"permission\")",
                "x/opzero.toml:4:14: filter[0].timeout_ms: must be between 1 and 10000",
                "x/opzero.toml:5:1: filter[0].extra: unknown key (expected one of: name, path, hooks, timeout_ms, memory_mb, on_error, config)",
            ]
        );
    }

    #[test]
    fn duplicate_filter_names_are_refused() {
        let text = "[[filter]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"reply\"]\n[[filter]]\nname = \"a\"\npath = \"b.wasm\"\nhooks = [\"reply\"]\n";
        assert_eq!(
            errors(text),
            vec!["x/opzero.toml:5:1: filter[1].name: filter name \"a\" is used twice"]
        );
    }

    #[test]
    fn event_limit_and_permission_keys() {
        let text = "[events]\nreplay_buffer = 0x5\nsubscriber_lag = 2\n[limits]\nread_timeout_ms = 250\nidempotency_window = 0\n[permissions]\nrelay = false\nexpire_after_secs = 1\n";
        let c = Config::parse(text, Path::new("opzero.toml")).unwrap();
        assert_eq!((c.events.replay_buffer, c.events.subscriber_lag), (5, 2));
        assert_eq!(c.limits.read_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.idempotency_window, 0);
        assert!(!c.permissions.relay);
        assert_eq!(c.permissions.expire_after, Duration::from_secs(1));
        assert_eq!(Config::default().limits.read_timeout, Duration::from_secs(10));
        assert_eq!(
            errors("[limits]\nread_timeout_ms = 5\n"),
            vec!["x/opzero.toml:2:19: limits.read_timeout_ms: must be between 100 and 600000"]
        );
    }

    #[test]
    fn overlong_instructions_are_refused() {
        let text = format!("[host]\ninstructions = \"{}\"\n", "a".repeat(2049));
        let e = errors(&text);
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("host.instructions: is 2049 characters"), "{e:?}");
    }
}
