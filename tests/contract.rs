//! CONTRACT.md, byte for byte where it gives bytes: the real binary, spawned
//! as Claude Code spawns it, with this test playing Claude Code on stdio and
//! the opzero-claude server on loopback HTTP.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{mode, without_ts, Host, Options};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn initialize_declares_the_channel_capabilities_and_protocol() {
    let mut h = Host::spawn();
    let r = h.initialize_request();
    let result = &r["result"];
    let instructions = result["instructions"].as_str().unwrap();
    // The source is `plugin:...` when the host comes from a plugin: the
    // instructions must not name one.
    assert!(instructions.contains("<channel source=\"...\" chat_id=") && !instructions.contains("opzero-channel"));
    assert!(instructions.contains("reply"));
    assert!(instructions.chars().count() < 2048);
    assert_eq!(
        r,
        json!({
            "jsonrpc": "2.0",
            "id": 1,
            "result": {
                "protocolVersion": "2025-11-25",
                "capabilities": {
                    "experimental": {"claude/channel": {}, "claude/channel/permission": {}},
                    "tools": {}
                },
                "serverInfo": {"name": "opzero-channel", "version": VERSION},
                "instructions": instructions
            }
        })
    );
}

#[test]
fn a_newer_protocol_offer_settles_on_2025_11_25() {
    let mut h = Host::spawn();
    // Claude Code 2.1.x offers the newest revision it knows first.
    let r = h.request(
        "initialize",
        json!({"protocolVersion": "2026-07-28", "capabilities": {}, "clientInfo": {"name": "claude-code", "version": "2.1.328"}}),
    );
    assert_eq!(r["result"]["protocolVersion"], "2025-11-25", "{r}");
}

#[test]
fn the_reply_tool_is_listed_with_both_arguments_required() {
    let mut h = Host::spawn();
    h.initialize();
    let r = h.request("tools/list", json!({}));
    let tools = r["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["name"], "reply");
    assert_eq!(tools[1]["name"], "edit_message");
    assert_eq!(tools[1]["inputSchema"]["required"], json!(["chat_id", "message_id", "text"]));
    assert_eq!(tools[1]["inputSchema"]["properties"]["message_id"]["type"], "integer");
    assert_eq!(tools[0]["inputSchema"]["type"], "object");
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["chat_id", "text"]));
    assert_eq!(tools[0]["inputSchema"]["properties"]["chat_id"]["type"], "string");
    assert_eq!(tools[0]["inputSchema"]["properties"]["text"]["type"], "string");
    // The schemas as the host listed them before they were derived (issue
    // 19): schemars adds nothing Claude was never shown.
    let chat_id = json!({"type": "string", "description": "The chat_id attribute of the <channel> message you are answering."});
    assert_eq!(
        tools[0]["inputSchema"],
        json!({
            "type": "object",
            "properties": {
                "chat_id": chat_id,
                "text": {"type": "string", "description": "The answer the remote user will read on their phone."},
                "files": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Absolute paths of files to send with it (optional). Each is copied as it is now."
                }
            },
            "required": ["chat_id", "text"]
        })
    );
    assert_eq!(
        tools[1]["inputSchema"],
        json!({
            "type": "object",
            "properties": {
                "chat_id": chat_id,
                "message_id": {"type": "integer", "description": "The id reply answered with."},
                "text": {"type": "string", "description": "The message's new text."}
            },
            "required": ["chat_id", "message_id", "text"]
        })
    );
}

#[test]
fn inject_emits_the_exact_channel_notification() {
    let mut h = Host::spawn();
    h.initialize();
    let r = h.post("/inject", &json!({"content": "hello there", "chat_id": "c-1", "meta": {"user": "ann"}}));
    // CONTRACT.md pins status 202 and `"ok": true`; `message_id` (the
    // host's own here, as the phone gave none) is an addition (issue 20).
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let id = r.json()["message_id"].as_str().unwrap().to_string();
    assert_eq!((r.status, r.body.as_slice()), (202, format!(r#"{{"message_id":"{id}","ok":true}}"#).as_bytes()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"hello there","meta":{"chat_id":"c-1","user":"ann"}}}"#
    );
}

#[test]
fn meta_follows_the_contract_rules() {
    let mut h = Host::spawn();
    h.initialize();
    let r = h.post(
        "/inject",
        &json!({"content": "x", "meta": {"ok_key": "v", "bad-key": "v", "sp ace": "v", "n": 42, "b": false, "nil": null, "chat_id": "from-meta"}}),
    );
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true, "dropped_meta": ["bad-key", "sp ace"]})));
    let n = h.recv();
    // No chat_id given: the default wins even over meta.chat_id.
    assert_eq!(n["params"]["meta"], json!({"chat_id": "inject", "ok_key": "v", "n": "42", "b": "false"}));

    h.post("/inject", &json!({"content": "y", "chat_id": "top", "meta": {"chat_id": "from-meta"}}));
    assert_eq!(h.recv()["params"]["meta"], json!({"chat_id": "top"}));
}

