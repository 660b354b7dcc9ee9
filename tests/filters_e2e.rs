//! Filter chains through the real binary: real components built from
//! `filters/`, `examples/` and the misbehaving test guests, loaded by
//! `opzero-host serve` from an `opzero.toml`, with this test playing Claude
//! Code on stdio and the phone's server on HTTP.

mod support;
#[path = "../host/tests/filters_support/mod.rs"]
mod filters_support;

use std::time::Duration;

use filters_support::{entry, wasm_dir};
use serde_json::json;
use support::{without_ts, Host, Options};

fn host(config: String) -> Host {
    let mut h = Host::spawn_with(Options {
        config: Some(config),
        filter_cache: Some(wasm_dir().join("test-cache")),
        ..Options::default()
    });
    h.initialize();
    h
}

#[test]
fn an_inject_transformed_by_the_chain_reaches_stdout_changed_in_file_order() {
    let config = entry("hello", "hello_filter", r#"["inject"]"#, "[filter.config]\ngreeting = \"Hi!\"")
        + &entry(
            "short",
            "max_length",
            r#"["inject"]"#,
            "[filter.config]\ninject = { max_chars = 12 }\nmarker = \"...\"",
        );
    let h = host(config);
    let r = h.post("/inject", &json!({"content": "hello world", "chat_id": "c1", "meta": {"user": "ann"}}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    // "Hi! hello world" (hello ran first), then cut to 12 characters, marker included.
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"Hi! hello...","meta":{"chat_id":"c1","user":"ann"}}}"#
    );
}

