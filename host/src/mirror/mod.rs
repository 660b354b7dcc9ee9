//! The mirror: what the host learns from Claude Code's transcript, which
//! it runs next to. Claude Code acknowledges no channel message, so:
//!
//! - **Receipts.** Each message the host writes gives, in order, one
//!   `enqueue` line with its `<channel …>` tag (`queued`), then the tag as
//!   the model's input, on a line of its own or folded into the running turn
//!   (`seen`). No enqueue line within `[mirror] grace_ms` is `undelivered`.
//! - **Unanswered turns.** A turn that saw a phone message and ended without
//!   a `reply` to its chat: its last text, which stayed in the terminal.
//! - **Activity.** Each tool call, in a short plain summary.
//!
//! The transcript is undocumented. Its path comes from Claude Code's session
//! file (`status`), the authority on which transcript is live. Without that
//! file, or with lines of another shape, there are no receipts at all, and
//! `GET /status` says why: the mirror goes quiet, it never guesses.
//! `undelivered` is claimed only with that evidence in hand.
//!
//! It all runs on one task, fed in order: the core says what it writes
//! before it writes it, so a line can never come before its message.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::MirrorConfig;

mod follow;
mod lines;

use follow::{Follower, Watch};
use lines::{Says, ToolUse};

/// How many messages are remembered for receipts and `?wait`.
const REMEMBERED: usize = 1000;
/// Why there are no receipts before Claude Code's session file is read.
const NO_SESSION_FILE: &str =
    "Claude Code's session file (~/.claude/sessions/<pid>.json) has not been found, so its transcript is unknown";
/// Activity summaries are cut here (in characters).
const SUMMARY_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    Seen,
    Undelivered,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::Seen => "seen",
            Delivery::Undelivered => "undelivered",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub message_id: String,
    pub chat_id: String,
    pub state: Delivery,
    /// For `undelivered`: what to check.
    pub reason: Option<String>,
}

/// What the mirror found, for the core to publish.
#[derive(Debug, PartialEq)]
pub enum Observed {
    Receipt(Receipt),
    /// A turn that saw a phone message ended with no reply to its chat.
    Unanswered { chat_id: String, message_id: String, text: String },
    /// A tool call; `chat_id` is the phone chat of the turn, if any.
    Activity { chat_id: Option<String>, tool: String, summary: String },
}

/// A message's receipts so far, for those who wait on one (`?wait`).
#[derive(Debug, Clone, PartialEq)]
pub enum Latest {
    Nothing,
    Got(Receipt),
    /// There will be no receipt: why.
    Unknown(String),
}

/// The handle the core keeps.
pub struct Mirror {
    config: MirrorConfig,
    shared: Arc<Shared>,
    /// To the task. With none (turned off), sending fails, unheard.
    tx: mpsc::UnboundedSender<Input>,
}

#[derive(Default)]
struct Shared {
    /// Messages written to Claude Code with no enqueue line yet, oldest
    /// first. Kept here, not sent to the task: a line read at any moment
    /// must find every message written before it.
    pending: Mutex<VecDeque<Pending>>,
    /// Why there are no receipts now, if there are none.
    unavailable: Mutex<Option<String>>,
    latest: Mutex<Recent>,
}

/// The latest receipt of each recent message, and their order.
#[derive(Default)]
struct Recent {
    by_id: HashMap<String, watch::Sender<Latest>>,
    order: VecDeque<String>,
}

enum Input {
    /// A message was written when none was waiting (see
    /// `Shared::pending`): its grace counts.
    Written,
    /// Claude Code initialized: messages held until now are written now.
    Opened,
    Session { session_id: String, cwd: PathBuf },
    Changed,
}

