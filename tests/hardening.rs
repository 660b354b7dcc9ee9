//! Issue 4, hardening: bad and hostile input through the real binary over
//! real sockets and a real stdin. Every test ends by checking that a normal
//! inject and a reply still go through.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{raw, reply_text, Host, Options, Response, Sse, WAIT};

fn with_config(config: &str) -> Host {
    Host::spawn_with(Options {
        config: Some(config.into()),
        ..Options::default()
    })
}

fn nothing_on_stdout(h: &Host) {
    if let Some(line) = h.try_recv_line(Duration::from_millis(200)) {
        panic!("unexpected stdout line: {line}");
    }
}

fn channel_line(content: &str, meta: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{{"content":"{content}","meta":{meta}}}}}"#)
}

/// `(status, JSON body)` of a raw HTTP response.
fn parsed(bytes: &[u8]) -> (u16, Value) {
    support::parse_response(bytes).pair()
}

/// Reads until the peer closes; panics if it is still open after [`WAIT`].
fn assert_closed_by_host(s: &mut TcpStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the host did not close the connection: {e}"),
        }
    }
}

#[test]
fn every_route_refuses_a_missing_wrong_or_truncated_secret() {
    let mut h = Host::spawn();
    h.initialize();
    let secret = h.secret();
    let port = h.port();
    let upper = secret.to_uppercase();
    let longer = format!("{secret}0");
    let bearer_short = format!("Bearer {}", &secret[..63]);
    let bearer_spaces = format!("Bearer  {secret}");
    let basic = "Basic b3B6ZXJvOnNlY3JldA==".to_string();
    let cookie = format!("secret={secret}");
    let variants: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("X-OPZero-Secret", "wrong")],
        vec![("X-OPZero-Secret", "")],
        vec![("X-OPZero-Secret", &secret[..63])],
        vec![("X-OPZero-Secret", &secret[..1])],
        vec![("X-OPZero-Secret", &longer)],
        vec![("X-OPZero-Secret", &upper)],
        vec![("Authorization", &bearer_short)],
        vec![("Authorization", &bearer_spaces)],
        vec![("Authorization", &basic)],
        vec![("Authorization", "Bearer")],
        vec![("Cookie", &cookie)],
        vec![("X-Secret", &secret)],
    ];
    let query = format!("?secret={secret}");
    for (method, path, body) in [
        ("POST", "/inject", Some(&br#"{"content":"let me in"}"#[..])),
        ("GET", "/events", None),
        ("GET", "/sse", None),
        ("GET", "/events?since=0", None),
        ("POST", "/permission", Some(br#"{"request_id":"abcde","behavior":"allow"}"#)),
        ("GET", "/permissions", None),
    ] {
        for headers in &variants {
            let r = h.http(method, path, headers, body);
            assert_eq!(r.pair(), (403, json!({"error": "forbidden"})), "{method} {path} {headers:?}");
        }
        // The secret anywhere but the two headers does not count.
        let with_query = if path.contains('?') { format!("{path}&secret={secret}") } else { format!("{path}{query}") };
        let r = h.http(method, &with_query, &[], body);
        assert_eq!(r.pair(), (403, json!({"error": "forbidden"})), "{method} {with_query}");
    }
    // A secret that is not valid header text at all.
    let mut req = format!("POST /inject HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 13\r\nX-OPZero-Secret: ").into_bytes();
    req.extend_from_slice(&[0xff; 64]);
    req.extend_from_slice(b"\r\n\r\n{\"content\":1}");
    assert_eq!(parsed(&raw(port, &req)), (403, json!({"error": "forbidden"})));
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn bodies_that_are_not_json_objects_get_a_clear_400() {
    let mut h = Host::spawn();
    h.initialize();
    let invalid = json!({"error": "invalid json body"});
    for (body, expected) in [
        (&b"{not json"[..], invalid.clone()),
        (b"", invalid.clone()),
        (b"   ", invalid.clone()),
        (br#"{"content":"a"} trailing"#, invalid.clone()),
        (br#"{"content":"a"}{"content":"b"}"#, invalid.clone()),
        (br#"{"content":"a""#, invalid.clone()),
        (b"[]", json!({"error": "invalid json body: expected an object, got an array"})),
        (br#"[{"content":"a"}]"#, json!({"error": "invalid json body: expected an object, got an array"})),
        (b"null", json!({"error": "invalid json body: expected an object, got null"})),
        (b"5", json!({"error": "invalid json body: expected an object, got a number"})),
        (b"-0.5e3", json!({"error": "invalid json body: expected an object, got a number"})),
        (br#""content""#, json!({"error": "invalid json body: expected an object, got a string"})),
        (b"true", json!({"error": "invalid json body: expected an object, got a boolean"})),
        (br#"{"content":null}"#, json!({"error": "content required"})),
        (br#"{"content":["a"]}"#, json!({"error": "content required"})),
        (br#"{"content":{"text":"a"}}"#, json!({"error": "content required"})),
        (br#"{"content":"a","chat_id":{}}"#, json!({"error": "chat_id must be a string"})),
        (br#"{"content":"a","meta":[1]}"#, json!({"error": "meta must be an object, got an array"})),
        (br#"{"content":"a","meta":"k=v"}"#, json!({"error": "meta must be an object, got a string"})),
        (br#"{"content":"a","message_id":["m"]}"#, json!({"error": "message_id must be a string"})),
    ] {
        let r = h.post_raw("/inject", &[("Content-Type", "application/json")], body);
        assert_eq!(r.pair(), (400, expected), "{:?}", String::from_utf8_lossy(body));
    }
    for body in [&b"{not json"[..], b"", b"\xff\xfe"] {
        let r = h.post_raw("/permission", &[], body);
        assert_eq!(r.pair(), (400, invalid.clone()), "{:?}", String::from_utf8_lossy(body));
    }
    let usage = json!({"error": "request_id and behavior (allow|deny) required"});
    for body in [
        &b"[]"[..],
        b"null",
        b"5",
        br#""abcde""#,
        br#"{"request_id":5,"behavior":"allow"}"#,
        br#"{"request_id":"","behavior":"allow"}"#,
        br#"{"request_id":"abcde","behavior":"ALLOW"}"#,
        br#"{"request_id":"abcde","behavior":true}"#,
        br#"[{"request_id":"abcde","behavior":"allow"}]"#,
    ] {
        let r = h.post_raw("/permission", &[], body);
        assert_eq!(r.pair(), (400, usage.clone()), "{:?}", String::from_utf8_lossy(body));
    }
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn huge_and_deeply_nested_bodies() {
    let mut h = with_config("[limits]\nmax_body_bytes = 1024\n");
    h.initialize();
    let port = h.port();
    let secret = h.secret();
    let too_large = json!({"error": "request body is larger than the limit of 1024 bytes"});
    let big = format!(r#"{{"content":"{}"}}"#, "x".repeat(2048));
    for path in ["/inject", "/permission"] {
        assert_eq!(h.post_raw(path, &[], big.as_bytes()).pair(), (413, too_large.clone()), "{path}");
    }
    // Chunked, so the size is only known while reading.
    let mut req = format!(
        "POST /inject HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in big.as_bytes().chunks(500) {
        req.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), std::str::from_utf8(chunk).unwrap()));
    }
    req.push_str("0\r\n\r\n");
    assert_eq!(parsed(&raw(port, req.as_bytes())), (413, too_large.clone()));
    // A declared length is refused before any of the body is read. On
    // /inject the body may also carry files, in base64: the limit has room
    // for limits.max_files_bytes of them (50 MiB * 4/3, and 1 KiB a file).
    let declared = |port: u16, secret: &str, path: &str, length: u64| {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        parsed(&raw(port, req.as_bytes()))
    };
    let with_files = |limit: u64| {
        let message = format!("request body is larger than the limit of {limit} bytes (limits.max_body_bytes, plus room for limits.max_files_bytes of files)");
        (413, json!({ "error": message }))
    };
    let room = (50u64 << 20).div_ceil(3) * 4 + 10 * 1024;
    assert_eq!(declared(port, &secret, "/inject", 1_000_000_000_000), with_files(1024 + room));
    assert_eq!(declared(port, &secret, "/permission", 1025), (413, too_large));
    // At the limit is fine.
    let exact = format!(r#"{{"content":"{}"}}"#, "y".repeat(1024 - 14));
    assert_eq!(exact.len(), 1024);
    assert_eq!(h.post_raw("/inject", &[], exact.as_bytes()).pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(h.recv()["params"]["content"].as_str().unwrap().len(), 1010);

    // The default limit is 1 MiB, and the error says so.
    let mut d = Host::spawn();
    d.initialize();
    // (Only the head is sent: the host answers without reading a body.)
    assert_eq!(
        declared(d.port(), &d.secret(), "/permission", 1048577),
        (413, json!({"error": "request body is larger than the limit of 1048576 bytes"}))
    );
    assert_eq!(declared(d.port(), &d.secret(), "/inject", (1 << 20) + room + 1), with_files((1 << 20) + room));
    let big = format!(r#"{{"content":"{}"}}"#, "x".repeat(1 << 20));
    assert_eq!(
        d.post_raw("/inject", &[], big.as_bytes()).pair(),
        (413, json!({"error": "request body is larger than the limit of 1048576 bytes"})),
        "past the declared-length check, the message itself is held to max_body_bytes"
    );
    // Nesting past what the JSON parser follows is just invalid JSON...
    let deep = format!(r#"{{"content":"x","meta":{{"a":{}{}}}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(d.post_raw("/inject", &[], deep.as_bytes()).pair(), (400, json!({"error": "invalid json body"})));
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    assert_eq!(d.post_raw("/inject", &[], deep.as_bytes()).pair(), (400, json!({"error": "invalid json body"})));
    let deep = format!(r#"{{"content":"x","meta":{}1{}}}"#, r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    assert_eq!(d.post_raw("/inject", &[], deep.as_bytes()).pair(), (400, json!({"error": "invalid json body"})));
    // ...and nesting it does follow becomes a flat meta string.
    let nested = format!(r#"{{"content":"x","meta":{{"a":{}1{}}}}}"#, "[".repeat(50), "]".repeat(50));
    assert_eq!(d.post_raw("/inject", &[], nested.as_bytes()).pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(d.recv_line(), channel_line("x", r#"{"a":"1","chat_id":"inject"}"#), "brackets are scrubbed from meta values");
    nothing_on_stdout(&d);
    d.assert_still_serving();
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn invalid_utf8_is_refused_wherever_it_is() {
    let mut h = Host::spawn();
    h.initialize();
    let port = h.port();
    let secret = h.secret();
    let invalid = json!({"error": "invalid json body"});
    for body in [
        &b"{\"content\":\"\xff\xfe\"}"[..],
        b"{\"content\":\"caf\xe9\"}",
        b"{\"content\":\"x\",\"meta\":{\"k\xc3\":\"v\"}}",
        b"\xef\xbb\xbf{\"content\":\"bom\"}",
        br#"{"content":"\ud800"}"#,
    ] {
        assert_eq!(h.post_raw("/inject", &[], body).pair(), (400, invalid.clone()), "{body:?}");
    }
    let req = |header: &[u8]| {
        let mut r = format!("POST /inject HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\nConnection: close\r\nContent-Length: 15\r\n").into_bytes();
        r.extend_from_slice(header);
        r.extend_from_slice(b"\r\n\r\n{\"content\":\"x\"}");
        r
    };
    assert_eq!(
        parsed(&raw(port, &req(b"Idempotency-Key: \xff\xfe"))),
        (400, json!({"error": "Idempotency-Key must be UTF-8"}))
    );
    // Other headers with bytes that are not text are simply unusable.
    let mut sse = format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\nConnection: close\r\nLast-Event-ID: ").into_bytes();
    sse.extend_from_slice(b"1\xff\r\n\r\n");
    assert_eq!(
        parsed(&raw(port, &sse)),
        (400, json!({"error": "Last-Event-ID / since must be an event id (a whole number)"}))
    );
    let host = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\xff\r\nConnection: close\r\n\r\n";
    assert_eq!(parsed(&raw(port, host)).0, 421);
    // A request line that is not valid is refused by the HTTP parser.
    let r = raw(port, b"GET /inj\xffect HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.is_empty() || support::parse_response(&r).status == 400, "{}", String::from_utf8_lossy(&r));
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn wrong_host_headers_get_421_on_every_route() {
    let mut h = Host::spawn();
    h.initialize();
    let port = h.port();
    let secret = h.secret();
    let other = format!("127.0.0.1:{}", port.wrapping_add(1).max(1));
    let suffixed = format!("127.0.0.1:{port}.evil.com");
    let evil_port = format!("evil.com:{port}");
    let any = format!("0.0.0.0:{port}");
    let other_loopback = format!("127.0.0.2:{port}");
    let userinfo = format!("user@127.0.0.1:{port}");
    let routes = [
        ("GET", "/status", None),
        ("POST", "/inject", Some(&br#"{"content":"rebound"}"#[..])),
        ("GET", "/events", None),
        ("GET", "/sse", None),
        ("POST", "/permission", Some(br#"{"request_id":"abcde","behavior":"allow"}"#)),
        ("GET", "/permissions", None),
        ("GET", "/nope", None),
        ("DELETE", "/inject", None),
    ];
    for host in ["evil.com", other.as_str(), "localhost", "127.0.0.1", suffixed.as_str(), evil_port.as_str(), "[::1]", any.as_str(), other_loopback.as_str(), userinfo.as_str()] {
        let expected = json!({"error": format!("host {host:?} is not served here; use 127.0.0.1:{port}")});
        for (method, path, body) in routes {
            // With the right secret: the Host check comes first.
            let r = h.http(method, path, &[("Host", host), ("X-OPZero-Secret", &secret)], body);
            assert_eq!(r.pair(), (421, expected.clone()), "{method} {path} Host: {host}");
        }
    }
    // No Host header at all.
    let expected = json!({"error": format!("host \"\" is not served here; use 127.0.0.1:{port}")});
    for (method, path, _) in routes {
        let req = format!("{method} {path} HTTP/1.1\r\nX-OPZero-Secret: {secret}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert_eq!(parsed(&raw(port, req.as_bytes())), (421, expected.clone()), "{method} {path}");
    }
    let req = "GET /status HTTP/1.0\r\n\r\n";
    assert_eq!(parsed(&raw(port, req.as_bytes())), (421, expected));
    // The three loopback names are served, in any case.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("LocalHost:{port}"), format!("[::1]:{port}")] {
        assert_eq!(h.http("GET", "/status", &[("Host", &host)], None).status, 200, "{host}");
    }
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn no_cors_headers_even_when_asked() {
    let mut h = Host::spawn();
    h.initialize();
    let secret = h.secret();
    let port = h.port();
    let no_cors = |r: &support::Response, what: &str| {
        let cors: Vec<_> = r.headers.iter().filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-")).collect();
        assert!(cors.is_empty(), "{what}: {cors:?}");
    };
    let origin = ("Origin", "http://evil.example");
    let r = h.http("GET", "/status", &[origin], None);
    assert_eq!(r.status, 200);
    no_cors(&r, "GET /status");
    let r = h.http("POST", "/inject", &[origin, ("X-OPZero-Secret", &secret)], Some(br#"{"content":"from a page"}"#));
    assert_eq!(r.status, 202);
    no_cors(&r, "POST /inject");
    h.recv();
    let sse = Sse::open(port, "/events", &[origin, ("X-OPZero-Secret", &secret)]);
    assert_eq!(sse.status, 200);
    assert!(!sse.headers.iter().any(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-")));
    drop(sse);
    // Preflights, as a browser sends them (without the secret).
    for path in ["/inject", "/status", "/events", "/permission", "/permissions", "/nope"] {
        let r = h.http(
            "OPTIONS",
            path,
            &[origin, ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "x-opzero-secret, content-type")],
            None,
        );
        no_cors(&r, path);
        let expected = if path == "/nope" {
            (404, json!({"error": "not found"}))
        } else {
            (405, json!({"error": "method not allowed"}))
        };
        assert_eq!(r.pair(), expected, "OPTIONS {path}");
    }
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn wrong_methods_get_405_json() {
    let mut h = Host::spawn();
    h.initialize();
    let secret = h.secret();
    for (method, path) in [
        ("GET", "/inject"),
        ("PUT", "/inject"),
        ("DELETE", "/inject"),
        ("PATCH", "/inject"),
        ("HEAD", "/inject"),
        ("BREW", "/inject"),
        ("POST", "/events"),
        ("PUT", "/sse"),
        ("POST", "/status"),
        ("DELETE", "/status"),
        ("GET", "/permission"),
        ("POST", "/permissions"),
        ("TRACE", "/permissions"),
    ] {
        for headers in [vec![], vec![("X-OPZero-Secret", secret.as_str())]] {
            let r = h.http(method, path, &headers, Some(br#"{"content":"x"}"#));
            assert_eq!(r.status, 405, "{method} {path}");
            if method != "HEAD" {
                assert_eq!(r.json(), json!({"error": "method not allowed"}), "{method} {path}");
            }
        }
    }
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn slow_and_silent_clients_are_disconnected() {
    // A short read timeout keeps the test quick; the default is 10 s.
    let mut h = with_config("[limits]\nread_timeout_ms = 300\n");
    h.initialize();
    let port = h.port();
    let secret = h.secret();

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_closed_by_host(&mut silent);

    // Trickles a header one byte at a time, forever if let.
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    trickle.write_all(format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ").as_bytes()).unwrap();
    let mut writer = trickle.try_clone().unwrap();
    let dripping = std::thread::spawn(move || {
        for _ in 0..2000 {
            if writer.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("still accepted bytes after 20 s");
    });
    assert_closed_by_host(&mut trickle);
    drop(trickle);
    dripping.join().unwrap();

    // Finishes a request, then keeps the connection open and idle.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"}") {
        let n = idle.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(support::parse_response(&got).status, 200);
    assert_closed_by_host(&mut idle);

    // Sends its headers but only part of the body.
    let mut slow_body = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow_body
        .write_all(format!("POST /inject HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\nContent-Length: 100\r\n\r\n{{\"content\":").as_bytes())
        .unwrap();
    slow_body.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = slow_body.read_to_end(&mut answer);
    assert_eq!(parsed(&answer), (408, json!({"error": "the request body did not arrive within 300 ms"})));

    // An open event stream is not a slow request: it stays open.
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    std::thread::sleep(Duration::from_millis(600));
    h.call_reply(json!({"chat_id": "c", "text": "still streaming"}));
    assert_eq!(sse.event().1["text"], "still streaming");
    drop(sse);

    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn hundreds_of_sse_clients_connect_and_vanish() {
    let mut h = Host::spawn();
    h.initialize();
    let port = h.port();
    let secret = h.secret();
    let baseline = h.open_fds();
    let auth = [("X-OPZero-Secret", secret.as_str())];

    let mut streams = Vec::new();
    for _ in 0..300 {
        let mut sse = Sse::open(port, "/events", &auth);
        assert_eq!(sse.line(), ": connected");
        streams.push(sse);
    }
    let r = h.call_reply(json!({"chat_id": "c", "text": "to all"}));
    assert_eq!(reply_text(&r), "sent");
    // They vanish three ways: a plain close, a half close, and a reset.
    for (i, mut sse) in streams.into_iter().enumerate() {
        match i % 3 {
            0 => drop(sse),
            1 => sse.hang_up(),
            _ => {
                assert_eq!(sse.event().1["text"], "to all");
                sse.reset();
            }
        }
    }
    // And a hundred more go before their request is even complete.
    for i in 0..100 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req = format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\n");
        s.write_all(&req.as_bytes()[..req.len() * i / 100]).unwrap();
        if i % 2 == 0 {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
    // The host lets go of every one of them.
    let deadline = Instant::now() + WAIT;
    while h.open_fds() > baseline {
        assert!(Instant::now() < deadline, "{} descriptors open, {baseline} before", h.open_fds());
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = h.call_reply(json!({"chat_id": "c", "text": "anyone?"}));
    assert_eq!(reply_text(&r), "queued (no client connected)");
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn clients_that_never_read_block_nothing() {
    let mut h = Host::spawn();
    h.initialize();
    let port = h.port();
    let secret = h.secret();
    let auth = [("X-OPZero-Secret", secret.as_str())];

    // An event stream that is never read...
    let stuck = Sse::over(support::connect_small_rcvbuf(port), port, "/events", &auth);
    assert_eq!(stuck.status, 200);
    // ...and a connection that pipelines requests but never reads answers.
    let mut flood = support::connect_small_rcvbuf(port);
    flood.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let one = format!("GET /permissions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\n\r\n");
    let flooding = std::thread::spawn(move || {
        let burst = one.repeat(1000);
        // Stops when the host stops reading (the write times out).
        for _ in 0..100 {
            if flood.write_all(burst.as_bytes()).is_err() {
                break;
            }
        }
        flood
    });

    let mut reader = h.sse("/events", &[]);
    let pad = "p".repeat(16 * 1024);
    for n in 0..400 {
        let r = h.call_reply(json!({"chat_id": "c", "text": format!("{n} {pad}")}));
        assert_eq!(reply_text(&r), "sent");
        assert!(reader.event().1["text"].as_str().unwrap().starts_with(&format!("{n} ")));
        if n % 100 == 0 {
            let r = h.post("/inject", &json!({"content": format!("inject {n}")}));
            assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
            assert_eq!(h.recv()["params"]["content"], format!("inject {n}"));
        }
    }
    let flood = flooding.join().unwrap();
    nothing_on_stdout(&h);
    h.assert_still_serving();
    drop((stuck, flood));
}

#[test]
fn content_and_meta_limits_name_the_limit() {
    let mut h = with_config("[limits]\nmax_content_chars = 10\nmax_meta_keys = 3\n");
    h.initialize();
    for content in ["0123456789", "éééééééééé"] {
        assert_eq!(h.post("/inject", &json!({"content": content})).pair_host_id(), (202, json!({"ok": true})));
        assert_eq!(h.recv()["params"]["content"], content);
    }
    for content in ["01234567890", "ééééééééééé"] {
        assert_eq!(
            h.post("/inject", &json!({"content": content})).pair(),
            (413, json!({"error": "content is 11 characters; the limit is 10"}))
        );
    }
    let three = json!({"a": "1", "b": "2", "c": "3"});
    assert_eq!(h.post("/inject", &json!({"content": "m", "meta": three})).pair_host_id(), (202, json!({"ok": true})));
    h.recv();
    let four = json!({"a": "1", "b": "2", "c": "3", "bad-key": "4"});
    assert_eq!(
        h.post("/inject", &json!({"content": "m", "meta": four})).pair(),
        (413, json!({"error": "meta has 4 keys; the limit is 3"}))
    );
    // A refused inject does not use up its message id.
    let r = h.post("/inject", &json!({"content": "far too long", "message_id": "m-1"}));
    assert_eq!(r.status, 413);
    let r = h.post("/inject", &json!({"content": "retry", "message_id": "m-1"}));
    assert_eq!(r.pair(), (202, json!({"ok": true, "message_id": "m-1"})));
    assert_eq!(h.recv()["params"]["content"], "retry");
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn meta_values_are_scrubbed_and_dropped_keys_named() {
    let mut h = Host::spawn();
    h.initialize();
    let r = h.post(
        "/inject",
        &json!({
            "content": "hi",
            "chat_id": "\"><c>\r\n",
            "meta": {
                "q": "a\"<b>[c]\r\nd",
                "bad-key": "x",
                "": "empty",
                "émoji": "x",
                "has space": "x",
                "1st": "Claude Code drops keys that start with a digit",
                "_1": "but not this one",
                "n": 3,
                "t": true,
                "gone": null,
                "o": {"a": "<x>"},
                "ok": "fine",
                "chat_id": "spoofed"
            }
        }),
    );
    assert_eq!(
        r.pair_host_id(),
        (202, json!({"ok": true, "dropped_meta": ["", "1st", "bad-key", "has space", "émoji"]}))
    );
    assert_eq!(
        h.recv_line(),
        channel_line("hi", r#"{"_1":"but not this one","chat_id":"c  ","n":"3","o":"{a:x}","ok":"fine","q":"abc  d","t":"true"}"#)
    );
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn idempotent_injects_emit_once() {
    let mut h = with_config("[limits]\nidempotency_window = 3\n");
    h.initialize();
    let ok = |id: &str| json!({"ok": true, "message_id": id});
    let dup = |id: &str| json!({"ok": true, "duplicate": true, "message_id": id});
    // By the body's message_id.
    let body = json!({"content": "once", "message_id": "m-1"});
    assert_eq!(h.post("/inject", &body).pair(), (202, ok("m-1")));
    assert_eq!(h.recv()["params"]["content"], "once");
    assert_eq!(h.post("/inject", &body).pair(), (200, dup("m-1")));
    // Even with other content: the id decides.
    assert_eq!(h.post("/inject", &json!({"content": "changed", "message_id": "m-1"})).pair(), (200, dup("m-1")));
    // By the header; the same id space as the body's.
    let header = |key: &str, content: &str| {
        h.post_raw("/inject", &[("Idempotency-Key", key)], json!({"content": content}).to_string().as_bytes())
    };
    assert_eq!(header("k-1", "by header").pair(), (202, ok("k-1")));
    assert_eq!(h.recv()["params"]["content"], "by header");
    assert_eq!(header("k-1", "by header").pair(), (200, dup("k-1")));
    assert_eq!(header("m-1", "header, body's id").pair(), (200, dup("m-1")));
    assert_eq!(h.post("/inject", &json!({"content": "x", "message_id": "k-1"})).pair(), (200, dup("k-1")));
    // A number and its text are the same id.
    assert_eq!(h.post("/inject", &json!({"content": "n", "message_id": 7})).pair(), (202, ok("7")));
    h.recv();
    assert_eq!(h.post("/inject", &json!({"content": "n", "message_id": "7"})).pair(), (200, dup("7")));
    // An empty id is no id.
    for _ in 0..2 {
        assert_eq!(h.post("/inject", &json!({"content": "e", "message_id": ""})).pair_host_id(), (202, json!({"ok": true})));
        assert_eq!(h.recv()["params"]["content"], "e");
        assert_eq!(header("", "e").pair_host_id(), (202, json!({"ok": true})));
        assert_eq!(h.recv()["params"]["content"], "e");
    }
    // A long id works like a short one.
    let long = "L".repeat(100_000);
    assert_eq!(h.post("/inject", &json!({"content": "long", "message_id": long})).pair(), (202, ok(&long)));
    h.recv();
    assert_eq!(h.post("/inject", &json!({"content": "long", "message_id": long})).pair(), (200, dup(&long)));
    // The window is the last 3 ids (7, the long one, and this one): m-1 fell out.
    assert_eq!(h.post("/inject", &json!({"content": "w", "message_id": "w"})).pair(), (202, ok("w")));
    h.recv();
    assert_eq!(h.post("/inject", &body).pair(), (202, ok("m-1")));
    assert_eq!(h.recv()["params"]["content"], "once");

    // Eight senders retrying the same message at once: one gets through.
    let (port, secret) = (h.port(), h.secret());
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let secret = secret.clone();
            std::thread::spawn(move || {
                support::http(port, "POST", "/inject", &[("X-OPZero-Secret", &secret)], Some(br#"{"content":"race","message_id":"r-1"}"#))
                    .pair()
            })
        })
        .collect();
    let mut answers: Vec<_> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    answers.sort_by_key(|a| a.0);
    assert_eq!(answers[0], (200, dup("r-1")));
    assert_eq!(answers[7], (202, ok("r-1")));
    assert_eq!(answers.iter().filter(|a| a.0 == 202).count(), 1, "{answers:?}");
    assert_eq!(h.recv()["params"]["content"], "race");
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

/// Sends `line` and returns what comes back on stdout (nothing for input
/// that JSON-RPC says to ignore).
fn answer_to(h: &mut Host, line: &[u8]) -> Option<Value> {
    h.write_raw(line);
    h.write_raw(b"\n");
    // A ping right behind it: its answer marks the end of the first one's.
    h.write_raw(br#"{"jsonrpc":"2.0","id":"marker","method":"ping"}"#);
    h.write_raw(b"\n");
    let first = h.recv();
    if first["id"] == "marker" {
        assert_eq!(first, json!({"jsonrpc": "2.0", "id": "marker", "result": {}}));
        return None;
    }
    assert_eq!(h.recv()["id"], "marker", "more than one answer to {:?}", String::from_utf8_lossy(line));
    Some(first)
}

/// An error answer as rmcp writes it: without `id` when there is none to
/// give (MCP's rule for parse errors and invalid requests).
fn error_answer(id: Value, code: i64, message: &str) -> Value {
    let mut answer = json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}});
    if !id.is_null() {
        answer["id"] = id;
    }
    answer
}

#[test]
fn malformed_json_rpc_never_ends_the_process() {
    let mut h = Host::spawn();
    // The same garbage before and after the handshake.
    for phase in ["before initialize", "after initialize"] {
        let parse_error = |h: &mut Host, line: &[u8]| {
            let a = answer_to(h, line).unwrap_or_else(|| panic!("{phase}: no answer to {line:?}"));
            assert_eq!((&a["id"], &a["error"]["code"]), (&Value::Null, &json!(-32700)), "{phase}: {a}");
            assert!(a["error"]["message"].as_str().unwrap().starts_with("Parse error"));
        };
        parse_error(&mut h, b"garbage");
        parse_error(&mut h, b"{\"jsonrpc\":\"2.0\",");
        parse_error(&mut h, b"\xff\xfe{}");
        for (line, what) in [
            (&b"[]"[..], "an empty array"),
            (b"[1,2]", "a batch (MCP does not use JSON-RPC batches)"),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, "a batch (MCP does not use JSON-RPC batches)"),
            (b"5", "a number"),
            (b"null", "null"),
            (br#""ping""#, "a string"),
        ] {
            assert_eq!(
                answer_to(&mut h, line),
                Some(error_answer(Value::Null, -32600, &format!("Invalid Request: expected a JSON-RPC message object, got {what}"))),
                "{phase}: {line:?}"
            );
        }
        let a = answer_to(&mut h, b"{}").unwrap();
        assert_eq!((&a["id"], &a["error"]["code"]), (&Value::Null, &json!(-32600)), "{phase}: {a}");
        let a = answer_to(&mut h, br#"{"jsonrpc":"1.0","id":10,"method":"tools/list"}"#).unwrap();
        assert_eq!((&a["id"], &a["error"]["code"]), (&json!(10), &json!(-32600)), "{phase}: {a}");
        let a = answer_to(&mut h, br#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}"#).unwrap();
        assert_eq!((&a["id"], &a["error"]["code"]), (&Value::Null, &json!(-32600)), "{phase}: {a}");
        // A request for a method nobody serves is answered with its id.
        let a = answer_to(&mut h, br#"{"jsonrpc":"2.0","id":7,"method":"bogus/method"}"#).unwrap();
        assert_eq!(a["id"], 7, "{phase}: {a}");
        assert!(a["error"]["code"].is_i64(), "{phase}: {a}");
        // A known method with unreadable params, too.
        let a = answer_to(&mut h, br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":5}"#).unwrap();
        assert_eq!((&a["id"], &a["error"]["code"]), (&json!(9), &json!(-32602)), "{phase}: {a}");
        // Notifications and responses are never answered.
        for line in [
            &br#"{"jsonrpc":"2.0","method":"notifications/bogus"}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/bogus","params":5}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":424242}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/claude/channel/permission_request","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":99,"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":98,"error":{"code":1,"message":"x"}}"#,
            b"",
            b"   ",
            b"\r",
        ] {
            assert_eq!(answer_to(&mut h, line), None, "{phase}: {:?}", String::from_utf8_lossy(line));
        }
        assert!(h.is_running(), "{phase}: exited; stderr:\n{}", h.stderr());
        if phase == "before initialize" {
            // Early `initialized` is ignored; the real handshake then works.
            assert_eq!(answer_to(&mut h, br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#), None);
            let a = answer_to(&mut h, br#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":5}"#).unwrap();
            assert_eq!((&a["id"], &a["error"]["code"]), (&json!("i"), &json!(-32602)), "{a}");
            assert_eq!(h.initialize()["result"]["protocolVersion"], "2025-11-25");
        }
    }
    // A line far too long is dropped and said so; the next one is read.
    let mut long = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":""#.to_vec();
    long.resize(17 * 1024 * 1024, b'x');
    long.extend_from_slice(br#""}}"#);
    assert_eq!(
        answer_to(&mut h, &long),
        Some(error_answer(Value::Null, -32600, "Invalid Request: message longer than 16777216 bytes"))
    );
    // An initialize in the middle of the session is answered, not fatal.
    let r = h.initialize_request();
    assert!(r.get("result").is_some() || r.get("error").is_some(), "{r}");
    assert!(h.is_running());
    h.assert_still_serving();
    // And EOF still ends it.
    h.close_stdin();
    assert!(h.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()));
}

#[test]
fn session_ids_that_could_be_paths_are_refused() {
    let escape = format!("opzero-escape-{}", support::new_session_id());
    let uuid = support::new_session_id();
    for id in [
        "../../x".to_string(),
        format!("../../{escape}"),
        format!("../{uuid}"),
        format!("{}/../{}", &uuid[..8], &uuid[9..]),
        "..%2F..%2Fx".to_string(),
        "/etc/passwd".to_string(),
        format!("{{{uuid}}}"),
        format!("urn:uuid:{uuid}"),
        uuid.replace('-', ""),
        format!("{uuid}.json"),
        format!("{uuid}\n"),
        format!(" {uuid}"),
        format!("{}g", &uuid[..35]),
        "x".repeat(10_000),
        "é".repeat(18),
    ] {
        let home = tempfile::tempdir().unwrap();
        for how in ["env", "flag"] {
            let mut cmd = std::process::Command::new(support::BIN);
            cmd.arg("serve").env("OPZERO_HOME", home.path()).current_dir(home.path());
            if how == "env" {
                cmd.env("OPZERO_CHANNEL_SESSION_ID", &id);
            } else {
                cmd.env_remove("OPZERO_CHANNEL_SESSION_ID").arg("--session-id").arg(&id);
            }
            let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{how} {id:?}");
            assert!(out.stdout.is_empty(), "{how} {id:?}: stdout is for JSON-RPC only");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("not a UUID"), "{how} {id:?}: {err}");
            // Nothing was written, here or above.
            assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "{how} {id:?}");
        }
    }
    assert!(!std::env::temp_dir().join(format!("{escape}.json")).exists());
    assert!(!std::env::temp_dir().join(&escape).exists());
    // The host that is running meanwhile is unaffected.
    let mut h = Host::spawn();
    h.initialize();
    h.assert_still_serving();
}

/// How a request is framed (a length, or chunks) changes nothing of how
/// an inject is answered, or of what reaches Claude.
fn inject_request(port: u16, secret: &str, body: &[u8], chunked: bool) -> Vec<u8> {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let mut r = format!(
        "POST /inject HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    if chunked {
        r.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        r.extend_from_slice(body);
        r.extend_from_slice(b"\r\n0\r\n\r\n");
    } else {
        r.extend_from_slice(body);
    }
    r
}

/// Status line, headers but `date`, and body, with the `message_id` the
/// host made for an accepted message (each framing's message gets its own)
/// replaced by `ID`.
fn without_date(raw: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let r = support::parse_response(raw);
    let headers = r.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("date")).cloned().collect();
    let mut body = String::from_utf8(r.body.clone()).unwrap();
    if r.status == 202 {
        r.pair_host_id();
        body = body.replace(r.json()["message_id"].as_str().unwrap(), "ID");
    }
    (r.status, headers, body)
}

#[test]
fn inject_answers_do_not_depend_on_how_the_request_is_framed() {
    let mut h = with_config("[limits]\nmax_content_chars = 20\n");
    h.initialize();
    let (port, secret) = (h.port(), h.secret());
    for body in [
        &br#"{"content":"plain","chat_id":"c","meta":{"user":"ann"}}"#[..],
        br#"{"content":"x","meta":{"bad-key":"v","n":1}}"#,
        br#"{"content":"far too long for the limit"}"#,
        br#"{"content":""}"#,
        br#"{"content":"x","meta":[1]}"#,
        br#"{"content":"x","chat_id":{}}"#,
        br#"{"content":"x","message_id":[]}"#,
        b"[1]",
        b"{bad",
        b"{\"content\":\"caf\xe9\"}",
    ] {
        let sized = raw(port, &inject_request(port, &secret, body, false));
        let sized_line = h.try_recv_line(Duration::from_millis(100));
        let chunked = raw(port, &inject_request(port, &secret, body, true));
        let chunked_line = h.try_recv_line(Duration::from_millis(100));
        assert_eq!(without_date(&sized), without_date(&chunked), "{}", String::from_utf8_lossy(body));
        assert_eq!(sized_line, chunked_line);
    }
    // One store of message ids behind both.
    let once = br#"{"content":"once","message_id":"m"}"#;
    assert_eq!(parsed(&raw(port, &inject_request(port, &secret, once, false))).0, 202);
    assert_eq!(h.recv()["params"]["content"], "once");
    assert_eq!(
        parsed(&raw(port, &inject_request(port, &secret, once, true))),
        (200, json!({"ok": true, "duplicate": true, "message_id": "m"}))
    );
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

/// Reads one response off a kept-alive connection (its headers left out).
fn read_response(r: &mut std::io::BufReader<TcpStream>) -> Response {
    use std::io::BufRead;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let n = r.read_until(b'\n', &mut head).unwrap();
        assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&head));
    }
    let text = String::from_utf8(head).unwrap();
    let length: usize = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("no length in {text}"));
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    Response { status, headers: Vec::new(), body }
}

#[test]
fn kept_alive_injects_pipeline_in_order_and_any_request_may_follow() {
    let mut h = Host::spawn();
    h.initialize();
    let (port, secret) = (h.port(), h.secret());
    let inject = |content: &str, auth: &str| {
        let body = json!({"content": content}).to_string();
        format!("POST /inject HTTP/1.1\r\nHost: localhost:{port}\r\n{auth}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let ours = format!("X-OPZero-Secret: {secret}");
    let ok = (202, json!({"ok": true}));

    // Three injects in one write, a status check, then more: every one is
    // answered, in order, on the one connection.
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    let burst = format!("{}{}{}", inject("a", &ours), inject("b", &format!("Authorization: Bearer {secret}")), inject("c", &ours));
    w.write_all(burst.as_bytes()).unwrap();
    for _ in 0..3 {
        assert_eq!(read_response(&mut r).pair_host_id(), ok);
    }
    w.write_all(format!("GET /status HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).pair().0, 200);
    w.write_all(inject("d", &ours).as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).pair_host_id(), ok);
    // A wrong secret is refused, and the connection still serves.
    w.write_all(inject("forged", "X-OPZero-Secret: nope").as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).pair(), (403, json!({"error": "forbidden"})));
    w.write_all(inject("e", &ours).as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).pair_host_id(), ok);
    for want in ["a", "b", "c", "d", "e"] {
        assert_eq!(h.recv()["params"]["content"], want);
    }

    // A request that arrives in pieces is put back together.
    let whole = inject("pieces", &ours);
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    for piece in whole.as_bytes().chunks(whole.len() / 5 + 1) {
        w.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_response(&mut r).pair_host_id(), ok);
    assert_eq!(h.recv()["params"]["content"], "pieces");
    // HTTP/1.0 is answered too, in its own version.
    let old = raw(port, whole.replace("HTTP/1.1", "HTTP/1.0").as_bytes());
    assert!(old.starts_with(b"HTTP/1.0 202 "), "{}", String::from_utf8_lossy(&old));
    assert_eq!(h.recv()["params"]["content"], "pieces");
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

#[test]
fn a_claude_code_that_stops_reading_stdout_delays_injects_and_loses_none() {
    let mut h = Host::spawn();
    h.initialize();
    h.pause_stdout();
    let (port, secret) = (h.port(), h.secret());
    // Far more than a socket holds: the host's writes must wait for room.
    let sender = std::thread::spawn(move || {
        (0..60)
            .map(|i| {
                let body = json!({"content": format!("{i}:{}", "x".repeat(16_000))}).to_string();
                support::http(port, "POST", "/inject", &[("X-OPZero-Secret", &secret)], Some(body.as_bytes())).pair_host_id()
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!sender.is_finished(), "60 × 16 kB went through a stdout nobody read");
    h.resume_stdout();
    let answers = sender.join().unwrap();
    assert!(answers.iter().all(|a| *a == (202, json!({"ok": true}))), "{answers:?}");
    for i in 0..60 {
        let content = h.recv()["params"]["content"].as_str().unwrap().to_string();
        assert!(content.starts_with(&format!("{i}:")) && content.len() == 16_000 + format!("{i}:").len());
    }
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

/// Bytes that are not HTTP are hyper's to answer (README): its own empty
/// `400` (`431` past 100 headers) and a close. Nothing reaches Claude, and
/// the host serves on.
#[test]
fn requests_that_are_not_http_get_hyper_s_answer_and_change_nothing() {
    let mut h = Host::spawn();
    h.initialize();
    let port = h.port();
    let status_of = |answer: &[u8]| support::parse_response(answer).status;
    for garbage in [&b"hello\r\n\r\n"[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"] {
        let answer = raw(port, garbage);
        assert!(answer.is_empty() || status_of(&answer) == 400, "{garbage:?}: {}", String::from_utf8_lossy(&answer));
    }
    // Up to 100 headers is HTTP's business (hyper's limit); more is refused.
    let with_headers = |n: usize, path: &str, extra: &str| {
        let mut r = format!("{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n");
        for i in 0..n {
            r.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    assert_eq!(parsed(&raw(port, with_headers(98, "GET /status", "").as_bytes())).0, 200);
    assert_eq!(status_of(&raw(port, with_headers(100, "GET /status", "").as_bytes())), 431);
    // The same after an earlier request on the kept-alive connection.
    let status = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    for second in [b"hello\r\n\r\n".to_vec(), with_headers(100, "GET /status", "").into_bytes()] {
        let answers = raw(port, &[status.as_bytes(), &second].concat());
        assert!(answers.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&answers));
    }
    // An inject with many headers is still an inject.
    let auth = format!("X-OPZero-Secret: {}\r\nContent-Length: 17\r\n", h.secret());
    let mut many = with_headers(40, "POST /inject", &auth).into_bytes();
    many.extend_from_slice(br#"{"content":"man"}"#);
    assert_eq!(support::parse_response(&raw(port, &many)).pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(h.recv()["params"]["content"], "man");
    nothing_on_stdout(&h);
    h.assert_still_serving();
}

/// Idle connections from someone else must not use up the host's open
/// files before the owner's requests: `serve` raises its soft limit to the
/// hard one.
#[test]
fn serve_raises_its_open_file_limit_to_the_hard_one() {
    let mut h = Host::spawn_with(Options { open_files: Some(64), ..Options::default() });
    h.initialize();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", h.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[3], words[4], "soft = hard: {line}");
    assert_ne!(words[3], "64", "{line}");
    // And it serves more connections at once than the limit it was started with.
    let idle: Vec<std::net::TcpStream> = (0..100).map(|_| std::net::TcpStream::connect(("127.0.0.1", h.port())).unwrap()).collect();
    assert_eq!(h.get("/status").status, 200);
    drop(idle);
}