#[test]
fn reply_goes_out_on_sse_with_the_exact_lines() {
    let mut h = Host::spawn();
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.status, 200);
    assert!(sse.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "text/event-stream"));
    assert_eq!(sse.line(), ": connected");
    assert_eq!(sse.line(), "");

    let r = h.call_reply(json!({"chat_id": "c-1", "text": "hi from claude"}));
    assert_eq!(
        r["result"],
        json!({"content": [{"type": "text", "text": "sent (id: 1)"}], "isError": false})
    );
    assert_eq!(sse.line(), "id: 1");
    let data = sse.line();
    let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
    let ts = v["ts"].as_u64().unwrap();
    assert_eq!(
        data,
        format!(r#"data: {{"chat_id":"c-1","text":"hi from claude","ts":{ts},"type":"reply"}}"#)
    );
    assert_eq!(sse.line(), "");

    // /sse is the same stream under its other name.
    let mut sse2 = h.sse("/sse", &[]);
    assert_eq!(sse2.line(), ": connected");
    h.call_reply(json!({"chat_id": "c-2", "text": "again"}));
    assert_eq!(without_ts(sse2.event().1), json!({"type": "reply", "chat_id": "c-2", "text": "again"}));
    assert_eq!(without_ts(sse.event().1), json!({"type": "reply", "chat_id": "c-2", "text": "again"}));
}

#[test]
fn reply_with_missing_or_empty_arguments_is_a_tool_error_naming_the_argument() {
    let mut h = Host::spawn();
    h.initialize();
    for (args, needle) in [
        (json!({"text": "t"}), "\"chat_id\" is required"),
        (json!({"chat_id": "c"}), "\"text\" is required"),
        (json!({"chat_id": "", "text": "t"}), "\"chat_id\" must not be empty"),
        (json!({"chat_id": "c", "text": ""}), "\"text\" must not be empty"),
        (json!({"chat_id": 5, "text": "t"}), "\"chat_id\" must be a string"),
        (json!({"chat_id": "c", "text": "t", "files": "a.txt"}), "\"files\" must be an array of absolute paths"),
    ] {
        let r = h.call_reply(args.clone());
        assert_eq!(r["result"]["isError"], true, "{args}: {r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(needle), "{args}: {text}");
    }
}

#[test]
fn permission_relay_round_trip() {
    let mut h = Host::spawn();
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    h.send(json!({
        "jsonrpc": "2.0",
        "method": "notifications/claude/channel/permission_request",
        "params": {"request_id": "abcde", "tool_name": "Bash", "description": "List files", "input_preview": "{\"command\":\"ls\"}"}
    }));
    assert_eq!(
        without_ts(sse.event().1),
        json!({"type": "permission_request", "request_id": "abcde", "tool_name": "Bash", "description": "List files", "input_preview": "{\"command\":\"ls\"}"})
    );
    let pending = h.get("/permissions").json();
    assert_eq!(pending["pending"][0]["request_id"], "abcde");

    let r = h.post("/permission", &json!({"request_id": "abcde", "behavior": "allow"}));
    assert_eq!(r.pair(), (202, json!({"ok": true})));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel/permission","params":{"behavior":"allow","request_id":"abcde"}}"#
    );
    assert_eq!(
        without_ts(sse.event().1),
        json!({"type": "permission_resolved", "request_id": "abcde", "behavior": "allow", "by": "remote"})
    );
}

