//! The command line a person types: `launch` (with a stand-in `claude` that
//! records what it was given), the bridge client (`sessions`, `send`,
//! `tail`, `status`, `open`'s QR code) against a live host, and `validate`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Host, BIN};

/// A fake `claude` on PATH: prints `version` for `--version`, otherwise
/// records its cwd, session env var and argv (NUL-separated) in `$RECORD`.
fn stand_in_claude(dir: &Path, version: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("claude");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{version} (Claude Code)'; exit 0; fi\n\
             {{ pwd; printf '%s\\n' \"$OPZERO_CHANNEL_SESSION_ID\"; for a in \"$@\"; do printf '%s\\0' \"$a\"; done; }} > \"$RECORD\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

struct Recorded {
    cwd: String,
    env_session: String,
    args: Vec<String>,
}

fn read_record(path: &Path) -> Recorded {
    let raw = std::fs::read_to_string(path).expect("the stand-in claude ran");
    let mut parts = raw.splitn(3, '\n');
    let cwd = parts.next().unwrap().to_string();
    let env_session = parts.next().unwrap().to_string();
    let args = parts
        .next()
        .unwrap_or("")
        .split('\0')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    Recorded { cwd, env_session, args }
}

fn launch(home: &Path, path_dirs: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("launch")
        .args(args)
        .current_dir(home)
        .env("PATH", path_dirs)
        .env("HOME", home)
        .env("OPZERO_HOME", home.join("opzero"))
        .env("RECORD", home.join("record"))
        .env_remove("CLAUDE_BIN")
        .env_remove("OPZERO_CHANNEL_SESSION_ID")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn launch_execs_claude_wired_to_this_binary() {
    let home = tempfile::tempdir().unwrap();
    let bin = stand_in_claude(home.path(), "2.1.328");
    let project = home.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let out = launch(
        home.path(),
        &format!("{}:/usr/bin:/bin", bin.display()),
        &["--cwd", "project", "--model", "opus", "--", "--permission-mode", "acceptEdits"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty());

    let rec = read_record(&home.path().join("record"));
    let session = rec.env_session.clone();
    assert!(opzero_host::discovery::parse_session_id(&session).is_ok(), "{session:?}");
    assert_eq!(uuid::Uuid::parse_str(&session).unwrap().get_version_num(), 4);
    assert_eq!(Path::new(&rec.cwd).canonicalize().unwrap(), project.canonicalize().unwrap());
    // One line on stderr says which session and how to reach it.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&session) && lines[0].contains("opzero-host send"), "{stderr}");

    let mcp_config = rec.args[3].clone();
    assert_eq!(
        rec.args,
        [
            "--session-id",
            &session,
            "--mcp-config",
            &mcp_config,
            "--dangerously-load-development-channels",
            "server:opzero-channel",
            "--allowedTools",
            "mcp__opzero-channel__reply,mcp__opzero-channel__edit_message",
            "--model",
            "opus",
            "--permission-mode",
            "acceptEdits",
        ]
    );
    let exe = Path::new(BIN).canonicalize().unwrap();
    let mcp: Value = serde_json::from_str(&mcp_config).unwrap();
    assert_eq!(
        mcp,
        json!({"mcpServers": {"opzero-channel": {
            "command": exe.display().to_string(),
            "args": ["serve", "--session-id", session],
            "env": {"OPZERO_CHANNEL_SESSION_ID": session}
        }}})
    );

    // What claude would spawn from that config serves this very session.
    let server = &mcp["mcpServers"]["opzero-channel"];
    let mut child = Command::new(server["command"].as_str().unwrap())
        .args(server["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()))
        .current_dir(&project)
        .env("OPZERO_HOME", home.path().join("opzero"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let file = home.path().join("opzero/channels").join(format!("{session}.json"));
    let deadline = Instant::now() + support::WAIT;
    while !file.exists() {
        assert!(Instant::now() < deadline, "the configured server did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn launch_passes_a_given_session_id_and_config() {
    let home = tempfile::tempdir().unwrap();
    let bin = stand_in_claude(home.path(), "2.1.80");
    std::fs::write(home.path().join("opzero.toml"), "[permissions]\nrelay = false\n").unwrap();
    let id = support::new_session_id();
    let out = launch(home.path(), &format!("{}:/usr/bin:/bin", bin.display()), &["--session-id", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = read_record(&home.path().join("record"));
    assert_eq!(rec.env_session, id);
    assert_eq!(rec.args[..2], ["--session-id", id.as_str()]);
    let mcp: Value = serde_json::from_str(&rec.args[3]).unwrap();
    let config = home.path().join("opzero.toml").display().to_string();
    assert_eq!(
        mcp["mcpServers"]["opzero-channel"]["args"],
        json!(["serve", "--session-id", id, "--config", config])
    );
    assert!(!rec.args.contains(&"--model".to_string()));
}

#[test]
fn launch_refuses_a_missing_or_old_claude_and_bad_input() {
    let home = tempfile::tempdir().unwrap();
    let out = launch(home.path(), "/usr/bin:/bin", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("claude was not found on PATH"));

    let bin = stand_in_claude(home.path(), "2.1.79");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = launch(home.path(), &path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Claude Code 2.1.79") && err.contains("2.1.80 or newer"), "{err}");
    assert!(!home.path().join("record").exists(), "claude must not be started");

    stand_in_claude(home.path(), "2.1.328");
    let out = launch(home.path(), &path, &["--session-id", "../../x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a UUID"));

    let out = launch(home.path(), &path, &["--cwd", "does-not-exist"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));

    std::fs::write(home.path().join("bad.toml"), "[host]\nnope = 1\n").unwrap();
    let out = launch(home.path(), &path, &["--config", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:1: host.nope: unknown key"), "{err}");
    assert!(!home.path().join("record").exists());
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn sessions_lists_live_hosts_and_sweeps_dead_ones() {
    let h = Host::spawn();
    let port = h.port();
    // A file left by a process that is gone.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale_id = support::new_session_id();
    let stale = h.channels_dir().join(format!("{stale_id}.json"));
    std::fs::write(
        &stale,
        json!({"pid": dead_pid, "sessionId": stale_id, "port": 1, "secret": "00", "createdAt": 1, "version": "0.0.0"}).to_string(),
    )
    .unwrap();

    let out = h.cli(&["sessions"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("SESSION"));
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[0], h.session);
    assert_eq!(cols[1], h.child.id().to_string());
    assert_eq!(cols[2], port.to_string());
    assert!(cols[3].ends_with('s'), "age: {}", cols[3]);
    assert_eq!(Path::new(cols[4]).canonicalize().unwrap(), h.home.path().canonicalize().unwrap());
    assert!(!stale.exists(), "stale file swept");
    assert!(!text.contains(&h.secret()));
}

#[test]
fn send_status_and_tail_against_a_live_host() {
    let mut h = Host::spawn();
    h.initialize();
    let prefix = &h.session[..8].to_string();

    let out = h.cli(&["send", prefix, "hello from the cli", "--chat-id", "c9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `send` waits for Claude Code to take the message; this Claude Code
    // keeps no session file, so the host cannot tell and says why.
    let text = stdout(&out);
    let unknown = format!("delivered to {}; whether Claude Code took it is unknown: Claude Code's session file", h.session);
    assert!(text.starts_with(&unknown) && text.ends_with('\n') && text.lines().count() == 1, "{text}");
    assert_eq!(
        h.recv()["params"],
        json!({"content": "hello from the cli", "meta": {"chat_id": "c9"}})
    );

    let out = h.cli(&["status", prefix]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains(&format!("session   {}", h.session)), "{text}");
    assert!(text.contains(&format!("pid       {}", h.child.id())), "{text}");
    assert!(text.contains("pending   0 permission request(s)"), "{text}");

    for json_mode in [true, false] {
        let mut args = vec![prefix.as_str()];
        if json_mode {
            args.push("--json");
        }
        let mut tail = h.tail(&args);
        let text = format!("reply {json_mode}");
        let r = h.call_reply(json!({"chat_id": "c9", "text": text}));
        let id: u64 = r["result"]["content"][0]["text"].as_str().unwrap().trim_start_matches("sent (id: ").trim_end_matches(')').parse().unwrap();
        h.request("tools/call", json!({"name": "edit_message", "arguments": {"chat_id": "c9", "message_id": id, "text": "edited"}}));
        let mut out = BufReader::new(tail.stdout.take().unwrap());
        let (mut line, mut edit) = (String::new(), String::new());
        out.read_line(&mut line).unwrap();
        out.read_line(&mut edit).unwrap();
        if json_mode {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(support::without_ts(v), json!({"type": "reply", "chat_id": "c9", "text": text}));
            let v: Value = serde_json::from_str(&edit).unwrap();
            assert_eq!(support::without_ts(v), json!({"type": "edit", "chat_id": "c9", "message_id": id, "text": "edited"}));
        } else {
            assert_eq!(line, format!("reply [c9] {text}\n"));
            assert_eq!(edit, format!("edit [c9] of reply {id}: edited\n"));
        }
        tail.kill().unwrap();
        tail.wait().unwrap();
    }
}

#[test]
fn session_prefixes_must_match_exactly_one_host() {
    let h = Host::spawn();
    h.discovery();
    // A second host in the same discovery dir.
    let other = support::new_session_id();
    let mut second = Command::new(BIN)
        .arg("serve")
        .env("OPZERO_HOME", h.home.path())
        .env("OPZERO_CHANNEL_SESSION_ID", &other)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let file = h.channels_dir().join(format!("{other}.json"));
    let deadline = Instant::now() + support::WAIT;
    while !file.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = h.cli(&["send", "", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("matches 2 sessions") && err.contains(&other) && err.contains(&h.session), "{err}");

    let out = h.cli(&["status", "ffffffff-nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live session matches \"ffffffff-nope\""));
    drop(second.stdin.take());
    second.wait().unwrap();
}

#[test]
fn send_reports_refusals_and_exits_non_zero() {
    let h = Host::spawn_with(support::Options {
        config: Some("[limits]\nmax_content_chars = 5\n".into()),
        ..Default::default()
    });
    h.discovery();
    let out = h.cli(&["send", &h.session, "far too long"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not delivered (413 Payload Too Large): content is 12 characters; the limit is 5"), "{err}");
}

#[test]
fn open_prints_its_link_as_a_qr_code_unless_told_not_to() {
    let h = Host::spawn();
    h.discovery();
    // `cli` pipes stderr: the code is printed even where it is no terminal.
    let out = h.cli(&["open", &h.session[..8], "--no-browser"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = stdout(&out).trim_end().to_string();
    assert!(link.contains("/#code="), "{link}");
    let err = String::from_utf8(out.stderr).unwrap();
    let (said, code) = err.split_once('\n').unwrap();
    assert!(said.starts_with("a sign-in link for "), "the code follows the link's line:\n{err}");
    assert!(code.chars().all(|c| matches!(c, ' ' | '▀' | '▄' | '█' | '\n')), "plain block characters only:\n{err}");
    assert_eq!(support::decode_qr(&err), link);

    let out = h.cli(&["open", &h.session[..8], "--no-browser", "--no-qr"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("/#code="));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains(['▀', '▄', '█']), "no QR code with --no-qr:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn validate_accepts_a_good_file_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("opzero.toml"), "[host]\ninstructions = \"hi\"\n[permissions]\nrelay = false\n").unwrap();
    let out = Command::new(BIN).arg("validate").current_dir(dir.path()).output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "opzero.toml: ok (0 filters; permission relay off)\n");
    // --config names it as for every other command; a FILE given wins.
    std::fs::write(dir.path().join("other.toml"), "[permissions]\nrelay = true\n").unwrap();
    let out = Command::new(BIN).args(["--config", "other.toml", "validate"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(stdout(&out), "other.toml: ok (0 filters; permission relay on)\n");
    let out = Command::new(BIN).args(["validate", "--config", "other.toml", "opzero.toml"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(stdout(&out), "opzero.toml: ok (0 filters; permission relay off)\n");
}

#[test]
fn validate_and_serve_report_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[host]\ninstructions = \"\"\n\n[limits]\nmax_body_bytes = 1\n\n[[filter]]\nname = \"x\"\n").unwrap();
    let p = path.display();
    let expected = format!(
        "{p}:2:16: host.instructions: must not be empty\n\
         {p}:5:18: limits.max_body_bytes: must be between 64 and 67108864\n\
         {p}:7:1: filter[0].path: missing (the .wasm component to load)\n\
         {p}:7:1: filter[0].hooks: missing (a subset of [\"inject\", \"reply\", \"permission\", \"event\"])\n"
    );
    let out = Command::new(BIN).arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("opzero-host: {expected}"));

    // serve refuses to start with the same messages, before writing anything.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("OPZERO_HOME", home.path())
        .env("OPZERO_CHANNEL_SESSION_ID", support::new_session_id())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&expected));
    assert!(!home.path().join("channels").exists());

    // An unknown key or a value of the wrong type stops the reading at the first.
    for (text, first) in [
        ("[host]\nport = 3\n\n[limits]\nmax_body_bytes = \"1MB\"\n", "2:1: host.port: unknown key (expected one of: discovery_dir, instructions)"),
        ("[limits]\nmax_body_bytes = \"1MB\"\nmax_meta_keys = -1\n", "2:18: limits.max_body_bytes: expected an integer, found string"),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN).arg("validate").arg(&path).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("opzero-host: {p}:{first}\n"));
    }

    let out = Command::new(BIN).args(["validate", "nope.toml"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "opzero-host: nope.toml: no such config file\n");
}

/// A transcript as Claude Code 2.1.328 keeps it, for a session started in
/// `cwd`: `~/.claude/projects/<cwd with every other character a dash>/`.
fn transcript(home: &Path, cwd: &Path, id: &str, prompt: &str, age_secs: u64) {
    let name: String = cwd.canonicalize().unwrap().to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let dir = home.join(".claude/projects").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let lines = [
        json!({"type": "queue-operation", "operation": "enqueue", "sessionId": id}),
        json!({"type": "user", "message": {"role": "user", "content": prompt}, "sessionId": id}),
    ];
    let path = dir.join(format!("{id}.jsonl"));
    std::fs::write(&path, lines.map(|l| l.to_string()).join("\n")).unwrap();
    let when = std::time::SystemTime::now() - Duration::from_secs(age_secs);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
}

#[test]
fn launch_resumes_a_session_by_id_or_the_newest_one_under_its_own_id() {
    let home = tempfile::tempdir().unwrap();
    let bin = stand_in_claude(home.path(), "2.1.328");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let project = home.path().join("my.project");
    std::fs::create_dir(&project).unwrap();
    let (old, new) = (support::new_session_id(), support::new_session_id());
    transcript(home.path(), &project, &old, "the old one", 3600);
    transcript(home.path(), &project, &new, "the new one", 60);
    for (args, want) in [(vec!["--resume", old.as_str()], &old), (vec!["--continue"], &new)] {
        let out = launch(home.path(), &path, &[&["--cwd", "my.project"], &args[..]].concat());
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let rec = read_record(&home.path().join("record"));
        assert_eq!((rec.args[0].as_str(), rec.args[1].as_str(), rec.env_session.as_str()), ("--resume", want.as_str(), want.as_str()), "{args:?}");
        let mcp: Value = serde_json::from_str(&rec.args[3]).unwrap();
        assert_eq!(mcp["mcpServers"]["opzero-channel"]["args"], json!(["serve", "--session-id", want]), "{args:?}");
    }
    // An unknown id is refused before claude starts, saying where it looked.
    std::fs::remove_file(home.path().join("record")).unwrap();
    let unknown = support::new_session_id();
    let out = launch(home.path(), &path, &["--cwd", "my.project", "--resume", &unknown]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("no session {unknown} to resume")) && err.contains(".claude/projects/"), "{err}");
    let out = launch(home.path(), &path, &["--continue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no session to continue"));
    let out = launch(home.path(), &path, &["--resume", &old, "--session-id", &new]);
    assert_eq!(out.status.code(), Some(2), "one of --resume, --continue and --session-id");
    assert!(!home.path().join("record").exists(), "claude was started");
}

#[test]
fn sessions_all_lists_this_directorys_sessions_without_a_live_host() {
    let mut h = Host::spawn();
    h.initialize();
    let home = h.home.path().to_path_buf();
    let (live, idle) = (h.session.clone(), support::new_session_id());
    transcript(&home, &home, &live, "one that is live", 10);
    transcript(&home, &home, &idle, "fix the\nflaky   test please", 7200);
    let out = h.cli(&["sessions", "--all"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let listed: Vec<&str> = text.lines().skip_while(|l| !l.contains("without a live host")).skip(1).collect();
    assert_eq!(listed.len(), 1, "{text}");
    assert!(listed[0].starts_with(&idle) && listed[0].contains(" 2h00m ") && listed[0].ends_with("fix the flaky test please"), "{text}");
    assert!(text.lines().next().unwrap().starts_with("SESSION"), "live sessions come first: {text}");
}

/// A TCP relay between `tail` and the host, whose connections the test can
/// cut mid-stream.
struct Relay {
    port: u16,
    /// The host's port, once it has one.
    to: std::sync::Arc<std::sync::atomic::AtomicU16>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start() -> Relay {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicU16, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let to = std::sync::Arc::new(AtomicU16::new(0));
        let (kept, target) = (open.clone(), to.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(host) = TcpStream::connect(("127.0.0.1", target.load(Ordering::SeqCst))) else { continue };
                kept.lock().unwrap().extend([client.try_clone().unwrap(), host.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), host.try_clone().unwrap()), (host, client)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, to, open }
    }

    /// Drops every connection made so far, as a network that goes away.
    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn tail_resumes_after_a_dropped_connection_and_shows_nothing_twice() {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::sync::mpsc;
    // The relay is a port forward, as an SSH tunnel would be: the bridge is
    // told its name.
    let relay = Relay::start();
    let mut h = Host::spawn_with(support::Options {
        config: Some(format!("[bridge]\nallowed_hosts = [\"127.0.0.1:{}\"]\n", relay.port)),
        ..Default::default()
    });
    h.initialize();
    relay.to.store(h.port(), std::sync::atomic::Ordering::SeqCst);
    // The CLI finds the host through a discovery file of its own that
    // names the relay's port.
    let cli_home = tempfile::tempdir().unwrap();
    let channels = cli_home.path().join("channels");
    std::fs::DirBuilder::new().mode(0o700).create(&channels).unwrap();
    let mut record = h.discovery();
    record["port"] = json!(relay.port);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(channels.join(format!("{}.json", h.session)))
        .unwrap();
    std::io::Write::write_all(&mut file, record.to_string().as_bytes()).unwrap();
    let mut tail = Command::new(BIN)
        .args(["tail", &h.session[..8], "--json"])
        .env("OPZERO_HOME", cli_home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let out = lines(Box::new(tail.stdout.take().unwrap()));
    let err = lines(Box::new(tail.stderr.take().unwrap()));
    let next = |rx: &mpsc::Receiver<String>| rx.recv_timeout(support::WAIT).expect("a line from tail");
    let first = next(&err);
    assert!(first.starts_with("following"), "{first}");
    let text = |line: String| serde_json::from_str::<Value>(&line).unwrap()["text"].as_str().unwrap().to_string();
    h.call_reply(json!({"chat_id": "c", "text": "one"}));
    assert_eq!(text(next(&out)), "one");
    relay.cut();
    h.call_reply(json!({"chat_id": "c", "text": "two"}));
    assert_eq!(next(&err), "reconnected; resuming after event 1");
    h.call_reply(json!({"chat_id": "c", "text": "three"}));
    assert_eq!(text(next(&out)), "two", "missed while cut off, shown after");
    assert_eq!(text(next(&out)), "three");
    assert!(out.recv_timeout(Duration::from_millis(300)).is_err(), "something was shown twice");
    // When the host is gone, tail ends by itself.
    h.close_stdin();
    assert!(h.wait_exit(support::WAIT).is_some());
    relay.cut();
    assert!(next(&err).contains("the host closed the stream"));
    let status = tail.wait().unwrap();
    assert!(status.success(), "{status}");
}
