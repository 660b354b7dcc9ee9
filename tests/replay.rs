//! Issue 4, the replayable event stream: ids, resume by `Last-Event-ID` or
//! `?since=`, replies kept while nobody listens, gaps, `sent` vs `queued`,
//! and slow subscribers, through the real binary over real sockets.

mod support;

use serde_json::{json, Value};
use support::{reply_text, Host, Options, Sse};

const QUEUED: &str = "queued (no client connected)";

fn reply(n: usize) -> Value {
    json!({"type": "reply", "chat_id": "c", "text": format!("r{n}")})
}

/// Makes replies `r{from}..=r{to}`, checking what each one says.
fn replies(h: &mut Host, range: std::ops::RangeInclusive<usize>, expect: &str) {
    for n in range {
        let r = h.call_reply(json!({"chat_id": "c", "text": format!("r{n}")}));
        assert_eq!(reply_text(&r), expect, "reply {n}: {r}");
    }
}

fn with_config(config: &str) -> Host {
    Host::spawn_with(Options {
        config: Some(config.into()),
        ..Options::default()
    })
}

#[test]
fn every_event_carries_the_next_id() {
    let mut h = Host::spawn();
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    assert_eq!(sse.line(), "");
    h.call_reply(json!({"chat_id": "c", "text": "one"}));
    h.permission_request("abcde", "Bash");
    // Answered once it is pending, as a phone that saw it would.
    h.wait_pending("abcde");
    assert_eq!(h.post("/permission", &json!({"request_id": "abcde", "behavior": "deny"})).status, 202);
    h.recv(); // the verdict, on stdout
    h.call_reply(json!({"chat_id": "c", "text": "two"}));
    // Line by line: each event is `id:`, `data:`, blank.
    for (id, kind) in [(1, "reply"), (2, "permission_request"), (3, "permission_resolved"), (4, "reply")] {
        assert_eq!(sse.line(), format!("id: {id}"));
        let data = sse.line();
        let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["type"], kind);
        assert_eq!(sse.line(), "");
    }
}

#[test]
fn last_event_id_and_since_resume_after_the_given_id() {
    let mut h = Host::spawn();
    h.initialize();
    replies(&mut h, 1..=5, QUEUED);

    let mut by_header = h.sse("/events", &[("Last-Event-ID", "2")]);
    assert_eq!(by_header.events(3), [(3, reply(3)), (4, reply(4)), (5, reply(5))]);
    let mut by_query = h.sse("/events?since=3", &[]);
    assert_eq!(by_query.events(2), [(4, reply(4)), (5, reply(5))]);
    // The header wins over the query; /sse is the same stream.
    let mut both = h.sse("/sse?since=1", &[("Last-Event-ID", "4")]);
    assert_eq!(both.events(1), [(5, reply(5))]);
    // An id from the future (another process) means "live from now".
    let mut ahead = h.sse("/events?since=999", &[]);

    // Then all of them go live.
    replies(&mut h, 6..=6, "sent");
    for sse in [&mut by_header, &mut by_query, &mut both, &mut ahead] {
        assert_eq!(sse.events(1), [(6, reply(6))]);
    }
}

#[test]
fn a_hundred_replies_made_while_disconnected_reach_a_subscriber_from_since_0() {
    let mut h = Host::spawn();
    h.initialize();
    // One subscriber comes and goes first: what it saw is still replayable.
    let sse = h.sse("/events", &[]);
    replies(&mut h, 1..=1, "sent");
    sse.hang_up();
    replies(&mut h, 2..=101, QUEUED);

    let mut sse = h.sse("/events?since=0", &[]);
    assert_eq!(sse.line(), ": connected");
    let expected: Vec<_> = (1..=101).map(|n| (n as u64, reply(n))).collect();
    assert_eq!(sse.events(101), expected);
    replies(&mut h, 102..=102, "sent");
    assert_eq!(sse.events(1), [(102, reply(102))]);
}

