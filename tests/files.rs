//! Issue 12, files both ways, through the real binary: the phone sends files
//! with `POST /inject` (base64 JSON or multipart), Claude sends them back
//! with `reply {files}`, the phone fetches them with `GET /files/<id>`, and
//! the CLI does both (`send --file`, `tail --save`). Every refusal is
//! checked to have written nothing and sent nothing.

mod support;
#[path = "../host/tests/filters_support/mod.rs"]
mod filters_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

/// The small limits most refusal tests use.
const SMALL: &str = "[limits]\nmax_file_bytes = 1000\nmax_files = 2\nmax_files_bytes = 1500\n";

const BOUNDARY: &str = "opzero-test-boundary-7d1f";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A started host (handshake done), default config.
fn host() -> Host {
    let mut h = Host::spawn();
    h.initialize();
    h
}

fn with_config(config: &str) -> Host {
    let mut h = Host::spawn_with(Options {
        config: Some(config.into()),
        ..Options::default()
    });
    h.initialize();
    h
}

fn session_dir(h: &Host) -> PathBuf {
    h.home.path().join("files").join(&h.session)
}

fn inbox(h: &Host) -> PathBuf {
    session_dir(h).join("inbox")
}

fn outbox(h: &Host) -> PathBuf {
    session_dir(h).join("outbox")
}

/// The entries of `dir`, sorted; none when it does not exist.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    v.sort();
    v
}

fn assert_empty_or_absent(dir: &Path, what: &str) {
    let e = entries(dir);
    assert!(e.is_empty(), "{what}: {} holds {e:?}", dir.display());
}

fn channel_line(content: &str, meta: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{{"content":"{content}","meta":{meta}}}}}"#)
}

/// Proves nothing reached Claude Code since the last line read: a fresh
/// inject's notification is the very next stdout line.
fn next_line_is_a_probe(h: &Host, tag: &str) {
    let r = h.post("/inject", &json!({"content": tag, "chat_id": "probe"}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})), "probe {tag}");
    assert_eq!(h.recv_line(), channel_line(tag, r#"{"chat_id":"probe"}"#), "after {tag}");
}

/// `r` is `status` with a body of exactly `{"error": "..."}` whose text
/// holds every needle; returns the text.
fn assert_error(r: &Response, status: u16, needles: &[&str], case: &str) -> String {
    let (s, body) = r.pair();
    assert_eq!(s, status, "{case}: {body}");
    let obj = body.as_object().unwrap_or_else(|| panic!("{case}: {body}"));
    assert_eq!(obj.len(), 1, "{case}: an error is {{\"error\": ...}} only: {body}");
    let text = body["error"].as_str().unwrap_or_else(|| panic!("{case}: {body}")).to_string();
    for n in needles {
        assert!(text.contains(n), "{case}: {text:?} does not contain {n:?}");
    }
    text
}

/// One `files` entry of an inject body.
fn file(name: &str, mime: Option<&str>, data: &[u8]) -> Value {
    let mut v = json!({"name": name, "data": b64(data)});
    if let Some(m) = mime {
        v["mime"] = json!(m);
    }
    v
}

/// Checks `path` is a file straight in this host's inbox, named
/// `<n>-<name>`; returns `(n, name)`.
fn in_inbox(h: &Host, path: &str) -> (u64, String) {
    let p = Path::new(path);
    assert!(p.is_absolute(), "{path:?} is not absolute");
    let parent = p.parent().unwrap().canonicalize().unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_eq!(parent, inbox(h).canonicalize().unwrap(), "{path:?} is not in the inbox");
    let file = p.file_name().unwrap().to_str().expect("a UTF-8 file name").to_string();
    let (n, name) = file.split_once('-').unwrap_or_else(|| panic!("{file:?} is not <n>-<name>"));
    let n = n.parse().unwrap_or_else(|_| panic!("{file:?} does not start with a number"));
    (n, name.to_string())
}

fn meta_str<'a>(n: &'a Value, key: &str) -> &'a str {
    n["params"]["meta"][key].as_str().unwrap_or_else(|| panic!("no meta.{key} in {n}"))
}

enum Part<'a> {
    Text(&'a str, &'a str),
    File {
        filename: &'a str,
        mime: Option<&'a str>,
        data: &'a [u8],
    },
}

