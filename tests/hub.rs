//! `opzero-host hub` through the real binaries: two hosts (spawned as
//! Claude Code spawns them) and one hub on a shared state directory, over
//! real loopback sockets.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use support::hub::Hub;
use support::*;

/// Two initialized hosts sharing one state directory, and its hub.
fn two_hosts_and_a_hub() -> (tempfile::TempDir, Host, Host, Hub) {
    let state = tempfile::tempdir().unwrap();
    let spawn = || {
        let mut h = Host::spawn_with(Options { state: Some(state.path().to_path_buf()), ..Options::default() });
        h.initialize();
        h.discovery();
        h
    };
    let (a, b) = (spawn(), spawn());
    let hub = Hub::spawn(state.path(), &[]);
    hub.wait_sessions(|list| list.len() == 2 && list.iter().all(|s| s["unread"] == 0));
    (state, a, b, hub)
}

fn ids(list: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = list.iter().map(|s| s["session_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

fn channel_text(n: &Value) -> &str {
    assert_eq!(n["method"], "notifications/claude/channel", "{n}");
    n["params"]["content"].as_str().unwrap()
}

#[test]
fn both_sessions_are_listed_and_each_inject_reaches_only_its_host() {
    let (_state, a, b, hub) = two_hosts_and_a_hub();
    let list = hub.sessions();
    let mut want = vec![a.session.clone(), b.session.clone()];
    want.sort();
    assert_eq!(ids(&list), want);
    let entry = list.iter().find(|s| s["session_id"] == a.session.as_str()).unwrap();
    // No Claude status file here: state unknown; the host's own folder.
    assert_eq!(entry["state"], Value::Null, "{entry}");
    assert_eq!(entry["pending"], 0);
    assert_eq!(entry["cwd"], a.home.path().canonicalize().unwrap().display().to_string());
    assert_eq!(entry["version"], env!("CARGO_PKG_VERSION"));
    let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cwd", "name", "pending", "session_id", "started_at", "state", "unread", "version"]);

    for (to, other) in [(&a, &b), (&b, &a)] {
        let text = format!("for {}", to.session);
        let r = hub.post(&format!("/s/{}/inject", to.session), &json!({ "content": text, "chat_id": "c" }));
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.json()["ok"], true);
        assert!(r.json()["message_id"].as_str().is_some_and(|id| id.starts_with("h-")), "{r:?}");
        assert_eq!(channel_text(&to.recv()), text);
        assert_eq!(other.try_recv_line(Duration::from_millis(300)), None, "the other host got it");
    }
}

#[test]
fn one_sessions_events_never_appear_in_the_others_stream() {
    let (_state, mut a, mut b, hub) = two_hosts_and_a_hub();
    let mut sa = hub.sse(&format!("/s/{}/events", a.session), &[]);
    let mut sb = hub.sse(&format!("/s/{}/events", b.session), &[]);
    assert_eq!(sa.status, 200);
    assert_eq!(sa.line(), ": connected");
    assert_eq!(sb.line(), ": connected");
    a.call_reply(json!({"chat_id": "c", "text": "from a"}));
    b.call_reply(json!({"chat_id": "c", "text": "from b"}));
    let (id, event) = sa.event();
    assert_eq!((id, event["text"].as_str()), (Some(1), Some("from a")));
    let (id, event) = sb.event();
    assert_eq!((id, event["text"].as_str()), (Some(1), Some("from b")));
    a.call_reply(json!({"chat_id": "c", "text": "a again"}));
    assert_eq!(sa.event().1["text"], "a again");
    b.call_reply(json!({"chat_id": "c", "text": "b again"}));
    assert_eq!(sb.event().1["text"], "b again", "b's stream got a's event first");
}

#[test]
fn the_hubs_watching_does_not_change_what_a_direct_client_receives() {
    let (_state, mut a, _b, hub) = two_hosts_and_a_hub();
    let session = a.session.clone();
    let unread = |hub: &Hub, n: u64| {
        hub.wait_sessions(|list| list.iter().any(|s| s["session_id"] == session.as_str() && s["unread"] == n))
    };
    a.call_reply(json!({"chat_id": "c", "text": "one"}));
    unread(&hub, 1);
    a.call_reply(json!({"chat_id": "c", "text": "two"}));
    unread(&hub, 2);
    // A client of the host itself, without Last-Event-ID, gets every event
    // no client has taken: both, as if there were no hub.
    let mut direct = a.sse("/events", &[]);
    assert_eq!(direct.line(), ": connected");
    let got: Vec<(u64, String)> = direct.events(2).into_iter().map(|(id, e)| (id, e["text"].as_str().unwrap().into())).collect();
    assert_eq!(got, [(1, "one".to_string()), (2, "two".to_string())]);
    // Taking them is what reads them, and the hub's list says so.
    unread(&hub, 0);
}

#[test]
fn a_host_that_exits_leaves_the_list_within_a_second() {
    let (_state, mut a, mut b, hub) = two_hosts_and_a_hub();
    let mut list = hub.sse("/events", &[]);
    assert_eq!(list.event().1["sessions"].as_array().unwrap().len(), 2);
    let gone_within = |list: &mut support::Sse, session: &str, since: Instant| {
        loop {
            let (_, event) = list.event();
            assert_eq!(event["type"], "sessions");
            if !event["sessions"].as_array().unwrap().iter().any(|s| s["session_id"] == session) {
                return since.elapsed();
            }
        }
    };
    // Claude Code ends: the host's stdin closes and it exits cleanly.
    a.close_stdin();
    a.wait_exit(WAIT).expect("host a exits");
    let took = gone_within(&mut list, &a.session, Instant::now());
    assert!(took < Duration::from_secs(1), "a left the list after {took:?}");
    // Killed: its discovery file stays; the hub sees its connection end.
    b.signal(libc::SIGKILL);
    b.wait_exit(WAIT).expect("host b dies");
    let took = gone_within(&mut list, &b.session, Instant::now());
    assert!(took < Duration::from_secs(1), "b left the list after {took:?}");
    assert_eq!(hub.sessions(), Vec::<Value>::new());
    let r = hub.get(&format!("/s/{}/status", b.session));
    assert_eq!((r.status, r.json()), (404, json!({"error": format!("no live session {:?} (see GET /sessions)", b.session)})));
}

#[test]
fn files_go_both_ways_and_permissions_work_through_the_hub() {
    let (_state, mut a, b, hub) = two_hosts_and_a_hub();
    // In: a file from the phone lands in a's inbox.
    let data = base64::engine::general_purpose::STANDARD.encode(b"phone notes\n");
    let r = hub.post(&format!("/s/{}/inject", a.session), &json!({"content": "see file", "files": [{"name": "notes.txt", "data": data}]}));
    assert_eq!(r.status, 202, "{r:?}");
    let n = a.recv();
    let path = n["params"]["meta"]["file_path"].as_str().unwrap_or_else(|| panic!("no file_path in {n}"));
    assert_eq!(std::fs::read(path).unwrap(), b"phone notes\n");

    // Out: a reply's file, fetched through the hub, byte for byte.
    let src = a.home.path().join("out.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let mut sse = hub.sse(&format!("/s/{}/events", a.session), &[]);
    assert_eq!(sse.line(), ": connected");
    a.call_reply(json!({"chat_id": "c", "text": "here", "files": [src]}));
    let (_, event) = sse.event();
    let id = event["files"][0]["id"].as_str().unwrap().to_string();
    let r = hub.get(&format!("/s/{}/files/{id}", a.session));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("200000"));
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=\"out.bin\""));
    assert!(r.body == bytes, "the file changed on its way");
    // Another session does not have it.
    let r = hub.get(&format!("/s/{}/files/{id}", b.session));
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"], format!("no file {id:?} in this session's replies"));

    // A prompt shows as pending on the list, and is answered through the hub.
    a.permission_request("abcde", "Bash");
    hub.wait_sessions(|list| list.iter().any(|s| s["session_id"] == a.session.as_str() && s["pending"] == 1));
    let r = hub.get(&format!("/s/{}/permissions", a.session));
    assert_eq!(r.json()["pending"][0]["request_id"], "abcde");
    let r = hub.post(&format!("/s/{}/permission", a.session), &json!({"request_id": "abcde", "behavior": "allow"}));
    assert_eq!((r.status, r.json()), (202, json!({"ok": true})));
    let v = a.recv();
    assert_eq!(v["method"], "notifications/claude/channel/permission");
    assert_eq!(v["params"], json!({"request_id": "abcde", "behavior": "allow"}));
    hub.wait_sessions(|list| list.iter().all(|s| s["pending"] == 0));
    // The host's answers pass through as they are: a second verdict.
    let r = hub.post(&format!("/s/{}/permission", a.session), &json!({"request_id": "abcde", "behavior": "deny"}));
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.json(), a.post("/permission", &json!({"request_id": "abcde", "behavior": "deny"})).json());
}

