//! Issue 4, the permission relay lifecycle: what is pending, verdicts that
//! can only happen once, text verdicts, expiry, and relay switched off,
//! through the real binary over real sockets.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{without_ts, Host, Options};

const VERDICT: &str = "notifications/claude/channel/permission";

fn verdict_line(id: &str, behavior: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"{VERDICT}","params":{{"behavior":"{behavior}","request_id":"{id}"}}}}"#)
}

fn channel_line(content: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{{"content":"{content}","meta":{{"chat_id":"inject"}}}}}}"#
    )
}

fn pending(h: &Host) -> Vec<Value> {
    let r = h.get("/permissions");
    assert_eq!(r.status, 200);
    let mut v = r.json();
    v["pending"].as_array_mut().unwrap().drain(..).map(without_ts).collect()
}

fn prompt(id: &str, tool: &str) -> Value {
    json!({"request_id": id, "tool_name": tool, "description": format!("run {tool}"), "input_preview": "{}"})
}

fn nothing_on_stdout(h: &Host) {
    assert_eq!(h.try_recv_line(Duration::from_millis(200)), None);
}

#[test]
fn the_pending_list_needs_the_secret_and_shows_what_waits_oldest_first() {
    let mut h = Host::spawn();
    h.initialize();
    for headers in [vec![], vec![("X-OPZero-Secret", "nope")]] {
        let r = h.http("GET", "/permissions", &headers, None);
        assert_eq!(r.pair(), (403, json!({"error": "forbidden"})));
    }
    assert_eq!(h.get("/permissions").pair(), (200, json!({"pending": []})));

    let mut sse = h.sse("/events", &[]);
    for (id, tool) in [("qwert", "Bash"), ("abcde", "Edit"), ("zyxwv", "Write")] {
        h.permission_request(id, tool);
        // Seen on the stream, so the host has it.
        assert_eq!(sse.event().1["request_id"], id);
    }
    // Every entry says when it arrived.
    let raw = h.get("/permissions").json();
    for p in raw["pending"].as_array().unwrap() {
        assert!(p["ts"].as_u64().is_some_and(|ts| ts > 0), "{p}");
    }
    assert_eq!(
        pending(&h),
        [prompt("qwert", "Bash"), prompt("abcde", "Edit"), prompt("zyxwv", "Write")]
    );

    assert_eq!(h.post("/permission", &json!({"request_id": "abcde", "behavior": "allow"})).status, 202);
    assert_eq!(h.recv_line(), verdict_line("abcde", "allow"));
    assert_eq!(pending(&h), [prompt("qwert", "Bash"), prompt("zyxwv", "Write")]);
}

#[test]
fn a_verdict_needs_a_pending_id_and_happens_once() {
    let mut h = Host::spawn();
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    let r = h.post("/permission", &json!({"request_id": "zzzzz", "behavior": "allow"}));
    assert_eq!(r.pair(), (404, json!({"error": "no pending permission request zzzzz"})));

    h.permission_request("abcde", "Bash");
    sse.event();
    let r = h.post("/permission", &json!({"request_id": "abcde", "behavior": "deny"}));
    assert_eq!(r.pair(), (202, json!({"ok": true})));
    assert_eq!(h.recv_line(), verdict_line("abcde", "deny"));
    for behavior in ["deny", "allow"] {
        let r = h.post("/permission", &json!({"request_id": "abcde", "behavior": behavior}));
        assert_eq!(r.pair(), (409, json!({"error": "permission request abcde was already decided"})));
    }
    // One verdict reached Claude and one outcome the phone.
    nothing_on_stdout(&h);
    assert_eq!(
        sse.events(1),
        [(2, json!({"type": "permission_resolved", "request_id": "abcde", "behavior": "deny", "by": "remote"}))]
    );
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(sse.event().1["type"], "reply");

    // Claude Code asking again with the same id makes it pending again.
    h.permission_request("abcde", "Bash");
    sse.event();
    assert_eq!(h.post("/permission", &json!({"request_id": "abcde", "behavior": "allow"})).status, 202);
    assert_eq!(h.recv_line(), verdict_line("abcde", "allow"));
}

