//! Messages from the phone: checks, duplicate ids, files into the inbox,
//! the inject filters, and delivery to Claude.

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::recent_ids::RecentIds;
use super::{Core, InjectJob, InjectOutcome, InjectRequest, Undelivered, VerdictOutcome, CHANNEL};
use crate::files::{self, Upload, Written};
use crate::filters::{self, Verdict};
use crate::meta::{self, scrub, Meta};
use crate::permissions;

impl Core {
    pub async fn inject(&self, req: InjectRequest) -> InjectOutcome {
        let limits = &self.config.limits;
        let chars = req.content.chars().count();
        if chars > limits.max_content_chars {
            return InjectOutcome::TooLarge(format!(
                "content is {chars} characters; the limit is {}",
                limits.max_content_chars
            ));
        }
        if req.meta.len() > limits.max_meta_keys {
            return InjectOutcome::TooLarge(format!(
                "meta has {} keys; the limit is {}",
                req.meta.len(),
                limits.max_meta_keys
            ));
        }
        let sizes = req.files.iter().map(|f| (f.name.as_str(), f.bytes.len() as u64));
        if let Err(why) = files::check(limits, sizes) {
            return InjectOutcome::TooLarge(why);
        }
        // Claimed before anything else, so the retry of a text verdict is a
        // duplicate too (and not, its prompt being gone, a message to Claude).
        let claim = match &req.message_id {
            Some(id) => match self.recent_ids.lock().unwrap().claim(id) {
                Some(key) => Some(key),
                None => return InjectOutcome::Duplicate { message_id: id.clone() },
            },
            None => None,
        };
        let message_id = req.message_id.clone().unwrap_or_else(host_message_id);
        let outcome = self.inject_claimed(req, message_id).await;
        if let Some(key) = claim
            && !matches!(
                outcome,
                InjectOutcome::Accepted { .. } | InjectOutcome::Dropped { .. } | InjectOutcome::Verdict { .. }
            )
        {
            // Not taken: a retry must be able to go through.
            self.recent_ids.lock().unwrap().release(&key);
        }
        outcome
    }

    /// Claude Code did not take a message (`undelivered`): its id may be
    /// sent again.
    pub(super) fn release_id(&self, message_id: &str) {
        self.recent_ids.lock().unwrap().release(&RecentIds::key(message_id));
    }

    async fn inject_claimed(&self, req: InjectRequest, message_id: String) -> InjectOutcome {
        if self.config.permissions.relay
            && let Some((behavior, request_id)) = permissions::parse_text_verdict(&req.content)
            && self.permissions.is_pending(&request_id)
        {
            return match self.verdict(&request_id, behavior, "remote").await {
                Ok(()) => InjectOutcome::Verdict { request_id, behavior },
                Err(VerdictOutcome::Closed) => InjectOutcome::Closed,
                // Answered elsewhere between the check and now: say so.
                Err(VerdictOutcome::Refused(e)) => InjectOutcome::Invalid(e.to_string()),
            };
        }
        let chat_id = scrub(req.chat_id.as_deref().filter(|c| !c.is_empty()).unwrap_or("inject"));
        let (mut meta, mut dropped_meta) = meta::clean(req.meta);
        // Only the host says where files are.
        dropped_meta.extend(meta.extract_if(.., |k, _| files::is_reserved_key(k)).map(|(k, _)| k));
        dropped_meta.sort();
        // What the filters see of the files: never their bytes.
        let file_info: Vec<filters::FileInfo> = req
            .files
            .iter()
            .map(|f| filters::FileInfo {
                name: f.name.clone(),
                mime: f.mime.clone().unwrap_or_else(|| files::mime_of(&f.name)),
                size: f.bytes.len() as u64,
            })
            .collect();
        let (file_meta, written) = match self.receive_files(req.files).await {
            Ok(received) => received,
            Err(e) => return InjectOutcome::Unstored(e),
        };
        meta.extend(file_meta);
        meta.insert("chat_id".into(), chat_id.clone());
        let outcome = if self.hooks().inject || self.injects.busy() {
            let (done, outcome) = oneshot::channel();
            let message = filters::Message { content: req.content, meta: meta.into_iter().collect(), files: file_info };
            self.injects.push(InjectJob { message, message_id, chat_id, dropped_meta, done });
            outcome.await.unwrap_or(InjectOutcome::Closed)
        } else {
            self.deliver(req.content, meta, message_id, dropped_meta).await
        };
        if !matches!(outcome, InjectOutcome::Accepted { .. }) {
            written.remove();
        }
        outcome
    }

    /// A message's files, written to the inbox (on a blocking thread: they
    /// may be megabytes), and the meta that names them.
    async fn receive_files(&self, uploads: Vec<Upload>) -> Result<(Meta, Written), String> {
        if uploads.is_empty() {
            return Ok(Default::default());
        }
        let files = self.files.clone();
        let stored = tokio::task::spawn_blocking(move || files.receive(uploads)).await;
        stored
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| format!("cannot store the files: {e}"))
    }

    /// What the inject filters decided, carried out.
    pub(super) async fn filtered_inject(
        &self,
        verdict: Verdict<filters::Message>,
        message_id: String,
        chat_id: String,
        mut dropped: Vec<String>,
    ) -> InjectOutcome {
        let message = match verdict {
            Verdict::Pass(m) => m,
            // The chain has logged each of these.
            Verdict::Drop { filter, reason } => return InjectOutcome::Dropped { message_id, filter, reason },
            Verdict::Reject { filter, reason } => return InjectOutcome::Rejected { filter, reason },
            Verdict::Failed { filter, error } => return InjectOutcome::FilterFailed { filter, error },
        };
        if message.content.is_empty() {
            return InjectOutcome::Invalid("content is empty after filtering".into());
        }
        // The filters' meta goes by the phone's rules.
        let (mut meta, more) = meta::clean(message.meta.into_iter().map(|(k, v)| (k, Value::String(v))));
        dropped.extend(more);
        meta.entry("chat_id".into()).or_insert(chat_id);
        self.deliver(message.content, meta, message_id, dropped).await
    }

    async fn deliver(&self, content: String, meta: Meta, message_id: String, dropped_meta: Vec<String>) -> InjectOutcome {
        // Before it is written: its lines in the transcript come after.
        self.mirror.written(&message_id, meta.get("chat_id").map_or("", String::as_str), &content);
        // Built as values, not through `json!`, which would serialize each one again.
        let meta = Value::Object(meta.into_iter().map(|(k, v)| (k, v.into())).collect());
        let params = Value::Object(Map::from_iter([("content".into(), content.into()), ("meta".into(), meta)]));
        let outcome = match self.send_to_claude(CHANNEL, params).await {
            Ok(()) => return InjectOutcome::Accepted { message_id, dropped_meta },
            Err(Undelivered::Closed) => InjectOutcome::Closed,
            Err(Undelivered::Backlog(why)) => InjectOutcome::Backlog(format!(
                "Claude Code has not finished starting and {why}; try again shortly"
            )),
        };
        self.mirror.withdrawn(&message_id);
        outcome
    }
}

/// An id for a message the phone gave none: unique within this host's life.
fn host_message_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    static STARTED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(crate::events::now_ms);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("h-{:x}-{n}", *STARTED)
}