impl Mirror {
    /// Starts the mirror's task; what it finds goes to `out`.
    pub fn start(config: MirrorConfig, out: mpsc::UnboundedSender<Observed>) -> Mirror {
        let (tx, rx) = mpsc::unbounded_channel();
        let why = if config.follows() { NO_SESSION_FILE } else { "turned off in [mirror]" };
        let shared = Arc::new(Shared { unavailable: Mutex::new(Some(why.to_string())), ..Shared::default() });
        if config.follows() {
            let task = Task::new(config.clone(), shared.clone(), out, tx.clone());
            tokio::spawn(task.run(rx));
        }
        Mirror { config, shared, tx }
    }

    /// The core is about to write this message to Claude Code. Nothing is
    /// kept of it while there is no transcript to find it in.
    pub fn written(&self, message_id: &str, chat_id: &str, content: &str) {
        if self.shared.unavailable.lock().unwrap().is_some() {
            return;
        }
        if self.config.receipts {
            let mut recent = self.shared.latest.lock().unwrap();
            if recent.by_id.insert(message_id.to_string(), watch::Sender::new(Latest::Nothing)).is_none() {
                recent.order.push_back(message_id.to_string());
                if recent.order.len() > REMEMBERED
                    && let Some(old) = recent.order.pop_front()
                {
                    recent.by_id.remove(&old);
                }
            }
        }
        let (message_id, chat_id, content) = (message_id.to_string(), chat_id.to_string(), digest(content));
        let mut pending = self.shared.pending.lock().unwrap();
        let first = pending.is_empty();
        pending.push_back(Pending { message_id, chat_id, content, written: Instant::now() });
        if pending.len() > REMEMBERED {
            pending.pop_front();
        }
        drop(pending);
        // The task times the oldest; a later one needs no wake-up.
        if first {
            let _ = self.tx.send(Input::Written);
        }
    }

    /// The write failed after all.
    pub fn withdrawn(&self, message_id: &str) {
        self.shared.pending.lock().unwrap().retain(|p| p.message_id != message_id);
    }

    pub fn opened(&self) {
        let _ = self.tx.send(Input::Opened);
    }

    /// What Claude Code's session file says now.
    pub fn session(&self, session_id: &str, cwd: &str) {
        let _ = self.tx.send(Input::Session { session_id: session_id.to_string(), cwd: PathBuf::from(cwd) });
    }

    /// Why there are no receipts, or `None` when there are.
    pub fn unavailable(&self) -> Option<String> {
        if !self.config.receipts {
            return Some("turned off in [mirror]".into());
        }
        self.shared.unavailable.lock().unwrap().clone()
    }

    /// The receipts of a message written lately, as they come.
    pub fn receipts(&self, message_id: &str) -> watch::Receiver<Latest> {
        if let Some(why) = self.unavailable() {
            return watch::Sender::new(Latest::Unknown(why)).subscribe();
        }
        match self.shared.latest.lock().unwrap().by_id.get(message_id) {
            Some(tx) => tx.subscribe(),
            None => watch::Sender::new(Latest::Unknown("the host does not remember this message".into())).subscribe(),
        }
    }
}

impl Shared {
    fn set_unavailable(&self, why: Option<String>) {
        let mut now = self.unavailable.lock().unwrap();
        if *now != why {
            match &why {
                Some(why) => tracing::debug!("no receipts: {why}"),
                None => tracing::debug!("receipts available"),
            }
            *now = why.clone();
        }
        if let Some(why) = why {
            for tx in self.latest.lock().unwrap().by_id.values() {
                tx.send_if_modified(|l| {
                    let open = *l == Latest::Nothing || matches!(l, Latest::Got(r) if r.state == Delivery::Queued);
                    if open {
                        *l = Latest::Unknown(why.clone());
                    }
                    open
                });
            }
        }
    }
}

/// Written to Claude Code, no enqueue line yet.
struct Pending {
    message_id: String,
    chat_id: String,
    /// The content's [`digest`]: what is held of it, whatever its size.
    content: [u8; 32],
    written: Instant,
}

/// Enqueued, not yet seen by the model.
struct Queued {
    message_id: String,
    chat_id: String,
    tag: String,
}