#[test]
fn a_subscriber_without_last_event_id_gets_what_nobody_took_then_live() {
    let mut h = Host::spawn();
    h.initialize();
    replies(&mut h, 1..=100, QUEUED);

    // The opzero-claude server never sends Last-Event-ID.
    let mut sse = h.sse("/events", &[]);
    let expected: Vec<_> = (1..=100).map(|n| (n as u64, reply(n))).collect();
    assert_eq!(sse.events(100), expected);
    replies(&mut h, 101..=101, "sent");
    assert_eq!(sse.events(1), [(101, reply(101))]);
    sse.hang_up();

    // Only what was made since it left comes again.
    replies(&mut h, 102..=103, QUEUED);
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.events(2), [(102, reply(102)), (103, reply(103))]);
    // A second plain subscriber beside a live one starts at the live head.
    let mut second = h.sse("/events", &[]);
    assert_eq!(second.line(), ": connected");
    replies(&mut h, 104..=104, "sent");
    assert_eq!(second.events(1), [(104, reply(104))]);
    assert_eq!(sse.events(1), [(104, reply(104))]);
}

#[test]
fn a_gap_event_says_what_fell_out_of_the_buffer() {
    let mut h = with_config("[events]\nreplay_buffer = 5\n");
    h.initialize();
    replies(&mut h, 1..=12, QUEUED);

    // Asked from 2, but 3..=7 are gone: the gap is an event with the id of
    // the last one it stands for, so resuming from it asks for no more.
    let mut sse = h.sse("/events?since=2", &[]);
    assert_eq!(sse.line(), ": connected");
    assert_eq!(sse.line(), "");
    assert_eq!(sse.line(), "id: 7");
    assert_eq!(sse.line(), r#"data: {"from":3,"to":7,"type":"gap"}"#);
    assert_eq!(sse.line(), "");
    let expected: Vec<_> = (8..=12).map(|n| (n as u64, reply(n))).collect();
    assert_eq!(sse.events(5), expected);

    // A plain subscriber missed them too (nobody had taken any).
    let mut plain = Host::spawn_with(Options {
        config: Some("[events]\nreplay_buffer = 5\n".into()),
        ..Options::default()
    });
    plain.initialize();
    replies(&mut plain, 1..=7, QUEUED);
    let mut sse = plain.sse("/events", &[]);
    assert_eq!(sse.event(), (Some(2), json!({"type": "gap", "from": 1, "to": 2})));
    let expected: Vec<_> = (3..=7).map(|n| (n as u64, reply(n))).collect();
    assert_eq!(sse.events(5), expected);

    // Within the buffer there is no gap.
    let mut sse = h.sse("/events", &[("Last-Event-ID", "7")]);
    assert_eq!(sse.events(1), [(8, reply(8))]);
}

#[test]
fn the_reply_tool_says_whether_a_client_was_connected() {
    let mut h = Host::spawn();
    h.initialize();
    let r = h.call_reply(json!({"chat_id": "c", "text": "nobody"}));
    assert_eq!(
        r["result"],
        json!({"content": [{"type": "text", "text": "queued (id: 1; no client connected)"}], "isError": false})
    );
    let sse = h.sse("/events", &[]);
    let r = h.call_reply(json!({"chat_id": "c", "text": "someone"}));
    assert_eq!(r["result"], json!({"content": [{"type": "text", "text": "sent (id: 2)"}], "isError": false}));
    sse.hang_up();
    assert_eq!(reply_text(&h.call_reply(json!({"chat_id": "c", "text": "gone"}))), QUEUED);
    // A refused subscription (bad id) never counted.
    let r = h.get("/events?since=x");
    assert_eq!(
        r.pair(),
        (400, json!({"error": "Last-Event-ID / since must be an event id (a whole number)"}))
    );
    assert_eq!(reply_text(&h.call_reply(json!({"chat_id": "c", "text": "still nobody"}))), QUEUED);
}

#[test]
fn bad_resume_ids_are_refused_with_json() {
    let h = Host::spawn();
    let bad = json!({"error": "Last-Event-ID / since must be an event id (a whole number)"});
    for path in ["/events?since=-1", "/events?since=", "/events?since=1.5", "/sse?since=99999999999999999999999"] {
        assert_eq!(h.get(path).pair(), (400, bad.clone()), "{path}");
    }
    let secret = h.secret();
    let r = h.http("GET", "/events", &[("X-OPZero-Secret", &secret), ("Last-Event-ID", "abc")], None);
    assert_eq!(r.pair(), (400, bad));
    assert_eq!(
        h.get("/events?since=1&since=2").pair(),
        (400, json!({"error": "since is given more than once"}))
    );
}

/// One client stops reading while replies keep flowing. The others get
/// every event, in order, as it is made; the stuck one is cut off once it
/// is `subscriber_lag` events behind and, reconnecting with
/// `Last-Event-ID`, gets exactly the rest.
#[test]
fn a_subscriber_that_stops_reading_blocks_nobody_and_resumes_by_id() {
    // Big replies fill the stuck client's socket buffers quickly.
    const N: usize = 256;
    const TEXT_BYTES: usize = 64 * 1024;
    let mut h = with_config("[events]\nreplay_buffer = 300\nsubscriber_lag = 16\n");
    h.initialize();
    let port = h.port();
    let secret = h.secret();
    let auth = [("X-OPZero-Secret", secret.as_str())];
    let mut stuck = Sse::over(support::connect_small_rcvbuf(port), port, "/events", &auth);
    assert_eq!(stuck.status, 200);
    let mut readers = [h.sse("/events", &[]), h.sse("/sse", &[])];
    let pad = "x".repeat(TEXT_BYTES);
    for n in 1..=N {
        let text = format!("r{n} {pad}");
        let r = h.call_reply(json!({"chat_id": "c", "text": text}));
        assert_eq!(reply_text(&r), "sent");
        // The readers keep up with each reply before the next is made.
        for sse in &mut readers {
            let (id, data) = sse.event();
            assert_eq!((id, data["text"].as_str()), (Some(n as u64), Some(text.as_str())));
        }
        if n == N / 2 {
            // The inject path does not wait on any subscriber.
            let r = h.post("/inject", &json!({"content": "meanwhile"}));
            assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
            assert_eq!(h.recv()["params"]["content"], "meanwhile");
        }
    }

    // The stuck client was cut off while it still read nothing: with the
    // readers gone, nobody is connected.
    let [a, b] = readers;
    a.hang_up();
    b.hang_up();
    let r = h.call_reply(json!({"chat_id": "c", "text": "after"}));
    assert_eq!(reply_text(&r), QUEUED);

    // It now reads what it had buffered: a prefix, then the end.
    let got = stuck.events_until_end();
    let last = got.last().map_or(0, |(id, _)| id.unwrap());
    assert!(last < N as u64, "the stuck subscriber got everything");
    for (i, (id, data)) in got.iter().enumerate() {
        assert_eq!(*id, Some(i as u64 + 1));
        assert!(data["text"].as_str().unwrap().starts_with(&format!("r{} ", i + 1)));
    }
    // Resuming from the last event it saw gets exactly the rest.
    let since = last.to_string();
    let mut resumed = h.sse("/events", &[("Last-Event-ID", since.as_str())]);
    for n in last as usize + 1..=N {
        let (id, data) = resumed.event();
        assert_eq!(id, Some(n as u64));
        assert!(data["text"].as_str().unwrap().starts_with(&format!("r{n} ")));
    }
    let (id, data) = resumed.event();
    assert_eq!((id, support::without_ts(data)), (Some(N as u64 + 1), json!({"type": "reply", "chat_id": "c", "text": "after"})));
}

/// Claude may send many replies at once (they queue up on stdin while it
/// works). A subscriber that reads them all as they come is not "behind",
/// however many there are.
#[test]
fn a_burst_of_replies_larger_than_the_lag_limit_reaches_a_reading_subscriber() {
    // A small limit, and the default one (256).
    burst_reaches_a_reading_subscriber("[events]\nsubscriber_lag = 8\n", 300);
    burst_reaches_a_reading_subscriber("", 600);
}

fn burst_reaches_a_reading_subscriber(config: &str, n_replies: usize) {
    let mut h = with_config(config);
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let mut burst = String::new();
    for n in 1..=n_replies {
        let call = json!({"jsonrpc": "2.0", "id": 1000 + n, "method": "tools/call",
            "params": {"name": "reply", "arguments": {"chat_id": "c", "text": format!("r{n}")}}});
        burst.push_str(&format!("{call}\n"));
    }
    h.write_raw(burst.as_bytes());
    for n in 1..=n_replies {
        let (id, data) = sse.event();
        assert_eq!((id, support::without_ts(data)), (Some(n as u64), reply(n)), "{}", h.stderr());
    }
    assert!(!h.stderr().contains("stopped reading"), "{}", h.stderr());
}

/// `reply` answers with its event id; `edit_message` replaces that
/// message's text with an `edit` event, and refuses anything else.
#[test]
fn replies_have_ids_and_edits_update_them() {
    let mut h = Host::spawn();
    h.initialize();
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let r = h.call_reply(json!({"chat_id": "c", "text": "working on it"}));
    assert_eq!(r["result"], json!({"content": [{"type": "text", "text": "sent (id: 1)"}], "isError": false}));
    assert_eq!(sse.event().0, Some(1));
    let edit = |h: &mut Host, args: Value| h.request("tools/call", json!({"name": "edit_message", "arguments": args}));
    let r = edit(&mut h, json!({"chat_id": "c", "message_id": 1, "text": "done: 3 files"}));
    assert_eq!(r["result"], json!({"content": [{"type": "text", "text": "edited (id: 1)"}], "isError": false}));
    let (id, data) = sse.event();
    assert_eq!(id, Some(2));
    assert_eq!(support::without_ts(data), json!({"type": "edit", "chat_id": "c", "message_id": 1, "text": "done: 3 files"}));
    // The id as text works too.
    let r = edit(&mut h, json!({"chat_id": "c", "message_id": "1", "text": "done: 4 files"}));
    assert_eq!(reply_text(&r), "edited");
    assert_eq!(sse.event().1["text"], "done: 4 files");
    // Not a reply of this session (an edit event, a future id), another chat, no id: tool errors, nothing sent.
    for (args, needle) in [
        (json!({"chat_id": "c", "message_id": 2, "text": "x"}), "message 2 is not a reply of this session"),
        (json!({"chat_id": "c", "message_id": 99, "text": "x"}), "message 99 is not a reply of this session"),
        (json!({"chat_id": "other", "message_id": 1, "text": "x"}), "message 1 went to chat \"c\", not \"other\""),
        (json!({"chat_id": "c", "text": "x"}), "argument \"message_id\" is required"),
        (json!({"chat_id": "c", "message_id": -1, "text": "x"}), "must be the id reply answered with"),
        (json!({"chat_id": "c", "message_id": 1, "text": ""}), "argument \"text\" must not be empty"),
    ] {
        let r = edit(&mut h, args.clone());
        assert_eq!(r["result"]["isError"], true, "{args}: {r}");
        assert!(reply_text(&r).contains(needle), "{args}: {r}");
    }
    // Nothing was published for them: the next event is the next reply.
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    let (id, data) = sse.event();
    assert_eq!((id, support::without_ts(data)), (Some(4), json!({"type": "reply", "chat_id": "c", "text": "next"})));
}

/// Claude Code's session file (`~/.claude/sessions/<pid of the host's
/// parent>.json`; the test is the parent here) drives `status` events and
/// `GET /status`'s `claude`; anything unreadable gives no event and no error.
#[test]
fn claudes_session_file_becomes_status_events() {
    let home = tempfile::tempdir().unwrap();
    let sessions = home.path().join(".claude/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    let file = sessions.join(format!("{}.json", std::process::id()));
    let mut h = Host::spawn_with(Options {
        env: vec![("HOME".into(), home.path().display().to_string())],
        ..Options::default()
    });
    h.initialize();
    assert_eq!(h.get("/status").json().get("claude"), None, "nothing known yet");
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let write = |status: &str, at: u64| {
        let session = json!({"pid": 1, "sessionId": "s", "cwd": "/work/x", "name": "fixing tests", "status": status, "statusUpdatedAt": at});
        std::fs::write(&file, session.to_string()).unwrap();
    };
    write("busy", 1);
    let (id, data) = sse.event();
    assert_eq!((id, support::without_ts(data)), (Some(1), json!({"type": "status", "state": "busy"})));
    assert_eq!(h.get("/status").json()["claude"], json!({"state": "busy", "name": "fixing tests", "cwd": "/work/x"}));
    // Another local user learns nothing of what Claude is doing, or where.
    let open = h.http("GET", "/status", &[], None).json();
    assert_eq!(open, json!({"ok": true, "sessionId": h.session, "pid": h.pid(), "version": env!("CARGO_PKG_VERSION")}));
    write("busy", 2); // the same state: no event
    std::fs::write(&file, "{not json").unwrap();
    std::fs::write(&file, r#"{"status": "sleeping"}"#).unwrap();
    write("idle", 3);
    let (id, data) = sse.event();
    assert_eq!((id, support::without_ts(data)), (Some(2), json!({"type": "status", "state": "idle"})));
    assert!(!h.stderr().contains("ERROR") && !h.stderr().contains("WARN"), "{}", h.stderr());
    // Another session's file is not ours.
    std::fs::write(sessions.join("1.json"), json!({"status": "busy"}).to_string()).unwrap();
    h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(sse.event().1["type"], "reply");
}
