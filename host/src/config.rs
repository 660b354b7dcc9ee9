//! `opzero.toml` and the hub's `hub.toml`: the schemas, their defaults,
//! and their checks.
//!
//! serde reads the file into the `Raw*` structs; a syntax error, a value of
//! the wrong type or an unknown key stops it at the first. One pass then
//! checks every range and cross-field rule and reports all it finds at once,
//! each at file:line:col with the key it is about.

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use serde::Deserialize;
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {key}: {message}", file.display())]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub key: String,
    pub message: String,
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

/// All problems found in one config file, one to a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

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
    pub mirror: MirrorConfig,
    pub filters: Vec<FilterSpec>,
}

/// `[mirror]`: what the host reads from Claude Code's transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// `receipt` events, and `POST /inject?wait=`.
    pub receipts: bool,
    /// `unanswered` events.
    pub unanswered: bool,
    /// `activity` events.
    pub activity: bool,
    /// How long Claude Code has to take a message before it is `undelivered`.
    pub grace: Duration,
}

impl MirrorConfig {
    /// Whether there is any reason to follow the transcript.
    pub fn follows(&self) -> bool {
        self.receipts || self.unanswered || self.activity
    }
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
    /// `on-event`, off the message path (opzero:filter@0.2.0).
    pub event: bool,
}

impl Hooks {
    /// Whether any hook is on the message path (the others being `event`).
    pub fn on_messages(self) -> bool {
        self.inject || self.reply || self.permission
    }
}

/// One of a filter's `allowed_outbound_hosts`: `scheme://host[:port]`,
/// the port being the scheme's unless given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundHost {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl OutboundHost {
    pub fn parse(s: &str) -> Option<OutboundHost> {
        let uri = s.parse::<http::Uri>().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = default_port(&scheme)?;
        let authority = uri.authority()?;
        let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
        let port_ok = authority.port().is_some() || !authority.as_str().ends_with(':');
        if authority.as_str().contains('@') || authority.host().is_empty() || !bare || !port_ok {
            return None;
        }
        Some(OutboundHost {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
        })
    }

    /// Whether a request to `uri` goes where this names.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let Some(default_port) = default_port(&scheme) else { return false };
        let Some(authority) = uri.authority() else { return false };
        scheme == self.scheme
            && !authority.as_str().contains('@')
            && authority.host().eq_ignore_ascii_case(&self.host)
            && authority.port_u16().unwrap_or(default_port) == self.port
    }
}

/// The port a URL of `scheme` means when it names none; only http and
/// https may be granted.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

impl fmt::Display for OutboundHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if Some(self.port) == default_port(&self.scheme) {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// One `[[filter]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSpec {
    pub name: String,
    /// Resolved against the config file's directory.
    pub path: PathBuf,
    pub hooks: Hooks,
    pub timeout_ms: u64,
    /// Each `on-event` call's deadline.
    pub event_timeout_ms: u64,
    pub memory_mb: u64,
    pub on_error: OnError,
    /// `[filter.config]` as JSON (an empty object when absent).
    pub config: serde_json::Value,
    /// Where its HTTP requests may go (none: it may send none).
    pub allowed_outbound_hosts: Vec<OutboundHost>,
    /// The `[[filter]]` header, the `path` value, the `hooks` list and the
    /// `config` table.
    pub at: Location,
    pub path_at: Location,
    pub hooks_at: Location,
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
            mirror: MirrorConfig {
                receipts: true,
                unanswered: true,
                activity: true,
                grace: Duration::from_millis(5000),
            },
            filters: Vec::new(),
        }
    }
}

impl Config {
    /// `--config FILE`, else `./opzero.toml` if present, else the defaults.
    pub fn resolve(explicit: Option<&Path>) -> Result<Config, ConfigErrors> {
        let path = explicit.or_else(|| Some(Path::new("opzero.toml")).filter(|p| p.is_file()));
        path.map_or_else(|| Ok(Config::default()), Config::load)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::parse(&read_text(path)?, path)
    }

    /// Parse `text` as if read from `path` (used for messages and to resolve
    /// filter paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut check = Check { file: path.to_path_buf(), text, diags: Vec::new() };
        let config = check.read::<RawFile>().map(|raw| check.config(raw, path));
        check.finish(config)
    }
}

