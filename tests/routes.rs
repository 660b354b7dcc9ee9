//! Every route the bridge has, through the real binary, with and without
//! credentials: each answers as the sub-router it is in says (anyone, the
//! secret only, or the secret or the page's token from the page's own
//! origin). The table here must list every route the router has.

mod support;

use opzero_host::bridge::{route_table, Tier};
use serde_json::json;
use support::*;

/// Each route with the method it answers to, and who may call it.
const ROUTES: &[(&str, &str, Tier)] = &[
    ("GET", "/status", Tier::Open),
    ("GET", "/", Tier::Open),
    ("GET", "/app.js", Tier::Open),
    ("GET", "/app.css", Tier::Open),
    ("POST", "/login", Tier::Open),
    ("POST", "/login-code", Tier::Secret),
    ("GET", "/watch", Tier::Secret),
    ("POST", "/inject", Tier::SecretOrPage),
    ("GET", "/events", Tier::SecretOrPage),
    ("GET", "/sse", Tier::SecretOrPage),
    ("POST", "/permission", Tier::SecretOrPage),
    ("GET", "/permissions", Tier::SecretOrPage),
    ("GET", "/files/{id}", Tier::SecretOrPage),
    ("POST", "/logout", Tier::SecretOrPage),
];

/// A fresh page sign-in (a /logout in the table must not end the next one's).
fn token(h: &Host) -> String {
    let out = h.cli(&["open", &h.session[..8], "--no-browser"]);
    let url = String::from_utf8(out.stdout).unwrap();
    let code = url.trim().split_once("/#code=").unwrap().1.to_string();
    let origin = format!("http://127.0.0.1:{}", h.port());
    let body = json!({ "code": code }).to_string();
    let r = h.http("POST", "/login", &[("Origin", &origin), ("Content-Type", "application/json")], Some(body.as_bytes()));
    r.json()["token"].as_str().unwrap().to_string()
}

/// The status and body of one request; an event stream's status only.
fn answer(h: &Host, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    if (path == "/events" || path == "/sse" || path == "/watch") && Sse::open(h.port(), path, headers).status == 200 {
        return (200, String::new());
    }
    let r = h.http(method, path, headers, Some(b"{}"));
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn the_table_lists_every_route_the_router_has() {
    let mut ours: Vec<(Tier, &str)> = ROUTES.iter().map(|(_, path, tier)| (*tier, *path)).collect();
    let mut router = route_table();
    let key = |r: &(Tier, &str)| r.1.to_string();
    ours.sort_by_key(key);
    router.sort_by_key(key);
    assert_eq!(router, ours, "a route the test does not list, or one it lists that is gone");
}

#[test]
fn every_route_answers_as_its_sub_router_says() {
    let mut h = Host::spawn();
    h.initialize();
    let secret = h.secret();
    let own = format!("http://127.0.0.1:{}", h.port());
    let foreign = format!("http://127.0.0.1:{}", h.port() + 1);
    let forbidden = (403, json!({"error": "forbidden"}).to_string());
    let refused = (403, json!({"error": "cross-origin request refused"}).to_string());
    for (method, path, tier) in ROUTES {
        let path = &path.replace("{id}", "0123");
        let json = ("Content-Type", "application/json");
        let bearer = format!("Bearer {}", token(&h));
        let none = answer(&h, method, path, &[("Origin", &own), json]);
        let with_secret = answer(&h, method, path, &[("X-OPZero-Secret", &secret), ("Origin", &own), json]);
        let from_elsewhere = answer(&h, method, path, &[("Authorization", &bearer), ("Origin", &foreign), json]);
        let page = answer(&h, method, path, &[("Authorization", &bearer), ("Origin", &own), json]);
        let case = format!("{method} {path} ({tier:?})");
        assert_ne!(with_secret.0, 403, "{case}: the secret was refused: {}", with_secret.1);
        match tier {
            Tier::Open => {
                assert_ne!(none.0, 403, "{case}: refused without a credential: {}", none.1);
                assert_ne!(page.0, 403, "{case}: refused to the page: {}", page.1);
            }
            Tier::Secret => {
                assert_eq!(none, forbidden, "{case}");
                assert_eq!(page, forbidden, "{case}: a token is not the secret");
                assert_eq!(from_elsewhere, forbidden, "{case}");
            }
            Tier::SecretOrPage => {
                assert_eq!(none, forbidden, "{case}");
                assert_eq!(from_elsewhere, refused, "{case}");
                assert_ne!(page.0, 403, "{case}: refused to the page: {}", page.1);
            }
        }
        // A wrong method is 405 for anyone, credential or not.
        let wrong = if *method == "GET" { "DELETE" } else { "GET" };
        let r = h.http(wrong, path, &[], None);
        assert_eq!(r.pair(), (405, json!({"error": "method not allowed"})), "{wrong} {path}");
    }
    // And what no route serves is 404 for anyone.
    assert_eq!(h.http("GET", "/nope", &[], None).pair(), (404, json!({"error": "not found"})));
    assert_eq!(h.try_recv_line(std::time::Duration::from_millis(100)), None, "nothing reached Claude");
}
