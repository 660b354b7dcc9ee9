//! `opzero-host filter test PATH --hook HOOK --input JSON`: one hook call
//! into one component, loaded the way `serve` loads it (a `[[filter]]`
//! entry read by the config's own code, so every default and range is
//! serve's, then `FilterChain::load`), and the verdict as one line of JSON
//! on stdout. The filter's log lines go to stderr; the exit status says
//! what happened (see [`HELP`]).
//!
//! Each hook is a variant of [`Input`] with its parser and its verdict's
//! JSON; a grant (`--allow-host`) is one more line of the `[[filter]]`
//! entry [`Test::spec`] writes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::hook::HookName;
use crate::UserError;
use crate::bridge::json_kind as kind;
use crate::config::{Config, Diagnostic, FilterSpec};
use crate::filters::{Event, FileInfo, FilterChain, Message, PermissionVerdict, Reply, SessionSource, Verdict};
use crate::permissions::Request;

/// The end of `filter test --help`.
pub const HELP: &str = r#"The input is the hook's record as JSON, in the shapes the wire uses; fields left out are empty:
  inject      {"content": "...", "meta": {"key": "value", ...},    ({"content":"hi"} will do)
               "files": [{"name": "...", "mime": "...", "size": N}, ...]}
  reply       {"chat_id": "...", "text": "..."}
  permission  {"request_id": "...", "tool_name": "...", "description": "...", "input_preview": "..."}
  event       an event as GET /events sends it (its data), e.g. {"type": "status", "state": "idle"}:
              reply, edit, permission_request, permission_resolved, permission_expired, status,
              receipt; "id" gives a reply's event id [default: 0]
meta goes by serve's rules (keys of letters, digits and '_'; other values as their JSON text).
serve also gives every inject a meta "chat_id" (the message's chat, else "inject"): add it to
test a filter that reads it.

The verdict is one line of JSON on stdout, and the exit status follows it:
  {"verdict":"pass","message":{"content":"...","meta":{...}}}   inject passed (maybe changed): 0
  {"verdict":"pass","reply":{"chat_id":"...","text":"..."}}     reply passed (maybe changed): 0
  {"verdict":"relay"}                                           the prompt goes to the phone: 0
  {"verdict":"allow","filter":"NAME","reason":"..."}            allowed at once: 0 (a decision, not a refusal)
  {"verdict":"drop","filter":"NAME","reason":"..."}             dropped: 1
  {"verdict":"reject","filter":"NAME","reason":"..."}           rejected: 1
  {"verdict":"deny","filter":"NAME","reason":"..."}             denied at once: 1
  {"verdict":"observed"}                                        the event hook returned: 0
  {"verdict":"error","filter":"NAME","error":"..."}             the call failed (a panic, a trap, the
                                                                timeout, the memory limit): 2
Exit status 2 with nothing on stdout: the input or the config is not what it should be (the
message names the field), or the component does not load or refuses its config.

The filter's log lines, and what it writes to its stdout and stderr, go to stderr
(OPZERO_LOG=info leaves out its debug and trace lines). The call runs as serve runs it: the
same sandbox (no files, no network, no environment), timeout_ms 50 (event_timeout_ms 5000 for
the event hook) and memory_mb 32 unless --timeout-ms and --memory-mb say otherwise, compiled
components cached in $OPZERO_HOME/cache. The event hook needs an opzero:filter@0.2.0 component;
an inject's files reach only those (a 0.1.0 component sees none). A component that sends HTTP
requests loads only with --allow-host, and reaches only the hosts it names."#;

/// `opzero-host filter test`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Test {
    /// The filter component (a .wasm built for wasm32-wasip2).
    pub path: PathBuf,
    /// The hook to call.
    #[arg(long, value_enum)]
    pub hook: HookName,
    /// The hook's input, a JSON object (see below); `-` reads it from stdin.
    #[arg(long, value_name = "JSON")]
    pub input: String,
    /// The filter's `[filter.config]`, as a JSON object [default: {}].
    // Its id is the global `--config`'s, which it replaces here; clap
    // copies the value between the two, so it has the same type.
    #[arg(long, value_name = "JSON")]
    pub config: Option<PathBuf>,
    /// The call's time limit, as `timeout_ms` in opzero.toml (`event_timeout_ms`
    /// for the event hook) [default: serve's, 50; 5000 for events].
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u32>,
    /// The filter's memory limit, as `memory_mb` in opzero.toml [default: serve's, 32].
    #[arg(long, value_name = "MB")]
    pub memory_mb: Option<u32>,
    /// The filter's name in its verdict and log [default: the file's, e.g. max_length].
    #[arg(long)]
    pub name: Option<String>,
    /// A host the filter may send HTTP requests to, as in `allowed_outbound_hosts`
    /// (scheme://host[:port]); give it again for more [default: none].
    #[arg(long = "allow-host", value_name = "URL")]
    pub allow_host: Vec<String>,
}