#[test]
fn a_reply_with_a_fake_key_reaches_sse_redacted() {
    let mut h = host(entry("redact", "redact_secrets", r#"["reply"]"#, ""));
    let mut sse = h.sse("/events", &[]);
    let r = h.call_reply(json!({"chat_id": "c1", "text": "the key is AKIAABCDEFGHIJKLMNOP, keep it safe"}));
    assert_eq!(r["result"]["content"][0]["text"], "sent (id: 1)");
    assert_eq!(
        without_ts(sse.event().1),
        json!({"type": "reply", "chat_id": "c1", "text": "the key is [REDACTED:aws-access-key-id], keep it safe"})
    );
}

#[test]
fn a_permission_request_auto_denied_by_policy_gets_the_verdict_notification() {
    let policy = r#"[filter.config]
allow_tools = ["Read"]
[[filter.config.deny]]
tool = "Bash"
pattern = "rm\\s+-rf"
reason = "no recursive deletes from the phone""#;
    let mut h = host(entry("policy", "permission_policy", r#"["permission"]"#, policy));
    let mut sse = h.sse("/events", &[]);
    let request = |id: &str, tool: &str, preview: &str| {
        json!({"jsonrpc": "2.0", "method": "notifications/claude/channel/permission_request",
               "params": {"request_id": id, "tool_name": tool, "description": "d", "input_preview": preview}})
    };

    h.send(request("abcde", "Bash", r#"{"command":"rm -rf /tmp/x"}"#));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel/permission","params":{"behavior":"deny","request_id":"abcde"}}"#
    );
    let (_, resolved) = sse.event();
    assert_eq!(
        without_ts(resolved),
        json!({"type": "permission_resolved", "request_id": "abcde", "behavior": "deny", "by": "filter:policy", "reason": "no recursive deletes from the phone"})
    );

    h.send(request("fghij", "Read", r#"{"file_path":"a.txt"}"#));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel/permission","params":{"behavior":"allow","request_id":"fghij"}}"#
    );
    assert_eq!(sse.event().1["by"], "filter:policy");

    // Anything else still goes to the phone.
    h.send(request("kmnop", "Bash", r#"{"command":"ls"}"#));
    assert_eq!(
        without_ts(sse.event().1),
        json!({"type": "permission_request", "request_id": "kmnop", "tool_name": "Bash", "description": "d", "input_preview": "{\"command\":\"ls\"}"})
    );
    assert_eq!(h.try_recv_line(Duration::from_millis(100)), None);
    // Decided prompts are not pending; the relayed one is.
    let pending = h.get("/permissions").json();
    assert_eq!(pending["pending"].as_array().unwrap().len(), 1);
    assert_eq!(pending["pending"][0]["request_id"], "kmnop");
}

#[test]
fn drop_and_reject_answer_the_phone_and_reach_nothing() {
    let h = host(
        entry("allow", "sender_allowlist", r#"["inject"]"#, "[filter.config]\nusers = [\"ann\"]\naction = \"drop\"")
            + &entry("loud", "hello_filter", r#"["inject"]"#, "[filter.config]\ngreeting = \"Hi!\"\nno_shouting = true"),
    );
    let r = h.post("/inject", &json!({"content": "hi", "meta": {"user": "bob"}}));
    let (status, body) = r.pair();
    assert_eq!(status, 202);
    assert_eq!(body["ok"], true);
    assert_eq!(body["delivered"], false);
    assert_eq!(body["filter"], "allow");
    assert!(body["reason"].as_str().unwrap().contains("bob"), "{body}");

    let r = h.post("/inject", &json!({"content": "HELLO", "meta": {"user": "ann"}}));
    assert_eq!(r.pair(), (422, json!({"error": "please don't shout", "filter": "loud"})));
    assert_eq!(h.try_recv_line(Duration::from_millis(200)), None, "nothing reached Claude");

    h.post("/inject", &json!({"content": "hello", "meta": {"user": "ann"}}));
    assert_eq!(h.recv()["params"]["content"], "Hi! hello");
}

#[test]
fn a_reply_dropped_or_rejected_by_a_filter_tells_claude_and_sends_nothing() {
    let mut h = host(entry(
        "short",
        "max_length",
        r#"["reply"]"#,
        "[filter.config]\nreply = { max_chars = 5, action = \"reject\" }",
    ));
    let mut sse = h.sse("/events", &[]);
    let r = h.call_reply(json!({"chat_id": "c", "text": "far too long"}));
    assert_eq!(r["result"]["isError"], true);
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("not delivered: filter \"short\" rejected the reply: "), "{text}");
    h.call_reply(json!({"chat_id": "c", "text": "ok"}));
    // The rejected reply never reached SSE: the first event is the next one.
    let (id, event) = sse.event();
    assert_eq!((id, without_ts(event)), (Some(1), json!({"type": "reply", "chat_id": "c", "text": "ok"})));
}

#[test]
fn a_failing_filter_is_a_named_502_when_closed_and_skipped_when_open() {
    let h = host(
        entry("spin", "loop_forever", r#"["inject"]"#, "timeout_ms = 20")
            + &entry("boom", "panicky", r#"["inject"]"#, ""),
    );
    for _ in 0..2 {
        let r = h.post("/inject", &json!({"content": "loop"}));
        assert_eq!(
            r.pair(),
            (502, json!({"error": "filter \"spin\" timed out after 20 ms", "filter": "spin"}))
        );
    }
    let (status, body) = h.post("/inject", &json!({"content": "panic"})).pair();
    assert_eq!((status, &body["filter"]), (502, &json!("boom")));
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("filter \"boom\" panicked: boom: the filter gave up on \"panic\""), "{error}");
    assert!(h.stderr_shows("timed out after 20 ms") && h.stderr_shows("boom: the filter gave up"));
    // Fresh instances took over: the host and both filters still serve.
    let r = h.post("/inject", &json!({"content": "fine"}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(h.recv()["params"]["content"], "fine");
    assert_eq!(h.try_recv_line(Duration::from_millis(100)), None, "failed injects reached nothing");

    let h = host(entry("spin", "loop_forever", r#"["inject"]"#, "timeout_ms = 20\non_error = \"open\""));
    let r = h.post("/inject", &json!({"content": "loop"}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(h.recv()["params"]["content"], "loop");
    assert!(h.stderr_shows("timed out after 20 ms"));
}

#[test]
fn serve_refuses_a_chain_that_does_not_load_with_positioned_errors() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("opzero.toml");
    let text = entry("wrong", "wrong_world", r#"["inject"]"#, "")
        + "[[filter]]\nname = \"gone\"\npath = \"missing.wasm\"\nhooks = [\"reply\"]\n";
    std::fs::write(&config, &text).unwrap();
    // stdin stays open, as Claude Code keeps it: the host must end itself.
    let mut child = std::process::Command::new(support::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("OPZERO_HOME", home.path())
        .env("OPZERO_CHANNEL_SESSION_ID", support::new_session_id())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _claude = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let p = config.display();
    assert!(err.contains(&format!("{p}:3:8: filter[0].path: ")) && err.contains("wasi:cli/run"), "{err}");
    assert!(err.contains(&format!("{p}:8:8: filter[1].path: ")), "{err}");
    assert!(!home.path().join("channels").exists());

    // validate says the same, and exits 2.
    let out = std::process::Command::new(support::BIN).arg("validate").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{p}:8:8: filter[1].path: ")));
}

/// Filter calls run on the host's own thread and yield at every epoch tick:
/// one spinning to its deadline holds up nothing else.
#[test]
fn a_filter_spinning_to_its_deadline_stalls_nothing_else() {
    let mut h = host(entry("spin", "loop_forever", r#"["inject"]"#, "timeout_ms = 3000"));
    let (port, secret) = (h.port(), h.secret());
    let spinning = std::thread::spawn(move || {
        let body = json!({"content": "loop"}).to_string();
        support::http(port, "POST", "/inject", &[("X-OPZero-Secret", &secret)], Some(body.as_bytes())).pair()
    });
    std::thread::sleep(Duration::from_millis(300)); // the guest is spinning now
    let started = std::time::Instant::now();
    assert_eq!(h.get("/status").status, 200);
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let r = h.call_reply(json!({"chat_id": "c", "text": "while it spins"}));
    assert_eq!(support::reply_text(&r), "sent");
    assert_eq!(sse.event().1["text"], "while it spins");
    let took = started.elapsed();
    assert!(!spinning.is_finished(), "the spinning call ended early");
    assert!(took < Duration::from_millis(1500), "the host answered others only after {took:?}");
    assert_eq!(
        spinning.join().unwrap(),
        (502, json!({"error": "filter \"spin\" timed out after 3000 ms", "filter": "spin"}))
    );
}

/// A client that hangs up while its inject is in a filter does not cut the
/// guest off mid-call: the filter and the host go on serving.
#[test]
fn a_client_hanging_up_mid_filter_leaves_the_filter_whole() {
    let h = host(entry("spin", "loop_forever", r#"["inject"]"#, "timeout_ms = 500"));
    let (port, secret) = (h.port(), h.secret());
    for framing in ["Content-Length: 18", "Transfer-Encoding: chunked"] {
        let body = if framing.starts_with("Content") { "{\"content\":\"loop\"}".to_string() } else { "12\r\n{\"content\":\"loop\"}\r\n0\r\n\r\n".to_string() };
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::Write;
        write!(s, "POST /inject HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\n{framing}\r\n\r\n{body}").unwrap();
        std::thread::sleep(Duration::from_millis(100)); // the guest is spinning
        support::reset(s);
        std::thread::sleep(Duration::from_millis(700)); // past its deadline
        let r = h.post("/inject", &json!({"content": "after"}));
        assert_eq!(r.pair_host_id(), (202, json!({"ok": true})), "{framing}\n{}", h.stderr());
        assert_eq!(h.recv()["params"]["content"], "after");
    }
    assert!(!h.stderr().contains("panicked"), "{}", h.stderr());
}

/// Replies Claude sends at once go through the reply filters and reach the
/// phone in the order they were sent.
#[test]
fn replies_sent_at_once_through_filters_arrive_in_order() {
    let mut h = host(
        entry("redact", "redact_secrets", r#"["reply"]"#, "")
            + &entry("short", "max_length", r#"["reply"]"#, "[filter.config]\nreply = { max_chars = 1000 }"),
    );
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    hundred_replies_arrive_in_order(&mut h, &mut sse);
}

/// An edit goes through the reply filters: changed like a reply, and a
/// drop or reject leaves the message as it was.
#[test]
fn edits_go_through_the_reply_filters() {
    let mut h = host(
        entry("redact", "redact_secrets", r#"["reply"]"#, "")
            + &entry("short", "max_length", r#"["reply"]"#, "[filter.config]\nreply = { max_chars = 40, action = \"reject\" }"),
    );
    let mut sse = h.sse("/events", &[]);
    assert_eq!(support::reply_text(&h.call_reply(json!({"chat_id": "c", "text": "working on it"}))), "sent");
    sse.event();
    let edit = |h: &mut Host, text: &str| {
        h.request("tools/call", json!({"name": "edit_message", "arguments": {"chat_id": "c", "message_id": 1, "text": text}}))
    };
    let r = edit(&mut h, "key AKIAABCDEFGHIJKLMNOP");
    assert_eq!(r["result"]["content"][0]["text"], "edited (id: 1)");
    let (_, data) = sse.event();
    assert_eq!((data["type"].as_str(), data["message_id"].as_u64()), (Some("edit"), Some(1)));
    assert!(!data["text"].as_str().unwrap().contains("AKIAABCDEFGHIJKLMNOP"), "{data}");
    let r = edit(&mut h, &"x".repeat(100));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(support::reply_text(&r).starts_with("not delivered: filter \"short\" rejected the edit"), "{r}");
    h.call_reply(json!({"chat_id": "c", "text": "after"}));
    assert_eq!(sse.event().1["text"], "after", "the rejected edit published nothing");
}

/// Whatever is in flight, `serve` ends within 2 s of SIGTERM, SIGINT or the
/// end of stdin: here an inject whose filter spins for 10 s, and a reply
/// whose answer Claude Code is not reading.
#[test]
fn serve_ends_within_two_seconds_with_a_call_stuck_in_flight() {
    for how in ["SIGTERM", "SIGINT", "stdin EOF"] {
        let mut h = host(entry("spin", "loop_forever", r#"["inject"]"#, "timeout_ms = 10000"));
        let (port, secret) = (h.port(), h.secret());
        let stuck = std::thread::spawn(move || {
            let body = json!({"content": "loop"}).to_string();
            support::http(port, "POST", "/inject", &[("X-OPZero-Secret", &secret)], Some(body.as_bytes())).status
        });
        h.pause_stdout();
        h.send(json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                      "params": {"name": "reply", "arguments": {"chat_id": "c", "text": "x".repeat(1 << 20)}}}));
        std::thread::sleep(Duration::from_millis(300)); // the guest is spinning now
        assert!(!stuck.is_finished(), "{how}: the inject was not stuck");
        let started = std::time::Instant::now();
        match how {
            "SIGTERM" => h.signal(libc::SIGTERM),
            "SIGINT" => h.signal(libc::SIGINT),
            _ => h.close_stdin(),
        }
        let exited = h.wait_exit(Duration::from_secs(2));
        assert!(exited.is_some(), "{how}: still running after {:?}", started.elapsed());
        assert!(!h.discovery_path().exists(), "{how}: the discovery file is gone");
    }
}

/// A component built against opzero:filter@0.1.0 before any later WIT
/// existed (host/testdata/filter-0.1.0/README.md): it keeps loading and
/// deciding, byte for byte as it did.
#[test]
fn a_component_built_for_wit_0_1_0_keeps_loading() {
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/filter-0.1.0/max_length.wasm");
    let config = format!(
        "[[filter]]\nname = \"old\"\npath = {:?}\nhooks = [\"inject\"]\n[filter.config]\ninject = {{ max_chars = 5 }}\nmarker = \"~\"\n",
        wasm.display().to_string()
    );
    let h = host(config);
    let r = h.post("/inject", &json!({"content": "hello world", "chat_id": "c1"}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"hell~","meta":{"chat_id":"c1"}}}"#
    );
}

/// The pinned 0.1.0 component's `[[filter]]` entry.
fn pinned_0_1(name: &str, hooks: &str, config: &str) -> String {
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/filter-0.1.0/max_length.wasm");
    format!("[[filter]]\nname = \"{name}\"\npath = {:?}\nhooks = {hooks}\n{config}\n", wasm.display().to_string())
}

/// The lines of the host's stderr that hold `needle`, in order.
fn lines_with(h: &Host, needle: &str) -> Vec<String> {
    h.stderr().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

#[test]
fn a_0_1_and_a_0_2_component_load_side_by_side_in_one_chain() {
    let config = pinned_0_1("old", r#"["inject"]"#, "[filter.config]\ninject = { max_chars = 5 }\nmarker = \"~\"")
        + &entry("hello", "hello_filter", r#"["inject"]"#, "[filter.config]\ngreeting = \"Hi!\"");
    let h = host(config);
    let r = h.post("/inject", &json!({"content": "hello world", "chat_id": "c1"}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"Hi! hell~","meta":{"chat_id":"c1"}}}"#
    );
}

#[test]
fn files_reach_an_inject_filter_as_name_type_and_size() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    // A 0.1.0 filter first: it sees no files, and they get past it whole.
    let config = pinned_0_1("old", r#"["inject"]"#, "[filter.config]\ninject = { max_chars = 100 }")
        + &entry("gate", "file_gate", r#"["inject"]"#, "[filter.config]\nrefuse_mime = \"image/\"\nmax_bytes = 100");
    let h = host(config);
    let r = h.post(
        "/inject",
        &json!({"content": "look", "files": [{"name": "cat.png", "mime": "image/png", "data": b64(b"\x89PNG")}]}),
    );
    assert_eq!(r.pair(), (422, json!({"error": "cat.png is image/png: not taken here", "filter": "gate"})));
    let r = h.post("/inject", &json!({"content": "read", "files": [{"name": "big.txt", "data": b64(&[b'x'; 101])}]}));
    assert_eq!(r.pair(), (422, json!({"error": "big.txt is 101 bytes, more than 100", "filter": "gate"})));
    assert_eq!(h.try_recv_line(Duration::from_millis(100)), None, "nothing reached Claude");
    let r = h.post("/inject", &json!({"content": "read", "files": [{"name": "notes.txt", "data": b64(b"hi")}]}));
    assert_eq!(r.status, 202);
    let delivered = h.recv();
    assert!(delivered["params"]["meta"]["file_path"].as_str().unwrap().ends_with("notes.txt"), "{delivered}");
    assert!(h.stderr_shows("file notes.txt text/plain 2 filter=\"gate\""), "{}", h.stderr());
}

#[test]
fn an_event_filter_sees_replies_and_permission_prompts_and_who_answered_them() {
    let policy = "[filter.config]\n[[filter.config.deny]]\ntool = \"Bash\"\npattern = \"rm -rf\"\nreason = \"not from the phone\"";
    let mut h = host(
        entry("obs", "observer", r#"["event"]"#, "")
            + &entry("policy", "permission_policy", r#"["permission"]"#, policy),
    );
    let mut sse = h.sse("/events", &[]);
    assert_eq!(support::reply_text(&h.call_reply(json!({"chat_id": "c1", "text": "hi"}))), "sent");
    sse.event();
    h.request("tools/call", json!({"name": "edit_message", "arguments": {"chat_id": "c1", "message_id": 1, "text": "hi!"}}));
    sse.event();
    let request = |id: &str, preview: &str| {
        json!({"jsonrpc": "2.0", "method": "notifications/claude/channel/permission_request",
               "params": {"request_id": id, "tool_name": "Bash", "description": "d", "input_preview": preview}})
    };
    h.send(request("abcde", r#"{"command":"rm -rf /"}"#));
    h.recv_line();
    sse.event();
    h.send(request("fghij", r#"{"command":"ls"}"#));
    sse.event();
    assert_eq!(h.post("/permission", &json!({"request_id": "fghij", "behavior": "allow"})).status, 202);
    h.recv_line();
    sse.event();

    assert!(h.stderr_shows("observed #5 "), "{}", h.stderr());
    let observed: Vec<String> = lines_with(&h, "observed #")
        .iter()
        .map(|l| l.split_once("observed #").unwrap().1.trim_end_matches(" filter=\"obs\"").to_string())
        .collect();
    assert_eq!(
        observed,
        [
            r#"1 reply-sent id=1 chat=c1 text="hi" edit-of=None"#,
            r#"2 reply-sent id=2 chat=c1 text="hi!" edit-of=Some(1)"#,
            r#"3 permission-resolved abcde PermissionOutcome::Deny by=filter:policy reason=Some("not from the phone")"#,
            "4 permission-relayed fghij Bash",
            "5 permission-resolved fghij PermissionOutcome::Allow by=remote reason=None",
        ]
    );
}

/// An observer that sleeps to its deadline on every event: replies and
/// injects (its own inject hook's included) go on meanwhile, in order; the
/// events it has no room for are dropped, and counted in the log.
#[test]
fn a_slow_event_filter_holds_up_no_message_and_its_overflow_is_counted() {
    let mut h = host(entry(
        "slow",
        "observer",
        r#"["inject", "event"]"#,
        "event_timeout_ms = 3000\n[filter.config]\nsleep_ms = 60000",
    ));
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    hundred_replies_arrive_in_order(&mut h, &mut sse);
    let r = h.post("/inject", &json!({"content": "meanwhile"}));
    assert_eq!(r.status, 202);
    // After the 100 tool results.
    let delivered = std::iter::repeat_with(|| h.recv()).find(|m| m["method"] == "notifications/claude/channel").unwrap();
    assert_eq!(delivered["params"]["content"], "meanwhile");
    // All of that while the observer was still in its first call.
    assert!(h.stderr_shows("observed #1 reply-sent id="), "{}", h.stderr());
    assert!(!h.stderr().contains("timed out after 3000 ms"), "{}", h.stderr());

    // Its first call times out; by then its queue held 64 of the other
    // events, and the rest were dropped: 35 (36 if the burst outran its
    // first take).
    assert!(h.stderr_shows("timed out after 3000 ms; on-event missed event "), "{}", h.stderr());
    assert!(h.stderr_shows("events dropped: its queue of 64 was full (on-event is too slow)"), "{}", h.stderr());
    let line = lines_with(&h, "events dropped: its queue of 64")[0].clone();
    let dropped: u64 = line.split(" events dropped").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!((35..=36).contains(&dropped), "{line}");
}

/// Claude sends 100 replies at once (one write); the phone gets them all, in
/// order.
fn hundred_replies_arrive_in_order(h: &mut Host, sse: &mut support::Sse) {
    let mut burst = String::new();
    for i in 0..100 {
        let call = json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "tools/call",
            "params": {"name": "reply", "arguments": {"chat_id": "c", "text": format!("reply {i}")}}});
        burst.push_str(&format!("{call}\n"));
    }
    h.write_raw(burst.as_bytes());
    let texts: Vec<String> = sse.events(100).into_iter().map(|(_, e)| e["text"].as_str().unwrap().to_string()).collect();
    let want: Vec<String> = (0..100).map(|i| format!("reply {i}")).collect();
    assert_eq!(texts, want);
}