#[test]
fn refusals() {
    let (_state, a, _b, hub) = two_hosts_and_a_hub();
    let s = a.session.as_str();
    let error = |r: &Response| r.json()["error"].as_str().unwrap_or_default().to_string();
    // No secret and no token.
    for path in ["/sessions", "/events", &format!("/s/{s}/status")] {
        let r = hub.http("GET", path, &[], None);
        assert_eq!((r.status, error(&r)), (403, "forbidden".into()), "{path}");
    }
    let r = hub.http("POST", &format!("/s/{s}/inject"), &[("Content-Type", "application/json")], Some(b"{\"content\":\"x\"}"));
    assert_eq!(r.status, 403);
    assert_eq!(a.try_recv_line(Duration::from_millis(200)), None);
    // A token, from a foreign origin.
    let code = hub.post("/login-code", &json!({})).json()["code"].as_str().unwrap().to_string();
    let origin = format!("http://127.0.0.1:{}", hub.port);
    let body = json!({"code": code}).to_string();
    let r = hub.http("POST", "/login", &[("Origin", &origin), ("Content-Type", "application/json")], Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["hub"], true);
    assert!(r.json().get("sessionId").is_none());
    let token = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    let r = hub.http("GET", "/sessions", &[("Authorization", &token)], None);
    assert_eq!(r.status, 200, "the token serves every session");
    let inject = format!("/s/{s}/inject");
    let ok = hub.http("POST", &inject, &[("Authorization", &token), ("Origin", &origin)], Some(b"{\"content\":\"signed in\"}"));
    assert_eq!(ok.status, 202, "{ok:?}");
    assert_eq!(channel_text(&a.recv()), "signed in");
    let r = hub.http("POST", &inject, &[("Authorization", &token), ("Origin", "http://evil.example")], Some(b"{\"content\":\"x\"}"));
    assert_eq!((r.status, error(&r)), (403, "cross-origin request refused".into()));
    // A Host that is not allowed.
    let port = hub.port;
    let r = support::http(port, "GET", "/status", &[("Host", "evil.example")], None);
    assert_eq!(r.status, 421, "{r:?}");
    // Paths that are not a session's routes.
    for path in [
        format!("/s/{s}/../status"),
        format!("/s/{s}/%2e%2e/status"),
        format!("/s/{s}/files/..%2fstatus"),
        format!("/s/{s}/watch"),
        format!("/s/{s}/login-code"),
        "/s/not-a-uuid/status".to_string(),
        format!("/s/{}/status", s.to_uppercase()),
        format!("/s/{}/status", new_session_id()),
        "/watch".to_string(),
    ] {
        let r = hub.get(&path);
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{path}");
    }
    // A wrong method: 405, with or without the secret.
    assert_eq!(hub.http("GET", &inject, &[], None).status, 405);
    assert_eq!(hub.get(&inject).status, 405);
    // No answer carries a host's secret.
    let secret = a.secret();
    for r in [hub.get("/sessions"), hub.get(&format!("/s/{s}/status")), hub.get(&format!("/s/{s}/permissions")), hub.get("/status")] {
        assert!(!String::from_utf8_lossy(&r.body).contains(&secret), "{r:?}");
        assert!(!r.headers.iter().any(|(_, v)| v.contains(&secret)), "{r:?}");
    }
    let mut events = hub.sse("/events", &[]);
    let (_, list) = events.event();
    assert!(!list.to_string().contains(&secret));
    assert_eq!(mode(&hub.state.join("hub.json")), 0o600);
}

