//! The built-in page's server side through the real binary: its files,
//! signing in with `open`'s one-time code, what the session cookie may do
//! (and from which origin), and `[bridge] allowed_hosts`. The page itself
//! is driven in a real browser by tests/browser/.

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

/// Signs in as the page does; returns the `Cookie` header value.
fn signed_in(h: &Host) -> String {
    let (_, code) = sign_in_link(h, &[]);
    let origin = own_origin(h);
    let r = login(h, &code, &[("Origin", &origin)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let set = r.header("set-cookie").expect("a session cookie").to_string();
    set.split(';').next().unwrap().to_string()
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
fn a_code_needs_the_secret_works_once_and_its_cookie_is_strict() {
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
        (403, json!({"error": format!("this sign-in link is not valid; run `opzero-host open {short}` for a new one")}))
    );
    let r = login(&h, &code, &[("Origin", &origin)]);
    assert_eq!(r.pair(), (200, json!({"ok": true, "sessionId": h.session})));
    let cookie = r.header("set-cookie").unwrap();
    let (pair, attributes) = cookie.split_once("; ").unwrap();
    assert!(pair.starts_with("opzero_session=") && pair.len() == "opzero_session=".len() + 64, "{cookie}");
    assert_eq!(attributes, "HttpOnly; SameSite=Strict; Path=/", "no Secure on plain loopback HTTP");
    assert_eq!(
        login(&h, &code, &[("Origin", &origin)]).pair(),
        (403, json!({"error": format!("this sign-in link has already been used; run `opzero-host open {short}` for a new one")}))
    );
    // Another site's page cannot sign this browser in.
    let (_, fresh) = sign_in_link(&h, &[]);
    assert_eq!(
        login(&h, &fresh, &[("Origin", "http://evil.example")]).pair(),
        (403, json!({"error": "cross-origin request refused"}))
    );
    assert_eq!(login(&h, &fresh, &[("Origin", &origin)]).status, 200, "the refused try did not spend it");
    // A cookie is no secret: it cannot get codes.
    let cookie = signed_in(&h);
    let r = h.http("POST", "/login-code", &[("Cookie", &cookie), ("Origin", &origin)], None);
    assert_eq!(r.pair(), (403, json!({"error": "forbidden"})));
}

#[test]
fn the_cookie_works_only_from_the_bridges_own_origin() {
    let mut h = Host::spawn();
    h.initialize();
    let cookie = signed_in(&h);
    let origin = own_origin(&h);
    let inject = |headers: &[(&str, &str)], text: &str| {
        let mut all = vec![("Cookie", cookie.as_str()), ("Content-Type", "application/json")];
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
    assert_eq!(inject(&[], "c").pair(), refused, "a POST without an Origin is not the page's");
    assert_eq!(inject(&[("Origin", &origin), ("Sec-Fetch-Site", "cross-site")], "d").pair(), refused);
    assert_eq!(inject(&[("Origin", &origin)], "from the page").pair(), (202, json!({"ok": true})));
    assert_eq!(
        h.recv(),
        json!({"jsonrpc": "2.0", "method": "notifications/claude/channel",
               "params": {"content": "from the page", "meta": {"chat_id": "web"}}}),
        "only the page's own message reached Claude"
    );
    // Reads: the page's EventSource sends no Origin.
    assert_eq!(h.http("GET", "/permissions", &[("Cookie", &cookie)], None).pair(), (200, json!({"pending": []})));
    assert_eq!(h.http("GET", "/permissions", &[("Cookie", &cookie), ("Origin", "http://evil.example")], None).pair(), refused);
    assert_eq!(h.http("GET", "/permissions", &[("Cookie", "opzero_session=forged")], None).pair(), (403, json!({"error": "forbidden"})));
    let mut sse = Sse::open(h.port(), "/events", &[("Cookie", &cookie)]);
    assert_eq!(sse.status, 200);
    assert_eq!(h.call_reply(json!({"chat_id": "web", "text": "hi page"}))["result"]["isError"], false);
    assert_eq!(without_ts(sse.event().1), json!({"type": "reply", "chat_id": "web", "text": "hi page"}));
    // The secret works from anywhere, as before: the phone's server is no browser.
    let secret = h.secret();
    let r = h.http("GET", "/permissions", &[("X-OPZero-Secret", &secret), ("Origin", "http://evil.example")], None);
    assert_eq!(r.status, 200);
    assert_eq!(h.try_recv_line(std::time::Duration::from_millis(200)), None, "nothing else reached Claude");
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
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let mut headers = tunnel.to_vec();
    headers.push(("Cookie", &cookie));
    headers.push(("Content-Type", "application/json"));
    let r = h.http("POST", "/inject", &headers, Some(br#"{"content":"through the tunnel"}"#));
    assert_eq!(r.pair(), (202, json!({"ok": true})));
    let forged = [("Host", "laptop.example.ts.net"), ("Origin", "https://evil.example"), ("Cookie", &cookie)];
    assert_eq!(h.http("POST", "/inject", &forged, Some(b"{}")).status, 403);
}

#[test]
fn allowed_hosts_errors_name_the_file_line_and_key() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("opzero.toml");
    std::fs::write(&path, "[bridge]\nallowed_hosts = [\"https://x.example\", 5, \"ok.example:99\", \"a b\", \"h:99999\"]\nother = 1\n").unwrap();
    let out = Command::new(BIN).arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    for want in [
        format!("{p}:2:18: bridge.allowed_hosts: \"https://x.example\" is not a host name (give name or name:port, with no scheme or path)"),
        format!("{p}:2:39: bridge.allowed_hosts: expected a string, found integer"),
        format!("{p}:2:59: bridge.allowed_hosts: \"a b\" is not a host name"),
        format!("{p}:2:66: bridge.allowed_hosts: \"h:99999\" is not a host name"),
        format!("{p}:3:1: bridge.other: unknown key (expected one of: allowed_hosts)"),
    ] {
        assert!(err.contains(&want), "{want}\nnot in\n{err}");
    }
}
