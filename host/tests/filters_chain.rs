//! The filter chain with real components: the built-in filters, the
//! example, and guests that misbehave on purpose (host/tests/guests/).

mod filters_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use filters_support::{Setup, check, entry, run, wasm};
use opzero_host::filters::{FilterChain, LoadStats, Message, PermissionVerdict, Reply, Verdict};
use opzero_host::permissions::Request as PermissionRequest;

fn message(content: &str, user: &str) -> Message {
    Message {
        content: content.into(),
        meta: vec![
            ("user".into(), user.into()),
            ("chat_id".into(), "c1".into()),
        ],
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
            .contains("does not export opzero:filter/filter@0.1.0 (it exports wasi:cli/run@0.2."),
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
    let chain = run(FilterChain::load(&[], std::path::Path::new("/nonexistent"))).unwrap();
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