/// What the turn under way has done.
#[derive(Default)]
struct Turn {
    /// Phone messages seen in it: (chat, message id).
    phone: Vec<(String, String)>,
    /// Chats it replied to (or edited a reply in).
    answered: Vec<String>,
    last_text: Option<String>,
    /// A line of it could not be read: say nothing of it.
    uncertain: bool,
}

struct Task {
    config: MirrorConfig,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Observed>,
    tx: mpsc::UnboundedSender<Input>,
    follower: Option<Follower>,
    watch: Option<Watch>,
    opened: Option<Instant>,
    queued: VecDeque<Queued>,
    turn: Turn,
    /// The `source` Claude Code names this channel by, once known.
    source: Option<String>,
    /// The transcript could not be read or followed: why.
    trouble: Option<String>,
    /// Its lines changed shape: why. Final.
    broken: Option<String>,
}

impl Task {
    fn new(config: MirrorConfig, shared: Arc<Shared>, out: mpsc::UnboundedSender<Observed>, tx: mpsc::UnboundedSender<Input>) -> Task {
        Task {
            config,
            shared,
            out,
            tx,
            follower: None,
            watch: None,
            opened: None,
            queued: VecDeque::new(),
            turn: Turn::default(),
            source: None,
            trouble: None,
            broken: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        loop {
            let deadline = self.next_deadline();
            let input = tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => input,
                    None => return,
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    // Whatever is already written counts, notified or not.
                    self.read();
                    self.expire();
                    self.report();
                    continue;
                }
            };
            match input {
                Input::Written => {}
                Input::Opened => self.opened = Some(Instant::now()),
                Input::Session { session_id, cwd } => self.session(&session_id, &cwd),
                Input::Changed => self.read(),
            }
            self.report();
        }
    }

    /// When the oldest message written runs out of grace. Only counted
    /// once Claude Code is initialized, and only while the transcript is
    /// known: otherwise nothing is ever claimed.
    fn next_deadline(&self) -> Option<Instant> {
        let opened = self.opened?;
        self.follower.as_ref()?;
        // Written in order: the first is the oldest.
        let oldest = self.shared.pending.lock().unwrap().front()?.written;
        Some(oldest.max(opened) + self.config.grace)
    }

    fn session(&mut self, session_id: &str, cwd: &std::path::Path) {
        // A name, not a path: the transcript is never looked for elsewhere.
        if crate::discovery::parse_session_id(session_id).is_err() {
            let why = format!("Claude Code's session file names the session {session_id:?}, which is not a session id");
            tracing::debug!("{why}");
            (self.follower, self.watch, self.broken) = (None, None, Some(why));
            return;
        }
        let path = crate::transcripts::project_dir(cwd).join(format!("{session_id}.jsonl"));
        if self.follower.as_ref().is_some_and(|f| f.path == path) {
            return;
        }
        tracing::debug!(transcript = %path.display(), "following Claude's transcript");
        self.follower = Some(Follower::new(path));
        self.watch = None;
        self.read();
    }

    fn unavailable(&self) -> Option<String> {
        let why = self.broken.as_ref().or(self.trouble.as_ref()).cloned();
        why.or_else(|| self.follower.is_none().then(|| NO_SESSION_FILE.into()))
    }

    fn report(&mut self) {
        let why = self.unavailable();
        if why.is_some() && self.follower.is_some() {
            // No receipt will be claimed for these.
            self.shared.pending.lock().unwrap().clear();
            self.queued.clear();
        }
        self.shared.set_unavailable(why);
    }

    /// Reads what is new in the transcript, watching it first if need be.
    fn read(&mut self) {
        let Some(follower) = &mut self.follower else { return };
        let watch = match &mut self.watch {
            Some(w) => Ok(w),
            None => {
                let tx = self.tx.clone();
                Watch::new(&follower.path, move || drop(tx.send(Input::Changed))).map(|w| self.watch.insert(w))
            }
        };
        if let Err(e) = watch.and_then(|w| w.closest(&follower.path)) {
            self.trouble = Some(format!("cannot watch for {}: {e}", follower.path.display()));
            return;
        }
        let mut read = Vec::new();
        let result = follower.read_new(|r| read.push(r));
        tracing::trace!("{} new line(s) in the transcript", read.len());
        self.trouble = result.err().map(|e| format!("cannot read Claude's transcript {}: {e}", follower.path.display()));
        for r in read {
            match r {
                Ok(line) => self.line(line.says()),
                Err(e) => {
                    tracing::debug!("a transcript line that is not JSON: {e}");
                    self.turn.uncertain = true;
                }
            }
        }
    }

    /// A message's receipt, for `?wait` and the core, if receipts are on.
    fn receipt(&self, message_id: &str, chat_id: &str, state: Delivery, reason: Option<String>) {
        if !self.config.receipts {
            return;
        }
        let (message_id, chat_id) = (message_id.to_string(), chat_id.to_string());
        let receipt = Receipt { message_id, chat_id, state, reason };
        if let Some(tx) = self.shared.latest.lock().unwrap().by_id.get(&receipt.message_id) {
            tx.send_replace(Latest::Got(receipt.clone()));
        }
        let _ = self.out.send(Observed::Receipt(receipt));
    }

    fn line(&mut self, says: Says) {
        match says {
            Says::Enqueued(tag) => self.enqueued(tag),
            Says::ChannelInput(text) => self.channel_input(&text),
            Says::Prompt => self.turn = Turn::default(),
            Says::Assistant { texts, tools } => {
                if let Some(text) = texts.into_iter().rev().find(|t| !t.trim().is_empty()) {
                    self.turn.last_text = Some(text);
                }
                for tool in tools {
                    self.tool_use(tool);
                }
            }
            Says::TurnEnded => self.turn_ended(),
            Says::Unexpected(what) => {
                let why = format!("Claude Code's transcript has changed shape ({what}); this version of the host cannot read it");
                tracing::debug!("{why}");
                self.broken = Some(why);
                self.turn.uncertain = true;
            }
            Says::Nothing => {}
        }
    }

    /// The channel a tag is from: `<channel source="…"`.
    fn source_of(tag: &str) -> Option<&str> {
        tag.strip_prefix("<channel source=\"")?.split('"').next()
    }

    fn ours(&self, tag: &str) -> bool {
        Self::source_of(tag).is_some_and(|s| self.source.as_deref().is_none_or(|ours| s == ours))
    }

    fn enqueued(&mut self, tag: String) {
        if !self.ours(&tag) {
            return;
        }
        // In order; the content confirms it.
        let content = inner_text(&tag).map(digest);
        let mut pending = self.shared.pending.lock().unwrap();
        let Some(i) = pending.iter().position(|p| Some(p.content) == content) else {
            tracing::debug!("a message of this channel in the transcript that was not sent since the host began following it: {tag:.200}");
            return;
        };
        let p = pending.remove(i).expect("found above");
        drop(pending);
        self.source = Self::source_of(&tag).map(str::to_string);
        self.receipt(&p.message_id, &p.chat_id, Delivery::Queued, None);
        self.queued.push_back(Queued { message_id: p.message_id, chat_id: p.chat_id, tag });
        if self.queued.len() > REMEMBERED {
            self.queued.pop_front();
        }
    }

    /// The model got channel input: each message of ours in it is seen,
    /// and belongs to this turn.
    fn channel_input(&mut self, text: &str) {
        let mut seen = Vec::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (i, q) in self.queued.iter().enumerate() {
            let taken = counts.entry(q.tag.as_str()).or_default();
            if text.matches(q.tag.as_str()).count() > *taken {
                *taken += 1;
                seen.push(i);
            }
        }
        let taken: Vec<Queued> = seen.into_iter().rev().filter_map(|i| self.queued.remove(i)).collect();
        for q in taken.into_iter().rev() {
            self.receipt(&q.message_id, &q.chat_id, Delivery::Seen, None);
            self.turn.phone.push((q.chat_id, q.message_id));
        }
    }

    /// The tool names Claude Code gives this channel's tools.
    fn is_our_answer(&self, tool: &ToolUse) -> bool {
        let Some(source) = &self.source else { return false };
        let name = source.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-', "_");
        tool.name.strip_prefix(&format!("mcp__{name}__")).is_some_and(|t| t == "reply" || t == "edit_message")
    }

    fn tool_use(&mut self, tool: ToolUse) {
        if self.is_our_answer(&tool) {
            if let Some(chat) = tool.input.chat_id.0 {
                self.turn.answered.push(chat);
            }
            return;
        }
        if self.config.activity {
            let chat_id = self.turn.phone.last().map(|(chat, _)| chat.clone());
            let summary = summary(&tool);
            let _ = self.out.send(Observed::Activity { chat_id, tool: tool.name, summary });
        }
    }

    fn turn_ended(&mut self) {
        let turn = std::mem::take(&mut self.turn);
        if !self.config.unanswered || turn.uncertain {
            return;
        }
        let Some(text) = turn.last_text else { return };
        // One per chat left without an answer, under its latest message.
        let mut chats: Vec<(String, String)> = Vec::new();
        for (chat, id) in turn.phone.into_iter().filter(|(chat, _)| !turn.answered.contains(chat)) {
            chats.retain(|(c, _)| *c != chat);
            chats.push((chat, id));
        }
        for (chat_id, message_id) in chats {
            let _ = self.out.send(Observed::Unanswered { chat_id, message_id, text: text.clone() });
        }
    }

    /// Messages whose grace ran out with no enqueue line: undelivered, if
    /// the transcript is known and readable.
    fn expire(&mut self) {
        let (Some(opened), None) = (self.opened, self.unavailable()) else { return };
        let now = Instant::now();
        let due = |p: &mut Pending| p.written.max(opened) + self.config.grace <= now;
        loop {
            let Some(p) = self.shared.pending.lock().unwrap().pop_front_if(due) else { return };
            let reason = undelivered_reason(self.config.grace, self.follower.as_ref().is_some_and(Follower::exists));
            self.receipt(&p.message_id, &p.chat_id, Delivery::Undelivered, Some(reason));
        }
    }
}