/// The hook's input, in the host's types.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Inject(Message),
    Reply(Reply),
    Permission(Request),
    Event(Event),
}

/// What the call came to: the verdict (printed as JSON; a failed call's
/// error goes to stderr too) and the exit status.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: VerdictJson,
    pub status: u8,
}

/// The verdict as `filter test` prints it: `verdict` first, then what goes
/// with it.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct VerdictJson {
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs the command: prints the verdict (or the problem) and returns the
/// exit status.
pub fn run(test: Test) -> u8 {
    match outcome(test) {
        Ok(outcome) => {
            if let Some(error) = &outcome.verdict.error {
                eprintln!("opzero-host: {error}");
            }
            println!("{}", serde_json::to_string(&outcome.verdict).expect("plain JSON"));
            outcome.status
        }
        Err(e) => {
            eprintln!("opzero-host: {e}");
            2
        }
    }
}

fn outcome(test: Test) -> Result<Outcome, UserError> {
    let config = filter_config(test.config.as_deref())?;
    let text = match test.input.as_str() {
        "-" => std::io::read_to_string(std::io::stdin())
            .map_err(|e| UserError(format!("--input -: cannot read stdin: {e}")))?,
        text => text.to_string(),
    };
    let input = Input::parse(test.hook, &text)?;
    let mut spec = test.spec()?;
    spec.config = config;

    crate::serve::runtime()?.block_on(async {
        let chain = FilterChain::load(std::slice::from_ref(&spec), &crate::serve::cache_dir(), &SessionSource::default())
            .await
            .map_err(|diagnostics| UserError(diagnostics.iter().map(flag_message).collect::<Vec<_>>().join("\n")))?;
        Ok(input.call(&chain).await)
    })
}

/// `--config`: a JSON object, as `[filter.config]` always is.
fn filter_config(flag: Option<&Path>) -> Result<Value, UserError> {
    let Some(flag) = flag else { return Ok(json!({})) };
    let text = flag.to_str().ok_or_else(|| UserError("--config: not UTF-8".into()))?;
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(other) => Err(UserError(format!(
            "--config: must be a JSON object (the filter's [filter.config] table), got {}",
            kind(&other)
        ))),
        Err(e) => Err(UserError(format!(
            "--config: not JSON ({e}): give the filter's config as a JSON object, e.g. '{{\"max_chars\": 100}}'"
        ))),
    }
}

impl Test {
    /// The `[[filter]]` entry `serve` would read for this component, read
    /// by the config's own code: the defaults and checks are serve's.
    fn spec(&self) -> Result<FilterSpec, UserError> {
        let cwd = std::env::current_dir().map_err(|e| UserError(format!("cannot read the current directory: {e}")))?;
        let path = cwd.join(&self.path);
        let path_text = path
            .to_str()
            .ok_or_else(|| UserError(format!("{}: the path is not UTF-8", path.display())))?;
        let name = self.name.clone().unwrap_or_else(|| default_name(&self.path));
        let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut entry = format!(
            "[[filter]]\nname = {}\npath = {}\nhooks = [{}]\n",
            quote(&name),
            quote(path_text),
            quote(self.hook.as_str())
        );
        if let Some(ms) = self.timeout_ms {
            let key = if self.hook == HookName::Event { "event_timeout_ms" } else { "timeout_ms" };
            entry.push_str(&format!("{key} = {ms}\n"));
        }
        if let Some(mb) = self.memory_mb {
            entry.push_str(&format!("memory_mb = {mb}\n"));
        }
        if !self.allow_host.is_empty() {
            let hosts: Vec<String> = self.allow_host.iter().map(|h| quote(h)).collect();
            entry.push_str(&format!("allowed_outbound_hosts = [{}]\n", hosts.join(", ")));
        }
        let config = Config::parse(&entry, Path::new(""))
            .map_err(|errors| UserError(errors.0.iter().map(flag_message).collect::<Vec<_>>().join("\n")))?;
        Ok(config.filters.into_iter().next().expect("one [[filter]] entry"))
    }
}

