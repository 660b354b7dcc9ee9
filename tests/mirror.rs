//! Receipts, unanswered turns and activity, through the real binary: the
//! test plays Claude Code over stdio, writes its session file
//! (`~/.claude/sessions/<pid>.json`; the test is the host's parent), and
//! appends to its transcript the lines Claude Code 2.1.328 writes, taken
//! from the transcripts recorded in `host/testdata/claude-2.1.328/`.

mod support;
#[path = "../host/tests/filters_support/mod.rs"]
mod filters_support;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_until, without_ts, Host, Options, Sse};

/// Where the recorded transcripts are.
const RECORDED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/claude-2.1.328");

/// A line Claude Code wrote, of the kind `pick` chooses, from a recording.
fn recorded(pick: impl Fn(&Value) -> bool) -> Value {
    let mut files: Vec<_> = std::fs::read_dir(RECORDED).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "jsonl")) {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && pick(&v)
            {
                return v;
            }
        }
    }
    panic!("no such line in {RECORDED}");
}

/// Claude Code, as far as its files go.
struct Claude {
    home: tempfile::TempDir,
    id: String,
    transcript: PathBuf,
}

impl Claude {
    /// A session file for a session whose transcript does not exist yet.
    fn new() -> Claude {
        let home = tempfile::tempdir().unwrap();
        let cwd = home.path().join("project.d");
        std::fs::create_dir_all(&cwd).unwrap();
        let cwd = cwd.canonicalize().unwrap();
        let id = support::new_session_id();
        let sessions = home.path().join(".claude/sessions");
        std::fs::create_dir_all(&sessions).unwrap();
        let session = json!({"pid": 1, "sessionId": id, "cwd": cwd, "name": "mirror", "status": "idle", "kind": "interactive"});
        std::fs::write(sessions.join(format!("{}.json", std::process::id())), session.to_string()).unwrap();
        let project: String = cwd.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let transcript = home.path().join(".claude/projects").join(project).join(format!("{id}.jsonl"));
        Claude { home, id, transcript }
    }

    /// The host Claude Code started, initialized. Claude Code gets
    /// `grace_ms` to take a message: short where the test waits for the
    /// grace to pass, long where a busy machine must not make it pass.
    fn host(&self, grace_ms: u64, more_config: &str) -> Host {
        let mut h = Host::spawn_with(Options {
            env: vec![("HOME".into(), self.home.path().display().to_string())],
            config: Some(format!("[mirror]\ngrace_ms = {grace_ms}\n\n{more_config}")),
            filter_cache: more_config.contains("[[filter]]").then(|| filters_support::wasm_dir().join("test-cache")),
            ..Options::default()
        });
        h.initialize();
        wait_until(|| h.get("/status").json()["receipts"] == "available");
        h
    }

    fn append(&self, line: &Value) {
        std::fs::create_dir_all(self.transcript.parent().unwrap()).unwrap();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.transcript).unwrap();
        writeln!(f, "{line}").unwrap();
    }

    /// A recorded line of `kind`, made this session's.
    fn line(&self, pick: impl Fn(&Value) -> bool) -> Value {
        let mut line = recorded(pick);
        line["sessionId"] = self.id.clone().into();
        line
    }

    fn enqueue(&self, tag: &str) {
        let mut line = self.line(|v| v["type"] == "queue-operation" && v["operation"] == "enqueue");
        line["content"] = tag.into();
        self.append(&line);
    }

    fn dequeue(&self) {
        self.append(&self.line(|v| v["type"] == "queue-operation" && v["operation"] == "dequeue"));
    }

    /// The model's input: the channel's tag on a line of its own.
    fn model_sees(&self, tag: &str) {
        let mut line = self.line(|v| v["type"] == "user" && v["origin"]["kind"] == "channel");
        line["message"]["content"] = tag.into();
        self.append(&line);
    }

    fn says(&self, text: &str) {
        let mut line = self.line(|v| v["type"] == "assistant" && v["message"]["content"][0]["type"] == "text");
        line["message"]["content"] = json!([{"type": "text", "text": text}]);
        self.append(&line);
    }

    fn calls(&self, name: &str, input: Value) {
        let mut line = self.line(|v| v["type"] == "assistant" && v["message"]["content"][0]["type"] == "tool_use");
        line["message"]["content"][0]["name"] = name.into();
        line["message"]["content"][0]["input"] = input;
        self.append(&line);
    }

    fn turn_ends(&self) {
        self.append(&self.line(|v| v["type"] == "system" && v["subtype"] == "turn_duration"));
    }
}

