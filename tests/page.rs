//! The built-in page's server side through the real binary: its files,
//! signing in with `open`'s one-time code, what the page's token may do
//! (and from which origin), sign-out, `open` keeping the code off every
//! command line, and `[bridge] allowed_hosts`. The page itself is driven
//! in a real browser by tests/browser/.

mod support;

use std::process::Command;

use serde_json::json;
use support::*;

fn host_with(config: &str) -> Host {
    let mut h = Host::spawn_with(Options { config: Some(config.into()), ..Options::default() });
    h.initialize();
    h
}

/// `open`'s link and the code in it.
fn sign_in_link(h: &Host, extra: &[&str]) -> (String, String) {
    let out = h.cli(&[&["open", &h.session[..8]], extra].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8(out.stdout).unwrap().trim_end().to_string();
    let code = url.split_once("/#code=").expect("a #code= link").1.to_string();
    assert!(code.len() == 64 && code.bytes().all(|b| b.is_ascii_hexdigit()), "{url}");
    (url, code)
}

fn own_origin(h: &Host) -> String {
    format!("http://127.0.0.1:{}", h.port())
}

/// Signs in as the page does; returns the page's token.
fn signed_in(h: &Host) -> String {
    let (_, code) = sign_in_link(h, &[]);
    let origin = own_origin(h);
    let r = login(h, &code, &[("Origin", &origin)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("set-cookie").is_none(), "no cookie, ever");
    r.json()["token"].as_str().expect("a token").to_string()
}

fn login(h: &Host, code: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    h.http("POST", "/login", &all, Some(json!({ "code": code }).to_string().as_bytes()))
}

#[test]
fn the_page_is_served_without_a_secret_and_runs_only_its_own_code() {
    let h = Host::spawn();
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
    ] {
        let r = h.http("GET", path, &[], None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(kind), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("access-control-allow-origin").is_none(), "no CORS, ever");
    }
    let page = String::from_utf8(h.http("GET", "/", &[], None).body).unwrap();
    assert!(page.contains(r#"<script src="/app.js" defer></script>"#));
    for outside in ["http://", "https://", "//"] {
        assert!(!page.contains(&format!("src=\"{outside}")) && !page.contains(&format!("href=\"{outside}")), "nothing from elsewhere");
    }
    // The Host check holds for the page too.
    let r = h.http("GET", "/", &[("Host", "evil.example")], None);
    assert_eq!(r.status, 421);
}

#[test]
fn a_code_needs_the_secret_works_once_and_gives_a_token_not_a_cookie() {
    let h = Host::spawn();
    let r = h.http("POST", "/login-code", &[], None);
    assert_eq!(r.pair(), (403, json!({"error": "forbidden"})));
    let (url, code) = sign_in_link(&h, &[]);
    assert_eq!(url, format!("http://127.0.0.1:{}/#code={code}", h.port()));
    let (_, based) = sign_in_link(&h, &["--base", "https://laptop.example.ts.net/"]);
    assert_ne!(based, code, "each link has its own code");

    // The secret itself never goes into the link.
    assert!(!url.contains(&h.secret()));
    // Wrong, then right, then used.
    let origin = own_origin(&h);
    let short = &h.session[..8];
    assert_eq!(
        login(&h, "0".repeat(64).as_str(), &[("Origin", &origin)]).pair(),
        (403, json!({"error": format!("this sign-in link is not valid; run `opzero-host open {short}` for a new sign-in link")}))
    );
    let r = login(&h, &code, &[("Origin", &origin)]);
    assert!(r.header("set-cookie").is_none(), "no cookie: it would reach every port of this host");
    let (status, body) = r.pair();
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{body}");
    assert_eq!((status, body), (200, json!({"ok": true, "sessionId": h.session, "token": token, "expires_in": 12 * 3600})));
    assert_eq!(
        login(&h, &code, &[("Origin", &origin)]).pair(),
        (403, json!({"error": format!("this sign-in link has already been used; run `opzero-host open {short}` for a new sign-in link")}))
    );
    // Another site's page cannot sign this browser in.
    let (_, fresh) = sign_in_link(&h, &[]);
    assert_eq!(
        login(&h, &fresh, &[("Origin", "http://evil.example")]).pair(),
        (403, json!({"error": "cross-origin request refused"}))
    );
    let other_port = format!("http://127.0.0.1:{}", h.port() + 1);
    assert_eq!(login(&h, &fresh, &[("Origin", &other_port)]).status, 403, "nor a page on another port");
    assert_eq!(login(&h, &fresh, &[("Origin", &origin)]).status, 200, "the refused tries did not spend it");
    // A token is no secret: it cannot get codes.
    let token = signed_in(&h);
    let bearer = format!("Bearer {token}");
    let r = h.http("POST", "/login-code", &[("Authorization", &bearer), ("Origin", &origin)], None);
    assert_eq!(r.pair(), (403, json!({"error": "forbidden"})));
}

#[test]
fn the_token_works_only_from_the_bridges_own_origin_until_sign_out() {
    let mut h = Host::spawn();
    h.initialize();
    let token = signed_in(&h);
    let bearer = format!("Bearer {token}");
    let origin = own_origin(&h);
    let inject = |headers: &[(&str, &str)], text: &str| {
        let mut all = vec![("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        h.http("POST", "/inject", &all, Some(json!({"content": text, "chat_id": "web"}).to_string().as_bytes()))
    };
    let refused = (403, json!({"error": "cross-origin request refused"}));
    assert_eq!(inject(&[("Origin", "http://evil.example")], "a").pair(), refused);
    assert_eq!(inject(&[("Origin", "null")], "b").pair(), refused);
    let with_path = format!("{origin}/x");
    assert_eq!(inject(&[("Origin", &with_path)], "b2").pair(), refused, "an origin has no path");
    let other_port = format!("http://127.0.0.1:{}", h.port() + 1);
    assert_eq!(inject(&[("Origin", &other_port)], "b3").pair(), refused);
    let https = format!("https://127.0.0.1:{}", h.port());
    assert_eq!(inject(&[("Origin", &https)], "b4").pair(), refused, "loopback is plain http");
    let other_name = format!("http://localhost:{}", h.port());
    assert_eq!(inject(&[("Origin", &other_name)], "b5").pair(), refused, "the origin is the one the request was sent to");
    assert_eq!(inject(&[], "c").pair(), refused, "a POST without an Origin is not the page's");
    assert_eq!(inject(&[("Origin", &origin), ("Sec-Fetch-Site", "cross-site")], "d").pair(), refused);
    assert_eq!(inject(&[("Origin", &origin)], "from the page").pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(
        h.recv(),
        json!({"jsonrpc": "2.0", "method": "notifications/claude/channel",
               "params": {"content": "from the page", "meta": {"chat_id": "web"}}}),
        "only the page's own message reached Claude"
    );
    // Reads: a browser sends no Origin with a same-origin GET.
    let auth = ("Authorization", bearer.as_str());
    assert_eq!(h.http("GET", "/permissions", &[auth], None).pair(), (200, json!({"pending": []})));
    assert_eq!(h.http("GET", "/permissions", &[auth, ("Origin", "http://evil.example")], None).pair(), refused);
    assert_eq!(h.http("GET", "/permissions", &[("Authorization", "Bearer forged")], None).pair(), (403, json!({"error": "forbidden"})));
    assert_eq!(h.http("GET", "/permissions", &[("X-OPZero-Secret", &token)], None).status, 403, "a token is not the secret");
    // A cookie holding the token means nothing.
    let cookie = format!("opzero_session={token}");
    assert_eq!(h.http("GET", "/permissions", &[("Cookie", &cookie)], None).status, 403);
    let mut sse = Sse::open(h.port(), "/events", &[auth]);
    assert_eq!(sse.status, 200);
    assert_eq!(h.call_reply(json!({"chat_id": "web", "text": "hi page"}))["result"]["isError"], false);
    assert_eq!(without_ts(sse.event().1), json!({"type": "reply", "chat_id": "web", "text": "hi page"}));
    // The secret works from anywhere, as before: the phone's server is no browser.
    let secret = h.secret();
    let r = h.http("GET", "/permissions", &[("X-OPZero-Secret", &secret), ("Origin", "http://evil.example")], None);
    assert_eq!(r.status, 200);
    assert_eq!(h.try_recv_line(std::time::Duration::from_millis(200)), None, "nothing else reached Claude");

    // A second sign-in is its own; signing one out leaves the other.
    let other = signed_in(&h);
    let own = [auth, ("Origin", origin.as_str())];
    assert_eq!(h.http("POST", "/logout", &own, None).pair(), (200, json!({"ok": true})));
    assert_eq!(h.http("GET", "/permissions", &[auth], None).pair(), (403, json!({"error": "forbidden"})));
    let r = h.http("POST", "/inject", &[auth, ("Origin", &origin), ("Content-Type", "application/json")], Some(b"{\"content\":\"after sign-out\"}"));
    assert_eq!(r.pair(), (403, json!({"error": "forbidden"})));
    let other_bearer = format!("Bearer {other}");
    assert_eq!(h.http("GET", "/permissions", &[("Authorization", &other_bearer)], None).status, 200);
    let r = h.http("POST", "/logout", &[("X-OPZero-Secret", &secret)], None);
    assert_eq!(r.status, 400, "the secret has no sign-in to end");
}

#[test]
fn status_tells_claudes_whereabouts_only_to_the_secret_or_a_signed_in_page() {
    let home = tempfile::tempdir().unwrap();
    let sessions = home.path().join(".claude/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    let session = json!({"pid": 1, "sessionId": "s", "cwd": "/work/private", "name": "secret plans", "status": "busy"});
    std::fs::write(sessions.join(format!("{}.json", std::process::id())), session.to_string()).unwrap();
    let mut h = Host::spawn_with(Options {
        env: vec![("HOME".into(), home.path().display().to_string())],
        ..Options::default()
    });
    h.initialize();
    let claude = json!({"state": "busy", "name": "secret plans", "cwd": "/work/private"});
    wait_until(|| h.get("/status").json().get("claude") == Some(&claude));
    let open = h.http("GET", "/status", &[], None);
    assert_eq!(open.json(), json!({"ok": true, "sessionId": h.session, "pid": h.pid(), "version": env!("CARGO_PKG_VERSION")}));
    let bearer = format!("Bearer {}", signed_in(&h));
    assert_eq!(h.http("GET", "/status", &[("Authorization", &bearer)], None).json()["claude"], claude);
    let foreign = [("Authorization", bearer.as_str()), ("Origin", "http://evil.example")];
    assert_eq!(h.http("GET", "/status", &foreign, None).json().get("claude"), None, "not to a token from elsewhere");
}

#[test]
fn allowed_hosts_let_a_tunnel_in_and_nothing_else() {
    let plain = Host::spawn();
    let r = plain.http("GET", "/status", &[("Host", "laptop.example.ts.net")], None);
    assert_eq!(r.status, 421, "not without the config");

    let h = host_with("[bridge]\nallowed_hosts = [\"Laptop.Example.ts.net\", \"127.0.0.1:8022\"]\n");
    for (name, status) in [
        ("laptop.example.ts.net", 200),
        ("LAPTOP.example.ts.net:443", 200),
        ("127.0.0.1:8022", 200),
        ("127.0.0.1:8023", 421),
        ("example.ts.net", 421),
        ("laptop.example.ts.net.evil.example", 421),
    ] {
        assert_eq!(h.http("GET", "/status", &[("Host", name)], None).status, status, "{name}");
    }
    // The page, reached through the tunnel, signs in and posts from the tunnel's origin.
    let (url, code) = sign_in_link(&h, &["--base", "https://laptop.example.ts.net"]);
    assert_eq!(url, format!("https://laptop.example.ts.net/#code={code}"));
    let tunnel = [("Host", "laptop.example.ts.net"), ("Origin", "https://laptop.example.ts.net")];
    let r = login(&h, &code, &tunnel);
    assert_eq!(r.status, 200);
    let bearer = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    let inject = |host: &str, origin: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("Host", host), ("Origin", origin), ("Authorization", &bearer), ("Content-Type", "application/json")];
        headers.extend_from_slice(extra);
        h.http("POST", "/inject", &headers, Some(br#"{"content":"through the tunnel"}"#))
    };
    let tunnel_name = "laptop.example.ts.net";
    assert_eq!(inject(tunnel_name, "https://laptop.example.ts.net", &[]).pair_host_id(), (202, json!({"ok": true})));
    let refused = (403, json!({"error": "cross-origin request refused"}));
    assert_eq!(inject(tunnel_name, "https://evil.example", &[]).pair(), refused);
    // A name-only entry allows any port in Host, but the Origin must be the
    // very origin the request was sent to: another port on that name is not.
    assert_eq!(inject(tunnel_name, "https://laptop.example.ts.net:9999", &[]).pair(), refused);
    assert_eq!(inject("laptop.example.ts.net:8443", "https://laptop.example.ts.net:9999", &[]).pair(), refused);
    assert_eq!(inject("laptop.example.ts.net:8443", "https://laptop.example.ts.net:8443", &[]).status, 202);
    // When the tunnel says which scheme it served, the Origin must have it.
    let https = [("X-Forwarded-Proto", "https")];
    assert_eq!(inject(tunnel_name, "http://laptop.example.ts.net", &https).pair(), refused);
    assert_eq!(inject(tunnel_name, "https://laptop.example.ts.net", &https).status, 202);
}

#[test]
fn open_keeps_the_code_off_every_command_line() {
    let h = Host::spawn();
    h.port(); // the discovery file is there
    let dir = tempfile::tempdir().unwrap();
    // A "browser" that records its arguments, every process's command line
    // while it runs, and the page it was handed.
    let browser = dir.path().join("browser");
    let log = dir.path().join("log");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {log}.args\n\
             cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' > {log}.cmdlines\ncat \"$1\" > {log}.page\ntouch {log}.done\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(["open", &h.session[..8]])
        .env("OPZERO_HOME", h.home.path())
        .env("BROWSER", &browser)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "open returns at once");
    let url = String::from_utf8(out.stdout).unwrap().trim_end().to_string();
    let code = url.split_once("/#code=").expect("the link is printed for the person at the terminal").1.to_string();
    let done = log.with_extension("done");
    wait_until(|| done.exists());
    let read = |ext: &str| std::fs::read_to_string(log.with_extension(ext)).unwrap();
    let args = read("args");
    let cmdlines = read("cmdlines");
    assert!(cmdlines.contains(browser.to_str().unwrap()), "the snapshot holds the browser's own command line");
    assert!(!args.contains(&code) && !cmdlines.contains(&code), "the code is on no command line:\n{args}\n{cmdlines}");
    // The browser was handed a private page that sends it on to the link.
    let page = std::path::PathBuf::from(args.trim_end());
    assert!(page.starts_with(h.home.path().join("signin")), "{}", page.display());
    assert_eq!(mode(&page), 0o600);
    assert_eq!(mode(page.parent().unwrap()), 0o700);
    assert!(read("page").contains(&format!("url={url}\"")), "{}", read("page"));
    // Once the code is used, the page is gone.
    assert_eq!(login(&h, &code, &[("Origin", &own_origin(&h))]).status, 200);
    assert!(!page.exists(), "the page went with its use");
}

#[test]
fn allowed_hosts_errors_name_the_file_line_and_key() {
    let text = "[bridge]\nallowed_hosts = [\"https://x.example\", \"ok.example:99\", \"a b\", \"h:99999\"]\nsign_in_hours = 0\n";
    assert_validate_says(
        text,
        &[
            "{p}:2:18: bridge.allowed_hosts: \"https://x.example\" is not a host name (give name or name:port, with no scheme or path)",
            "{p}:2:56: bridge.allowed_hosts: \"a b\" is not a host name",
            "{p}:2:63: bridge.allowed_hosts: \"h:99999\" is not a host name",
            "{p}:3:17: bridge.sign_in_hours: must be between 1 and 8760",
        ],
    );
    // A value of the wrong type or an unknown key stops the reading at the first.
    assert_validate_says(
        "[bridge]\nallowed_hosts = [\"https://x.example\", 5]\n",
        &["{p}:2:39: bridge.allowed_hosts: expected a string, found integer"],
    );
    assert_validate_says(
        &format!("{text}other = 1\n"),
        &["{p}:4:1: bridge.other: unknown key (expected one of: allowed_hosts, sign_in_hours)"],
    );
}