/// `max_length` for `.../max_length.wasm`: the file's stem, with what a
/// filter name may not hold turned into '-'.
fn default_name(path: &Path) -> String {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() { "filter".into() } else { name }
}

/// A problem with the `[[filter]]` entry this command made, told by the
/// flag that made that part of it (the component's own path is in the
/// message).
fn flag_message(d: &Diagnostic) -> String {
    let field = d
        .key
        .strip_prefix("filter[0]")
        .unwrap_or(&d.key)
        .trim_start_matches('.');
    let flag = match field.split(['.', '[']).next().unwrap_or("") {
        "config" => "--config: ",
        "timeout_ms" | "event_timeout_ms" => "--timeout-ms: ",
        "memory_mb" => "--memory-mb: ",
        "name" => "--name: ",
        "allowed_outbound_hosts" => "--allow-host: ",
        _ => "",
    };
    format!("{flag}{}", d.message)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct InjectInput {
    content: String,
    /// Null when left out.
    meta: Value,
    files: Vec<FileInput>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileInput {
    name: String,
    /// As serve does: from the name when left out.
    mime: Option<String>,
    size: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ReplyInput {
    chat_id: String,
    text: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct PermissionInput {
    request_id: String,
    tool_name: String,
    description: String,
    input_preview: String,
}

impl Input {
    /// `--input` for `hook`; a problem names the field.
    fn parse(hook: HookName, text: &str) -> Result<Input, UserError> {
        match hook {
            HookName::Inject => {
                let object = object(hook, text, r#"{"content": "...", "meta": {...}, "files": [...]}"#)?;
                let input: InjectInput = fields(object)?;
                let meta = match input.meta {
                    Value::Null => serde_json::Map::new(),
                    Value::Object(meta) => meta,
                    other => {
                        return Err(UserError(format!(
                            "--input: meta: must be an object of text values, got {}",
                            kind(&other)
                        )));
                    }
                };
                let (meta, dropped) = crate::meta::clean(meta);
                for key in dropped {
                    eprintln!(
                        "opzero-host: --input: meta.{key} left out, as serve leaves it out (a key is letters, digits and '_', not starting with a digit)"
                    );
                }
                Ok(Input::Inject(Message {
                    content: input.content,
                    meta: meta.into_iter().collect(),
                    files: input
                        .files
                        .into_iter()
                        .map(|f| FileInfo {
                            mime: f.mime.unwrap_or_else(|| crate::files::mime_of(&f.name)),
                            name: f.name,
                            size: f.size,
                        })
                        .collect(),
                }))
            }
            HookName::Reply => {
                let input: ReplyInput = fields(object(hook, text, r#"{"chat_id": "...", "text": "..."}"#)?)?;
                Ok(Input::Reply(Reply {
                    chat_id: input.chat_id,
                    text: input.text,
                }))
            }
            HookName::Permission => {
                let shape =
                    r#"{"request_id": "...", "tool_name": "...", "description": "...", "input_preview": "..."}"#;
                let input: PermissionInput = fields(object(hook, text, shape)?)?;
                Ok(Input::Permission(Request {
                    request_id: input.request_id,
                    tool_name: input.tool_name,
                    description: input.description,
                    input_preview: input.input_preview,
                }))
            }
            HookName::Event => {
                let data = object(hook, text, r#"{"type": "status", "state": "idle"}"#)?;
                let id = match &data["id"] {
                    Value::Null => 0,
                    v => v
                        .as_u64()
                        .ok_or_else(|| UserError(format!("--input: id: must be a whole number, got {}", kind(v))))?,
                };
                match Event::from_sse(id, &data) {
                    Ok(Some(event)) => Ok(Input::Event(event)),
                    Ok(None) => Err(UserError(format!(
                        "--input: type: {} is not an event a filter observes (one of {})",
                        data["type"],
                        crate::filters::EVENT_TYPES
                    ))),
                    Err(e) => Err(UserError(format!("--input: {e}"))),
                }
            }
        }
    }

    /// Runs the hook through the chain (of one filter).
    async fn call(self, chain: &FilterChain) -> Outcome {
        match self {
            Input::Inject(message) => {
                let passed = |m: Message| {
                    let meta: serde_json::Map<String, Value> =
                        m.meta.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                    let mut message = json!({"content": m.content, "meta": meta});
                    if !m.files.is_empty() {
                        let files: Vec<Value> =
                            m.files.into_iter().map(|f| json!({"name": f.name, "mime": f.mime, "size": f.size})).collect();
                        message["files"] = files.into();
                    }
                    VerdictJson {
                        message: Some(message),
                        ..pass()
                    }
                };
                verdict(chain.on_inject(message).await, passed)
            }
            Input::Reply(reply) => {
                let passed = |r: Reply| VerdictJson {
                    reply: Some(json!({"chat_id": r.chat_id, "text": r.text})),
                    ..pass()
                };
                verdict(chain.on_reply(reply).await, passed)
            }
            Input::Permission(request) => permission_verdict(chain.on_permission(request).await),
            Input::Event(event) => verdict(chain.on_event(event).await, |()| VerdictJson {
                verdict: "observed",
                ..VerdictJson::default()
            }),
        }
    }
}

/// `--input`, which must be a JSON object: the hook's record.
fn object(hook: HookName, text: &str, shape: &str) -> Result<Value, UserError> {
    let hook = hook.as_str();
    let value: Value = serde_json::from_str(text)
        .map_err(|e| UserError(format!("--input: not JSON ({e}): give the {hook} record, {shape}")))?;
    if !value.is_object() {
        return Err(UserError(format!(
            "--input: must be a JSON object, the {hook} record {shape}; got {}",
            kind(&value)
        )));
    }
    Ok(value)
}

/// The record's fields; a problem names the field.
fn fields<T: DeserializeOwned>(value: Value) -> Result<T, UserError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            UserError(format!("--input: {inner}"))
        } else {
            UserError(format!("--input: {path}: {inner}"))
        }
    })
}

fn pass() -> VerdictJson {
    VerdictJson {
        verdict: "pass",
        ..VerdictJson::default()
    }
}

/// An inject's or a reply's verdict.
fn verdict<T>(verdict: Verdict<T>, pass: impl FnOnce(T) -> VerdictJson) -> Outcome {
    match verdict {
        Verdict::Pass(t) => exit(pass(t), 0),
        Verdict::Drop { filter, reason } => decided("drop", filter, reason, 1),
        Verdict::Reject { filter, reason } => decided("reject", filter, reason, 1),
        Verdict::Failed { filter, error } => failed(filter, error),
    }
}

fn permission_verdict(verdict: PermissionVerdict) -> Outcome {
    match verdict {
        PermissionVerdict::Relay => exit(VerdictJson { verdict: "relay", ..VerdictJson::default() }, 0),
        // A decision, not a refusal.
        PermissionVerdict::Allow { filter, reason } => decided("allow", filter, reason, 0),
        PermissionVerdict::Deny { filter, reason } => decided("deny", filter, reason, 1),
        PermissionVerdict::Failed { filter, error } => failed(filter, error),
    }
}

fn decided(verdict: &'static str, filter: String, reason: String, status: u8) -> Outcome {
    let verdict = VerdictJson {
        verdict,
        filter: Some(filter),
        reason: Some(reason),
        ..VerdictJson::default()
    };
    exit(verdict, status)
}

/// A call's verdict and exit status.
fn exit(verdict: VerdictJson, status: u8) -> Outcome {
    Outcome { verdict, status }
}

fn failed(filter: String, error: String) -> Outcome {
    let verdict = VerdictJson {
        verdict: "error",
        filter: Some(filter),
        error: Some(error),
        ..VerdictJson::default()
    };
    exit(verdict, 2)
}

/// Where the guest's `log` lines and its stdout and stderr are logged
/// (`filters::state`).
const GUEST_LOG_TARGET: &str = "opzero_host::filters::state";

/// stderr for `filter test`: the filter's own lines at every level (or
/// `OPZERO_LOG`'s), the host's warnings and errors, and not the chain's
/// report of a failure, which the command prints itself. No timestamps:
/// this is one call, read by a person.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter, fmt};
    let guest_level: tracing::Level = std::env::var("OPZERO_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::TRACE);
    // Not spans; but `enabled!` hints too (the guest's `log` asks first).
    let wanted = filter::filter_fn(move |m| {
        !m.is_span()
            && if m.target() == GUEST_LOG_TARGET {
                *m.level() <= guest_level
            } else {
                *m.level() <= tracing::Level::WARN && !m.target().starts_with("opzero_host::filters::chain")
            }
    });
    let log = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time();
    tracing_subscriber::registry().with(log.with_filter(wanted)).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(hook: HookName, text: &str) -> String {
        Input::parse(hook, text).unwrap_err().0
    }

    #[test]
    fn inputs_default_missing_fields() {
        assert_eq!(
            Input::parse(HookName::Inject, r#"{"content":"hi"}"#).unwrap(),
            Input::Inject(Message {
                content: "hi".into(),
                meta: vec![],
                files: vec![]
            })
        );
        let Input::Inject(m) = Input::parse(
            HookName::Inject,
            r#"{"files":[{"name":"a.png","size":3},{"name":"b","mime":"text/plain"}]}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            m.files,
            [
                FileInfo { name: "a.png".into(), mime: "image/png".into(), size: 3 },
                FileInfo { name: "b".into(), mime: "text/plain".into(), size: 0 }
            ]
        );
        assert_eq!(
            Input::parse(HookName::Event, r#"{"type":"reply","id":4,"chat_id":"c","text":"t","ts":1}"#).unwrap(),
            Input::Event(Event::ReplySent { id: 4, chat_id: "c".into(), text: "t".into(), edit_of: None })
        );
        assert_eq!(
            Input::parse(
                HookName::Inject,
                r#"{"content":"hi","meta":{"user":"ana","n":3,"gone":null,"bad-key":"x"}}"#
            )
            .unwrap(),
            Input::Inject(Message {
                content: "hi".into(),
                meta: vec![("n".into(), "3".into()), ("user".into(), "ana".into())],
                files: vec![]
            })
        );
        assert_eq!(
            Input::parse(HookName::Reply, r#"{"text":"t"}"#).unwrap(),
            Input::Reply(Reply {
                chat_id: String::new(),
                text: "t".into()
            })
        );
        let Input::Permission(p) = Input::parse(HookName::Permission, r#"{"tool_name":"Bash"}"#).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.tool_name.as_str(), p.request_id.as_str(), p.input_preview.as_str()),
            ("Bash", "", "")
        );
    }

    #[test]
    fn input_mistakes_name_the_field() {
        use HookName::*;
        assert_eq!(
            err(Inject, r#"{"content":3}"#),
            "--input: content: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            err(Inject, r#"{"contnt":"x"}"#),
            "--input: contnt: unknown field `contnt`, expected one of `content`, `meta`, `files`"
        );
        assert_eq!(
            err(Permission, r#"{"tool":"x"}"#),
            "--input: tool: unknown field `tool`, expected one of `request_id`, `tool_name`, `description`, `input_preview`"
        );
        assert_eq!(
            err(Inject, r#"{"meta":"x"}"#),
            "--input: meta: must be an object of text values, got a string"
        );
        assert_eq!(
            err(Inject, r#"{"files":[{"name":"a","bytes":"x"}]}"#),
            "--input: files[0].bytes: unknown field `bytes`, expected one of `name`, `mime`, `size`"
        );
        assert_eq!(
            err(Event, r#"{"type":"config_error"}"#),
            "--input: type: \"config_error\" is not an event a filter observes (one of reply, edit, permission_request, permission_resolved, permission_expired, status, receipt)"
        );
        assert_eq!(
            err(Event, r#"{"type":"status","state":"asleep"}"#),
            "--input: state: \"asleep\" is not \"busy\" or \"idle\""
        );
        assert!(
            err(Reply, r#"{"chat_id":"c","text":["t"]}"#).starts_with("--input: text: invalid type: sequence"),
            "{}",
            err(Reply, r#"{"chat_id":"c","text":["t"]}"#)
        );
        assert!(
            err(Permission, "[1]").starts_with("--input: must be a JSON object, the permission record {\"request_id\"")
        );
        assert!(
            err(Reply, "{nope")
                .starts_with("--input: not JSON (key must be a string at line 1 column 2): give the reply record")
        );
    }

    #[test]
    fn configs_are_json_objects() {
        assert_eq!(filter_config(None).unwrap(), json!({}));
        assert_eq!(
            filter_config(Some(Path::new(r#"{"a":[1]}"#))).unwrap(),
            json!({"a": [1]})
        );
        assert!(
            filter_config(Some(Path::new("[1]")))
                .unwrap_err()
                .0
                .starts_with("--config: must be a JSON object")
        );
        assert!(
            filter_config(Some(Path::new("opzero.toml")))
                .unwrap_err()
                .0
                .starts_with("--config: not JSON")
        );
    }

    fn test(path: &str, hook: HookName) -> Test {
        Test {
            path: path.into(),
            hook,
            input: "{}".into(),
            config: None,
            timeout_ms: None,
            memory_mb: None,
            name: None,
            allow_host: Vec::new(),
        }
    }

    #[test]
    fn the_spec_has_serves_defaults_and_checks() {
        let spec = test("/x/max_length.wasm", HookName::Reply)
            .spec()
            .unwrap();
        let serve = Config::parse(
            "[[filter]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"reply\"]\n",
            Path::new("o.toml"),
        )
        .unwrap();
        assert_eq!(
            (spec.timeout_ms, spec.memory_mb, spec.on_error),
            (
                serve.filters[0].timeout_ms,
                serve.filters[0].memory_mb,
                serve.filters[0].on_error
            )
        );
        assert_eq!((spec.timeout_ms, spec.memory_mb), (50, 32));
        assert_eq!(spec.name, "max_length");
        assert_eq!(spec.path, Path::new("/x/max_length.wasm"));
        assert!(spec.hooks.reply && !spec.hooks.inject && !spec.hooks.permission);

        let mut t = test("rel/My Filter.wasm", HookName::Inject);
        t.timeout_ms = Some(0);
        t.memory_mb = Some(9000);
        let e = t.spec().unwrap_err().0;
        assert_eq!(
            e,
            "--timeout-ms: must be between 1 and 10000\n--memory-mb: must be between 1 and 4096"
        );
        t.timeout_ms = Some(20);
        t.memory_mb = None;
        let spec = t.spec().unwrap();
        assert_eq!((spec.name.as_str(), spec.timeout_ms), ("My-Filter", 20));
        assert_eq!(spec.path, std::env::current_dir().unwrap().join("rel/My Filter.wasm"));
        t.allow_host = vec!["https://ntfy.sh".into(), "ntfy.sh".into()];
        assert!(
            t.spec()
                .unwrap_err()
                .0
                .starts_with("--allow-host: \"ntfy.sh\" is not an outbound host")
        );
        t.allow_host.pop();
        assert_eq!(t.spec().unwrap().allowed_outbound_hosts[0].to_string(), "https://ntfy.sh");
        t.name = Some("a b".into());
        assert!(
            t.spec()
                .unwrap_err()
                .0
                .starts_with("--name: \"a b\" is not a valid name")
        );
    }

    #[test]
    fn exit_statuses() {
        let status = |o: Outcome| (o.verdict.verdict, o.status);
        let (f, r) = (|| "f".to_string(), || "r".to_string());
        assert_eq!(status(verdict(Verdict::Pass(()), |_| pass())), ("pass", 0));
        assert_eq!(
            status(verdict::<()>(
                Verdict::Drop {
                    filter: f(),
                    reason: r()
                },
                |_| pass()
            )),
            ("drop", 1)
        );
        assert_eq!(
            status(verdict::<()>(
                Verdict::Reject {
                    filter: f(),
                    reason: r()
                },
                |_| pass()
            )),
            ("reject", 1)
        );
        assert_eq!(
            status(verdict::<()>(
                Verdict::Failed {
                    filter: f(),
                    error: r()
                },
                |_| pass()
            )),
            ("error", 2)
        );
        assert_eq!(status(permission_verdict(PermissionVerdict::Relay)), ("relay", 0));
        assert_eq!(
            status(permission_verdict(PermissionVerdict::Allow {
                filter: f(),
                reason: r()
            })),
            ("allow", 0)
        );
        assert_eq!(
            status(permission_verdict(PermissionVerdict::Deny {
                filter: f(),
                reason: r()
            })),
            ("deny", 1)
        );
        assert_eq!(
            status(permission_verdict(PermissionVerdict::Failed {
                filter: f(),
                error: r()
            })),
            ("error", 2)
        );
        let denied = permission_verdict(PermissionVerdict::Deny {
            filter: f(),
            reason: r(),
        })
        .verdict;
        assert_eq!(
            serde_json::to_string(&denied).unwrap(),
            r#"{"verdict":"deny","filter":"f","reason":"r"}"#
        );
    }
}