/// The tag Claude Code makes of a message from this host.
fn tag(chat: &str, text: &str) -> String {
    format!("<channel source=\"opzero-channel\" chat_id=\"{chat}\">\n{}\n</channel>", text.replace("</channel>", "<\\/channel>"))
}

/// The next event that is not a `status` one, without its `ts`.
fn next(sse: &mut Sse) -> Value {
    loop {
        let e = sse.event().1;
        if e["type"] != "status" {
            return without_ts(e);
        }
    }
}

fn receipt(id: &str, chat: &str, state: &str) -> Value {
    json!({"type": "receipt", "message_id": id, "chat_id": chat, "state": state})
}

fn inject(h: &Host, text: &str, chat: &str, id: &str) {
    let r = h.post("/inject", &json!({"content": text, "chat_id": chat, "message_id": id}));
    assert_eq!(r.pair(), (202, json!({"ok": true, "message_id": id})));
    h.recv_line();
}

/// A message from the phone that Claude Code takes, and the model sees.
fn taken(claude: &Claude, h: &Host, sse: &mut Sse, text: &str, chat: &str, id: &str) {
    inject(h, text, chat, id);
    claude.enqueue(&tag(chat, text));
    claude.model_sees(&tag(chat, text));
    assert_eq!(next(sse), receipt(id, chat, "queued"));
    assert_eq!(next(sse), receipt(id, chat, "seen"));
}