#[test]
fn a_second_hub_refuses_and_names_the_first_and_the_file_goes_on_exit() {
    let state = tempfile::tempdir().unwrap();
    let mut first = Hub::spawn(state.path(), &[]);
    let out = std::process::Command::new(BIN)
        .args(["hub", "--port", "0"])
        .env("OPZERO_HOME", state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    let wanted = format!(
        "opzero-host: a hub is already running for {} (pid {}, http://127.0.0.1:{}); stop it first, or use it\n",
        state.path().display(),
        first.child.id(),
        first.port
    );
    assert_eq!(said, wanted);
    assert!(out.stdout.is_empty());
    // SIGTERM: it removes hub.json and exits.
    unsafe { libc::kill(first.child.id() as i32, libc::SIGTERM) };
    let status = first.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", first.stderr());
    assert!(!state.path().join("hub.json").exists());
    // Then another may start.
    let _second = Hub::spawn(state.path(), &[]);
}

#[test]
fn the_hub_config_is_checked_at_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.toml");
    std::fs::write(&file, "port = 70000\nallowed_hosts = [\"phone.example\", \"https://x/\"]\n").unwrap();
    let out = std::process::Command::new(BIN).arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let p = file.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "opzero-host: {p}:1:8: port: must be between 1 and 65535\n\
             {p}:2:35: allowed_hosts: \"https://x/\" is not a host name (give name or name:port, with no scheme or path)\n"
        )
    );
    std::fs::write(&file, "port = 4999\nallowed_hosts = [\"phone.example\"]\nsign_in_hours = 2\n").unwrap();
    let out = std::process::Command::new(BIN).arg("validate").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{p}: ok (the hub's config: port 4999; allowed hosts: phone.example)\n"));
    std::fs::write(&file, "prot = 1\n").unwrap();
    let out = std::process::Command::new(BIN).args(["hub", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("opzero-host: {p}:1:1: prot: unknown key (expected one of: port, allowed_hosts, sign_in_hours)\n")
    );
}

#[test]
fn the_hubs_config_port_and_allowed_hosts_are_used() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("hub.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(&file, format!("port = {port}\nallowed_hosts = [\"phone.example\"]\n")).unwrap();
    // $OPZERO_HOME/hub.toml is read without --config.
    let hub = Hub::spawn(state.path(), &[]);
    assert_eq!(hub.port, port);
    let r = support::http(port, "GET", "/status", &[("Host", "phone.example")], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["hub"], true);
    let r = support::http(port, "GET", "/status", &[("Host", "other.example")], None);
    assert_eq!(r.status, 421);
}