/// A multipart/form-data body with [`BOUNDARY`], written by hand.
fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match p {
            Part::Text(name, value) => {
                out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes());
                out.extend_from_slice(value.as_bytes());
            }
            Part::File { filename, mime, data } => {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n").as_bytes(),
                );
                if let Some(m) = mime {
                    out.extend_from_slice(format!("Content-Type: {m}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn post_multipart(h: &Host, body: &[u8]) -> Response {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    h.post_raw("/inject", &[("Content-Type", &ct)], body)
}

/// Some bytes that are not text and hold what a multipart parser could
/// trip on (a line that looks like a boundary, but not this body's: a
/// sender picks a boundary its data does not hold).
fn binary(len: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    let tricky = "\r\n--opzero-test-other\r\n\r\n\0\u{ff}--";
    if len > tricky.len() + 10 {
        v[5..5 + tricky.len()].copy_from_slice(tricky.as_bytes());
    }
    v
}

// ---------------------------------------------------------------------------
// 1. POST /inject with files
// ---------------------------------------------------------------------------

#[test]
fn an_image_lands_in_the_private_inbox_as_image_path() {
    let h = host();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR not really an image \xff\xfe\0".to_vec();
    let r = h.post(
        "/inject",
        &json!({"content": "look at this", "chat_id": "c-1", "meta": {"user": "ann"},
                "files": [file("photo.png", Some("image/png"), &png)]}),
    );
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let id = r.json()["message_id"].as_str().unwrap().to_string();
    assert_eq!((r.status, r.body.as_slice()), (202, format!(r#"{{"message_id":"{id}","ok":true}}"#).as_bytes()));
    let n = h.recv();
    let path = meta_str(&n, "image_path").to_string();
    assert_eq!(
        n,
        json!({"jsonrpc": "2.0", "method": "notifications/claude/channel",
               "params": {"content": "look at this", "meta": {"chat_id": "c-1", "user": "ann", "image_path": path}}})
    );
    let (_, name) = in_inbox(&h, &path);
    assert_eq!(name, "photo.png");
    assert_eq!(std::fs::read(&path).unwrap(), png);
    assert_eq!(mode(Path::new(&path)), 0o600);
    assert_eq!(mode(&inbox(&h)), 0o700);
    assert_eq!(mode(&session_dir(&h)), 0o700);
    assert_eq!(entries(&inbox(&h)), vec![PathBuf::from(&path)]);
}

#[test]
fn mime_is_optional_guessed_from_the_name_and_padding_is_optional() {
    let h = host();
    // 4 bytes: standard base64 would end in "==".
    let four = [0xde, 0xad, 0xbe, 0xef];
    let unpadded = b64(&four).trim_end_matches('=').to_string();
    assert_eq!(unpadded.len(), 6);
    for (i, (entry, key)) in [
        (json!({"name": "scan.jpg", "data": unpadded}), "image_path"),
        (json!({"name": "report.pdf", "data": b64(&four)}), "file_path"),
        (json!({"name": "blob.zzzunknown", "data": b64(&four)}), "file_path"),
        (json!({"name": "noext", "data": b64(&four)}), "file_path"),
        // A given mime wins over the name.
        (json!({"name": "pic.png", "mime": "application/octet-stream", "data": b64(&four)}), "file_path"),
        (json!({"name": "noext", "mime": "image/gif", "data": b64(&four)}), "image_path"),
    ]
    .into_iter()
    .enumerate()
    {
        let content = format!("m{i}");
        let r = h.post("/inject", &json!({"content": content, "chat_id": "c", "files": [entry.clone()]}));
        assert_eq!(r.pair_host_id(), (202, json!({"ok": true})), "{entry}");
        let n = h.recv();
        let path = meta_str(&n, key).to_string();
        assert_eq!(
            n["params"],
            json!({"content": content, "meta": {"chat_id": "c", key: path}}),
            "{entry}"
        );
        let (_, name) = in_inbox(&h, &path);
        assert_eq!(name, entry["name"].as_str().unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), four, "{entry}");
    }
}

#[test]
fn several_files_are_counted_and_numbered_in_order() {
    let h = host();
    let a = b"first file\n".to_vec();
    let b = binary(300, 1);
    let c = binary(200, 2);
    let r = h.post(
        "/inject",
        &json!({"content": "three", "chat_id": "c", "files": [
            file("a.txt", Some("text/plain"), &a),
            file("b.png", Some("image/png"), &b),
            file("c.bin", None, &c),
        ]}),
    );
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let n = h.recv();
    let paths: Vec<String> = (1..=3).map(|i| meta_str(&n, &format!("file_path_{i}")).to_string()).collect();
    // An image among several is still file_path_N; content is unchanged.
    assert_eq!(
        n["params"],
        json!({"content": "three", "meta": {"chat_id": "c", "file_count": "3",
               "file_path_1": paths[0], "file_path_2": paths[1], "file_path_3": paths[2]}})
    );
    let mut numbers = Vec::new();
    for (path, (want_name, want_bytes)) in paths.iter().zip([("a.txt", &a), ("b.png", &b), ("c.bin", &c)]) {
        let (num, name) = in_inbox(&h, path);
        numbers.push(num);
        assert_eq!(name, want_name);
        assert_eq!(&std::fs::read(path).unwrap(), want_bytes, "{path}");
        assert_eq!(mode(Path::new(path)), 0o600);
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 3, "n is unique");
    assert_eq!(entries(&inbox(&h)).len(), 3);
}

#[test]
fn two_files_of_the_same_name_both_survive() {
    let h = host();
    let r = h.post(
        "/inject",
        &json!({"content": "twins", "files": [file("same.txt", None, b"one"), file("same.txt", None, b"two")]}),
    );
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let n = h.recv();
    assert_eq!(meta_str(&n, "file_count"), "2");
    let (p1, p2) = (meta_str(&n, "file_path_1").to_string(), meta_str(&n, "file_path_2").to_string());
    assert_ne!(p1, p2);
    assert_eq!(std::fs::read(&p1).unwrap(), b"one");
    assert_eq!(std::fs::read(&p2).unwrap(), b"two");
    // And in a later message too.
    let r = h.post("/inject", &json!({"content": "again", "files": [file("same.txt", None, b"three")]}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let n = h.recv();
    let p3 = meta_str(&n, "file_path").to_string();
    assert!(p3 != p1 && p3 != p2, "{p3}");
    assert_eq!(std::fs::read(&p3).unwrap(), b"three");
    let nums: Vec<u64> = [&p1, &p2, &p3].iter().map(|p| in_inbox(&h, p).0).collect();
    assert!(nums[0] != nums[1] && nums[1] != nums[2] && nums[0] != nums[2], "{nums:?}");
    assert_eq!(std::fs::read(&p1).unwrap(), b"one");
    assert_eq!(std::fs::read(&p2).unwrap(), b"two");
    assert_eq!(entries(&inbox(&h)).len(), 3);
}

#[test]
fn file_names_are_sanitized() {
    let h = host();
    let names: Vec<String> = vec![
        "../../x".into(),
        ".hidden".into(),
        "..".into(),
        "n".repeat(10_000),
        "é".repeat(150),
        "a\0b.txt".into(),
        "line\nbreak.txt".into(),
        "cr\rtab\tdel\u{7f}esc\u{1b}.txt".into(),
        "".into(),
        "<script>[1]\"q\".txt".into(),
        "back\\slash.txt".into(),
        "dir/sub/file.txt".into(),
    ];
    let mut numbers = Vec::new();
    for chunk in names.chunks(6).enumerate() {
        let (c, names) = chunk;
        let files: Vec<Value> =
            names.iter().enumerate().map(|(i, n)| file(n, None, format!("file {c}.{i}").as_bytes())).collect();
        let r = h.post("/inject", &json!({"content": format!("chunk {c}"), "files": files}));
        assert_eq!(r.pair_host_id(), (202, json!({"ok": true})), "chunk {c}");
        let n = h.recv();
        assert_eq!(n["params"]["content"], format!("chunk {c}"));
        assert_eq!(meta_str(&n, "file_count"), names.len().to_string());
        for (i, given) in names.iter().enumerate() {
            let path = meta_str(&n, &format!("file_path_{}", i + 1)).to_string();
            let (num, name) = in_inbox(&h, &path);
            numbers.push(num);
            let shown: String = given.chars().take(40).collect();
            assert!(!name.is_empty(), "{shown:?} became an empty name");
            assert!(name.chars().count() <= 100, "{shown:?} became {} characters", name.chars().count());
            assert!(!name.starts_with('.'), "{shown:?} -> {name:?}");
            assert!(!name.chars().any(|ch| ch.is_control()), "{shown:?} -> {name:?}");
            assert!(!name.contains(['/', '\\', '<', '>', '[', ']', '"']), "{shown:?} -> {name:?}");
            assert_eq!(std::fs::read(&path).unwrap(), format!("file {c}.{i}").as_bytes(), "{shown:?}");
            assert_eq!(mode(Path::new(&path)), 0o600);
        }
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), names.len(), "n is unique in the host");
    assert_eq!(entries(&inbox(&h)).len(), names.len());
    // "../../x" went nowhere else.
    for dir in [h.home.path().to_path_buf(), h.home.path().join("files"), session_dir(&h)] {
        assert!(!dir.join("x").exists(), "{}", dir.display());
    }
    // Names that need no change keep it.
    let r = h.post("/inject", &json!({"content": "plain", "files": [file("Report 2024 (final)-v2.pdf", None, b"x")]}));
    assert_eq!(r.status, 202);
    let n = h.recv();
    assert_eq!(in_inbox(&h, meta_str(&n, "file_path")).1, "Report 2024 (final)-v2.pdf");
}

#[test]
fn the_phone_cannot_set_the_file_meta_keys() {
    let h = host();
    let spoof = json!({"image_path": "/etc/passwd", "file_path": "/etc/shadow", "file_count": "9",
                       "file_path_1": "/a", "file_path_12": "/b", "user": "ann"});
    let dropped = json!(["file_count", "file_path", "file_path_1", "file_path_12", "image_path"]);
    let sorted = |v: Value| -> Value {
        let mut v = v;
        if let Some(a) = v["dropped_meta"].as_array_mut() {
            a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
        }
        v
    };

    // Without files.
    let r = h.post("/inject", &json!({"content": "no files", "chat_id": "c", "meta": spoof}));
    assert_eq!(r.status, 202);
    assert_eq!(sorted(r.pair_host_id().1), json!({"ok": true, "dropped_meta": dropped}));
    assert_eq!(h.recv_line(), channel_line("no files", r#"{"chat_id":"c","user":"ann"}"#));

    // With one: only the host names it.
    let r = h.post("/inject", &json!({"content": "one file", "chat_id": "c", "meta": spoof,
                                      "files": [file("p.png", None, b"png")]}));
    assert_eq!(r.status, 202);
    assert_eq!(sorted(r.pair_host_id().1), json!({"ok": true, "dropped_meta": dropped}));
    let n = h.recv();
    let path = meta_str(&n, "image_path").to_string();
    assert_eq!(n["params"], json!({"content": "one file", "meta": {"chat_id": "c", "user": "ann", "image_path": path}}));
    in_inbox(&h, &path);
    assert_eq!(std::fs::read(&path).unwrap(), b"png");

    // Through multipart's meta field too.
    let body = multipart(&[
        Part::Text("content", "mp"),
        Part::Text("chat_id", "c"),
        Part::Text("meta", &spoof.to_string()),
        Part::File { filename: "d.txt", mime: Some("text/plain"), data: b"doc" },
    ]);
    let r = post_multipart(&h, &body);
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(sorted(r.pair_host_id().1), json!({"ok": true, "dropped_meta": dropped}));
    let n = h.recv();
    let path = meta_str(&n, "file_path").to_string();
    assert_eq!(n["params"], json!({"content": "mp", "meta": {"chat_id": "c", "user": "ann", "file_path": path}}));
    assert_eq!(std::fs::read(&path).unwrap(), b"doc");
}

#[test]
fn multipart_with_content_fields_and_files() {
    let h = host();
    let img = binary(700, 9);
    let body = multipart(&[
        Part::Text("content", "from a form"),
        Part::Text("chat_id", "c-7"),
        Part::Text("message_id", "m-1"),
        Part::Text("meta", r#"{"user":"ann"}"#),
        Part::File { filename: "cam.jpg", mime: Some("image/jpeg"), data: &img },
    ]);
    let r = post_multipart(&h, &body);
    assert_eq!((r.status, r.body.as_slice()), (202, br#"{"message_id":"m-1","ok":true}"#.as_slice()), "{:?}", String::from_utf8_lossy(&r.body));
    let n = h.recv();
    let path = meta_str(&n, "image_path").to_string();
    assert_eq!(
        n["params"],
        json!({"content": "from a form", "meta": {"chat_id": "c-7", "user": "ann", "image_path": path}})
    );
    assert_eq!(in_inbox(&h, &path).1, "cam.jpg");
    assert_eq!(std::fs::read(&path).unwrap(), img);
    assert_eq!(mode(Path::new(&path)), 0o600);
    assert_eq!(mode(&inbox(&h)), 0o700);

    // The same message_id again is a duplicate, as with JSON: its file is
    // not kept.
    let r = post_multipart(&h, &body);
    assert_eq!(r.pair(), (200, json!({"ok": true, "duplicate": true, "message_id": "m-1"})));
    assert_eq!(entries(&inbox(&h)), vec![PathBuf::from(&path)]);

    // Two files: the part's Content-Type is the mime; without one, the name decides.
    let doc = binary(100, 3);
    let body = multipart(&[
        Part::File { filename: "a.dat", mime: Some("image/png"), data: &img },
        Part::Text("content", "two"),
        Part::File { filename: "notes.txt", mime: None, data: &doc },
    ]);
    let r = post_multipart(&h, &body);
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let n = h.recv();
    let (p1, p2) = (meta_str(&n, "file_path_1").to_string(), meta_str(&n, "file_path_2").to_string());
    assert_eq!(
        n["params"],
        json!({"content": "two", "meta": {"chat_id": "inject", "file_count": "2", "file_path_1": p1, "file_path_2": p2}})
    );
    assert_eq!((in_inbox(&h, &p1).1, std::fs::read(&p1).unwrap()), ("a.dat".to_string(), img.clone()));
    assert_eq!((in_inbox(&h, &p2).1, std::fs::read(&p2).unwrap()), ("notes.txt".to_string(), doc));

    // Text only.
    let r = post_multipart(&h, &multipart(&[Part::Text("content", "just text")]));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(h.recv_line(), channel_line("just text", r#"{"chat_id":"inject"}"#));
}

#[test]
fn bad_multipart_is_a_400_and_writes_nothing() {
    let h = host();
    let file_part = Part::File { filename: "t.txt", mime: Some("text/plain"), data: b"some data" };
    let good = multipart(&[Part::Text("content", "hi"), file_part]);
    let truncated = &good[..good.len() - format!("\r\n--{BOUNDARY}--\r\n").len() - 3];
    let unknown = multipart(&[
        Part::Text("content", "hi"),
        Part::Text("colour", "blue"),
        Part::File { filename: "t.txt", mime: None, data: b"x" },
    ]);
    let no_content = multipart(&[Part::Text("chat_id", "c"), Part::File { filename: "t.txt", mime: None, data: b"x" }]);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("wrong boundary", "multipart/form-data; boundary=not-the-one".into(), good.clone()),
        ("no boundary", "multipart/form-data".into(), good.clone()),
        ("truncated", ct.clone(), truncated.to_vec()),
        ("garbage", ct.clone(), b"this is not multipart at all".to_vec()),
        ("unknown field", ct.clone(), unknown),
        ("no content", ct.clone(), no_content),
    ];
    for (case, content_type, body) in cases {
        let r = h.post_raw("/inject", &[("Content-Type", &content_type)], &body);
        assert_error(&r, 400, &[], case);
        next_line_is_a_probe(&h, case);
        assert_empty_or_absent(&inbox(&h), case);
    }
    h.post_raw("/inject", &[("Content-Type", &ct)], &good);
    assert_eq!(h.recv()["params"]["content"], "hi", "the good form still goes through");
}

#[test]
fn json_limits_refuse_the_whole_message_and_write_nothing() {
    let h = with_config(SMALL);
    let small = |i: u8| vec![i; 10];
    let cases: Vec<(&str, Vec<Value>, Vec<&str>)> = vec![
        ("too many", vec![file("1.txt", None, &small(1)), file("2.txt", None, &small(2)), file("3.txt", None, &small(3))], vec!["max_files"]),
        ("one too big", vec![file("ok.txt", None, &small(1)), file("big.bin", None, &[7u8; 1001])], vec!["big.bin", "max_file_bytes"]),
        ("total too big", vec![file("a.bin", None, &[1u8; 800]), file("b.bin", None, &[2u8; 800])], vec!["max_files_bytes"]),
    ];
    for (case, files, needles) in cases {
        let r = h.post("/inject", &json!({"content": case, "chat_id": "c", "files": files}));
        let text = assert_error(&r, 413, &needles, case);
        if case == "too many" {
            assert!(!text.contains("max_files_bytes") && !text.contains("max_file_bytes"), "{case}: {text}");
        }
        next_line_is_a_probe(&h, case);
        assert_empty_or_absent(&inbox(&h), case);
    }
    // Exactly at each limit is fine.
    let r = h.post("/inject", &json!({"content": "at the limits", "files": [
        file("a.bin", None, &[1u8; 1000]), file("b.bin", None, &[2u8; 500])]}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let n = h.recv();
    assert_eq!(std::fs::read(meta_str(&n, "file_path_1")).unwrap(), vec![1u8; 1000]);
    assert_eq!(std::fs::read(meta_str(&n, "file_path_2")).unwrap(), vec![2u8; 500]);
}

#[test]
fn multipart_obeys_the_same_limits() {
    let h = with_config(SMALL);
    let f = |name: &'static str, data: &'static [u8]| Part::File { filename: name, mime: None, data };
    static K1: [u8; 1001] = [7; 1001];
    static K8: [u8; 800] = [8; 800];
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("too many", multipart(&[Part::Text("content", "x"), f("1.txt", b"1"), f("2.txt", b"2"), f("3.txt", b"3")]), vec!["max_files"]),
        ("one too big", multipart(&[Part::Text("content", "x"), f("big.bin", &K1)]), vec!["big.bin", "max_file_bytes"]),
        ("total too big", multipart(&[Part::Text("content", "x"), f("a.bin", &K8), f("b.bin", &K8)]), vec!["max_files_bytes"]),
    ];
    for (case, body, needles) in cases {
        let r = post_multipart(&h, &body);
        assert_error(&r, 413, &needles, case);
        next_line_is_a_probe(&h, case);
        assert_empty_or_absent(&inbox(&h), case);
    }
}

#[test]
fn bad_files_entries_are_a_400_and_write_nothing() {
    let h = host();
    let good = file("good.txt", None, b"fine");
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("not base64", json!([{"name": "x.txt", "data": "not base64!!"}]), vec!["base64"]),
        ("second not base64", json!([good, {"name": "bad.txt", "data": "@@@@"}]), vec!["base64"]),
        ("files is a string", json!("nope"), vec![]),
        ("files is an object", json!({"name": "a", "data": "YQ=="}), vec![]),
        ("entry without name", json!([{"data": "YQ=="}]), vec![]),
        ("entry without data", json!([{"name": "a.txt"}]), vec![]),
        ("entry not an object", json!(["a.txt"]), vec![]),
    ];
    for (case, files, needles) in cases {
        let r = h.post("/inject", &json!({"content": case, "files": files}));
        let text = assert_error(&r, 400, &needles, case);
        match case {
            "not base64" => assert!(text.contains("x.txt") || text.contains("files[0]"), "{case}: {text}"),
            "second not base64" => assert!(text.contains("bad.txt") || text.contains("files[1]"), "{case}: {text}"),
            _ => {}
        }
        next_line_is_a_probe(&h, case);
        assert_empty_or_absent(&inbox(&h), case);
    }
}

#[test]
fn max_files_zero_takes_no_files_either_way() {
    let mut h = with_config("[limits]\nmax_files = 0\n");
    let r = h.post("/inject", &json!({"content": "one", "files": [file("a.txt", None, b"a")]}));
    let text = assert_error(&r, 413, &["max_files"], "inject");
    assert!(!text.contains("max_files_bytes"), "{text}");
    next_line_is_a_probe(&h, "after inject");
    assert_empty_or_absent(&inbox(&h), "inject");

    let src = tempfile::tempdir().unwrap();
    let a = src.path().join("a.txt");
    std::fs::write(&a, "a").unwrap();
    let mut sse = h.sse("/events", &[]);
    let r = h.call_reply(json!({"chat_id": "c", "text": "with a file", "files": [a]}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(reply_text(&r).contains("max_files"), "{r}");
    h.call_reply(json!({"chat_id": "c", "text": "after"}));
    assert_eq!(without_ts(sse.event().1), json!({"type": "reply", "chat_id": "c", "text": "after"}));
    assert_empty_or_absent(&outbox(&h), "reply");
}

#[test]
fn a_default_host_takes_a_20_mib_file_as_base64_json() {
    let h = host();
    let max = 20 * 1024 * 1024;
    let data: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let body = format!(r#"{{"content":"big","files":[{{"name":"big.bin","data":"{}"}}]}}"#, b64(&data));
    let r = h.post_raw("/inject", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let n = h.recv();
    let path = meta_str(&n, "file_path").to_string();
    assert!(std::fs::read(&path).unwrap() == data, "the 20 MiB file on disk differs");
    std::fs::remove_file(&path).unwrap();

    let mut over = data;
    over.push(0);
    let body = format!(r#"{{"content":"too big","files":[{{"name":"over.bin","data":"{}"}}]}}"#, b64(&over));
    let r = h.post_raw("/inject", &[("Content-Type", "application/json")], body.as_bytes());
    assert_error(&r, 413, &["over.bin", "max_file_bytes"], "20 MiB + 1");
    next_line_is_a_probe(&h, "after over");
    assert_empty_or_absent(&inbox(&h), "20 MiB + 1");
}

#[test]
fn a_filter_that_drops_or_rejects_a_message_removes_its_files() {
    use filters_support::{entry, wasm_dir};
    let mut h = Host::spawn_with(Options {
        config: Some(
            entry("allow", "sender_allowlist", r#"["inject"]"#, "[filter.config]\nusers = [\"ann\"]\naction = \"drop\"")
                + &entry("loud", "hello_filter", r#"["inject"]"#, "[filter.config]\ngreeting = \"Hi!\"\nno_shouting = true"),
        ),
        filter_cache: Some(wasm_dir().join("test-cache")),
        ..Options::default()
    });
    h.initialize();
    let r = h.post("/inject", &json!({"content": "hi", "meta": {"user": "bob"}, "files": [file("a.png", None, b"png")]}));
    let (status, body) = r.pair();
    assert_eq!((status, &body["delivered"], &body["filter"]), (202, &json!(false), &json!("allow")), "{body}");
    assert_empty_or_absent(&inbox(&h), "dropped");

    let r = h.post("/inject", &json!({"content": "HELLO", "meta": {"user": "ann"}, "files": [file("b.txt", None, b"txt")]}));
    assert_eq!(r.pair(), (422, json!({"error": "please don't shout", "filter": "loud"})));
    assert_empty_or_absent(&inbox(&h), "rejected");
    assert_eq!(h.try_recv_line(Duration::from_millis(200)), None, "nothing reached Claude");

    // One the chain lets through keeps its file.
    let r = h.post("/inject", &json!({"content": "hello", "meta": {"user": "ann"}, "files": [file("c.png", None, b"png")]}));
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    let n = h.recv();
    assert_eq!(n["params"]["content"], "Hi! hello");
    assert_eq!(std::fs::read(meta_str(&n, "image_path")).unwrap(), b"png");
    assert_eq!(entries(&inbox(&h)).len(), 1);
}

#[test]
fn the_session_files_are_removed_when_the_host_exits() {
    for how in ["stdin EOF", "SIGTERM"] {
        let mut h = host();
        let r = h.post("/inject", &json!({"content": "f", "files": [file("in.png", None, b"in")]}));
        assert_eq!(r.status, 202);
        let n = h.recv();
        assert!(Path::new(meta_str(&n, "image_path")).is_file());
        let src = tempfile::tempdir().unwrap();
        let out = src.path().join("out.txt");
        std::fs::write(&out, "out").unwrap();
        let r = h.call_reply(json!({"chat_id": "c", "text": "t", "files": [out]}));
        assert_eq!(r["result"]["isError"], false, "{r}");
        assert_eq!(entries(&outbox(&h)).len(), 1, "{how}");
        assert!(session_dir(&h).is_dir());
        match how {
            "stdin EOF" => h.close_stdin(),
            _ => h.signal(libc::SIGTERM),
        }
        assert!(h.wait_exit(WAIT).is_some(), "{how}: the host did not exit");
        assert!(!session_dir(&h).exists(), "{how}: {} is still there", session_dir(&h).display());
        assert!(out.is_file(), "{how}: the reply's source file is the user's, not removed");
    }
}

// ---------------------------------------------------------------------------
// 2. reply with files
// ---------------------------------------------------------------------------

/// A file id of an SSE event, as a URL path segment.
fn id_of(f: &Value) -> String {
    match &f["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        v => panic!("file id {v}"),
    }
}

#[test]
fn the_reply_tool_takes_files_and_edit_message_does_not() {
    let mut h = host();
    let r = h.request("tools/list", json!({}));
    let tools = r["result"]["tools"].as_array().unwrap();
    let reply = tools.iter().find(|t| t["name"] == "reply").unwrap();
    let edit = tools.iter().find(|t| t["name"] == "edit_message").unwrap();
    assert_eq!(reply["inputSchema"]["required"], json!(["chat_id", "text"]));
    assert_eq!(reply["inputSchema"]["properties"]["files"]["type"], "array");
    assert_eq!(reply["inputSchema"]["properties"]["files"]["items"]["type"], "string");
    assert!(edit["inputSchema"]["properties"].get("files").is_none(), "{edit}");
}

#[test]
fn a_reply_with_files_is_one_sse_event_and_get_files_serves_them() {
    let mut h = host();
    let src = tempfile::tempdir().unwrap();
    let png = binary(1234, 5);
    let txt = b"plain notes\n".to_vec();
    let raw = binary(77, 6);
    let (p_png, p_txt, p_raw) = (src.path().join("photo.png"), src.path().join("notes.txt"), src.path().join("data.zzzunknown"));
    std::fs::write(&p_png, &png).unwrap();
    std::fs::write(&p_txt, &txt).unwrap();
    std::fs::write(&p_raw, &raw).unwrap();

    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let r = h.call_reply(json!({"chat_id": "c-1", "text": "here you go", "files": [p_png, p_txt, p_raw]}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(reply_text(&r), "sent");
    let (id, event) = sse.event();
    assert_eq!(id, Some(1));
    let event = without_ts(event);
    let files = event["files"].as_array().unwrap_or_else(|| panic!("no files in {event}")).clone();
    assert_eq!(files.len(), 3, "{event}");
    let ids: Vec<String> = files.iter().map(id_of).collect();
    assert_eq!(
        event,
        json!({"type": "reply", "chat_id": "c-1", "text": "here you go", "files": [
            {"id": files[0]["id"], "name": "photo.png", "mime": "image/png", "size": png.len()},
            {"id": files[1]["id"], "name": "notes.txt", "mime": "text/plain", "size": txt.len()},
            {"id": files[2]["id"], "name": "data.zzzunknown", "mime": "application/octet-stream", "size": raw.len()},
        ]})
    );
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");

    for (id, (name, mime, bytes)) in ids.iter().zip([
        ("photo.png", "image/png", &png),
        ("notes.txt", "text/plain", &txt),
        ("data.zzzunknown", "application/octet-stream", &raw),
    ]) {
        let r = h.get(&format!("/files/{id}"));
        assert_eq!(r.status, 200, "{name}: {:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(&r.body, bytes, "{name}");
        assert_eq!(r.header("content-type"), Some(mime), "{name}");
        assert_eq!(r.header("content-disposition"), Some(format!("attachment; filename=\"{name}\"").as_str()), "{name}");

        let r = h.http("GET", &format!("/files/{id}"), &[], None);
        assert_error(&r, 403, &[], "no secret");
        let r = h.http("GET", &format!("/files/{id}"), &[("X-OPZero-Secret", "wrong")], None);
        assert_error(&r, 403, &[], "wrong secret");
    }
    // Unknown ids, including ones that would walk out of the outbox to the
    // discovery file (it holds the secret).
    let walk = format!("..%2F..%2F..%2Fchannels%2F{}.json", h.session);
    for unknown in ["nope", "999999", "00000000-0000-4000-8000-000000000000", "..", "%2E%2E", walk.as_str()] {
        assert_error(&h.get(&format!("/files/{unknown}")), 404, &[], unknown);
    }

    // Private copies: the outbox is 0700, its files 0600; the sources stay.
    assert_eq!(mode(&outbox(&h)), 0o700);
    assert_eq!(mode(&session_dir(&h)), 0o700);
    let copies = entries(&outbox(&h));
    assert_eq!(copies.len(), 3, "{copies:?}");
    for c in &copies {
        assert_eq!(mode(c), 0o600, "{}", c.display());
    }
    assert!(p_png.is_file() && p_txt.is_file() && p_raw.is_file());

    // A reply without files is exactly the old event.
    let r = h.call_reply(json!({"chat_id": "c-1", "text": "no files"}));
    assert_eq!(r["result"]["content"][0]["text"], "sent (id: 2)");
    let mut line = sse.line();
    while line.is_empty() || line.starts_with(':') {
        line = sse.line();
    }
    assert_eq!(line, "id: 2");
    let data = sse.line();
    let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
    let ts = v["ts"].as_u64().unwrap();
    assert_eq!(data, format!(r#"data: {{"chat_id":"c-1","text":"no files","ts":{ts},"type":"reply"}}"#));
}

#[test]
fn reply_files_are_copied_when_the_tool_is_called() {
    let mut h = host();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("draft.txt");
    std::fs::write(&path, "the original").unwrap();
    let mut sse = h.sse("/events", &[]);
    let r = h.call_reply(json!({"chat_id": "c", "text": "v1", "files": [path]}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    let event = without_ts(sse.event().1);
    assert_eq!(event["files"][0]["size"], "the original".len());
    let id = id_of(&event["files"][0]);

    std::fs::write(&path, "changed afterwards, and longer").unwrap();
    let r = h.get(&format!("/files/{id}"));
    assert_eq!((r.status, r.body.as_slice()), (200, b"the original".as_slice()));
    std::fs::remove_file(&path).unwrap();
    let r = h.get(&format!("/files/{id}"));
    assert_eq!((r.status, r.body.as_slice()), (200, b"the original".as_slice()));
}

#[test]
fn refused_reply_files_are_tool_errors_with_no_event_and_an_empty_outbox() {
    let mut h = with_config(SMALL);
    let home = h.home.path().to_path_buf();
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    let put = |name: &str, len: usize| {
        let p = s.join(name);
        std::fs::write(&p, vec![b'x'; len]).unwrap();
        p
    };
    let ok = put("ok.bin", 1000);
    let big = put("big.bin", 1001);
    let (t1, t2, t3) = (put("t1.txt", 10), put("t2.txt", 10), put("t3.txt", 10));
    let (h1, h2) = (put("h1.bin", 800), put("h2.bin", 800));
    std::fs::create_dir(s.join("adir")).unwrap();
    // Under $OPZERO_HOME: the config, the discovery file (it holds the
    // secret), a file the phone sent, and ways around a prefix check.
    let discovery = h.discovery_path();
    assert!(discovery.is_file());
    let r = h.post("/inject", &json!({"content": "f", "files": [file("sent.png", None, b"png")]}));
    assert_eq!(r.status, 202);
    let inbox_file = PathBuf::from(meta_str(&h.recv(), "image_path"));
    std::os::unix::fs::symlink(&discovery, s.join("link.json")).unwrap();
    std::os::unix::fs::symlink(&home, s.join("homelink")).unwrap();
    let dotdot = s.join("..").join(home.file_name().unwrap()).join("opzero.toml");
    assert!(dotdot.is_file(), "both temp dirs share a parent");

    let p = |p: &Path| p.display().to_string();
    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        ("missing", vec![p(&s.join("missing.txt"))], vec!["missing.txt".into()]),
        ("directory", vec![p(&s.join("adir"))], vec!["adir".into()]),
        ("relative", vec!["rel.txt".into()], vec!["rel.txt".into()]),
        ("too big", vec![p(&big)], vec!["big.bin".into(), "max_file_bytes".into()]),
        ("too many", vec![p(&t1), p(&t2), p(&t3)], vec!["max_files".into()]),
        ("total too big", vec![p(&h1), p(&h2)], vec!["max_files_bytes".into()]),
        ("good then missing", vec![p(&ok), p(&s.join("gone.txt"))], vec!["gone.txt".into()]),
        ("config in home", vec![p(&home.join("opzero.toml"))], vec!["opzero.toml".into()]),
        ("discovery file", vec![p(&discovery)], vec![format!("{}.json", h.session)]),
        ("inbox file", vec![p(&inbox_file)], vec![inbox_file.file_name().unwrap().to_string_lossy().into()]),
        ("symlink to home file", vec![p(&s.join("link.json"))], vec!["link.json".into()]),
        ("through a symlinked dir", vec![p(&s.join("homelink").join("opzero.toml"))], vec!["opzero.toml".into()]),
        ("dot-dot into home", vec![p(&dotdot)], vec!["opzero.toml".into()]),
    ];
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    for (case, files, needles) in cases {
        let r = h.call_reply(json!({"chat_id": "c", "text": case, "files": files}));
        assert_eq!(r["result"]["isError"], true, "{case}: {r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{case}: {r}"));
        for n in &needles {
            assert!(text.contains(n.as_str()), "{case}: {text:?} does not name {n:?}");
        }
        if case == "too many" {
            assert!(!text.contains("max_files_bytes"), "{case}: {text}");
        }
        let after = format!("after {case}");
        let r = h.call_reply(json!({"chat_id": "c", "text": after}));
        assert_eq!(reply_text(&r), "sent", "{case}");
        assert_eq!(
            without_ts(sse.event().1),
            json!({"type": "reply", "chat_id": "c", "text": after}),
            "{case}: the refused reply reached SSE"
        );
        assert_empty_or_absent(&outbox(&h), case);
    }
    // The sources are still there and, at the limits, a reply goes out.
    let r = h.call_reply(json!({"chat_id": "c", "text": "at the limit", "files": [ok]}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    let event = without_ts(sse.event().1);
    assert_eq!(event["files"][0]["size"], 1000);
    assert_eq!(entries(&outbox(&h)).len(), 1);
}

/// A host whose working directory (Claude's) and temporary directory are
/// directories of their own, so that a file anywhere else is outside both.
struct Reach {
    h: Host,
    work: tempfile::TempDir,
    _tmp: tempfile::TempDir,
}

fn within_reach(config: &str) -> Reach {
    let (work, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut h = Host::spawn_with(Options {
        config: Some(config.into()),
        cwd: Some(work.path().to_path_buf()),
        env: vec![("TMPDIR".into(), tmp.path().display().to_string())],
        ..Options::default()
    });
    h.initialize();
    Reach { h, work, _tmp: tmp }
}

/// The tool's error text for a reply with `files`, after checking that it
/// is an error and that nothing was sent.
fn refused(h: &mut Host, files: &[&Path]) -> String {
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let r = h.call_reply(json!({"chat_id": "c", "text": "t", "files": files}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    let r = h.call_reply(json!({"chat_id": "c", "text": "next"}));
    assert_eq!(reply_text(&r), "sent");
    assert_eq!(without_ts(sse.event().1)["text"], "next", "the refused reply sent nothing");
    assert_empty_or_absent(&outbox(h), "refused");
    h.call_reply(json!({"chat_id": "c", "text": "t", "files": files}))["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_reply_sends_files_only_from_within_reach() {
    let Reach { mut h, work, .. } = within_reach("");
    let w = work.path();
    std::fs::write(w.join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink("ok.txt", w.join("alias.txt")).unwrap();
    let discovery = h.discovery_path();
    std::fs::hard_link(&discovery, w.join("hard.json")).unwrap();
    std::os::unix::fs::symlink(&discovery, w.join("sym.json")).unwrap();
    std::fs::create_dir(w.join("sub")).unwrap();
    std::os::unix::fs::symlink("../../", w.join("sub/up")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("far.txt"), "far").unwrap();

    // A file in Claude's working directory goes, and so does a symlink that stays inside it.
    let mut sse = h.sse("/events", &[]);
    assert_eq!(sse.line(), ": connected");
    let r = h.call_reply(json!({"chat_id": "c", "text": "t", "files": [w.join("ok.txt"), w.join("alias.txt")]}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    let event = sse.event().1;
    assert_eq!((event["files"][0]["name"].as_str(), event["files"][1]["size"].as_u64()), (Some("ok.txt"), Some(2)));
    drop(sse);
    std::fs::remove_dir_all(outbox(&h)).unwrap();

    let secret = h.secret();
    let home = h.home.path().display().to_string();
    for (case, path, rule) in [
        ("hard link to the discovery file", w.join("hard.json"), format!("is in the host's state directory {home}")),
        ("symlink to the discovery file", w.join("sym.json"), format!("leads outside {}", w.canonicalize().unwrap().display())),
        ("dot-dot symlink out", w.join("sub/up").join(elsewhere.path().file_name().unwrap()).join("far.txt"), "leads outside".to_string()),
        ("the discovery file itself", discovery.clone(), "outside the directories a reply may send from".to_string()),
        ("/proc/self/environ", "/proc/self/environ".into(), "is under /proc, which is never sent".to_string()),
        ("/dev/zero", "/dev/zero".into(), "is under /dev, which is never sent".to_string()),
        ("outside the roots", elsewhere.path().join("far.txt"), format!("outside the directories a reply may send from (Claude's working directory {}", w.display())),
    ] {
        let text = refused(&mut h, &[&path]);
        assert!(text.contains(&rule), "{case}: {text:?} does not say {rule:?}");
        assert!(text.contains(&format!("{:?}", path.display().to_string())), "{case}: {text:?} does not name the file");
        assert!(!text.contains(&secret), "{case}");
    }
    // A FIFO is refused at once, and the host is not stuck behind it.
    let fifo = w.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let started = std::time::Instant::now();
    let text = refused(&mut h, &[&fifo]);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(text.contains("not a regular file (a directory, FIFO, socket or device is never sent)"), "{text}");
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(2)).is_some(), "the host did not exit on SIGTERM");
}

#[test]
fn send_from_adds_a_root_and_validate_checks_it() {
    let extra = tempfile::tempdir().unwrap();
    std::fs::write(extra.path().join("report.pdf"), "%PDF").unwrap();
    let config = format!("[files]\nsend_from = [{:?}]\n", extra.path().display().to_string());
    let Reach { mut h, .. } = within_reach(&config);
    let r = h.call_reply(json!({"chat_id": "c", "text": "t", "files": [extra.path().join("report.pdf")]}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    // Its state directory is never sent, even from a root that holds it.
    let Reach { h: mut inside, .. } = within_reach(&format!("[files]\nsend_from = [{:?}]\n", "/"));
    let config_file = inside.home.path().join("opzero.toml");
    let text = refused(&mut inside, &[&config_file]);
    assert!(text.contains("is in the host's state directory"), "{text}");

    let text = "[files]\nsend_from = [\"/no/such/dir\", \"opzero.toml\"]\n";
    assert_validate_says(
        text,
        &[
            "{p}:2:14: files.send_from: /no/such/dir: No such file or directory",
            "{p}:2:30: files.send_from: {p} is not a directory",
        ],
    );
    // A value of the wrong type or an unknown key stops the reading at the first.
    assert_validate_says(
        "[files]\nsend_from = [\"/no/such/dir\", 3]\n",
        &["{p}:2:30: files.send_from: expected a string, found integer"],
    );
    assert_validate_says(&format!("{text}other = 1\n"), &["{p}:3:1: files.other: unknown key (expected one of: send_from)"]);
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

#[test]
fn send_with_files_delivers_them() {
    let h = host();
    let src = tempfile::tempdir().unwrap();
    let (a, b) = (src.path().join("a.png"), src.path().join("b.txt"));
    let a_bytes = binary(5000, 4);
    std::fs::write(&a, &a_bytes).unwrap();
    std::fs::write(&b, "bee\n").unwrap();
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());

    // A missing local file: an error naming it, nothing sent.
    let missing = src.path().join("missing.txt").display().to_string();
    let out = h.cli(&["send", &h.session, "never", "--file", &a_s, "--file", &missing]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.txt"), "{err}");
    next_line_is_a_probe(&h, "after missing");
    assert_empty_or_absent(&inbox(&h), "missing");

    let out = h.cli(&["send", &h.session, "two files", "--no-wait", "--chat-id", "c9", "--file", &a_s, "--file", &b_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("delivered to {}\n", h.session));
    let n = h.recv();
    let (p1, p2) = (meta_str(&n, "file_path_1").to_string(), meta_str(&n, "file_path_2").to_string());
    assert_eq!(
        n["params"],
        json!({"content": "two files", "meta": {"chat_id": "c9", "file_count": "2", "file_path_1": p1, "file_path_2": p2}})
    );
    assert_eq!((in_inbox(&h, &p1).1, std::fs::read(&p1).unwrap()), ("a.png".to_string(), a_bytes));
    assert_eq!((in_inbox(&h, &p2).1, std::fs::read(&p2).unwrap()), ("b.txt".to_string(), b"bee\n".to_vec()));

    let out = h.cli(&["send", &h.session[..8], "one", "--chat-id", "c9", "--file", &a_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let n = h.recv();
    let path = meta_str(&n, "image_path").to_string();
    assert_eq!(n["params"], json!({"content": "one", "meta": {"chat_id": "c9", "image_path": path}}));
}

/// Spawns `tail` with `extra` args; returns it and its stdout lines as they
/// come, once it has said it is following.
fn spawn_tail(h: &Host, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut tail = h.tail(&[&[h.session.as_str()], extra].concat());
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(tail.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (tail, rx)
}

#[test]
fn tail_shows_a_replys_files() {
    let mut h = host();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("chart.png");
    std::fs::write(&path, binary(4321, 1)).unwrap();
    let (mut tail, lines) = spawn_tail(&h, &[]);
    let r = h.call_reply(json!({"chat_id": "c9", "text": "see the chart", "files": [path]}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    // Its name, mime and size, in whatever layout (the size in bytes, or
    // rounded to kilobytes).
    let shows = |out: &str| {
        out.contains("see the chart")
            && out.contains("chart.png")
            && out.contains("image/png")
            && ["4321", "4.2", "4.3"].iter().any(|n| out.contains(n))
    };
    let mut out = String::new();
    let deadline = Instant::now() + WAIT;
    while !shows(&out) {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => out.push_str(&(l + "\n")),
            Err(_) => panic!("tail did not show the file's name, mime and size; it printed {out:?}"),
        }
    }
    tail.kill().unwrap();
    tail.wait().unwrap();
}

#[test]
fn tail_save_downloads_each_file_without_overwriting() {
    let mut h = host();
    let (src1, src2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, two, notes) = (binary(3000, 1), binary(2000, 2), b"notes\n".to_vec());
    std::fs::write(src1.path().join("photo.png"), &one).unwrap();
    std::fs::write(src2.path().join("photo.png"), &two).unwrap();
    std::fs::write(src1.path().join("notes.txt"), &notes).unwrap();
    let save = tempfile::tempdir().unwrap();
    std::fs::write(save.path().join("photo.png"), "already here").unwrap();

    let (mut tail, _lines) = spawn_tail(&h, &["--save", &save.path().display().to_string()]);
    let r = h.call_reply(json!({"chat_id": "c", "text": "first",
                                "files": [src1.path().join("photo.png"), src1.path().join("notes.txt")]}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    let r = h.call_reply(json!({"chat_id": "c", "text": "second", "files": [src2.path().join("photo.png")]}));
    assert_eq!(r["result"]["isError"], false, "{r}");

    // Wait for all three downloads, complete.
    let want = {
        let mut v = vec![b"already here".to_vec(), one.clone(), two.clone(), notes.clone()];
        v.sort();
        v
    };
    let deadline = Instant::now() + WAIT;
    let contents = loop {
        let mut got: Vec<Vec<u8>> = entries(save.path()).iter().map(|p| std::fs::read(p).unwrap_or_default()).collect();
        got.sort();
        if got == want {
            break got;
        }
        if Instant::now() > deadline {
            panic!("tail --save did not save the files: {:?}", entries(save.path()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(contents.len(), 4);
    tail.kill().unwrap();
    tail.wait().unwrap();
    assert_eq!(std::fs::read(save.path().join("photo.png")).unwrap(), b"already here", "overwritten");
    assert_eq!(std::fs::read(save.path().join("notes.txt")).unwrap(), notes);
    let names: Vec<String> =
        entries(save.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

#[test]
fn the_file_limits_are_checked_against_their_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opzero.toml");
    let validate = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Command::new(BIN).arg("validate").arg(&path).output().unwrap()
    };
    for good in [
        "[limits]\nmax_file_bytes = 1\nmax_files = 0\nmax_files_bytes = 1\n",
        "[limits]\nmax_file_bytes = 1073741824\nmax_files = 1000\nmax_files_bytes = 4294967296\n",
    ] {
        let out = validate(good);
        assert!(out.status.success(), "{good}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for (bad, key) in [
        ("max_file_bytes = 0", "limits.max_file_bytes"),
        ("max_file_bytes = 1073741825", "limits.max_file_bytes"),
        ("max_files = -1", "limits.max_files"),
        ("max_files = 1001", "limits.max_files"),
        ("max_files_bytes = 0", "limits.max_files_bytes"),
        ("max_files_bytes = 4294967297", "limits.max_files_bytes"),
    ] {
        let out = validate(&format!("[limits]\n{bad}\n"));
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{key}:")), "{bad}: {err}");
    }
}