#[test]
fn every_error_row_of_the_contract() {
    let mut h = Host::spawn();
    h.initialize();
    let secret = h.secret();
    let bearer = format!("Bearer {secret}");

    // Every route but /status needs the secret.
    for (method, path) in [
        ("POST", "/inject"),
        ("GET", "/events"),
        ("GET", "/sse"),
        ("POST", "/permission"),
        ("GET", "/permissions"),
    ] {
        for headers in [
            vec![],
            vec![("X-OPZero-Secret", "wrong")],
            vec![("X-OPZero-Secret", &secret[..63])],
            vec![("Authorization", "Bearer nope")],
            vec![("Authorization", secret.as_str())],
        ] {
            let r = h.http(method, path, &headers, Some(b"{}"));
            assert_eq!(r.pair(), (403, json!({"error": "forbidden"})), "{method} {path} {headers:?}");
        }
    }
    // Bearer is accepted as well as the header.
    let r = h.http(
        "POST",
        "/inject",
        &[("Authorization", &bearer)],
        Some(br#"{"content":"via bearer"}"#),
    );
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(h.recv()["params"]["content"], "via bearer");

    let auth = [("X-OPZero-Secret", secret.as_str())];
    let post = |path: &str, body: &[u8]| h.http("POST", path, &auth, Some(body));
    assert_eq!(post("/inject", b"{not json").pair(), (400, json!({"error": "invalid json body"})));
    assert_eq!(post("/inject", b"").pair(), (400, json!({"error": "invalid json body"})));
    for body in [&b"{}"[..], br#"{"content":""}"#, br#"{"content":5}"#, br#"{"chat_id":"c"}"#] {
        assert_eq!(post("/inject", body).pair(), (400, json!({"error": "content required"})), "{body:?}");
    }
    let usage = json!({"error": "request_id and behavior (allow|deny) required"});
    assert_eq!(post("/permission", b"nope").pair(), (400, json!({"error": "invalid json body"})));
    for body in [
        &b"{}"[..],
        br#"{"request_id":"abcde"}"#,
        br#"{"request_id":"abcde","behavior":"maybe"}"#,
        br#"{"behavior":"allow"}"#,
    ] {
        assert_eq!(post("/permission", body).pair(), (400, usage.clone()), "{body:?}");
    }
    for (method, path) in [("GET", "/nope"), ("POST", "/status/x"), ("GET", "/index.html")] {
        assert_eq!(h.http(method, path, &auth, None).pair(), (404, json!({"error": "not found"})));
    }
    // Nothing from the errors reached Claude.
    assert_eq!(h.try_recv_line(Duration::from_millis(200)), None);
}

#[test]
fn status_needs_no_secret_and_never_shows_it() {
    let h = Host::spawn();
    let r = h.http("GET", "/status", &[], None);
    let pid = h.child.id();
    assert_eq!(
        r.pair(),
        (200, json!({"ok": true, "sessionId": h.session, "pid": pid, "version": VERSION}))
    );
    assert!(!String::from_utf8_lossy(&r.body).contains(&h.secret()));
}

#[test]
fn discovery_file_has_every_field_and_is_private() {
    let h = Host::spawn();
    let d = h.discovery();
    let secret = d["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let created = d["createdAt"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(created <= now && now - created < 60_000);
    assert_eq!(
        d,
        json!({"pid": h.child.id(), "sessionId": h.session, "port": d["port"], "secret": secret, "createdAt": created, "version": VERSION})
    );
    assert!(d["port"].as_u64().unwrap() > 0);
    assert_eq!(mode(&h.discovery_path()), 0o600);
    assert_eq!(mode(&h.channels_dir()), 0o700);
    // Nothing else (no temp file) is left beside it.
    let names: Vec<_> = std::fs::read_dir(h.channels_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // And the port it names is live.
    assert_eq!(h.http("GET", "/status", &[], None).status, 200);
    // A new secret at every start.
    let other = Host::spawn();
    assert_ne!(other.secret(), secret);
}

#[test]
fn discovery_is_private_whatever_the_umask_and_tightens_an_existing_dir() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("channels");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let session = support::new_session_id();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec {} serve", support::BIN))
        .env("OPZERO_HOME", home.path())
        .env("OPZERO_CHANNEL_SESSION_ID", &session)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let file = dir.join(format!("{session}.json"));
    let deadline = Instant::now() + support::WAIT;
    while !file.exists() {
        assert!(Instant::now() < deadline, "no discovery file");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir), 0o700);
    drop(child.stdin.take());
    child.wait().unwrap();
}

fn assert_cleans_up(h: &mut Host, what: &str, end: impl FnOnce(&mut Host)) {
    h.initialize();
    let path = h.discovery_path();
    assert!(path.exists());
    let _sse = h.sse("/events", &[]); // an open stream must not hold the exit
    let started = Instant::now();
    end(h);
    let status = h.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| panic!("still running 5 s after {what}"));
    eprintln!("{what}: exited in {:?}", started.elapsed());
    assert!(status.success(), "{what}: {status:?}\n{}", h.stderr());
    assert!(!path.exists(), "{what}: discovery file left behind");
}

#[test]
fn cleanup_on_stdin_eof() {
    let mut h = Host::spawn();
    assert_cleans_up(&mut h, "stdin EOF", |h| h.close_stdin());
}

#[test]
fn cleanup_on_sigterm() {
    let mut h = Host::spawn();
    assert_cleans_up(&mut h, "SIGTERM", |h| h.signal(libc::SIGTERM));
}