/// `opzero-host open ARGS` with the shared state, no desktop, stderr piped.
fn open(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("open")
        .args(args)
        .env("OPZERO_HOME", state)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("BROWSER")
        .output()
        .unwrap()
}

#[test]
fn open_with_no_session_signs_in_to_the_hub_and_prints_the_link_as_a_qr_code() {
    let (state, a, _b, hub) = two_hosts_and_a_hub();
    let out = open(state.path(), &["--no-browser"]);
    assert!(out.status.success(), "{out:?}");
    let link = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let prefix = format!("http://127.0.0.1:{}/#code=", hub.port);
    assert!(link.starts_with(&prefix), "{link}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("a sign-in link for the hub (every session, http://127.0.0.1:{}): it works once, within 60 s\n", hub.port)), "{err}");
    assert_eq!(decode_qr(&err), link, "the QR code is the link");
    // The code signs a browser in to the hub: one token for every session.
    let code = link.strip_prefix(&prefix).unwrap();
    let origin = format!("http://127.0.0.1:{}", hub.port);
    let body = json!({"code": code}).to_string();
    let r = hub.http("POST", "/login", &[("Origin", &origin), ("Content-Type", "application/json")], Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{r:?}");
    let token = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    for s in [&a.session, &_b.session] {
        assert_eq!(hub.http("GET", &format!("/s/{s}/permissions"), &[("Authorization", &token)], None).status, 200);
    }
    // Naming a session still signs in to that session's own page.
    let out = open(state.path(), &[&a.session[..8], "--no-browser", "--no-qr"]);
    let link = String::from_utf8(out.stdout).unwrap();
    assert!(link.starts_with(&format!("http://127.0.0.1:{}/#code=", a.port())), "{link}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains('█'), "--no-qr");
}

#[test]
fn open_with_no_session_and_no_hub_takes_the_only_session_or_says_what_to_do() {
    let state = tempfile::tempdir().unwrap();
    let out = open(state.path(), &["--no-browser"]);
    assert_eq!(out.status.code(), Some(2));
    let dir = state.path().join("channels");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("opzero-host: no hub is running and no live session in {}: start one (`opzero-host hub`, or a session with `opzero-host launch`)\n", dir.display())
    );
    let spawn = || Host::spawn_with(Options { state: Some(state.path().to_path_buf()), ..Options::default() });
    let a = spawn();
    a.discovery();
    let out = open(state.path(), &["--no-browser", "--no-qr"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("http://127.0.0.1:{}/#code=", a.port())));
    let _b = spawn();
    _b.discovery();
    let out = open(state.path(), &["--no-browser"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "opzero-host: no hub is running and 2 sessions are live: name one (`opzero-host sessions` lists them), or start `opzero-host hub` to reach them all\n"
    );
}
