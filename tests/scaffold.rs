//! The filter author's tools through the real binary: `new-filter` makes a
//! crate outside the repository that builds with the one command its README
//! gives, passes `validate` with the `[[filter]]` block its README gives,
//! and runs under `serve`; `filter test` gives every verdict and exit
//! status, with the built-in filters and the misbehaving test guests.

#[path = "../host/tests/filters_support/mod.rs"]
mod filters_support;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use filters_support::{wasm, wasm_dir, workspace};
use serde_json::{Value, json};
use support::{BIN, Host, Options};

fn new_filter(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("new-filter")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lines of the first fenced block of `lang` in `markdown` that starts
/// with `first`.
fn fenced(markdown: &str, lang: &str, first: &str) -> String {
    let open = format!("```{lang}\n");
    markdown
        .split(&open)
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .find(|block| block.starts_with(first))
        .unwrap_or_else(|| panic!("no ```{lang} block starting with {first:?} in:\n{markdown}"))
        .to_string()
}

/// Runs `cargo ARGS` in `dir` as the test's own cargo, building into the
/// workspace's `target/wasm/`, where `filters_support` builds the guests:
/// the SDK's dependencies are compiled there already.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", workspace().join("target").join("wasm"))
        .output()
        .unwrap()
}

#[test]
fn a_new_filter_builds_as_its_readme_says_passes_validate_and_runs_under_serve() {
    wasm_dir(); // the guests, and with them the SDK's dependencies
    let tmp = tempfile::tempdir().unwrap(); // outside the repository
    let out = new_filter(
        tmp.path(),
        &["my-filter", "--hooks", "reply,event,inject", "--dir", "plugins"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tmp.path().canonicalize().unwrap().join("plugins/my-filter");
    assert!(
        text(&out.stdout).starts_with(&format!("made {} (hooks: inject, reply, event)\n", dir.display())),
        "{}",
        text(&out.stdout)
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();

    // The one documented command builds it. With the workspace's lock, it
    // builds against what the workspace has compiled.
    let build = fenced(&readme, "sh", "cargo build");
    let build: Vec<&str> = build.split_whitespace().collect();
    assert_eq!(
        build,
        ["cargo", "build", "--profile", "wasm", "--target", "wasm32-wasip2"]
    );
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let out = cargo(&dir, &build[1..]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The component is where the README says, but under our CARGO_TARGET_DIR.
    let block = fenced(&readme, "toml", "[[filter]]");
    let entry: toml::Table = block.parse().unwrap();
    let path = PathBuf::from(entry["filter"][0]["path"].as_str().unwrap());
    assert_eq!(path, dir.join("target/wasm32-wasip2/wasm/my_filter.wasm"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(workspace().join("target/wasm/wasm32-wasip2/wasm/my_filter.wasm"), &path).unwrap();

    // The README's block, as is, passes validate.
    assert!(!block.contains("\n[filter.config]"), "{block}");
    let config = tmp.path().join("opzero.toml");
    std::fs::write(&config, &block).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(&config)
        .env("OPZERO_HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}: ok (1 filter: my-filter; permission relay on)\n", config.display())
    );

    // Its unit tests pass. (`cargo test` as the README has it, but in the
    // wasm profile, which reuses the proc-macros built for the component:
    // a fraction of the time on a cold target directory.)
    let out = cargo(&dir, &["test", "--profile", "wasm"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stdout).contains("test result: ok. 4 passed"),
        "{}",
        text(&out.stdout)
    );

    // Under serve, it passes an inject and a reply through unchanged, and
    // its log lines reach serve's log with its name.
    let mut h = Host::spawn_with(Options {
        config: Some(block),
        ..Options::default()
    });
    h.initialize();
    let r = h.post(
        "/inject",
        &json!({"content": "hi there", "chat_id": "c1", "meta": {"user": "ann"}}),
    );
    assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
    assert_eq!(
        h.recv_line(),
        r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"hi there","meta":{"chat_id":"c1","user":"ann"}}}"#
    );
    let mut sse = h.sse("/events", &[]);
    assert_eq!(
        support::reply_text(&h.call_reply(json!({"chat_id": "c1", "text": "done"}))),
        "sent"
    );
    assert_eq!(
        support::without_ts(sse.event().1),
        json!({"type": "reply", "chat_id": "c1", "text": "done"})
    );
    assert!(
        h.stderr_shows("inject: 8 bytes, 2 meta keys filter=\"my-filter\""),
        "{}",
        h.stderr()
    );
    assert!(
        h.stderr_shows("reply to chat c1: 4 bytes filter=\"my-filter\""),
        "{}",
        h.stderr()
    );
    // Its event hook saw the reply go out, off the message path.
    assert!(
        h.stderr_shows("event: Event::ReplySent(ReplySent { id: 1, chat-id: \"c1\", text: \"done\", edit-of: None }) filter=\"my-filter\""),
        "{}",
        h.stderr()
    );

    // And `filter test` calls it, as the README shows.
    let line = readme
        .lines()
        .find(|l| l.starts_with("opzero-host filter test") && l.contains("--hook inject"))
        .unwrap();
    assert!(line.contains(&path.display().to_string()), "{line}");
    let out = filter_test(&[
        path.to_str().unwrap(),
        "--hook",
        "inject",
        "--input",
        r#"{"content":"hello","meta":{"user":"ana"}}"#,
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (
            Some(0),
            "{\"verdict\":\"pass\",\"message\":{\"content\":\"hello\",\"meta\":{\"user\":\"ana\"}}}\n".to_string()
        )
    );
    assert!(
        text(&out.stderr).contains("inject: 5 bytes, 1 meta keys filter=\"my_filter\""),
        "{}",
        text(&out.stderr)
    );
    let line = readme
        .lines()
        .find(|l| l.starts_with("opzero-host filter test") && l.contains("--hook event"))
        .unwrap();
    let input = line.split_once("--input '").unwrap().1.trim_end_matches('\'');
    let out = filter_test(&[path.to_str().unwrap(), "--hook", "event", "--input", input]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "{\"verdict\":\"observed\"}\n".to_string()),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn new_filter_refuses_a_taken_directory_a_bad_name_and_an_unknown_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let refused = |args: &[&str], wanted: &str| {
        let before: Vec<_> = walk(t);
        let out = new_filter(t, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(wanted),
            "{args:?}: {wanted:?} not in {}",
            text(&out.stderr)
        );
        assert_eq!(walk(t), before, "{args:?} changed something");
    };

    std::fs::create_dir(t.join("taken")).unwrap();
    std::fs::write(t.join("taken/notes.txt"), "mine").unwrap();
    refused(
        &["taken"],
        &format!("{} already exists and is not empty", t.join("taken").display()),
    );
    std::fs::write(t.join("afile"), "").unwrap();
    refused(&["afile"], "already exists and is not a directory");
    for (name, why) in [
        (
            "My-Filter",
            "\"My-Filter\" is not a valid filter name: start it with a lowercase letter",
        ),
        ("1st", "start it with a lowercase letter"),
        ("a b", "' ' is not allowed"),
        ("../escape", "is not a valid filter name"),
        ("fn", "it is a Rust keyword"),
        ("", "it is empty"),
    ] {
        refused(&[name], why);
    }
    refused(
        &["x", "--hooks", "inject,sideways"],
        "invalid value 'sideways' for '--hooks <HOOKS>'",
    );
    refused(
        &["x", "--hooks", "inject,sideways"],
        "[possible values: inject, reply, permission, event]",
    );

    // An empty directory is taken; the default DIR is the current one.
    std::fs::create_dir(t.join("empty")).unwrap();
    let out = new_filter(t, &["empty", "--hooks", "permission"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lib = std::fs::read_to_string(t.join("empty/src/lib.rs")).unwrap();
    assert!(
        lib.contains("fn on_permission_request(") && !lib.contains("fn on_inject("),
        "{lib}"
    );
    let names: Vec<String> = walk(&t.join("empty"))
        .iter()
        .map(|p| p.strip_prefix(t.join("empty")).unwrap().display().to_string())
        .collect();
    assert_eq!(names, [".gitignore", "Cargo.toml", "README.md", "src", "src/lib.rs"]);
}

/// Every path under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}

#[test]
fn new_filter_takes_the_sdk_relative_inside_the_repository_and_joins_a_workspace_that_takes_it_in() {
    // The repository's target/ is no workspace member: the crate stands
    // alone, and reaches the SDK by a relative path.
    let scratch = workspace().join("target").join("scaffold-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    let inside = tempfile::tempdir_in(&scratch).unwrap();
    let out = new_filter(inside.path(), &["inside"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = inside.path().join("inside");
    let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let sdk = manifest["dependencies"]["opzero-guest-sdk"]["path"].as_str().unwrap();
    assert!(sdk.starts_with("../"), "{sdk}");
    assert_eq!(
        dir.join(sdk).canonicalize().unwrap(),
        workspace().join("guest-sdk").canonicalize().unwrap()
    );
    assert!(manifest.contains_key("workspace") && manifest["profile"].get("wasm").is_some());

    // A workspace whose members take it in gets a member (no [workspace]
    // of its own), and stays a workspace cargo can read.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"plugins/*\"]\n",
    )
    .unwrap();
    let out = new_filter(tmp.path(), &["member", "--dir", "plugins"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root = tmp.path().canonicalize().unwrap();
    let manifest: toml::Table = std::fs::read_to_string(root.join("plugins/member/Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !manifest.contains_key("workspace") && !manifest.contains_key("profile"),
        "{manifest}"
    );
    let sdk = manifest["dependencies"]["opzero-guest-sdk"]["path"].as_str().unwrap();
    assert_eq!(
        Path::new(sdk),
        workspace().join("guest-sdk").canonicalize().unwrap(),
        "outside the repository: absolute"
    );
    let readme = std::fs::read_to_string(root.join("plugins/member/README.md")).unwrap();
    assert_eq!(
        fenced(&readme, "sh", "cargo build").trim(),
        "cargo build --release --target wasm32-wasip2"
    );
    assert!(
        readme.contains(&format!(
            "path = \"{}/target/wasm32-wasip2/release/member.wasm\"",
            root.display()
        )),
        "{readme}"
    );
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo_bin)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(metadata["packages"][0]["name"], "member");
}

// ---- filter test ----

/// Runs `opzero-host filter test ARGS`, its compile cache kept under the
/// built guests, so a component compiles once for all of these tests.
fn filter_test(args: &[&str]) -> Output {
    filter_test_with(args, &[], None)
}

fn filter_test_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["filter", "test"])
        .args(args)
        .env("OPZERO_HOME", wasm_dir().join("filter-test-home"))
        .env_remove("OPZERO_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// `filter test` on the built guest `stem`: its exit status and verdict.
fn verdict(stem: &str, hook: &str, input: &str, more: &[&str]) -> (i32, Value) {
    let path = wasm(stem);
    let mut args = vec![path.to_str().unwrap(), "--hook", hook, "--input", input];
    args.extend_from_slice(more);
    let out = filter_test(&args);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one line of JSON on stdout, got {stdout:?}; stderr:\n{}",
        text(&out.stderr)
    );
    let verdict = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (out.status.code().unwrap(), verdict)
}

#[test]
fn filter_test_pass_drop_and_reject_for_injects_and_replies() {
    let short = r#"{"inject": {"max_chars": 5}, "reply": {"max_chars": 5, "action": "reject"}, "marker": "~"}"#;
    assert_eq!(
        verdict(
            "max_length",
            "inject",
            r#"{"content":"hello world","meta":{"user":"ann"}}"#,
            &["--config", short]
        ),
        (
            0,
            json!({"verdict": "pass", "message": {"content": "hell~", "meta": {"user": "ann"}}})
        )
    );
    // `{"content": ...}` alone will do.
    assert_eq!(
        verdict("max_length", "inject", r#"{"content":"hi"}"#, &["--config", short]),
        (0, json!({"verdict": "pass", "message": {"content": "hi", "meta": {}}}))
    );
    let (status, v) = verdict(
        "max_length",
        "reply",
        r#"{"chat_id":"c1","text":"far too long"}"#,
        &["--config", short],
    );
    assert_eq!(
        (status, &v["verdict"], &v["filter"]),
        (1, &json!("reject"), &json!("max_length"))
    );
    assert!(v["reason"].as_str().unwrap().contains("the limit is 5"), "{v}");
    assert_eq!(
        verdict(
            "redact_secrets",
            "reply",
            r#"{"chat_id":"c1","text":"key AKIAABCDEFGHIJKLMNOP"}"#,
            &[]
        ),
        (
            0,
            json!({"verdict": "pass", "reply": {"chat_id": "c1", "text": "key [REDACTED:aws-access-key-id]"}})
        )
    );

    let ann_only = |action: &str| format!(r#"{{"users": ["ann"], "action": "{action}"}}"#);
    let bob = r#"{"content":"hi","meta":{"user":"bob"}}"#;
    let (status, v) = verdict(
        "sender_allowlist",
        "inject",
        bob,
        &["--config", &ann_only("drop"), "--name", "allow"],
    );
    assert_eq!(
        (status, &v["verdict"], &v["filter"]),
        (1, &json!("drop"), &json!("allow"))
    );
    assert!(v["reason"].as_str().unwrap().contains("bob"), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    let (status, v) = verdict("sender_allowlist", "inject", bob, &["--config", &ann_only("reject")]);
    assert_eq!(
        (status, &v["verdict"], &v["filter"]),
        (1, &json!("reject"), &json!("sender_allowlist"))
    );
    let (status, v) = verdict(
        "sender_allowlist",
        "inject",
        r#"{"content":"hi","meta":{"user":"ann"}}"#,
        &["--config", &ann_only("reject")],
    );
    assert_eq!((status, &v["verdict"]), (0, &json!("pass")));
}

#[test]
fn filter_test_relay_allow_and_deny_for_permission_prompts() {
    let policy = r#"{"allow_tools": ["Read"], "deny": [{"tool": "Bash", "pattern": "rm\\s+-rf", "reason": "no recursive deletes"}]}"#;
    let prompt = |tool: &str, preview: &str| {
        json!({"request_id": "abcde", "tool_name": tool, "description": "d", "input_preview": preview}).to_string()
    };
    assert_eq!(
        verdict(
            "permission_policy",
            "permission",
            &prompt("Bash", r#"{"command":"rm -rf /"}"#),
            &["--config", policy]
        ),
        (
            1,
            json!({"verdict": "deny", "filter": "permission_policy", "reason": "no recursive deletes"})
        )
    );
    // Allow is a decision, not a refusal: 0.
    let (status, v) = verdict(
        "permission_policy",
        "permission",
        &prompt("Read", "{}"),
        &["--config", policy],
    );
    assert_eq!(
        (status, &v["verdict"], &v["filter"]),
        (0, &json!("allow"), &json!("permission_policy"))
    );
    assert_eq!(
        verdict(
            "permission_policy",
            "permission",
            &prompt("Bash", r#"{"command":"ls"}"#),
            &["--config", policy]
        ),
        (0, json!({"verdict": "relay"}))
    );
    // Fields left out are empty.
    assert_eq!(
        verdict(
            "permission_policy",
            "permission",
            r#"{"tool_name":"Write"}"#,
            &["--config", policy]
        ),
        (0, json!({"verdict": "relay"}))
    );
}

/// `filter test --hook inject` on the built guest `stem`, for a call that
/// fails: its error, after checking the status, the verdict and stderr.
fn error(stem: &str, input: &str, more: &[&str]) -> String {
    let path = wasm(stem);
    let mut args = vec![path.to_str().unwrap(), "--hook", "inject", "--input", input];
    args.extend_from_slice(more);
    let out = filter_test(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(
        (out.status.code(), &v["verdict"], &v["filter"]),
        (Some(2), &json!("error"), &json!(stem)),
        "{v}"
    );
    let message = v["error"].as_str().unwrap().to_string();
    assert!(
        text(&out.stderr).contains(&format!("opzero-host: {message}")),
        "{}",
        text(&out.stderr)
    );
    message
}

#[test]
fn filter_test_failed_calls_are_errors_with_serves_limits() {
    // serve's limits by default: timeout_ms 50, memory_mb 32.
    assert_eq!(
        error("loop_forever", r#"{"content":"loop"}"#, &[]),
        "filter \"loop_forever\" timed out after 50 ms"
    );
    assert_eq!(
        error("sleepy", r#"{"content":"sleep"}"#, &["--timeout-ms", "100"]),
        "filter \"sleepy\" timed out after 100 ms"
    );
    assert_eq!(
        error("alloc_forever", r#"{"content":"grow"}"#, &["--timeout-ms", "5000"]),
        "filter \"alloc_forever\" ran out of memory (limit 32 MiB)"
    );
    assert_eq!(
        error(
            "alloc_forever",
            r#"{"content":"grow"}"#,
            &["--timeout-ms", "5000", "--memory-mb", "4"]
        ),
        "filter \"alloc_forever\" ran out of memory (limit 4 MiB)"
    );
    let panicked = error("panicky", r#"{"content":"panic"}"#, &[]);
    assert!(
        panicked.starts_with("filter \"panicky\" panicked: boom: the filter gave up on \"panic\""),
        "{panicked}"
    );
}

/// Exit status 2, nothing on stdout, and `wanted` on stderr.
fn assert_refused(args: &[&str], wanted: &str) {
    let out = filter_test(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "{args:?}");
    assert!(
        text(&out.stderr).contains(wanted),
        "{args:?}: {wanted:?} not in:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn filter_test_refuses_bad_input_and_components_that_do_not_load() {
    let max = wasm("max_length");
    let max = max.to_str().unwrap();
    fn with<'a>(max: &'a str, input: &'a str) -> Vec<&'a str> {
        vec![max, "--hook", "inject", "--input", input]
    }
    let inject = |input| with(max, input);
    assert_refused(
        &inject("hi"),
        "opzero-host: --input: not JSON (expected value at line 1 column 1): give the inject record, {\"content\"",
    );
    assert_refused(&inject("[]"), "--input: must be a JSON object, the inject record");
    assert_refused(
        &inject(r#"{"content": 3}"#),
        "opzero-host: --input: content: invalid type: integer `3`, expected a string",
    );
    assert_refused(
        &inject(r#"{"contnt": "x"}"#),
        "opzero-host: --input: contnt: unknown field `contnt`, expected one of `content`, `meta`, `files`",
    );
    assert_refused(
        &inject(r#"{"content": "x", "meta": []}"#),
        "--input: meta: must be an object of text values, got an array",
    );
    assert_refused(
        &[max, "--hook", "reply", "--input", r#"{"chat_id": 1}"#],
        "--input: chat_id: invalid type: integer `1`, expected a string",
    );
    assert_refused(
        &[max, "--hook", "event", "--input", "{}"],
        "opzero-host: --input: type: must be one of reply, edit, permission_request",
    );
    // A component built for opzero:filter@0.1.0 has no event hook.
    let old = workspace().join("host/testdata/filter-0.1.0/max_length.wasm");
    assert_refused(
        &[old.to_str().unwrap(), "--hook", "event", "--input", r#"{"type":"status","state":"idle"}"#],
        "is built for opzero:filter@0.1.0, which has no event hook (rebuild it with the guest SDK for opzero:filter@0.2.0, or take \"event\" out of hooks)",
    );
    assert_refused(
        &[max, "--hook", "sideways", "--input", "{}"],
        "invalid value 'sideways' for '--hook <HOOK>'",
    );

    assert_refused(
        &[max, "--hook", "inject", "--input", "{}", "--config", "[1]"],
        "--config: must be a JSON object",
    );
    assert_refused(
        &[
            max,
            "--hook",
            "inject",
            "--input",
            "{}",
            "--config",
            r#"{"inject": {"max_chars": "many"}}"#,
        ],
        "opzero-host: --config: filter \"max_length\" rejected its config: inject.max_chars: invalid type: string \"many\"",
    );
    let bad = wasm("bad_config");
    assert_refused(
        &[
            bad.to_str().unwrap(),
            "--hook",
            "inject",
            "--input",
            "{}",
            "--config",
            r#"{"threshold": 0}"#,
        ],
        "--config: filter \"bad_config\" rejected its config: threshold: must be at least 1",
    );
    assert_refused(
        &[max, "--hook", "inject", "--input", "{}", "--timeout-ms", "0"],
        "opzero-host: --timeout-ms: must be between 1 and 10000",
    );
    let wrong = wasm("wrong_world");
    assert_refused(
        &[wrong.to_str().unwrap(), "--hook", "inject", "--input", "{}"],
        "does not export opzero:filter/filter@0.2.0 or @0.1.0",
    );
    let gone = wasm_dir().join("gone.wasm");
    assert_refused(
        &[gone.to_str().unwrap(), "--hook", "inject", "--input", "{}"],
        "filter \"gone\": cannot read",
    );
    let readme = workspace().join("README.md");
    assert_refused(
        &[readme.to_str().unwrap(), "--hook", "inject", "--input", "{}"],
        "is not a WebAssembly component: not a WebAssembly file",
    );
}

#[test]
fn filter_test_logs_the_filters_lines_to_stderr_and_keeps_stdout_for_the_verdict() {
    let hello = wasm("hello_filter");
    let args = [
        hello.to_str().unwrap(),
        "--hook",
        "inject",
        "--input",
        "-",
        "--config",
        r#"{"greeting": "Hi!"}"#,
    ];
    let out = filter_test_with(&args, &[], Some(r#"{"content": "yo"}"#));
    assert_eq!(
        text(&out.stdout),
        "{\"verdict\":\"pass\",\"message\":{\"content\":\"Hi! yo\",\"meta\":{}}}\n"
    );
    assert!(
        text(&out.stderr).contains("greeting a message of 2 bytes filter=\"hello_filter\""),
        "{}",
        text(&out.stderr)
    );
    // OPZERO_LOG sets the level.
    let out = filter_test_with(&args, &[("OPZERO_LOG", "warn")], Some(r#"{"content": "yo"}"#));
    assert_eq!(out.status.code(), Some(0));
    assert!(!text(&out.stderr).contains("greeting"), "{}", text(&out.stderr));

    // A guest flooding its stdout and the log: stdout is still the verdict
    // alone; what it wrote is on stderr, as much as serve keeps.
    let panicky = wasm("panicky");
    let chatty = r#"{"request_id": "abcde", "tool_name": "chatty"}"#;
    let out = filter_test(&[
        panicky.to_str().unwrap(),
        "--hook",
        "permission",
        "--input",
        chatty,
        "--timeout-ms",
        "5000",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "{\"verdict\":\"relay\"}\n".to_string())
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("about to flood stdout") && err.contains("line 0 of a filter that talks too much"),
        "{err:.2000}"
    );
    assert!(
        err.contains("more log lines dropped (at most 100 a call)"),
        "{err:.2000}"
    );
}

/// `filter test` loads a plugin that sends HTTP only with `--allow-host`,
/// which grants what it names and nothing else; `validate` reports the
/// grants of a config.
#[test]
fn filter_test_sends_http_only_where_allow_host_grants_and_validate_names_the_grants() {
    let ntfy = support::recorder::Recorder::ok();
    let other = support::recorder::Recorder::ok();
    let notify = wasm("notify");
    let notify = notify.to_str().unwrap();
    let input = r#"{"type":"receipt","message_id":"m1","chat_id":"c1","state":"undelivered","reason":"not taken"}"#;
    let config = json!({"ntfy_url": ntfy.url("/t1")}).to_string();
    let run = |more: &[&str]| {
        let mut args = vec![notify, "--hook", "event", "--input", input, "--config", &config];
        args.extend_from_slice(more);
        let out = filter_test(&args);
        (out.status.code().unwrap(), text(&out.stdout), text(&out.stderr))
    };

    let (status, stdout, stderr) = run(&[]);
    assert_eq!((status, stdout.as_str()), (2, ""), "{stderr}");
    assert!(
        stderr.contains("--allow-host: missing: filter \"notify\": ")
            && stderr.contains("sends HTTP requests (it imports wasi:http/outgoing-handler)"),
        "{stderr}"
    );
    assert!(ntfy.got().is_empty());

    let granted = format!("http://127.0.0.1:{}", ntfy.port);
    let (status, stdout, stderr) = run(&["--allow-host", &granted]);
    assert_eq!((status, stdout.as_str()), (0, "{\"verdict\":\"observed\"}\n"), "{stderr}");
    assert!(stderr.contains("sent: A message did not reach Claude"), "{stderr}");
    let got = ntfy.got();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!((body["topic"].as_str(), body["title"].as_str()), (Some("t1"), Some("Claude: A message did not reach Claude")));

    // Granted another host: the request never leaves, and both sides say so.
    let (status, _, stderr) = run(&["--allow-host", &format!("http://127.0.0.1:{}", other.port)]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains(&format!("HTTP request to {}/ refused: not in allowed_outbound_hosts", ntfy.url(""))), "{stderr}");
    assert!(stderr.contains("not sent: HTTP request denied"), "{stderr}");
    assert_eq!(ntfy.got().len(), 1);
    assert!(other.got().is_empty());

    // validate names what each filter may reach.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("opzero.toml");
    std::fs::write(
        &file,
        format!(
            "[[filter]]\nname = \"notify\"\npath = \"{notify}\"\nhooks = [\"event\"]\nallowed_outbound_hosts = [\"{granted}\", \"https://ntfy.sh\"]\n[filter.config]\nntfy_url = \"https://ntfy.sh/t1\"\n"
        ),
    )
    .unwrap();
    assert_validates(&file, &format!("notify may reach {granted}, https://ntfy.sh"), "");
}

/// The README's `notify` examples (ntfy and Slack) pass `validate` as
/// written, with the grants they need.
#[test]
fn the_readmes_notify_examples_validate() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme.split("### Push notifications (`notify`)").nth(1).unwrap();
    let notify = wasm("notify");
    for (first_key, grant) in [("ntfy_url", "https://ntfy.sh"), ("webhook_url", "https://hooks.slack.com")] {
        let block = section
            .split("```toml\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap())
            .find(|b| b.contains(first_key))
            .unwrap_or_else(|| panic!("no example with {first_key}"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opzero.toml");
        std::fs::write(&file, block.replace("target/wasm/wasm32-wasip2/wasm/notify.wasm", notify.to_str().unwrap())).unwrap();
        assert_validates(&file, &format!("notify may reach {grant}"), block);
    }
}

/// `validate FILE` passes, and names the one filter, `notify`, with `grants`.
fn assert_validates(file: &Path, grants: &str, context: &str) {
    let out = Command::new(BIN)
        .arg("validate")
        .arg(file)
        .env("OPZERO_HOME", wasm_dir().join("filter-test-home"))
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), format!("{}: ok (1 filter: notify; permission relay on; {grants})\n", file.display())),
        "{context}\n{}",
        text(&out.stderr)
    );
}