#[test]
fn cleanup_on_sigint() {
    let mut h = Host::spawn();
    assert_cleans_up(&mut h, "SIGINT", |h| h.signal(libc::SIGINT));
}

#[test]
fn cleanup_on_eof_before_initialize() {
    let mut h = Host::spawn();
    let path = h.discovery_path();
    h.discovery();
    h.close_stdin();
    assert!(h.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()));
    assert!(!path.exists());
}

#[test]
fn injects_before_initialization_are_held_then_delivered_in_order() {
    let mut h = Host::spawn();
    for i in 0..5 {
        let r = h.post("/inject", &json!({"content": format!("early {i}")}));
        assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    }
    // Nothing may reach stdout before the handshake.
    assert_eq!(h.try_recv_line(Duration::from_millis(200)), None);
    let r = h.initialize_request();
    assert_eq!(r["result"]["protocolVersion"], "2025-11-25");
    // Still held: Claude Code drops notifications before `initialized`.
    assert_eq!(h.try_recv_line(Duration::from_millis(200)), None);
    h.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    for i in 0..5 {
        assert_eq!(h.recv()["params"]["content"], format!("early {i}"));
    }
    // After initialization the 202 means "on stdout".
    let r = h.post("/inject", &json!({"content": "late"}));
    assert_eq!(r.status, 202);
    assert_eq!(h.recv()["params"]["content"], "late");
}

#[test]
fn concurrent_injects_keep_each_senders_order_and_lose_nothing() {
    let mut h = Host::spawn();
    h.initialize();
    let (port, secret) = (h.port(), h.secret());
    const SENDERS: usize = 8;
    const EACH: usize = 40;
    let threads: Vec<_> = (0..SENDERS)
        .map(|s| {
            let secret = secret.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let body = json!({"content": format!("{s}:{i}"), "meta": {"sender": s.to_string(), "seq": i.to_string()}});
                    let r = support::http(port, "POST", "/inject", &[("X-OPZero-Secret", &secret)], Some(body.to_string().as_bytes()));
                    assert_eq!(r.status, 202);
                }
            })
        })
        .collect();
    let mut next = [0usize; SENDERS];
    for _ in 0..SENDERS * EACH {
        let n = h.recv();
        let meta = &n["params"]["meta"];
        let s: usize = meta["sender"].as_str().unwrap().parse().unwrap();
        let i: usize = meta["seq"].as_str().unwrap().parse().unwrap();
        assert_eq!(i, next[s], "sender {s} out of order");
        next[s] += 1;
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(next, [EACH; SENDERS]);
    assert_eq!(h.try_recv_line(Duration::from_millis(200)), None, "a duplicate arrived");
}

#[test]
fn session_ids_that_are_not_uuids_are_refused() {
    for (id, why) in [("../../x", "not a UUID"), ("", "not a UUID"), ("zzzzzzzz-1b2c-4d5e-8f90-0123456789ab", "not a UUID")] {
        let home = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(support::BIN)
            .arg("serve")
            .env("OPZERO_HOME", home.path())
            .env("OPZERO_CHANNEL_SESSION_ID", id)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{id:?}");
        assert!(out.stdout.is_empty(), "stdout is for JSON-RPC only");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why) && err.contains(&format!("{id:?}")), "{id:?}: {err}");
        assert!(!home.path().join("channels").exists());
    }
    let out = std::process::Command::new(support::BIN)
        .arg("serve")
        .env_remove("OPZERO_CHANNEL_SESSION_ID")
        .env_remove("CLAUDE_CODE_SESSION_ID")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no session id") && err.contains("OPZERO_CHANNEL_SESSION_ID") && err.contains("CLAUDE_CODE_SESSION_ID"), "{err}");
}

