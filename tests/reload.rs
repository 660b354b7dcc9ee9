//! Hot reload through the real binary: the config and a component changed
//! under a running session (in place, by an editor's rename, by SIGHUP),
//! a change that does not load, and what may not change. Claude Code's side
//! of stdio sees only the notifications each test expects: no second
//! `initialize`, nothing else.

mod support;
#[path = "../host/tests/filters_support/mod.rs"]
mod filters_support;

use std::path::Path;
use std::time::Duration;

use filters_support::{entry, wasm, wasm_dir};
use serde_json::{json, Value};
use support::{wait_until, without_ts, Host, Options};

fn host_with(config: String, args: &[&str]) -> Host {
    let mut h = Host::spawn_with(Options {
        config: (!config.is_empty()).then_some(config),
        filter_cache: Some(wasm_dir().join("test-cache")),
        args: args.iter().map(ToString::to_string).collect(),
        ..Options::default()
    });
    h.initialize();
    h
}

fn host(config: String) -> Host {
    host_with(config, &[])
}

/// A max-length filter on injects, cutting at `max_chars` (marker included).
fn max_length(max_chars: &str) -> String {
    entry("short", "max_length", r#"["inject"]"#, &format!("[filter.config]\ninject = {{ max_chars = {max_chars} }}\nmarker = \"...\""))
}

fn config_path(h: &Host) -> std::path::PathBuf {
    h.home.path().join("opzero.toml")
}

/// Saves `text` as an editor does: a new file, renamed over the old one.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `GET /status`'s `config`.
fn config_status(h: &Host) -> Value {
    h.get("/status").json()["config"].clone()
}

fn wait_reloads(h: &Host, n: u64) {
    wait_until(|| config_status(h)["reloads"] == n);
}

/// Injects `content` and returns what reached Claude Code's stdin: the
/// line must be that notification, nothing else.
fn inject(h: &Host, content: &str) -> String {
    let r = h.post("/inject", &json!({"content": content, "chat_id": "c"}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})), "{}", h.stderr());
    let line: Value = serde_json::from_str(&h.recv_line()).unwrap();
    assert_eq!(line["method"], "notifications/claude/channel", "{line}");
    line["params"]["content"].as_str().unwrap().to_string()
}

/// Nothing more reached stdout: no second `initialize`, no stray message.
fn nothing_more_on_stdout(h: &Host) {
    assert_eq!(h.try_recv_line(Duration::from_millis(300)), None);
}

#[test]
fn a_new_max_chars_applies_to_the_next_inject_and_the_session_goes_on() {
    let mut h = host(max_length("12"));
    let status = config_status(&h);
    assert_eq!(
        status,
        json!({"state": "ok", "file": config_path(&h), "watched": true, "filters": ["short"], "loaded_at": status["loaded_at"], "reloads": 0})
    );
    assert_eq!(inject(&h, "hello world, again"), "hello wor...");

    // Written in place, as `echo > file` does.
    std::fs::write(config_path(&h), max_length("8")).unwrap();
    wait_reloads(&h, 1);
    assert_eq!(inject(&h, "hello world, again"), "hello...");
    let status = config_status(&h);
    assert_eq!((&status["state"], &status["filters"]), (&json!("ok"), &json!(["short"])));
    assert!(h.stderr_shows(&format!("reloading: {} changed", config_path(&h).display())), "{}", h.stderr());

    // The same MCP session: it still answers, and nothing was said to
    // Claude Code but the two messages.
    let tools = h.request("tools/list", json!({}));
    assert!(tools["result"]["tools"].as_array().is_some_and(|t| t.len() == 2), "{tools}");
    nothing_more_on_stdout(&h);
}

