//! What the mirror found in Claude's transcript, published: receipts as
//! they are; Claude's text (an unanswered turn's, a tool call's summary)
//! through the reply filters first, like a reply.

use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Core, Then};
use crate::events::now_ms;
use crate::filters::{self, Verdict};
use crate::mirror::{Delivery, Observed};

impl Core {
    /// Publishes what the mirror observes, in order, until it stops.
    pub async fn observe(&self, mut observed: UnboundedReceiver<Observed>) {
        while let Some(o) = observed.recv().await {
            match o {
                Observed::Receipt(r) => {
                    if r.state == Delivery::Undelivered {
                        // Not taken: the phone may send it again, same id.
                        self.release_id(&r.message_id);
                    }
                    let mut event = json!({
                        "type": "receipt",
                        "message_id": r.message_id,
                        "chat_id": r.chat_id,
                        "state": r.state.as_str(),
                        "ts": now_ms(),
                    });
                    if let Some(reason) = r.reason {
                        event["reason"] = reason.into();
                    }
                    self.events.publish(&event);
                }
                Observed::Unanswered { ref chat_id, ref text, .. } => {
                    let reply = filters::Reply { chat_id: chat_id.clone(), text: text.clone() };
                    self.through_reply_filters(reply, Then::Mirror(o));
                }
                Observed::Activity { ref chat_id, ref summary, .. } => {
                    let reply = filters::Reply { chat_id: chat_id.clone().unwrap_or_default(), text: summary.clone() };
                    self.through_reply_filters(reply, Then::Mirror(o));
                }
            }
        }
    }

    /// An unanswered turn or an activity, as the reply filters left it.
    pub(super) fn publish_observed(&self, verdict: Verdict<filters::Reply>, observed: Observed) {
        // A filter that drops, rejects or fails it keeps it from the phone.
        let Verdict::Pass(filtered) = verdict else { return };
        let event = match observed {
            Observed::Unanswered { chat_id, message_id, .. } => json!({
                "type": "unanswered",
                "chat_id": chat_id,
                "message_id": message_id,
                "text": filtered.text,
                "ts": now_ms(),
            }),
            Observed::Activity { tool, .. } => json!({
                "type": "activity",
                "tool": tool,
                "summary": filtered.text,
                "ts": now_ms(),
            }),
            Observed::Receipt(_) => return,
        };
        self.events.publish(&event);
    }
}
