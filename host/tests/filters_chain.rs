//! The filter chain with real components: the built-in filters, the
//! example, and guests that misbehave on purpose (host/tests/guests/).

mod filters_support;
#[path = "../../tests/support/recorder.rs"]
mod recorder;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::response::Response;

use recorder::Recorder;
use filters_support::{Setup, check, entry, run, wasm};
use opzero_host::filters::{ClaudeState, Event, FileInfo, FilterChain, LoadStats, Message, PermissionVerdict, Reply, Verdict};
use opzero_host::permissions::Request as PermissionRequest;

fn message(content: &str, user: &str) -> Message {
    Message {
        content: content.into(),
        meta: vec![
            ("user".into(), user.into()),
            ("chat_id".into(), "c1".into()),
        ],
        files: vec![],
    }
}

fn reply(text: &str) -> Reply {
    Reply {
        chat_id: "c1".into(),
        text: text.into(),
    }
}

fn request(tool: &str, input: &str) -> PermissionRequest {
    PermissionRequest {
        request_id: "req-1".into(),
        tool_name: tool.into(),
        description: format!("{tool} wants to run"),
        input_preview: input.into(),
    }
}

/// Runs `f` with a tracing subscriber that writes into a string.
fn logs_of<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::default());
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (result, text)
}

fn builtins_toml() -> String {
    [
        entry(
            "allowlist",
            "sender_allowlist",
            r#"["inject"]"#,
            "[filter.config]\nusers = [\"ana\"]",
        ),
        entry("redact", "redact_secrets", r#"["inject", "reply"]"#, ""),
        entry(
            "hello",
            "hello_filter",
            r#"["inject"]"#,
            "[filter.config]\ngreeting = \"Hi!\"",
        ),
        entry(
            "max-length",
            "max_length",
            r#"["inject", "reply"]"#,
            "[filter.config]\ninject = { max_chars = 48 }\nreply = { max_chars = 10, action = \"reject\" }\nmarker = \"...\"",
        ),
        entry(
            "policy",
            "permission_policy",
            r#"["permission"]"#,
            "[filter.config]\nallow_tools = [\"Read\", \"Grep\"]\n[[filter.config.deny]]\ntool = \"Bash\"\npattern = \"rm -rf\"",
        ),
    ]
    .concat()
}

#[test]
fn built_in_filters_run_in_file_order() {
    let setup = Setup::new();
    let chain = setup.chain(&builtins_toml());
    assert_eq!(
        chain.names(),
        ["allowlist", "redact", "hello", "max-length", "policy"]
    );

    // Redacted, then greeted, then truncated to 48 characters.
    let verdict = run(chain.on_inject(message(
        "my key is AKIAIOSFODNN7EXAMPLE, please rotate it today",
        "ana",
    )));
    assert_eq!(
        verdict,
        Verdict::Pass(Message {
            content: "Hi! my key is [REDACTED:aws-access-key-id], p...".into(),
            meta: vec![
                ("user".into(), "ana".into()),
                ("chat_id".into(), "c1".into())
            ],
            files: vec![],
        })
    );

    assert_eq!(
        run(chain.on_inject(message("hello", "mallory"))),
        Verdict::Reject {
            filter: "allowlist".into(),
            reason: "sender \"mallory\" is not on the allowlist".into(),
        }
    );

    assert_eq!(
        run(chain.on_reply(reply("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz"))),
        Verdict::Reject {
            filter: "max-length".into(),
            reason: "reply is 21 characters; the limit is 10".into(),
        },
        "redacted first, then measured"
    );
    assert_eq!(run(chain.on_reply(reply("ok"))), Verdict::Pass(reply("ok")));
}

#[test]
fn a_reply_with_a_fake_key_goes_out_redacted() {
    let setup = Setup::new();
    let chain = setup.chain(&entry("redact", "redact_secrets", r#"["reply"]"#, ""));
    let text = "Found it in .env:\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAuthorization: Bearer eyJhbGciOi.abc123456";
    assert_eq!(
        run(chain.on_reply(reply(text))),
        Verdict::Pass(reply(
            "Found it in .env:\nAWS_ACCESS_KEY_ID=[REDACTED:aws-access-key-id]\nAuthorization: Bearer [REDACTED:bearer-token]"
        ))
    );
    // Not hooked on inject: injects pass untouched.
    let m = message("AKIAIOSFODNN7EXAMPLE", "ana");
    assert_eq!(run(chain.on_inject(m.clone())), Verdict::Pass(m));
}

#[test]
fn permission_policy_allows_denies_and_relays() {
    let setup = Setup::new();
    let chain = setup.chain(&builtins_toml());
    assert_eq!(
        run(chain.on_permission(request("Read", "src/main.rs"))),
        PermissionVerdict::Allow {
            filter: "policy".into(),
            reason: "Read is on the allow list".into(),
        }
    );
    assert_eq!(
        run(chain.on_permission(request("Bash", "rm -rf /tmp/build"))),
        PermissionVerdict::Deny {
            filter: "policy".into(),
            reason: "Bash input matches the deny pattern \"rm -rf\"".into(),
        }
    );
    assert_eq!(
        run(chain.on_permission(request("Bash", "cargo test"))),
        PermissionVerdict::Relay
    );
}

#[test]
fn a_timeout_is_named_and_the_filter_keeps_serving() {
    let setup = Setup::new();
    let chain = setup.chain(&entry(
        "looper",
        "loop_forever",
        r#"["inject"]"#,
        "timeout_ms = 50",
    ));
    assert_eq!(
        run(chain.on_inject(message("loop", "ana"))),
        Verdict::Failed {
            filter: "looper".into(),
            error: "filter \"looper\" timed out after 50 ms".into(),
        }
    );
    let m = message("hello", "ana");
    assert_eq!(run(chain.on_inject(m.clone())), Verdict::Pass(m));
    // And again: the replacement instance can time out and be replaced too.
    assert!(matches!(
        run(chain.on_inject(message("loop", "ana"))),
        Verdict::Failed { .. }
    ));
    let m = message("still here", "ana");
    assert_eq!(run(chain.on_inject(m.clone())), Verdict::Pass(m));
}

#[test]
fn a_filter_waiting_in_a_host_call_times_out_too() {
    // The epoch deadline is only checked in guest code; a sleep waits in
    // WASI's clock, on the host's side.
    let setup = Setup::new();
    let chain = setup.chain(&entry("sleepy", "sleepy", r#"["inject"]"#, "timeout_ms = 100"));
    let started = std::time::Instant::now();
    assert_eq!(
        run(chain.on_inject(message("sleep", "ana"))),
        Verdict::Failed {
            filter: "sleepy".into(),
            error: "filter \"sleepy\" timed out after 100 ms".into(),
        }
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    let m = message("hello", "ana");
    assert_eq!(run(chain.on_inject(m.clone())), Verdict::Pass(m));
}

#[test]
fn running_out_of_memory_is_named_and_the_filter_keeps_serving() {
    let setup = Setup::new();
    let chain = setup.chain(&entry(
        "hoarder",
        "alloc_forever",
        r#"["inject"]"#,
        // A deadline far off: on a loaded machine the default 50 ms could
        // pass before the 16 MiB are reached.
        "memory_mb = 16\ntimeout_ms = 5000",
    ));
    assert_eq!(
        run(chain.on_inject(message("grow", "ana"))),
        Verdict::Failed {
            filter: "hoarder".into(),
            error: "filter \"hoarder\" ran out of memory (limit 16 MiB)".into(),
        }
    );
    let m = message("hello", "ana");
    assert_eq!(run(chain.on_inject(m.clone())), Verdict::Pass(m));
}

#[test]
fn a_panic_message_reaches_the_error_and_the_log_and_the_instance_is_replaced() {
    let setup = Setup::new();
    let chain = setup.chain(&entry("panicky", "panicky", r#"["inject", "reply"]"#, ""));
    assert_eq!(run(chain.on_reply(reply("a"))), Verdict::Pass(reply("a #1")));
    assert_eq!(run(chain.on_reply(reply("b"))), Verdict::Pass(reply("b #2")));

    let (verdict, logs) = logs_of(|| run(chain.on_inject(message("panic", "ana"))));
    assert_eq!(
        verdict,
        Verdict::Failed {
            filter: "panicky".into(),
            error: "filter \"panicky\" panicked: boom: the filter gave up on \"panic\"".into(),
        }
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("filter=\"panicky\"") && l.contains("boom: the filter gave up")),
        "{logs}"
    );

    // A fresh, freshly configured instance: the reply count starts over.
    assert_eq!(run(chain.on_reply(reply("c"))), Verdict::Pass(reply("c #1")));
}

#[test]
fn a_filter_gets_no_environment_files_or_network() {
    let setup = Setup::new();
    let chain = setup.chain(&entry("probe", "panicky", r#"["inject"]"#, ""));
    assert!(std::env::vars().count() > 0);
    assert_eq!(
        run(chain.on_inject(message("probe", "ana"))),
        Verdict::Pass(message("env=0 file=false net=false", "ana"))
    );
}

#[test]
fn an_open_filter_that_fails_lets_the_message_through_unfiltered() {
    let setup = Setup::new();
    let toml = [
        entry(
            "looper",
            "loop_forever",
            r#"["inject"]"#,
            "timeout_ms = 20\non_error = \"open\"",
        ),
        entry(
            "hello",
            "hello_filter",
            r#"["inject"]"#,
            "[filter.config]\ngreeting = \"Hi!\"",
        ),
    ]
    .concat();
    let chain = setup.chain(&toml);
    let (verdict, logs) = logs_of(|| run(chain.on_inject(message("loop", "ana"))));
    assert_eq!(verdict, Verdict::Pass(message("Hi! loop", "ana")));
    assert!(
        logs.contains("timed out after 20 ms") && logs.contains("goes on unfiltered"),
        "{logs}"
    );
}

#[test]
fn guest_output_is_captured_bounded_and_logged_with_the_filter_name() {
    let setup = Setup::new();
    // Generous deadline: 10,000 WASI writes are slow in an unoptimised host.
    let chain = setup.chain(&entry(
        "chatty",
        "panicky",
        r#"["permission"]"#,
        "timeout_ms = 10000",
    ));
    let (verdict, logs) = logs_of(|| run(chain.on_permission(request("chatty", ""))));
    assert_eq!(verdict, PermissionVerdict::Relay);
    assert!(
        logs.contains("about to flood stdout"),
        "the log import works"
    );
    let stdout_lines: Vec<&str> = logs
        .lines()
        .filter(|l| {
            l.contains("filter=\"chatty\"")
                && l.contains("stream=\"stdout\"")
                && l.contains("line ")
        })
        .collect();
    assert!(
        stdout_lines
            .first()
            .is_some_and(|l| l.contains("line 0 of a filter"))
    );
    assert!(
        stdout_lines.len() < 5_000,
        "{} lines: not bounded",
        stdout_lines.len()
    );
    assert!(
        logs.contains("more bytes of output dropped"),
        "{logs:.2000}"
    );
    assert!(logs.contains("and some stderr") || logs.contains("stream=\"stderr\""));
    // 10,000 log lines in one call: the first 100 (the one above among
    // them) are kept, and the rest counted.
    let log_lines = logs.lines().filter(|l| l.contains("log line ")).count();
    assert_eq!(log_lines, 99, "{logs:.2000}");
    assert!(logs.contains("log line 98") && !logs.contains("log line 99"));
    assert!(logs.contains("9901 more log lines dropped (at most 100 a call)"), "{logs:.2000}");
    // The count starts again at the next call.
    let (_, logs) = logs_of(|| run(chain.on_permission(request("chatty", ""))));
    assert_eq!(logs.lines().filter(|l| l.contains("log line ")).count(), 99);
}

#[test]
fn a_second_load_uses_the_cache_instead_of_compiling() {
    let setup = Setup::with_private_cache();
    let toml = builtins_toml();
    let first = setup.chain(&toml);
    assert_eq!(
        first.load_stats(),
        LoadStats {
            compiled: 5,
            from_cache: 0
        }
    );
    // wasmtime's cache, in a directory only this user can read or write.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(setup.cache_dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    let second = setup.chain(&toml);
    assert_eq!(
        second.load_stats(),
        LoadStats {
            compiled: 0,
            from_cache: 5
        }
    );
    // The cached chain behaves like the compiled one.
    assert_eq!(
        run(second.on_inject(message("hello", "mallory"))),
        run(first.on_inject(message("hello", "mallory")))
    );

}

#[test]
fn the_same_component_twice_is_compiled_once() {
    let setup = Setup::with_private_cache();
    let toml = [
        entry(
            "short-in",
            "max_length",
            r#"["inject"]"#,
            "[filter.config]\ninject = { max_chars = 3 }",
        ),
        entry(
            "short-out",
            "max_length",
            r#"["reply"]"#,
            "[filter.config]\nreply = { max_chars = 4 }",
        ),
    ]
    .concat();
    let chain = setup.chain(&toml);
    assert_eq!(
        chain.load_stats(),
        LoadStats {
            compiled: 1,
            from_cache: 0
        }
    );
    assert_eq!(
        run(chain.on_reply(reply("abcdefgh"))),
        Verdict::Pass(reply("abcd")),
        "each entry keeps its own config (marker longer than the limit is dropped)"
    );
}

#[test]
fn configure_errors_point_at_the_config_table() {
    let setup = Setup::new();
    let toml = [
        entry(
            "strict",
            "bad_config",
            r#"["inject"]"#,
            "[filter.config]\nthreshold = 0",
        ),
        entry(
            "typed",
            "bad_config",
            r#"["inject"]"#,
            "[filter.config]\nthreshold = \"high\"",
        ),
        entry(
            "unknown",
            "bad_config",
            r#"["inject"]"#,
            "[filter.config]\nthreshold = 1\nthreshhold = 2",
        ),
        entry("missing", "max_length", r#"["inject"]"#, ""),
    ]
    .concat();
    let diagnostics = setup.load(&toml).err().expect("the chain must not load");
    let file = setup.config_path().display().to_string();
    let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        text,
        [
            format!(
                "{file}:5:1: filter[0].config: filter \"strict\" rejected its config: threshold: must be at least 1"
            ),
            format!(
                "{file}:11:1: filter[1].config: filter \"typed\" rejected its config: threshold: invalid type: string \"high\", expected u32"
            ),
            format!(
                "{file}:17:1: filter[2].config: filter \"unknown\" rejected its config: threshhold: unknown field `threshhold`, expected `threshold`"
            ),
            format!(
                "{file}:20:1: filter[3].config: filter \"missing\" rejected its config: set inject = {{ max_chars = N }} or reply = {{ max_chars = N }}; with neither this filter does nothing"
            ),
        ]
    );
    assert_eq!(
        check(
            &opzero_host::config::Config::load(&setup.config_path())
                .unwrap()
                .filters,
            &setup.cache_dir()
        ),
        diagnostics
    );
}

#[test]
fn every_load_problem_is_reported_at_once_with_its_position() {
    let setup = Setup::new();
    let dir = setup.dir.path();
    std::fs::write(dir.join("notes.wasm"), "not wasm at all").unwrap();
    // The smallest valid core module: magic and version 1.
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let toml = format!(
        "{}{}{}{}{}",
        "[[filter]]\nname = \"gone\"\npath = \"missing.wasm\"\nhooks = [\"inject\"]\n",
        "[[filter]]\nname = \"text\"\npath = \"notes.wasm\"\nhooks = [\"inject\"]\n",
        "[[filter]]\nname = \"core\"\npath = \"core.wasm\"\nhooks = [\"inject\"]\n",
        entry("command", "wrong_world", r#"["inject"]"#, ""),
        entry(
            "fine",
            "max_length",
            r#"["reply"]"#,
            "[filter.config]\nreply = { max_chars = 10 }"
        ),
    );
    let diagnostics = setup.load(&toml).err().expect("the chain must not load");
    let text: Vec<String> = diagnostics
        .iter()
        .map(|d| format!("{}:{} {}: {}", d.line, d.col, d.key, d.message))
        .collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    let missing = dir.join("missing.wasm").display().to_string();
    assert_eq!(
        text[0],
        format!(
            "3:8 filter[0].path: filter \"gone\": cannot read {missing}: no such file (build the filter first?)"
        )
    );
    assert!(
        text[1].starts_with("7:8 filter[1].path: filter \"text\":"),
        "{}",
        text[1]
    );
    assert!(
        text[1].ends_with("is not a WebAssembly component: not a WebAssembly file"),
        "{}",
        text[1]
    );
    assert!(
        text[2].starts_with("11:8 filter[2].path: filter \"core\":"),
        "{}",
        text[2]
    );
    assert!(
        text[2].contains(
            "it is a core WebAssembly module; build the filter with `--target wasm32-wasip2`"
        ),
        "{}",
        text[2]
    );
    assert!(
        text[3].starts_with("15:8 filter[3].path: filter \"command\":"),
        "{}",
        text[3]
    );
    assert!(
        text[3]
            .contains("does not export opzero:filter/filter@0.2.0 or @0.1.0 (it exports wasi:cli/run@0.2."),
        "{}",
        text[3]
    );
}

#[test]
fn a_memory_cap_below_what_the_filter_needs_at_start_is_a_config_error() {
    let setup = Setup::new();
    let diagnostics = setup
        .load(&entry(
            "tiny",
            "redact_secrets",
            r#"["reply"]"#,
            "memory_mb = 1",
        ))
        .err()
        .expect("the chain must not load");
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].key, "filter[0].memory_mb");
    assert_eq!(
        diagnostics[0].message,
        "filter \"tiny\" ran out of memory (limit 1 MiB) while starting; raise memory_mb"
    );
}

#[test]
fn an_empty_chain_passes_everything() {
    let chain = run(FilterChain::load(&[], std::path::Path::new("/nonexistent"), &Default::default())).unwrap();
    assert!(chain.is_empty());
    let m = message("x", "y");
    assert_eq!(run(chain.on_inject(m.clone())), Verdict::Pass(m));
    assert_eq!(
        run(chain.on_permission(request("Bash", "ls"))),
        PermissionVerdict::Relay
    );
}

#[test]
fn the_chain_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FilterChain>();

    let setup = Setup::new();
    let chain = Arc::new(setup.chain(&entry("panicky", "panicky", r#"["inject", "reply"]"#, "")));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let chain = chain.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let m = message(&format!("t{i}"), "ana");
                    assert_eq!(run(chain.on_inject(m.clone())), Verdict::Pass(m));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // One instance served all 100 injects; its reply counter is untouched.
    assert_eq!(run(chain.on_reply(reply("r"))), Verdict::Pass(reply("r #1")));
    assert!(wasm("panicky").is_file());
}

/// The component built for opzero:filter@0.1.0 and kept as built
/// (host/testdata/filter-0.1.0/README.md).
fn pinned_0_1() -> String {
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/filter-0.1.0/max_length.wasm");
    format!("{:?}", wasm.display().to_string())
}

fn file(name: &str, mime: &str, size: u64) -> FileInfo {
    FileInfo { name: name.into(), mime: mime.into(), size }
}

#[test]
fn a_0_1_and_a_0_2_component_run_side_by_side_and_files_pass_the_0_1_one_unchanged() {
    let setup = Setup::new();
    let old = format!(
        "[[filter]]\nname = \"old\"\npath = {}\nhooks = [\"inject\"]\n[filter.config]\ninject = {{ max_chars = 12 }}\nmarker = \"~\"\n",
        pinned_0_1()
    );
    let chain = setup.chain(&(old + &entry("hello", "hello_filter", r#"["inject"]"#, "[filter.config]\ngreeting = \"Hi!\"")));
    assert_eq!(chain.names(), ["old", "hello"]);
    let mut m = message("hello world, again", "ana");
    m.files = vec![file("a.png", "image/png", 3)];
    let Verdict::Pass(out) = run(chain.on_inject(m)) else { panic!("not passed") };
    // Cut by 0.1.0, then greeted by 0.2.0; the files as they came.
    assert_eq!(out.content, "Hi! hello world~");
    assert_eq!(out.files, [file("a.png", "image/png", 3)]);
}

#[test]
fn files_reach_an_inject_filter_which_may_refuse_them_by_type_or_size() {
    let setup = Setup::new();
    let chain = setup.chain(&entry(
        "gate",
        "file_gate",
        r#"["inject"]"#,
        "[filter.config]\nrefuse_mime = \"image/\"\nmax_bytes = 1000",
    ));
    let with = |files: Vec<FileInfo>| {
        let mut m = message("see attached", "ana");
        m.files = files;
        run(chain.on_inject(m))
    };
    assert_eq!(
        with(vec![file("notes.txt", "text/plain", 10), file("cat.png", "image/png", 10)]),
        Verdict::Reject { filter: "gate".into(), reason: "cat.png is image/png: not taken here".into() }
    );
    assert_eq!(
        with(vec![file("big.txt", "text/plain", 1001)]),
        Verdict::Reject { filter: "gate".into(), reason: "big.txt is 1001 bytes, more than 1000".into() }
    );
    let Verdict::Pass(out) = with(vec![file("notes.txt", "text/plain", 1000)]) else { panic!("not passed") };
    assert_eq!(out.files, [file("notes.txt", "text/plain", 1000)]);
}

#[test]
fn a_0_1_component_listed_with_the_event_hook_is_refused_at_its_hooks() {
    let setup = Setup::new();
    let text = format!("[[filter]]\nname = \"old\"\npath = {}\nhooks = [\"inject\", \"event\"]\n", pinned_0_1());
    let diagnostics = setup.load(&text).err().expect("refused");
    let lines: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let want = format!(
        "{}:4:9: filter[0].hooks: filter \"old\": {} is built for opzero:filter@0.1.0, which has no event hook (rebuild it with the guest SDK for opzero:filter@0.2.0, or take \"event\" out of hooks)",
        setup.config_path().display(),
        pinned_0_1().trim_matches('"')
    );
    assert_eq!(lines[0], want);
}

#[test]
fn an_event_filter_observes_on_an_instance_of_its_own_within_its_deadline() {
    let setup = Setup::new();
    let chain = setup.chain(&entry("obs", "observer", r#"["inject", "event"]"#, ""));
    let (verdict, logs) = logs_of(|| run(chain.on_event(Event::Status(ClaudeState::Idle))));
    assert_eq!(verdict, Verdict::Pass(()));
    assert!(logs.contains("observed #1 status-changed ClaudeState::Idle"), "{logs}");
    // The inject hook runs on the other instance: its count of events is
    // the event instance's alone.
    let (_, logs) = logs_of(|| run(chain.on_inject(message("hi", "ana"))));
    assert!(logs.contains("inject \"hi\""), "{logs}");
    let (_, logs) = logs_of(|| run(chain.on_event(Event::Status(ClaudeState::Busy))));
    assert!(logs.contains("observed #2 status-changed ClaudeState::Busy"), "{logs}");

    // Sleeping to its deadline is a named timeout, and a fresh instance.
    let chain = setup.chain(&entry("slow", "observer", r#"["event"]"#, "event_timeout_ms = 100\n[filter.config]\nsleep_ms = 10000"));
    assert_eq!(
        run(chain.on_event(Event::Status(ClaudeState::Idle))),
        Verdict::Failed { filter: "slow".into(), error: "filter \"slow\" timed out after 100 ms".into() }
    );
    // The message hooks have no instance to call: they pass.
    assert_eq!(run(chain.on_inject(message("hi", "ana"))), Verdict::Pass(message("hi", "ana")));
}

fn notifier(url: &str, grants: &[u16], extra: &str) -> String {
    let hosts: Vec<String> = grants.iter().map(|p| format!("\"http://127.0.0.1:{p}\"")).collect();
    let grant = if grants.is_empty() { String::new() } else { format!("allowed_outbound_hosts = [{}]\n", hosts.join(", ")) };
    entry("notify", "notifier", r#"["event"]"#, &format!("{grant}{extra}[filter.config]\nurl = \"{url}\""))
}

fn reply_sent(text: &str) -> Event {
    Event::ReplySent { id: 1, chat_id: "c1".into(), text: text.into(), edit_of: None }
}

#[test]
fn a_filter_that_sends_http_without_a_grant_does_not_load() {
    let setup = Setup::new();
    let diagnostics = setup.load(&notifier("http://127.0.0.1:9/", &[], "")).err().expect("refused");
    let lines: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        lines,
        [format!(
            "{}:1:1: filter[0].allowed_outbound_hosts: missing: filter \"notify\": {} sends HTTP requests (it imports wasi:http/outgoing-handler), so its entry must list the hosts it may reach, e.g. allowed_outbound_hosts = [\"https://ntfy.sh\"]",
            setup.config_path().display(),
            wasm("notifier").display()
        )]
    );
    // A filter that sends none loads without one, as ever.
    setup.chain(&entry("hello", "hello_filter", r#"["inject"]"#, "[filter.config]\ngreeting = \"Hi!\""));
}

#[test]
fn a_granted_filter_reaches_the_hosts_it_names_and_no_other() {
    let setup = Setup::new();
    let granted = Recorder::answering(|_| Response::new("thanks".into()));
    let other = Recorder::ok();
    let url = granted.url("/topic");
    let chain = setup.chain(&notifier(&url, &[granted.port], ""));
    let (verdict, logs) = logs_of(|| run(chain.on_event(reply_sent("done"))));
    assert_eq!(verdict, Verdict::Pass(()));
    assert!(logs.contains("sent: 200 thanks"), "{logs}");
    assert_eq!(granted.lines(), ["POST /topic done"]);
    assert_eq!(granted.got()[0].header("content-length"), Some("4"));

    let url = other.url("/topic");
    let chain = setup.chain(&notifier(&url, &[granted.port], ""));
    let (verdict, logs) = logs_of(|| run(chain.on_event(reply_sent("done"))));
    assert_eq!(verdict, Verdict::Pass(()));
    assert!(
        logs.contains(&format!("not sent: HTTP request denied: {url} is not in this filter's allowed_outbound_hosts")),
        "{logs}"
    );
    assert!(logs.contains(&format!("HTTP request to {url} refused: not in allowed_outbound_hosts filter=\"notify\"")), "{logs}");
    assert!(other.got().is_empty(), "the request left");
}

#[test]
fn a_redirect_to_a_host_not_granted_is_refused() {
    let setup = Setup::new();
    let elsewhere = Recorder::ok();
    let target = elsewhere.url("/stolen");
    let redirecting = Recorder::answering(move |_| {
        Response::builder().status(307).header("location", &target).body("".into()).unwrap()
    });
    let url = redirecting.url("/topic");
    let chain = setup.chain(&notifier(&url, &[redirecting.port], ""));
    let (_, logs) = logs_of(|| run(chain.on_event(reply_sent("secret"))));
    assert!(logs.contains("not sent: HTTP request denied"), "{logs}");
    assert_eq!(redirecting.lines(), ["POST /topic secret"]);
    assert!(elsewhere.got().is_empty(), "the redirect was followed");
}

#[test]
fn a_request_counts_against_the_event_deadline() {
    let setup = Setup::new();
    // Takes the connection and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let _held: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let url = format!("http://127.0.0.1:{port}/");
    let chain = setup.chain(&notifier(&url, &[port], "event_timeout_ms = 300\n"));
    assert_eq!(
        run(chain.on_event(reply_sent("hello?"))),
        Verdict::Failed { filter: "notify".into(), error: "filter \"notify\" timed out after 300 ms".into() }
    );
}

/// `notify` with a webhook: a JSON POST that Slack reads (`text`) and any
/// other receiver can take apart, with the token as a bearer; a failing
/// receiver is logged with what it answered.
#[test]
fn notify_posts_json_to_a_webhook_with_its_token() {
    let setup = Setup::new();
    let hook = Recorder::answering(|path| match path {
        "/down" => Response::builder().status(503).body("try later".into()).unwrap(),
        _ => Response::new("ok".into()),
    });
    let config = |path: &str| {
        entry(
            "notify",
            "notify",
            r#"["event"]"#,
            &format!(
                "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n[filter.config]\nwebhook_url = \"{}\"\ntoken = \"tk_1\"\nevents = [\"undelivered\"]\n",
                hook.port,
                hook.url(path)
            ),
        )
    };
    let chain = setup.chain(&config("/hooks/T1"));
    let undelivered = || Event::Receipt {
        message_id: "m1".into(),
        chat_id: "c1".into(),
        state: opzero_host::filters::Delivery::Undelivered,
        reason: Some("Claude Code did not take it".into()),
    };
    // Not asked for: nothing goes.
    assert_eq!(run(chain.on_event(Event::PermissionRelayed(request("Bash", "ls")))), Verdict::Pass(()));
    let (_, logs) = logs_of(|| run(chain.on_event(undelivered())));
    assert!(logs.contains("sent: A message did not reach Claude"), "{logs}");
    let got = hook.got();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].method.as_str(), got[0].path.as_str()), ("POST", "/hooks/T1"));
    assert_eq!(got[0].header("authorization"), Some("Bearer tk_1"));
    let body: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    let cwd = std::env::current_dir().unwrap().display().to_string();
    let message = format!("A message did not reach Claude in {cwd}\nClaude Code did not take it");
    assert_eq!(
        body,
        serde_json::json!({
            "text": format!("*Claude: A message did not reach Claude*\n{message}"),
            "event": "undelivered",
            "title": "Claude: A message did not reach Claude",
            "message": message,
            "session": {"id": "", "name": null, "cwd": cwd},
            "url": null,
        })
    );

    let chain = setup.chain(&config("/down"));
    let (_, logs) = logs_of(|| run(chain.on_event(undelivered())));
    assert!(logs.contains(&format!("not sent: {} answered 503: try later", hook.url("/down"))), "{logs}");
}