/// A config file's text, or why it cannot be read.
fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        let at = Location { file: path.to_path_buf(), line: 0, col: 0 };
        ConfigErrors(vec![at.diagnostic("(file)", format!("cannot read config file: {e}"))])
    })
}

/// The hub's default port: clear of the opzero-claude server (4097) and
/// fakechat (8787).
pub const DEFAULT_HUB_PORT: u16 = 4870;

/// `hub.toml`: the hub's own settings (`opzero-host hub`).
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// The file this was read from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// `port` (`--port` wins).
    pub port: u16,
    /// `allowed_hosts`: names besides loopback the hub answers to (a
    /// tunnel's), each `name` (any port) or `name:port`.
    pub allowed_hosts: Vec<Authority>,
    /// `sign_in_hours`: how long a page's sign-in lasts.
    pub sign_in: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig { source: None, port: DEFAULT_HUB_PORT, allowed_hosts: Vec::new(), sign_in: Config::default().sign_in }
    }
}

impl HubConfig {
    /// `--config FILE`, else `default` if present, else the defaults.
    pub fn resolve(explicit: Option<&Path>, default: &Path) -> Result<HubConfig, ConfigErrors> {
        let path = explicit.or_else(|| Some(default).filter(|p| p.is_file()));
        path.map_or_else(|| Ok(HubConfig::default()), HubConfig::load)
    }