#[test]
fn a_message_in_the_chain_finishes_on_it_and_the_next_takes_the_new_one() {
    // "sleep" holds the chain until sleepy's deadline (then goes on, open).
    let config = |greeting: &str| {
        entry("sleepy", "sleepy", r#"["inject"]"#, "timeout_ms = 3000\non_error = \"open\"")
            + &entry("hello", "hello_filter", r#"["inject"]"#, &format!("[filter.config]\ngreeting = \"{greeting}\""))
    };
    let h = host(config("Old"));
    let (port, secret) = (h.port(), h.secret());
    let slow = std::thread::spawn(move || {
        let headers = [("X-OPZero-Secret", secret.as_str()), ("Content-Type", "application/json")];
        support::http(port, "POST", "/inject", &headers, Some(br#"{"content":"sleep"}"#)).status
    });
    std::thread::sleep(Duration::from_millis(200));
    save_by_rename(&config_path(&h), &config("New"));
    wait_reloads(&h, 1);
    assert!(!slow.is_finished(), "the first message is still in the old chain");
    let r = h.post("/inject", &json!({"content": "hi"}));
    assert_eq!(r.status, 202);
    assert_eq!(slow.join().unwrap(), 202);
    let contents: Vec<Value> = (0..2).map(|_| h.recv()["params"]["content"].clone()).collect();
    assert_eq!(contents, [json!("Old sleep"), json!("New hi")]);
    nothing_more_on_stdout(&h);
}

#[test]
fn a_reload_that_removes_every_inject_filter_keeps_messages_in_order() {
    let sleepy = entry("sleepy", "sleepy", r#"["inject"]"#, "timeout_ms = 3000\non_error = \"open\"");
    let h = host(sleepy);
    let (port, secret) = (h.port(), h.secret());
    let slow = std::thread::spawn(move || {
        let headers = [("X-OPZero-Secret", secret.as_str()), ("Content-Type", "application/json")];
        support::http(port, "POST", "/inject", &headers, Some(br#"{"content":"sleep"}"#)).status
    });
    std::thread::sleep(Duration::from_millis(200));
    save_by_rename(&config_path(&h), "");
    wait_reloads(&h, 1);
    assert_eq!(config_status(&h)["filters"], json!([]));
    assert!(!slow.is_finished(), "the first message is still in the old chain");
    // No filter runs on injects now, but this one waits its turn.
    let (port, secret) = (h.port(), h.secret());
    let next = std::thread::spawn(move || {
        let headers = [("X-OPZero-Secret", secret.as_str()), ("Content-Type", "application/json")];
        support::http(port, "POST", "/inject", &headers, Some(br#"{"content":"after"}"#)).status
    });
    let contents: Vec<Value> = (0..2).map(|_| h.recv()["params"]["content"].clone()).collect();
    assert_eq!(contents, [json!("sleep"), json!("after")]);
    assert_eq!((slow.join().unwrap(), next.join().unwrap()), (202, 202));
    // Once the queue is empty, injects skip it again.
    assert_eq!(inject(&h, "direct"), "direct");
    nothing_more_on_stdout(&h);
}

#[test]
fn a_broken_config_keeps_the_old_chain_running_and_says_why() {
    let h = host(max_length("12"));
    let path = config_path(&h);
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");

    // A syntax error, saved as an editor saves.
    save_by_rename(&path, &max_length("12").replace("[[filter]]", "[[filter]"));
    let (_, event) = sse.event();
    let errors = event["errors"].as_array().unwrap_or_else(|| panic!("{event}"));
    assert_eq!(without_ts(event.clone())["type"], "config_error");
    assert_eq!(errors.len(), 1, "{event}");
    let error = errors[0].as_str().unwrap();
    assert!(error.starts_with(&format!("{}:1:", path.display())), "{error}");
    let status = config_status(&h);
    assert_eq!((&status["state"], &status["errors"], &status["reloads"]), (&json!("error"), &json!(errors), &json!(0)));
    assert!(status["failed_at"].is_u64(), "{status}");
    assert!(h.stderr_shows(error), "the log names the position too");
    // The chain loaded before still runs.
    assert_eq!(inject(&h, "hello world, again"), "hello wor...");

    // A filter that refuses its config, and one whose component is not there.
    let missing = "[[filter]]\nname = \"gone\"\npath = \"missing.wasm\"\nhooks = [\"reply\"]\n";
    save_by_rename(&path, &(max_length("\"many\"") + missing));
    let (_, event) = sse.event();
    assert_eq!(event["type"], "config_error");
    let errors: Vec<&str> = event["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with(&format!("{}:5:", path.display())), "at [filter.config]: {errors:?}");
    assert!(errors[1].starts_with(&format!("{}:10:8: filter[1].path: ", path.display())), "{errors:?}");
    assert_eq!(config_status(&h)["errors"], json!(errors));
    assert_eq!(inject(&h, "hello world, again"), "hello wor...");
    // `opzero-host status` says it too.
    let out = h.cli(&["status", &h.session]);
    let text = String::from_utf8_lossy(&out.stdout);
    let said = format!("config    {}: its last change did not load; the filters before it run (short)\n  {}\n", path.display(), errors[0]);
    assert!(text.contains(&said), "{text}");

    // Fixed: the new chain takes over, and the state and the phone say so.
    save_by_rename(&path, &max_length("8"));
    wait_reloads(&h, 1);
    assert_eq!(without_ts(sse.event().1), json!({"type": "config_loaded", "filters": ["short"]}));
    let status = config_status(&h);
    assert_eq!(status["state"], "ok");
    assert!(status.get("errors").is_none() && status.get("failed_at").is_none(), "{status}");
    assert_eq!(inject(&h, "hello world, again"), "hello...");
    nothing_more_on_stdout(&h);
}

#[test]
fn a_component_replaced_by_rename_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("filter.wasm");
    std::fs::copy(wasm("panicky"), &component).unwrap();
    let config = format!("[[filter]]\nname = \"swapped\"\npath = \"{}\"\nhooks = [\"inject\"]\n", component.display());
    let h = host(config);
    let key = "the key is AKIAABCDEFGHIJKLMNOP";
    // The panicky test guest passes it as it is.
    assert_eq!(inject(&h, key), key);

    // A build's copy, renamed into place: a new inode under the same name.
    let next = dir.path().join("filter.wasm.new");
    std::fs::copy(wasm("redact_secrets"), &next).unwrap();
    std::fs::rename(&next, &component).unwrap();
    wait_reloads(&h, 1);
    assert_eq!(inject(&h, key), "the key is [REDACTED:aws-access-key-id]");
    assert!(h.stderr_shows(&format!("reloading: {} changed", component.display())), "{}", h.stderr());
    nothing_more_on_stdout(&h);
}

#[test]
fn sighup_reloads_and_no_longer_ends_the_host() {
    let mut h = host(max_length("12"));
    let pid = h.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_reloads(&h, 1);
    assert!(h.stderr_shows("reloading: SIGHUP"));
    assert!(h.is_running());
    assert_eq!(inject(&h, "hello world, again"), "hello wor...");
    nothing_more_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn a_config_that_is_not_a_regular_file_is_not_watched_and_sighup_is_harmless() {
    let mut h = host_with(String::new(), &["--config", "/dev/null"]);
    let status = config_status(&h);
    assert_eq!(
        status,
        json!({"state": "ok", "file": "/dev/null", "watched": false, "filters": [], "loaded_at": status["loaded_at"], "reloads": 0})
    );
    let pid = h.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_reloads(&h, 1);
    assert_eq!(config_status(&h)["state"], "ok");
    h.assert_still_serving();
    nothing_more_on_stdout(&h);
}

#[test]
fn settings_that_cannot_change_live_are_named_and_keep_their_values() {
    let h = host(format!("[limits]\nmax_content_chars = 100\n{}", max_length("12")));
    std::fs::write(config_path(&h), format!("[limits]\nmax_content_chars = 5\n{}", max_length("8"))).unwrap();
    wait_reloads(&h, 1);
    assert!(
        h.stderr_shows("limits.max_content_chars cannot change while the host runs"),
        "{}",
        h.stderr()
    );
    // Still 100 characters allowed; the filters are the new ones.
    assert_eq!(inject(&h, "hello world, again"), "hello...");
    nothing_more_on_stdout(&h);
}

/// After a reload the new chain's event filters observe, and the old
/// chain's stop.
#[test]
fn after_a_reload_the_new_chains_event_filters_take_over() {
    let mut h = host(entry("before", "observer", r#"["event"]"#, ""));
    let mut sse = h.sse("/events", &[]);
    assert_eq!(support::reply_text(&h.call_reply(json!({"chat_id": "c", "text": "one"}))), "sent");
    sse.event();
    assert!(h.stderr_shows("text=\"one\" edit-of=None filter=\"before\""), "{}", h.stderr());

    save_by_rename(&config_path(&h), &entry("after", "observer", r#"["event"]"#, ""));
    wait_reloads(&h, 1);
    assert_eq!(without_ts(sse.event().1), json!({"type": "config_loaded", "filters": ["after"]}));
    assert_eq!(support::reply_text(&h.call_reply(json!({"chat_id": "c", "text": "two"}))), "sent");
    sse.event();
    assert!(h.stderr_shows("observed #1 reply-sent id=3 chat=c text=\"two\" edit-of=None filter=\"after\""), "{}", h.stderr());
    assert!(!h.stderr().contains("text=\"two\" edit-of=None filter=\"before\""), "{}", h.stderr());
}