/// Claude Code names its session to every server it starts: a host that
/// comes from a plugin, with nothing else set, is found under that name.
#[test]
fn claude_codes_own_session_id_is_used_when_nothing_else_is_given() {
    let id = support::new_session_id();
    let h = Host::spawn_with(Options {
        env: vec![("CLAUDE_CODE_SESSION_ID".into(), id.clone())],
        unset: vec!["OPZERO_CHANNEL_SESSION_ID".into()],
        ..Options::default()
    });
    let file = h.channels_dir().join(format!("{id}.json"));
    let deadline = Instant::now() + support::WAIT;
    while !file.exists() {
        assert!(Instant::now() < deadline, "no discovery file named for CLAUDE_CODE_SESSION_ID; stderr:\n{}", h.stderr());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_session_id_flag_works_like_the_env_var() {
    let id = support::new_session_id();
    let h = Host::spawn_with(Options {
        args: vec!["--session-id".into(), id.clone()],
        ..Options::default()
    });
    let file = h.channels_dir().join(format!("{id}.json"));
    let deadline = Instant::now() + support::WAIT;
    while !file.exists() {
        assert!(Instant::now() < deadline, "no discovery file for the flag's id");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn stdout_carries_only_json_rpc() {
    let mut h = Host::spawn();
    h.initialize();
    let secret = h.secret();
    h.post("/inject", &json!({"content": "one"}));
    assert_eq!(h.recv()["method"], "notifications/claude/channel");
    h.call_reply(json!({"chat_id": "c", "text": "t"}));
    h.http("GET", "/nope", &[], None);
    h.post("/inject", &json!({"content": ""}));
    h.close_stdin();
    h.wait_exit(Duration::from_secs(5));
    // Whatever else reached stdout (logs, errors) would show up here.
    if let Some(line) = h.try_recv_line(Duration::from_millis(100)) {
        panic!("unexpected stdout line: {line:?}");
    }
    assert!(h.stderr_shows("bridge listening"), "logs go to stderr");
    assert!(!h.stderr().contains(&secret), "the secret is never logged");
}

#[test]
fn instructions_can_be_overridden_in_the_config() {
    let mut h = Host::spawn_with(Options {
        config: Some("[host]\ninstructions = \"Answer with reply.\"\n".into()),
        ..Options::default()
    });
    assert_eq!(h.initialize()["result"]["instructions"], "Answer with reply.");
}

#[test]
fn permission_capability_is_absent_when_relay_is_off() {
    let mut h = Host::spawn_with(Options {
        config: Some("[permissions]\nrelay = false\n".into()),
        ..Options::default()
    });
    assert_eq!(
        h.initialize()["result"]["capabilities"],
        json!({"experimental": {"claude/channel": {}}, "tools": {}})
    );
}

/// Claude Code hands its servers socket pairs (every test above uses them);
/// other MCP clients use pipes, which take another path through the host.
#[test]
fn pipes_work_like_sockets() {
    let mut h = Host::spawn_with(Options { pipes: true, ..Options::default() });
    h.initialize();
    assert_eq!(h.post("/inject", &json!({"content": "over a pipe"})).pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"over a pipe","meta":{"chat_id":"inject"}}}"#
    );
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let r = h.call_reply(json!({"chat_id": "p", "text": "back over a pipe"}));
    assert_eq!(support::reply_text(&r), "sent");
    assert_eq!(without_ts(sse.event().1), json!({"type": "reply", "chat_id": "p", "text": "back over a pipe"}));
    let path = h.discovery_path();
    h.close_stdin();
    assert!(h.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()), "{}", h.stderr());
    assert!(!path.exists());
    // Sockets are read and written by the reactor, pipes by rmcp's pipe
    // transport: the debug log says which.
    const SOCKETS: &str = "stdin and stdout are sockets";
    assert!(!h.stderr().contains(SOCKETS), "{}", h.stderr());
    let mut s = Host::spawn();
    s.initialize();
    assert!(s.stderr_shows(SOCKETS), "{}", s.stderr());
}

/// What the host answers before `initialize`, as rmcp 3.11 does it and
/// channel.rs's stdin wrapper mirrors: a notification is ignored, a ping is
/// answered, any other request without the 2026-07-28 `_meta` is refused,
/// and `initialize` then negotiates the legacy era Claude Code uses. A
/// change here after an rmcp upgrade must be looked at, not accepted.
#[test]
fn the_handshake_is_rmcps_as_pinned() {
    let mut h = Host::spawn_with(support::Options { config: Some(String::new()), ..Default::default() });
    h.write_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    h.write_line(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    assert_eq!(h.recv(), json!({"jsonrpc": "2.0", "id": 1, "result": {}}), "the early notification got an answer");
    h.write_line(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    assert_eq!(
        h.recv(),
        json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message":
            "request _meta is missing or has malformed required fields: io.modelcontextprotocol/protocolVersion, io.modelcontextprotocol/clientCapabilities"}})
    );
    h.write_line(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#);
    assert_eq!(
        h.recv(),
        json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message":
            "request _meta is missing or has malformed required fields: io.modelcontextprotocol/clientCapabilities"}})
    );
    let r = h.initialize();
    assert_eq!(r["result"]["protocolVersion"], "2025-11-25", "{r}");
    let tools = h.request("tools/list", json!({}));
    assert!(tools["result"]["tools"].as_array().is_some_and(|t| t.len() == 2), "{tools}");
}