/// The message inside a `<channel …>` tag (Claude Code puts it on lines of
/// its own; attribute values cannot hold a `>`).
fn inner_text(tag: &str) -> Option<&str> {
    let start = tag.find(">\n")? + 2;
    tag.strip_suffix("\n</channel>")?.get(start..)
}

/// A message's content, to compare with a tag's. Claude Code writes
/// `</channel>` inside a message as `<\/channel>` (in any case), so content
/// cannot close its tag: compared without that.
fn digest(content: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(content.replace("<\\/", "</").as_bytes()).into()
}

fn undelivered_reason(grace: Duration, transcript_exists: bool) -> String {
    let evidence = if transcript_exists {
        "its transcript shows no sign of it"
    } else {
        "it has not even started its transcript"
    };
    format!(
        "Claude Code did not take this message: {} ms after it was sent, {evidence}. \
         Check that the session was started with this channel enabled: \
         `--dangerously-load-development-channels plugin:opzero@opzero` for the plugin, \
         or `--dangerously-load-development-channels server:<its name in --mcp-config>` \
         (`opzero-host launch` passes it for you). `opzero-host status` shows what the host knows of the session.",
        grace.as_millis()
    )
}

/// A tool call in a few plain words.
fn summary(tool: &ToolUse) -> String {
    let input = &tool.input;
    let said = match tool.name.as_str() {
        "Bash" => input
            .description
            .0
            .clone()
            .filter(|d| !d.trim().is_empty())
            .or_else(|| input.command.0.as_deref().and_then(|c| c.lines().next()).map(str::to_string)),
        "Read" | "Edit" | "MultiEdit" | "Write" => input.file_path.0.clone(),
        "NotebookEdit" => input.notebook_path.0.clone(),
        _ => None,
    };
    let said = said.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| tool.name.clone());
    said.chars().take(SUMMARY_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// What the mirror makes of a transcript recorded from the real Claude
    /// Code, when the host sent each channel message in it (in the order of
    /// their enqueue lines, as `m0`, `m1`, …): one line per event.
    fn observe(file: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/claude-2.1.328").join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let (out, mut observed) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { pending: Mutex::default(), unavailable: Mutex::default(), latest: Mutex::default() });
        let mut task = Task::new(Config::default().mirror, shared, out, mpsc::unbounded_channel().0);
        let lines: Vec<lines::Line> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let tag = v["content"].as_str().unwrap_or_default();
            if v["operation"] == "enqueue" && tag.starts_with("<channel") {
                // The content as the host sent it: what is inside the tag, unescaped.
                let content = inner_text(tag).unwrap().replace("<\\/", "</");
                let chat = tag.split("chat_id=\"").nth(1).unwrap().split('"').next().unwrap();
                let mut pending = task.shared.pending.lock().unwrap();
                let message_id = format!("m{}", pending.len());
                pending.push_back(Pending { message_id, chat_id: chat.into(), content: digest(&content), written: Instant::now() });
            }
        }
        for line in lines {
            task.line(line.says());
        }
        let mut said = Vec::new();
        while let Ok(o) = observed.try_recv() {
            said.push(match o {
                Observed::Receipt(r) => format!("{} {}", r.state.as_str(), r.message_id),
                Observed::Unanswered { chat_id, message_id, text } => format!("unanswered {chat_id} {message_id}: {text}"),
                Observed::Activity { chat_id, tool, summary } => format!("activity {chat_id:?} {tool}: {summary}"),
            });
        }
        assert!(task.shared.pending.lock().unwrap().is_empty() && task.broken.is_none(), "{file}: {said:?}");
        said
    }

    #[test]
    fn recorded_round_trips_are_queued_then_seen() {
        for file in ["roundtrip.jsonl", "bash-readonly.jsonl", "headless.jsonl"] {
            let said = observe(file);
            assert_eq!(said[..2], ["queued m0", "seen m0"], "{file}");
        }
        assert_eq!(observe("roundtrip.jsonl"), ["queued m0", "seen m0"], "a reply: nothing unanswered");
    }

    #[test]
    fn messages_folded_into_a_running_turn_are_seen_there() {
        assert_eq!(observe("busy.jsonl"), ["queued m0", "seen m0", "queued m1", "seen m1"]);
        assert_eq!(observe("busy-two.jsonl"), ["queued m0", "seen m0", "queued m1", "queued m2", "seen m1", "seen m2"]);
    }

    #[test]
    fn the_same_text_twice_is_two_messages_in_order() {
        assert_eq!(observe("twice.jsonl"), ["queued m0", "queued m1", "seen m0", "seen m1"]);
    }

    #[test]
    fn content_that_tries_to_close_its_tag_still_matches() {
        assert_eq!(observe("escape.jsonl")[..2], ["queued m0", "seen m0"]);
    }

    #[test]
    fn a_text_only_answer_is_unanswered_and_a_tool_call_is_activity() {
        let said = observe("text-only.jsonl");
        assert_eq!(said.len(), 3, "{said:?}");
        assert_eq!(said[2], "unanswered e2e-c m0: answered in the terminal: E2E_TEXT_ONLY answer this in the terminal");
        let said = observe("bash.jsonl");
        assert_eq!(said[2..], [r#"activity Some("e2e-d") Bash: e2e bash step"#], "and its reply is not activity");
    }
}