    pub fn load(path: &Path) -> Result<HubConfig, ConfigErrors> {
        HubConfig::parse(&read_text(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<HubConfig, ConfigErrors> {
        let mut check = Check { file: path.to_path_buf(), text, diags: Vec::new() };
        let config = check.read::<RawHub>().map(|raw| {
            let mut c = HubConfig {
                source: Some(path.to_path_buf()),
                allowed_hosts: check.parsed("allowed_hosts", &raw.allowed_hosts, host_name, HOST_NAME),
                ..HubConfig::default()
            };
            check.int("port", &raw.port, 1..=65535, |n| c.port = n);
            check.int("sign_in_hours", &raw.sign_in_hours, 1..=24 * 365, |n: u64| c.sign_in = Duration::from_secs(n * 3600));
            c
        });
        check.finish(config)
    }
}

/// serde's "unknown field `x`, expected `a` or `b`" (or "one of `a`, `b`,
/// `c`") as "unknown key (expected one of: a, b)".
fn unknown_key(message: &str) -> Option<String> {
    let expected = message.strip_prefix("unknown field `")?.split_once("`, expected ")?.1;
    let names = expected.trim_start_matches("one of ").replace("` or `", ", ").replace('`', "");
    Some(format!("unknown key (expected one of: {names})"))
}

/// serde's "invalid type: string \"big\", expected i64" in TOML's words:
/// "expected an integer, found string".
fn wrong_type(message: &str) -> Option<String> {
    let (found, expected) = message.strip_prefix("invalid type: ")?.split_once(", expected ")?;
    let found = match found.split([' ', '`', '"']).next()? {
        "floating" => "float",
        "sequence" => "array",
        "map" => "table",
        other => other,
    };
    let expected = match expected {
        "i64" => "an integer",
        "a sequence" => "an array",
        "a map" => "a table",
        other => other,
    };
    // An integer too large for i64 is "integer `…` as i128": said as serde says it.
    (!expected.ends_with(found)).then(|| format!("expected {expected}, found {found}"))
}

/// A key that is absent keeps its default; one that is there has its span.
type At<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawFile {
    host: RawHost,
    bridge: RawBridge,
    files: RawFiles,
    events: RawEvents,
    limits: RawLimits,
    permissions: RawPermissions,
    mirror: RawMirror,
    filter: Vec<Spanned<RawFilter>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawHub {
    port: At<i64>,
    allowed_hosts: Vec<Spanned<String>>,
    sign_in_hours: At<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawHost {
    discovery_dir: At<String>,
    instructions: At<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawBridge {
    allowed_hosts: Vec<Spanned<String>>,
    sign_in_hours: At<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawFiles {
    send_from: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawEvents {
    replay_buffer: At<i64>,
    subscriber_lag: At<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawLimits {
    max_body_bytes: At<i64>,
    max_content_chars: At<i64>,
    max_meta_keys: At<i64>,
    idempotency_window: At<i64>,
    read_timeout_ms: At<i64>,
    max_file_bytes: At<i64>,
    max_files: At<i64>,
    max_files_bytes: At<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawPermissions {
    relay: Option<bool>,
    expire_after_secs: At<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawMirror {
    receipts: Option<bool>,
    unanswered: Option<bool>,
    activity: Option<bool>,
    grace_ms: At<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawFilter {
    name: At<String>,
    path: At<String>,
    hooks: At<Vec<Spanned<String>>>,
    timeout_ms: At<i64>,
    event_timeout_ms: At<i64>,
    memory_mb: At<i64>,
    on_error: At<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<Spanned<String>>,
    config: At<toml::Table>,
}

/// What a bad `allowed_hosts` entry is not, and a bad `allowed_outbound_hosts` one.
const HOST_NAME: &str = "a host name (give name or name:port, with no scheme or path)";
const OUTBOUND_HOST: &str = "an outbound host (give scheme://host or scheme://host:port, with scheme http or https \
                             and no path, e.g. \"https://ntfy.sh\")";

/// The one validation pass: what it finds goes to `diags`.
struct Check<'t> {
    file: PathBuf,
    text: &'t str,
    diags: Vec<Diagnostic>,
}

impl Check<'_> {
    /// The file as `R`; a syntax error, a wrong type or an unknown key is
    /// the one problem reported.
    fn read<R: serde::de::DeserializeOwned>(&mut self) -> Option<R> {
        let raw: Result<R, _> = match toml::Deserializer::parse(self.text) {
            Err(e) => Err(("(syntax)".to_string(), e)),
            // `Spanned` puts a field of its own in the path; the key is the rest.
            Ok(de) => serde_path_to_error::deserialize(de).map_err(|e| {
                (e.path().to_string().replace(".$__serde_spanned_private_value", ""), e.into_inner())
            }),
        };
        raw.map_err(|(key, e)| {
            let message = unknown_key(e.message())
                .or_else(|| wrong_type(e.message()))
                .unwrap_or_else(|| e.message().trim().to_string());
            // An item of a list is named by its list, as the checks below
            // name it; the position points at the item.
            let key = key.strip_suffix(']').and_then(|k| k.rsplit_once('[')).map_or(key.as_str(), |(list, _)| list);
            self.error(e.span().unwrap_or(0..0), key, message);
        })
        .ok()
    }

    /// `value` if nothing was found wrong; else every problem, in file order.
    fn finish<T>(mut self, value: Option<T>) -> Result<T, ConfigErrors> {
        self.diags.sort_by_key(|d| (d.line, d.col));
        value.filter(|_| self.diags.is_empty()).ok_or(ConfigErrors(self.diags))
    }

    fn location(&self, span: Range<usize>) -> Location {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location { file: self.file.clone(), line, col }
    }

    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diags.push(self.location(span).diagnostic(key, message));
    }

    /// A number that is given goes to `set` if it is in `range`; an error
    /// at it if not.
    fn int<T: TryFrom<i64>>(&mut self, key: &str, value: &At<i64>, range: RangeInclusive<i64>, set: impl FnOnce(T)) {
        let Some(value) = value else { return };
        match T::try_from(*value.get_ref()) {
            Ok(n) if range.contains(value.get_ref()) => set(n),
            _ => self.error(value.span(), key, format!("must be between {} and {}", range.start(), range.end())),
        }
    }

    /// The string if it is not empty; an error at it if it is.
    fn non_empty(&mut self, key: &str, value: Spanned<String>) -> Option<String> {
        if value.get_ref().is_empty() {
            self.error(value.span(), key, "must not be empty");
            return None;
        }
        Some(value.into_inner())
    }

    fn config(&mut self, raw: RawFile, path: &Path) -> Config {
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let discovery_dir = raw.host.discovery_dir.and_then(|s| self.non_empty("host.discovery_dir", s));
        let instructions = raw.host.instructions.and_then(|s| self.instructions(s));
        let mut c = Config {
            source: Some(path.to_path_buf()),
            discovery_dir: discovery_dir.map(|s| expand_home(&s)),
            instructions: instructions.unwrap_or_else(|| DEFAULT_INSTRUCTIONS.to_string()),
            allowed_hosts: self.parsed("bridge.allowed_hosts", &raw.bridge.allowed_hosts, host_name, HOST_NAME),
            send_from: raw.files.send_from.into_iter().filter_map(|s| self.send_from(s, base_dir)).collect(),
            filters: self.filters(raw.filter, base_dir),
            ..Config::default()
        };
        let (b, e, l, p) = (&raw.bridge, &raw.events, &raw.limits, &raw.permissions);
        self.int("bridge.sign_in_hours", &b.sign_in_hours, 1..=24 * 365, |n: u64| {
            c.sign_in = Duration::from_secs(n * 3600);
        });
        self.int("events.replay_buffer", &e.replay_buffer, 1..=1_000_000, |n| c.events.replay_buffer = n);
        self.int("events.subscriber_lag", &e.subscriber_lag, 1..=1_000_000, |n| c.events.subscriber_lag = n);
        self.int("limits.max_body_bytes", &l.max_body_bytes, 64..=64 << 20, |n| c.limits.max_body_bytes = n);
        self.int("limits.max_content_chars", &l.max_content_chars, 1..=64 << 20, |n| c.limits.max_content_chars = n);
        self.int("limits.max_meta_keys", &l.max_meta_keys, 0..=10_000, |n| c.limits.max_meta_keys = n);
        self.int("limits.idempotency_window", &l.idempotency_window, 0..=1_000_000, |n| {
            c.limits.idempotency_window = n;
        });
        self.int("limits.read_timeout_ms", &l.read_timeout_ms, 100..=600_000, |n| {
            c.limits.read_timeout = Duration::from_millis(n);
        });
        self.int("limits.max_file_bytes", &l.max_file_bytes, 1..=1 << 30, |n| c.limits.max_file_bytes = n);
        self.int("limits.max_files", &l.max_files, 0..=1000, |n| c.limits.max_files = n);
        self.int("limits.max_files_bytes", &l.max_files_bytes, 1..=4 << 30, |n| c.limits.max_files_bytes = n);
        self.int("permissions.expire_after_secs", &p.expire_after_secs, 1..=7 * 24 * 3600, |n| {
            c.permissions.expire_after = Duration::from_secs(n);
        });
        c.permissions.relay = p.relay.unwrap_or(c.permissions.relay);
        let m = &raw.mirror;
        self.int("mirror.grace_ms", &m.grace_ms, 100..=600_000, |n| c.mirror.grace = Duration::from_millis(n));
        c.mirror.receipts = m.receipts.unwrap_or(c.mirror.receipts);
        c.mirror.unanswered = m.unanswered.unwrap_or(c.mirror.unanswered);
        c.mirror.activity = m.activity.unwrap_or(c.mirror.activity);
        c
    }

    fn instructions(&mut self, s: Spanned<String>) -> Option<String> {
        let n = s.get_ref().chars().count();
        if n > MAX_INSTRUCTIONS_CHARS {
            let message =
                format!("is {n} characters; Claude Code silently truncates instructions past {MAX_INSTRUCTIONS_CHARS}");
            self.error(s.span(), "host.instructions", message);
            return None;
        }
        self.non_empty("host.instructions", s)
    }

    /// Each string of `list` as `parse` reads it; an error at each it cannot
    /// read, saying it is not `what`.
    fn parsed<T>(&mut self, key: &str, list: &[Spanned<String>], parse: fn(&str) -> Option<T>, what: &str) -> Vec<T> {
        let mut parsed = Vec::new();
        for s in list {
            match parse(s.get_ref()) {
                Some(value) => parsed.push(value),
                None => self.error(s.span(), key, format!("{:?} is not {what}", s.get_ref())),
            }
        }
        parsed
    }

    /// `[files] send_from`: each an existing directory, absolute, `~/`, or
    /// relative to the config file.
    fn send_from(&mut self, s: Spanned<String>, base_dir: &Path) -> Option<PathBuf> {
        let (span, key) = (s.span(), "files.send_from");
        let path = base_dir.join(expand_home(&self.non_empty(key, s)?));
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => return Some(path),
            Ok(_) => self.error(span, key, format!("{} is not a directory", path.display())),
            Err(e) => self.error(span, key, format!("{}: {e}", path.display())),
        }
        None
    }

    /// The valid entries, in file order; a name used twice is refused at the
    /// second.
    fn filters(&mut self, entries: Vec<Spanned<RawFilter>>, base_dir: &Path) -> Vec<FilterSpec> {
        let mut specs: Vec<FilterSpec> = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let Some(spec) = self.filter(i, entry, base_dir) else { continue };
            if specs.iter().any(|f| f.name == spec.name) {
                let message = format!("filter name {:?} is used twice", spec.name);
                self.diags.push(spec.at.diagnostic(format!("filter[{i}].name"), message));
            }
            specs.push(spec);
        }
        specs
    }

    fn filter(&mut self, i: usize, entry: Spanned<RawFilter>, base_dir: &Path) -> Option<FilterSpec> {
        let errors_before = self.diags.len();
        let at = self.location(entry.span());
        let f = entry.into_inner();
        let key = |k: &str| format!("filter[{i}].{k}");
        for (given, k, what) in [
            (f.name.is_some(), "name", "every filter needs a name"),
            (f.path.is_some(), "path", "the .wasm component to load"),
            (f.hooks.is_some(), "hooks", "a subset of [\"inject\", \"reply\", \"permission\", \"event\"]"),
        ] {
            if !given {
                self.diags.push(at.diagnostic(key(k), format!("missing ({what})")));
            }
        }
        if let Some(name) = &f.name
            && (name.get_ref().is_empty()
                || !name.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            let message = format!("{:?} is not a valid name (use letters, digits, '-' and '_')", name.get_ref());
            self.error(name.span(), &key("name"), message);
        }
        let path_at = f.path.as_ref().map(|p| self.location(p.span()));
        let path = f.path.and_then(|p| self.non_empty(&key("path"), p));
        let hooks_at = f.hooks.as_ref().map_or(at.clone(), |h| self.location(h.span()));
        let hooks = f.hooks.map(|h| self.hooks(&key("hooks"), h));
        let (mut timeout_ms, mut event_timeout_ms, mut memory_mb) = (50, 5000, 32);
        self.int(&key("timeout_ms"), &f.timeout_ms, 1..=10_000, |n| timeout_ms = n);
        self.int(&key("event_timeout_ms"), &f.event_timeout_ms, 1..=60_000, |n| event_timeout_ms = n);
        if let (Some(t), Some(h)) = (&f.event_timeout_ms, &hooks)
            && !h.event
        {
            self.error(t.span(), &key("event_timeout_ms"), "applies to the event hook only (add \"event\" to hooks, or leave it out)");
        }
        self.int(&key("memory_mb"), &f.memory_mb, 1..=4096, |n| memory_mb = n);
        let on_error = match f.on_error {
            Some(s) if s.get_ref() == "open" => OnError::Open,
            Some(s) if s.get_ref() != "closed" => {
                let message = format!("{:?} is not one of \"closed\", \"open\"", s.get_ref());
                self.error(s.span(), &key("on_error"), message);
                OnError::Closed
            }
            _ => OnError::Closed,
        };
        let allowed_outbound_hosts =
            self.parsed(&key("allowed_outbound_hosts"), &f.allowed_outbound_hosts, OutboundHost::parse, OUTBOUND_HOST);
        let config_at = f.config.as_ref().map_or(at.clone(), |c| self.location(c.span()));
        if self.diags.len() != errors_before {
            return None;
        }
        Some(FilterSpec {
            name: f.name?.into_inner(),
            path: base_dir.join(expand_home(&path?)),
            hooks: hooks?,
            timeout_ms,
            event_timeout_ms,
            memory_mb,
            on_error,
            config: f.config.map_or(serde_json::json!({}), |c| to_json(toml::Value::Table(c.into_inner()))),
            allowed_outbound_hosts,
            at,
            path_at: path_at?,
            hooks_at,
            config_at,
        })
    }

    fn hooks(&mut self, key: &str, list: Spanned<Vec<Spanned<String>>>) -> Hooks {
        if list.get_ref().is_empty() {
            self.error(list.span(), key, "is empty: the filter would never run");
        }
        let mut hooks = Hooks::default();
        for hook in list.into_inner() {
            match hook.get_ref().as_str() {
                "inject" => hooks.inject = true,
                "reply" => hooks.reply = true,
                "permission" => hooks.permission = true,
                "event" => hooks.event = true,
                other => {
                    let message =
                        format!("unknown hook {other:?} (expected \"inject\", \"reply\", \"permission\" or \"event\")");
                    self.error(hook.span(), key, message);
                }
            }
        }
        hooks
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
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// `[filter.config]` goes to the filter's `configure` as JSON; a datetime as
/// its string.
fn to_json(v: toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => s.into(),
        toml::Value::Integer(i) => i.into(),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => b.into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => a.into_iter().map(to_json).collect(),
        toml::Value::Table(t) => t.into_iter().map(|(k, v)| (k, to_json(v))).collect(),
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
    fn every_problem_of_meaning_is_reported_with_line_col_and_key() {
        let text = "[host]\ninstructions = \"\"\n\n[limits]\nmax_body_bytes = 1\nmax_meta_keys = -1\n";
        assert_eq!(
            errors(text),
            vec![
                "x/opzero.toml:2:16: host.instructions: must not be empty",
                "x/opzero.toml:5:18: limits.max_body_bytes: must be between 64 and 67108864",
                "x/opzero.toml:6:17: limits.max_meta_keys: must be between 0 and 10000",
            ]
        );
    }

    #[test]
    fn the_mirror_section_is_read_and_checked() {
        let c = Config::parse("[mirror]\nreceipts = false\nactivity = false\ngrace_ms = 1500\n", Path::new("x/opzero.toml")).unwrap();
        assert_eq!((c.mirror.receipts, c.mirror.unanswered, c.mirror.activity), (false, true, false));
        assert_eq!(c.mirror.grace, Duration::from_millis(1500));
        assert_eq!(errors("[mirror]\ngrace_ms = 50\n"), vec!["x/opzero.toml:2:12: mirror.grace_ms: must be between 100 and 600000"]);
        assert_eq!(
            errors("[mirror]\nreceipt = true\n"),
            vec!["x/opzero.toml:2:1: mirror.receipt: unknown key (expected one of: receipts, unanswered, activity, grace_ms)"]
        );
    }

    #[test]
    fn an_unknown_key_or_a_wrong_type_stops_at_the_first() {
        let rest = "[limits]\nmax_body_bytes = \"big\"\nmax_meta_keys = -1\n\n[surprise]\n";
        let all = format!("[host]\nbogus = 1\n{rest}");
        for (text, want) in [
            (all.as_str(), "x/opzero.toml:2:1: host.bogus: unknown key (expected one of: discovery_dir, instructions)"),
            (rest, "x/opzero.toml:2:18: limits.max_body_bytes: expected an integer, found string"),
            ("[surprise]\n", "x/opzero.toml:1:2: surprise: unknown key (expected one of: host, bridge, files, events, limits, permissions, mirror, filter)"),
            ("[[filter]]\nhooks = [\"reply\", 3]\n", "x/opzero.toml:2:19: filter[0].hooks: expected a string, found integer"),
        ] {
            assert_eq!(errors(text), vec![want]);
        }
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
when = 1979-05-27T07:32:00Z

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
        assert_eq!(a.config, serde_json::json!({"words": ["x", "y"], "limit": 3000, "ratio": 10.5, "when": "1979-05-27T07:32:00Z"}));
        assert_eq!((a.at.line, a.path_at.line, a.config_at.line), (2, 4, 6));
        let b = &c.filters[1];
        assert_eq!(b.path, PathBuf::from("/abs/b.wasm"));
        assert_eq!((b.timeout_ms, b.memory_mb, b.on_error), (10, 8, OnError::Open));
        assert_eq!((a.event_timeout_ms, b.event_timeout_ms), (5000, 5000));
    }

    #[test]
    fn the_event_hook_and_its_deadline() {
        let text = "[[filter]]\nname = \"n\"\npath = \"n.wasm\"\nhooks = [\"event\", \"inject\"]\nevent_timeout_ms = 2000\n";
        let c = Config::parse(text, Path::new("x/opzero.toml")).unwrap();
        let n = &c.filters[0];
        assert!(n.hooks.event && n.hooks.inject && !n.hooks.reply);
        assert_eq!((n.timeout_ms, n.event_timeout_ms, n.hooks_at.line), (50, 2000, 4));
        assert_eq!(
            errors("[[filter]]\nname = \"n\"\npath = \"n.wasm\"\nhooks = [\"event\"]\nevent_timeout_ms = 0\n"),
            vec!["x/opzero.toml:5:20: filter[0].event_timeout_ms: must be between 1 and 60000"]
        );
        assert_eq!(
            errors("[[filter]]\nname = \"n\"\npath = \"n.wasm\"\nhooks = [\"reply\"]\nevent_timeout_ms = 100\n"),
            vec!["x/opzero.toml:5:20: filter[0].event_timeout_ms: applies to the event hook only (add \"event\" to hooks, or leave it out)"]
        );
    }

    #[test]
    fn filter_mistakes_name_the_entry_and_key() {
        let text = "[[filter]]\nname = \"a b\"\nhooks = [\"inject\", \"sideways\"]\ntimeout_ms = 0\n";
        assert_eq!(
            errors(text),
            vec![
                "x/opzero.toml:1:1: filter[0].path: missing (the .wasm component to load)",
                "x/opzero.toml:2:8: filter[0].name: \"a b\" is not a valid name (use letters, digits, '-' and '_')",
                "x/opzero.toml:3:20: filter[0].hooks: unknown hook \"sideways\" (expected \"inject\", \"reply\", \"permission\" or \"event\")",
                "x/opzero.toml:4:14: filter[0].timeout_ms: must be between 1 and 10000",
            ]
        );
        // An unknown key stops the reading there.
        assert_eq!(
            errors(&format!("{text}extra = true\n")),
            vec!["x/opzero.toml:5:1: filter[0].extra: unknown key (expected one of: name, path, hooks, timeout_ms, event_timeout_ms, memory_mb, on_error, allowed_outbound_hosts, config)"]
        );
    }

    #[test]
    fn outbound_hosts_are_scheme_host_and_port() {
        let text = "[[filter]]\nname = \"n\"\npath = \"n.wasm\"\nhooks = [\"event\"]\nallowed_outbound_hosts = [\"https://ntfy.sh\", \"http://127.0.0.1:8080/\"]\n";
        let c = Config::parse(text, Path::new("x/opzero.toml")).unwrap();
        let hosts = &c.filters[0].allowed_outbound_hosts;
        assert_eq!(hosts.iter().map(ToString::to_string).collect::<Vec<_>>(), ["https://ntfy.sh", "http://127.0.0.1:8080"]);
        let allows = |i: usize, uri: &str| hosts[i].allows(&uri.parse().unwrap());
        assert!(allows(0, "https://ntfy.sh/topic") && allows(0, "https://NTFY.sh:443/x"));
        assert!(!allows(0, "http://ntfy.sh/topic") && !allows(0, "https://ntfy.sh:8443/") && !allows(0, "https://ntfy.sh.evil.test/"));
        assert!(!allows(0, "https://user@ntfy.sh/") && allows(1, "http://127.0.0.1:8080/p") && !allows(1, "http://127.0.0.1/"));
        for bad in ["ntfy.sh", "ftp://ntfy.sh", "https://ntfy.sh/topic", "https://u@ntfy.sh", "https://ntfy.sh:"] {
            let text = format!("[[filter]]\nname = \"n\"\npath = \"n.wasm\"\nhooks = [\"event\"]\nallowed_outbound_hosts = [{bad:?}]\n");
            assert_eq!(
                errors(&text),
                vec![format!("x/opzero.toml:5:27: filter[0].allowed_outbound_hosts: {bad:?} is not an outbound host (give scheme://host or scheme://host:port, with scheme http or https and no path, e.g. \"https://ntfy.sh\")")]
            );
        }
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