#[test]
fn text_verdicts_answer_a_pending_prompt_and_are_not_forwarded() {
    let mut h = Host::spawn();
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    h.permission_request("abcde", "Bash");
    h.permission_request("fghij", "Edit");
    sse.events(2);

    // Any case, as typed on a phone.
    let r = h.post("/inject", &json!({"content": "YES AbCdE", "chat_id": "phone"}));
    assert_eq!(r.pair(), (202, json!({"ok": true, "verdict": "allow", "request_id": "abcde"})));
    assert_eq!(h.recv_line(), verdict_line("abcde", "allow"));
    assert_eq!(
        sse.events(1),
        [(3, json!({"type": "permission_resolved", "request_id": "abcde", "behavior": "allow", "by": "remote"}))]
    );
    // Only the exact form is a verdict, even for a pending id.
    for content in ["yes  fghij", "yes fghij please", "ok fghij"] {
        assert_eq!(h.post("/inject", &json!({"content": content})).pair_host_id(), (202, json!({"ok": true})));
        assert_eq!(h.recv_line(), channel_line(content));
    }
    let r = h.post("/inject", &json!({"content": "no fghij"}));
    assert_eq!(r.pair(), (202, json!({"ok": true, "verdict": "deny", "request_id": "fghij"})));
    assert_eq!(h.recv_line(), verdict_line("fghij", "deny"));
    assert_eq!(
        sse.events(1),
        [(4, json!({"type": "permission_resolved", "request_id": "fghij", "behavior": "deny", "by": "remote"}))]
    );
    assert!(pending(&h).is_empty());

    // Not pending (decided, or never asked): an ordinary message for Claude.
    for content in ["no abcde", "yes zzzzz", "yes fghij"] {
        let r = h.post("/inject", &json!({"content": content}));
        assert_eq!(r.pair_host_id(), (202, json!({"ok": true})), "{content}");
        assert_eq!(h.recv_line(), channel_line(content));
    }
    // ...and no more outcomes on the stream.
    h.call_reply(json!({"chat_id": "c", "text": "t"}));
    assert_eq!(sse.event().1["type"], "reply");
}

#[test]
fn a_retried_text_verdict_is_a_duplicate_not_a_message() {
    let mut h = Host::spawn();
    h.initialize();
    h.permission_request("abcde", "Bash");
    let deadline = std::time::Instant::now() + support::WAIT;
    while pending(&h).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the prompt never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    let body = json!({"content": "yes abcde", "message_id": "m-1"});
    assert_eq!(
        h.post("/inject", &body).pair(),
        (202, json!({"ok": true, "verdict": "allow", "request_id": "abcde"}))
    );
    assert_eq!(h.recv_line(), verdict_line("abcde", "allow"));
    // The phone did not see the answer and sends it again.
    assert_eq!(h.post("/inject", &body).pair(), (200, json!({"ok": true, "duplicate": true, "message_id": "m-1"})));
    nothing_on_stdout(&h);
}

#[test]
fn unanswered_prompts_expire() {
    let mut h = Host::spawn_with(Options {
        config: Some("[permissions]\nexpire_after_secs = 1\n".into()),
        ..Options::default()
    });
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    h.permission_request("abcde", "Bash");
    assert_eq!(
        sse.events(1),
        [(1, json!({"type": "permission_request", "request_id": "abcde", "tool_name": "Bash", "description": "run Bash", "input_preview": "{}"}))]
    );
    // Waits for the expiry tick (about a second).
    assert_eq!(
        sse.events(1),
        [(2, json!({"type": "permission_expired", "request_id": "abcde", "by": "expired"}))]
    );
    assert!(pending(&h).is_empty());
    let r = h.post("/permission", &json!({"request_id": "abcde", "behavior": "allow"}));
    assert_eq!(r.pair(), (404, json!({"error": "no pending permission request abcde"})));
    // A late text verdict is just a message.
    assert_eq!(h.post("/inject", &json!({"content": "yes abcde"})).status, 202);
    assert_eq!(h.recv_line(), channel_line("yes abcde"));
    // Claude Code got no verdict for it.
    nothing_on_stdout(&h);
}

#[test]
fn relay_off_declares_no_capability_and_tracks_nothing() {
    let mut h = Host::spawn_with(Options {
        config: Some("[permissions]\nrelay = false\n".into()),
        ..Options::default()
    });
    let init = h.initialize();
    assert_eq!(
        init["result"]["capabilities"]["experimental"],
        json!({"claude/channel": {}})
    );
    let mut sse = h.sse("/events", &[]);
    h.permission_request("abcde", "Bash");
    // Nothing relayed: the next event is the reply made after it.
    h.call_reply(json!({"chat_id": "c", "text": "after"}));
    assert_eq!(
        sse.events(1),
        [(1, json!({"type": "reply", "chat_id": "c", "text": "after"}))]
    );
    assert!(pending(&h).is_empty());
    let r = h.post("/permission", &json!({"request_id": "abcde", "behavior": "allow"}));
    assert_eq!(r.pair(), (404, json!({"error": "no pending permission request abcde"})));
    assert_eq!(h.post("/inject", &json!({"content": "yes abcde"})).status, 202);
    assert_eq!(h.recv_line(), channel_line("yes abcde"));
    nothing_on_stdout(&h);
}

#[test]
fn a_verdict_before_claude_code_initialized_is_held_like_an_inject() {
    let mut h = Host::spawn();
    h.initialize_request();
    // Claude Code sends prompts only once it runs, but a prompt can race
    // `initialized`: the verdict is still delivered, after it.
    h.permission_request("abcde", "Bash");
    let deadline = std::time::Instant::now() + support::WAIT;
    while pending(&h).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the prompt never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(h.post("/permission", &json!({"request_id": "abcde", "behavior": "allow"})).status, 202);
    nothing_on_stdout(&h);
    h.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert_eq!(h.recv_line(), verdict_line("abcde", "allow"));
}