#[test]
fn a_message_is_queued_then_seen_even_when_the_transcript_comes_with_it() {
    let claude = Claude::new();
    let h = claude.host(5000, "");
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    // The first message is what makes Claude Code start its transcript.
    let text = "hi </channel> \"quoted\" & <b> ünï\nsecond line";
    inject(&h, text, "c1", "m-1");
    claude.enqueue(&tag("c1", text));
    assert_eq!(next(&mut sse), receipt("m-1", "c1", "queued"));
    claude.dequeue();
    claude.model_sees(&tag("c1", text));
    assert_eq!(next(&mut sse), receipt("m-1", "c1", "seen"));
    // A message with no id of the phone's gets one from the host.
    let r = h.post("/inject", &json!({"content": "no id", "chat_id": "c1"}));
    let id = r.json()["message_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("h-"), "{id}");
    h.recv_line();
    claude.enqueue(&tag("c1", "no id"));
    assert_eq!(next(&mut sse), receipt(&id, "c1", "queued"));
}

#[test]
fn no_enqueue_line_within_the_grace_is_undelivered_and_the_id_may_be_sent_again() {
    let claude = Claude::new();
    let h = claude.host(600, "");
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    inject(&h, "lost", "c1", "m-lost");
    let e = next(&mut sse);
    let reason = e["reason"].as_str().unwrap().to_string();
    assert_eq!(e, json!({"type": "receipt", "message_id": "m-lost", "chat_id": "c1", "state": "undelivered", "reason": reason}));
    for needle in ["600 ms", "--dangerously-load-development-channels", "opzero-host status"] {
        assert!(reason.contains(needle), "{needle} not in {reason}");
    }
    // Waiting for it says the same, as an error.
    let r = h.post("/inject?wait=queued", &json!({"content": "lost", "chat_id": "c1", "message_id": "m-lost"}));
    h.recv_line();
    assert_eq!(r.status, 504, "the retry was taken, not called a duplicate");
    assert_eq!(r.json(), json!({"error": reason, "message_id": "m-lost", "receipt": "undelivered"}));
    assert_eq!(next(&mut sse)["state"], "undelivered");
}

#[test]
fn wait_answers_once_claude_code_has_the_message() {
    let claude = Claude::new();
    let h = claude.host(5000, "");
    let post = |wait: &str, id: &str| {
        let (port, secret, wait, id) = (h.port(), h.secret(), wait.to_string(), id.to_string());
        std::thread::spawn(move || {
            let body = json!({"content": format!("wait for {id}"), "chat_id": "c", "message_id": id}).to_string();
            let headers = [("X-OPZero-Secret", secret.as_str()), ("Content-Type", "application/json")];
            support::http(port, "POST", &format!("/inject?wait={wait}"), &headers, Some(body.as_bytes())).pair()
        })
    };
    let queued = post("queued", "w-1");
    h.recv_line();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!queued.is_finished(), "answered before Claude Code had it");
    claude.enqueue(&tag("c", "wait for w-1"));
    assert_eq!(queued.join().unwrap(), (202, json!({"ok": true, "message_id": "w-1", "receipt": "queued"})));

    let seen = post("seen", "w-2");
    h.recv_line();
    claude.enqueue(&tag("c", "wait for w-2"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!seen.is_finished(), "answered at queued");
    claude.model_sees(&tag("c", "wait for w-2"));
    assert_eq!(seen.join().unwrap(), (202, json!({"ok": true, "message_id": "w-2", "receipt": "seen"})));

    let r = h.post("/inject?wait=soon", &json!({"content": "x"}));
    assert_eq!(r.pair(), (400, json!({"error": "wait must be queued or seen"})));
}

#[test]
fn two_identical_texts_get_their_own_receipts_in_order() {
    let claude = Claude::new();
    let h = claude.host(5000, "");
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    inject(&h, "same", "c", "a");
    inject(&h, "same", "c", "b");
    claude.enqueue(&tag("c", "same"));
    assert_eq!(next(&mut sse), receipt("a", "c", "queued"));
    claude.enqueue(&tag("c", "same"));
    assert_eq!(next(&mut sse), receipt("b", "c", "queued"));
    claude.model_sees(&tag("c", "same"));
    assert_eq!(next(&mut sse), receipt("a", "c", "seen"));
    claude.model_sees(&tag("c", "same"));
    assert_eq!(next(&mut sse), receipt("b", "c", "seen"));
}

#[test]
fn without_claudes_session_file_there_are_no_receipts_and_status_says_why() {
    let home = tempfile::tempdir().unwrap();
    let mut h = Host::spawn_with(Options {
        env: vec![("HOME".into(), home.path().display().to_string())],
        config: Some("[mirror]\ngrace_ms = 200\n".into()),
        ..Options::default()
    });
    h.initialize();
    let status = h.get("/status").json();
    assert_eq!(status["receipts"], "unavailable");
    assert!(status["receipts_reason"].as_str().unwrap().contains("session file"), "{status}");
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let r = h.post("/inject?wait=queued", &json!({"content": "hello", "message_id": "u-1"}));
    h.recv_line();
    let why = status["receipts_reason"].clone();
    assert_eq!(r.pair(), (202, json!({"ok": true, "message_id": "u-1", "receipt": "unavailable", "reason": why})));
    // Long past the grace, nothing was claimed: the next event is a reply.
    std::thread::sleep(Duration::from_millis(600));
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(next(&mut sse)["type"], "reply");
}

#[test]
fn lines_of_another_shape_make_receipts_go_quiet_never_wrong() {
    let claude = Claude::new();
    let mut h = claude.host(600, "");
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    // Lines of kinds it does not read, and a line that is not JSON, change nothing.
    claude.append(&json!({"type": "some-new-kind", "content": 5, "message": "text"}));
    inject(&h, "one", "c", "s-1");
    std::fs::OpenOptions::new().append(true).open(&claude.transcript).unwrap().write_all(b"{not json\n").unwrap();
    claude.enqueue(&tag("c", "one"));
    assert_eq!(next(&mut sse), receipt("s-1", "c", "queued"));
    // An enqueue line without its content: the format has changed.
    inject(&h, "two", "c", "s-2");
    let mut changed = claude.line(|v| v["type"] == "queue-operation" && v["operation"] == "enqueue");
    changed.as_object_mut().unwrap().remove("content");
    changed["prompt"] = tag("c", "two").into();
    claude.append(&changed);
    wait_until(|| h.get("/status").json()["receipts"] == "unavailable");
    let status = h.get("/status").json();
    assert!(status["receipts_reason"].as_str().unwrap().contains("changed shape"), "{status}");
    // Long past the grace, "two" is not called undelivered.
    std::thread::sleep(Duration::from_millis(1000));
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(next(&mut sse)["type"], "reply");
    assert!(h.stderr().contains("changed shape"), "a debug line says it");
}

#[test]
fn a_turn_answered_only_in_the_terminal_is_unanswered_and_tool_calls_are_activity() {
    let claude = Claude::new();
    let mut h = claude.host(5000, "");
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    // A turn that replied: nothing unanswered.
    taken(&claude, &h, &mut sse, "first", "c1", "t-1");
    h.call_reply(json!({"chat_id": "c1", "text": "on it"}));
    assert_eq!(next(&mut sse)["type"], "reply");
    claude.calls("mcp__opzero-channel__reply", json!({"chat_id": "c1", "text": "on it"}));
    claude.says("done");
    claude.turn_ends();
    // A turn that only talked in the terminal, after a tool call.
    taken(&claude, &h, &mut sse, "second", "c1", "t-2");
    claude.calls("Bash", json!({"command": "cargo test --workspace\nmore", "description": "Run the tests"}));
    assert_eq!(next(&mut sse), json!({"type": "activity", "tool": "Bash", "summary": "Run the tests"}));
    claude.calls("Bash", json!({"command": "ls -la\nmore"}));
    assert_eq!(next(&mut sse), json!({"type": "activity", "tool": "Bash", "summary": "ls -la"}));
    claude.calls("Read", json!({"file_path": "/src/main.rs", "limit": 5}));
    assert_eq!(next(&mut sse), json!({"type": "activity", "tool": "Read", "summary": "/src/main.rs"}));
    claude.calls("Glob", json!({"pattern": "*.rs"}));
    assert_eq!(next(&mut sse), json!({"type": "activity", "tool": "Glob", "summary": "Glob"}));
    let long = "x".repeat(300);
    claude.calls("Write", json!({"file_path": long, "content": "y".repeat(100_000)}));
    assert_eq!(next(&mut sse)["summary"], "x".repeat(200));
    claude.says("I looked; all 12 tests pass.");
    claude.turn_ends();
    assert_eq!(
        next(&mut sse),
        json!({"type": "unanswered", "chat_id": "c1", "message_id": "t-2", "text": "I looked; all 12 tests pass."})
    );
    // A turn from the terminal has activity, and nothing unanswered.
    let mut typed = claude.line(|v| v["type"] == "user" && v["origin"]["kind"] == "channel");
    let fields = typed.as_object_mut().unwrap();
    fields.remove("isMeta");
    fields.remove("origin");
    typed["message"]["content"] = "fix the lint".into();
    claude.append(&typed);
    claude.calls("Edit", json!({"file_path": "/src/lib.rs", "old_string": "a", "new_string": "b"}));
    assert_eq!(next(&mut sse), json!({"type": "activity", "tool": "Edit", "summary": "/src/lib.rs"}));
    claude.says("edited");
    claude.turn_ends();
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(next(&mut sse)["type"], "reply");
}

#[test]
fn each_part_of_the_mirror_can_be_turned_off() {
    let claude = Claude::new();
    let mut h = Host::spawn_with(Options {
        env: vec![("HOME".into(), claude.home.path().display().to_string())],
        config: Some("[mirror]\nreceipts = false\nactivity = false\nunanswered = false\n".into()),
        ..Options::default()
    });
    h.initialize();
    let status = h.get("/status").json();
    assert_eq!((&status["receipts"], &status["receipts_reason"]), (&json!("unavailable"), &json!("turned off in [mirror]")));
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    inject(&h, "quiet", "c", "q-1");
    claude.enqueue(&tag("c", "quiet"));
    claude.model_sees(&tag("c", "quiet"));
    claude.calls("Bash", json!({"command": "ls"}));
    claude.says("terminal only");
    claude.turn_ends();
    std::thread::sleep(Duration::from_millis(300));
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(next(&mut sse)["type"], "reply");
}

#[test]
fn what_stayed_in_the_terminal_goes_through_the_reply_filters() {
    let claude = Claude::new();
    let redact = filters_support::entry("redact", "redact_secrets", r#"["reply"]"#, "");
    let short = filters_support::entry("short", "max_length", r#"["reply"]"#, "[filter.config]\nreply = { max_chars = 60, action = \"reject\" }");
    let mut h = claude.host(5000, &(redact + &short));
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    taken(&claude, &h, &mut sse, "what is the key?", "c1", "k-1");
    claude.calls("Bash", json!({"command": "export KEY=AKIAABCDEFGHIJKLMNOP"}));
    assert_eq!(next(&mut sse), json!({"type": "activity", "tool": "Bash", "summary": "export KEY=[REDACTED:aws-access-key-id]"}));
    // Rejected by a filter: not published.
    claude.calls("Bash", json!({"command": "x".repeat(100)}));
    claude.says("It is AKIAABCDEFGHIJKLMNOP.");
    claude.turn_ends();
    assert_eq!(
        next(&mut sse),
        json!({"type": "unanswered", "chat_id": "c1", "message_id": "k-1", "text": "It is [REDACTED:aws-access-key-id]."})
    );
    // An answer the filter rejects: not published either.
    taken(&claude, &h, &mut sse, "and now?", "c1", "k-2");
    claude.says(&"a long answer, far too long for the phone, which the filter refuses".repeat(2));
    claude.turn_ends();
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(next(&mut sse)["type"], "reply");
}

#[test]
fn send_waits_for_claude_code_and_tail_shows_what_the_mirror_saw() {
    use std::io::BufRead;
    let claude = Claude::new();
    let h = claude.host(600, "");
    let mut tail = h.tail(&[&h.session.clone()]);
    let mut lines = std::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    // What tail prints, but Claude's state.
    let mut shown = std::iter::from_fn(move || lines.find(|l| l.as_ref().map_or(true, |l| !l.starts_with("claude is "))));
    // Not taken: send fails, saying why.
    let out = h.cli(&["send", &h.session, "anyone?", "--chat-id", "c1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Claude Code did not take this message") && err.contains("opzero-host status"), "{err}");
    h.recv_line();
    let line = shown.next().unwrap().unwrap();
    assert!(line.starts_with("message h-") && line.contains(" [c1] undelivered: Claude Code did not take"), "{line}");
    // Taken: send says so once the enqueue line is there.
    let (bin, home, session) = (support::BIN, h.home.path().to_path_buf(), h.session.clone());
    let send = std::thread::spawn(move || {
        let out = std::process::Command::new(bin)
            .args(["send", &session, "hello", "--chat-id", "c2"])
            .env("OPZERO_HOME", &home)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    });
    h.recv_line();
    claude.enqueue(&tag("c2", "hello"));
    let (ok, said) = send.join().unwrap();
    assert!(ok);
    assert_eq!(said, format!("delivered to {}; Claude Code has it (queued)\n", h.session));
    assert!(shown.next().unwrap().unwrap().ends_with(" [c2] queued"));
    claude.calls("Bash", json!({"command": "make", "description": "Build it"}));
    assert_eq!(shown.next().unwrap().unwrap(), "claude: Bash Build it");
    claude.model_sees(&tag("c2", "hello"));
    assert!(shown.next().unwrap().unwrap().ends_with(" [c2] seen"));
    claude.says("built");
    claude.turn_ends();
    let line = shown.next().unwrap().unwrap();
    assert!(line.starts_with("said in the terminal [c2] (to h-") && line.ends_with("): built"), "{line}");
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn a_session_file_that_names_no_session_id_is_not_followed_anywhere() {
    let claude = Claude::new();
    let file = claude.home.path().join(format!(".claude/sessions/{}.json", std::process::id()));
    let session = json!({"pid": 1, "sessionId": "../../../.ssh/known", "cwd": claude.home.path(), "status": "idle"});
    std::fs::write(&file, session.to_string()).unwrap();
    let mut h = Host::spawn_with(Options {
        env: vec![("HOME".into(), claude.home.path().display().to_string())],
        ..Options::default()
    });
    h.initialize();
    let why = |h: &Host| h.get("/status").json()["receipts_reason"].as_str().unwrap_or_default().to_string();
    wait_until(|| why(&h).contains("which is not a session id"));
    assert_eq!(h.get("/status").json()["receipts"], "unavailable");
    assert!(!h.stderr().contains("following Claude's transcript"), "{}", h.stderr());
}

/// A filter with the `event` hook sees Claude's status change and the
/// receipts, as the phone does.
#[test]
fn an_event_filter_sees_status_changes_and_receipts() {
    let claude = Claude::new();
    let observer = filters_support::entry("obs", "observer", r#"["event"]"#, "");
    let h = claude.host(600, &observer);
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    // Claude goes busy.
    let file = claude.home.path().join(format!(".claude/sessions/{}.json", std::process::id()));
    let mut session: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    session["status"] = "busy".into();
    std::fs::write(&file, session.to_string()).unwrap();
    assert!(h.stderr_shows("status-changed ClaudeState::Busy filter=\"obs\""), "{}", h.stderr());
    // One message taken, one never taken.
    inject(&h, "taken", "c1", "m-1");
    claude.enqueue(&tag("c1", "taken"));
    assert_eq!(next(&mut sse), receipt("m-1", "c1", "queued"));
    inject(&h, "lost", "c1", "m-lost");
    assert_eq!(next(&mut sse)["state"], "undelivered");
    assert!(h.stderr_shows("receipt m-1 chat=c1 Delivery::Queued reason=None filter=\"obs\""), "{}", h.stderr());
    assert!(h.stderr_shows("receipt m-lost chat=c1 Delivery::Undelivered reason=Some("), "{}", h.stderr());
}

/// The `notify` plugin, with ntfy as a local server: a permission prompt,
/// Claude going idle after a turn the phone began, and an undelivered
/// message each give one request, naming the session; past `per_minute`
/// nothing more goes out, and the log says so.
#[test]
fn notify_tells_a_local_ntfy_of_a_prompt_a_finished_phone_turn_and_an_undelivered_message() {
    let ntfy = support::recorder::Recorder::ok();
    let claude = Claude::new();
    let config = format!(
        "[[filter]]\nname = \"notify\"\npath = \"{}\"\nhooks = [\"event\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n\
         [filter.config]\nntfy_url = \"{}\"\nper_minute = 3\nbase_url = \"https://phone.example\"\n",
        filters_support::wasm("notify").display(),
        ntfy.port,
        ntfy.url("/claude-7f3a"),
    );
    let mut h = claude.host(600, &config);
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let cwd = claude.home.path().join("project.d").canonicalize().unwrap().display().to_string();
    let link = format!("https://phone.example/#s={}", h.session);
    // A permission prompt waits.
    let prompt = |id: &str| {
        json!({"jsonrpc": "2.0", "method": "notifications/claude/channel/permission_request",
               "params": {"request_id": id, "tool_name": "Bash", "description": "Run the tests", "input_preview": "{\"command\":\"cargo test\"}"}})
    };
    h.send(prompt("abcde"));
    assert_eq!(next(&mut sse)["type"], "permission_request");
    assert_eq!(
        sent(&ntfy, &h, 1),
        json!({"topic": "claude-7f3a", "title": "mirror: Claude wants to use Bash", "priority": 4, "tags": ["lock"],
               "message": format!("Claude wants to use Bash in mirror ({cwd})\nRun the tests\n{{\"command\":\"cargo test\"}}"),
               "click": link})
    );

    // A turn from the phone: taken, Claude busy, a reply, Claude idle.
    let set_status = |state: &str| {
        let file = claude.home.path().join(format!(".claude/sessions/{}.json", std::process::id()));
        let mut session: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        session["status"] = state.into();
        std::fs::write(&file, session.to_string()).unwrap();
    };
    inject(&h, "run the tests", "c1", "m-1");
    claude.enqueue(&tag("c1", "run the tests"));
    assert_eq!(next(&mut sse), receipt("m-1", "c1", "queued"));
    set_status("busy");
    while without_ts(sse.event().1) != json!({"type": "status", "state": "busy"}) {}
    assert_eq!(support::reply_text(&h.call_reply(json!({"chat_id": "c1", "text": "All 212 tests pass."}))), "sent");
    set_status("idle");
    assert_eq!(
        sent(&ntfy, &h, 2),
        json!({"topic": "claude-7f3a", "title": "mirror: Claude is done", "tags": ["white_check_mark"],
               "message": format!("Claude is done in mirror ({cwd})\nAll 212 tests pass."), "click": link})
    );

    // A message Claude Code never takes.
    inject(&h, "lost", "c1", "m-lost");
    let undelivered = sent(&ntfy, &h, 3);
    assert_eq!(undelivered["title"], "mirror: A message did not reach Claude");
    assert!(undelivered["message"].as_str().unwrap().starts_with(&format!("A message did not reach Claude in mirror ({cwd})\nClaude Code did not take")), "{undelivered}");

    // A fourth within the minute stays here.
    h.send(prompt("fghij"));
    assert!(h.stderr_shows("not sent (3 a minute at most): Claude wants to use Bash"), "{}", h.stderr());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ntfy.got().len(), 3);
    // Nothing else went anywhere: the session's secret never left.
    let secret = h.secret();
    assert!(ntfy.got().iter().all(|r| !r.body.contains(&secret)));
}

/// The `n`th request to `ntfy`, as JSON, once it has come.
fn sent(ntfy: &support::recorder::Recorder, h: &Host, n: usize) -> Value {
    let got = ntfy.wait_for(n, support::WAIT);
    assert_eq!(got.len(), n, "{got:#?}\n{}", h.stderr());
    let last = got.last().unwrap();
    assert_eq!((last.method.as_str(), last.path.as_str()), ("POST", "/"));
    assert_eq!(last.header("content-type"), Some("application/json"));
    serde_json::from_str::<Value>(&last.body).unwrap()
}
