//! Claude's replies and edits: files into the outbox, the reply filters,
//! and the events the phone gets.

use serde_json::json;
use tokio::sync::oneshot;

use super::{Core, ReplyJob, ReplyOutcome, Then};
use crate::events::now_ms;
use crate::files::{Files, Outgoing};
use crate::filters::{self, Verdict};

impl Core {
    /// Claude called the `reply` tool, or (`edits`: the reply's id)
    /// `edit_message`. Either goes through the reply filters, in order.
    /// A reply's `files` are copied into the outbox now, before the filters.
    pub async fn reply(&self, chat_id: String, text: String, edits: Option<u64>, paths: Vec<String>) -> ReplyOutcome {
        if let Some(id) = edits {
            match self.replies_sent.lock().unwrap().get(&id) {
                None => return ReplyOutcome::Refused(format!("message {id} is not a reply of this session")),
                Some(chat) if *chat != chat_id => {
                    return ReplyOutcome::Refused(format!("message {id} went to chat {chat:?}, not {chat_id:?}"));
                }
                Some(_) => {}
            }
        }
        let files = if paths.is_empty() {
            Vec::new()
        } else {
            let (store, limits) = (self.files.clone(), self.config.limits.clone());
            match tokio::task::spawn_blocking(move || store.send(&paths, &limits)).await {
                Ok(Ok(files)) => files,
                Ok(Err(why)) => return ReplyOutcome::Refused(why),
                Err(e) => return ReplyOutcome::Refused(format!("cannot copy the files: {e}")),
            }
        };
        let reply = filters::Reply { chat_id, text };
        let (done, outcome) = oneshot::channel();
        self.through_reply_filters(reply, Then::Reply { edits, files, done });
        outcome.await.unwrap_or_else(|_| ReplyOutcome::FilterFailed {
            filter: "(chain)".into(),
            error: "the host is shutting down".into(),
        })
    }

    /// Sends Claude's text through the reply filters, in order with the
    /// rest, then on to what `then` says.
    pub(super) fn through_reply_filters(&self, reply: filters::Reply, then: Then) {
        if self.hooks().reply || self.replies.busy() {
            self.replies.push(ReplyJob { reply, then });
        } else {
            self.after_reply_filters(Verdict::Pass(reply), then);
        }
    }

    pub(super) fn after_reply_filters(&self, verdict: Verdict<filters::Reply>, then: Then) {
        match then {
            Then::Reply { edits, files, done } => drop(done.send(self.publish_reply(verdict, edits, files))),
            Then::Mirror(observed) => self.publish_observed(verdict, observed),
        }
    }

    fn publish_reply(&self, verdict: Verdict<filters::Reply>, edits: Option<u64>, files: Vec<Outgoing>) -> ReplyOutcome {
        let refused = match verdict {
            Verdict::Pass(reply) => return self.publish(reply, edits, files),
            Verdict::Drop { filter, reason } => ReplyOutcome::Dropped { filter, reason },
            Verdict::Reject { filter, reason } => ReplyOutcome::Rejected { filter, reason },
            Verdict::Failed { filter, error } => ReplyOutcome::FilterFailed { filter, error },
        };
        Files::discard(files);
        refused
    }

    fn publish(&self, reply: filters::Reply, edits: Option<u64>, files: Vec<Outgoing>) -> ReplyOutcome {
        let connected = self.events.subscribers() > 0;
        let id = match edits {
            None => {
                let mut event = json!({ "type": "reply", "chat_id": reply.chat_id, "text": reply.text, "ts": now_ms() });
                if !files.is_empty() {
                    // Servable before anyone can hear of them.
                    self.files.serve(&files);
                    event["files"] = json!(files);
                }
                let id = self.events.publish(&event);
                self.replies_sent.lock().unwrap().insert(id, reply.chat_id);
                id
            }
            Some(message_id) => self.events.publish(&json!({
                "type": "edit",
                "chat_id": reply.chat_id,
                "message_id": message_id,
                "text": reply.text,
                "ts": now_ms(),
            })),
        };
        if connected { ReplyOutcome::Sent { id } } else { ReplyOutcome::Queued { id } }
    }
}
