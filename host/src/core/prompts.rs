//! Claude Code's permission prompts: the permission filters, relaying to
//! the phone, verdicts from wherever they come, and expiry.

use serde_json::{json, Value};

use super::{Core, Undelivered, VerdictOutcome, PERMISSION};
use crate::events::now_ms;
use crate::filters::PermissionVerdict;
use crate::permissions::{self, Behavior};

impl Core {
    /// Claude Code asks the user to approve a tool call.
    pub async fn permission_request(&self, request: permissions::Request) {
        if !self.config.permissions.relay {
            tracing::warn!(request_id = %request.request_id, "permission relay is off; ignoring request");
        } else if self.hooks().permission || self.prompts.busy() {
            self.prompts.push(request);
        } else {
            self.decide_permission(request, PermissionVerdict::Relay).await;
        }
    }

    /// What the permission filters decided, carried out.
    pub(super) async fn decide_permission(&self, request: permissions::Request, verdict: PermissionVerdict) {
        let (behavior, filter, reason) = match verdict {
            // Failing safe for a prompt means asking the human.
            PermissionVerdict::Relay | PermissionVerdict::Failed { .. } => return self.relay_permission(request),
            PermissionVerdict::Allow { filter, reason } => (Behavior::Allow, filter, reason),
            PermissionVerdict::Deny { filter, reason } => (Behavior::Deny, filter, reason),
        };
        if let Err(e) = self.resolve(&request.request_id, behavior, format!("filter:{filter}"), Some(reason)).await {
            tracing::warn!(request_id = %request.request_id, "verdict not delivered to Claude Code: {e:?}");
        }
    }

    /// Sends a verdict to Claude Code and tells the phone who decided.
    async fn resolve(&self, request_id: &str, behavior: Behavior, by: String, reason: Option<String>) -> Result<(), Undelivered> {
        let written = self.send_to_claude(PERMISSION, json!({ "request_id": request_id, "behavior": behavior.as_str() })).await;
        let mut event = json!({
            "type": "permission_resolved",
            "request_id": request_id,
            "behavior": behavior.as_str(),
            "by": by,
            "ts": now_ms(),
        });
        if let Some(reason) = reason {
            event["reason"] = Value::String(reason);
        }
        self.events.publish(&event);
        written
    }

    /// Puts a prompt in front of the phone's user.
    fn relay_permission(&self, request: permissions::Request) {
        let ts = now_ms();
        // Pending before anyone hears of it, so a client that sees the event
        // finds it in `GET /permissions`.
        self.permissions.add(request.clone(), ts);
        self.events.publish(&json!({
            "type": "permission_request",
            "request_id": request.request_id,
            "tool_name": request.tool_name,
            "description": request.description,
            "input_preview": request.input_preview,
            "ts": ts,
        }));
    }

    /// A verdict from the phone (`by` is "remote").
    pub async fn verdict(&self, request_id: &str, behavior: Behavior, by: &str) -> Result<(), VerdictOutcome> {
        self.permissions.decide(request_id).map_err(VerdictOutcome::Refused)?;
        self.resolve(request_id, behavior, by.to_string(), None).await.map_err(|_| VerdictOutcome::Closed)
    }

    /// Drops prompts nobody answered in time (Claude Code never says when
    /// the terminal answered one), for as long as the host runs.
    pub async fn expire_permissions(&self) {
        loop {
            for request in self.permissions.expired(self.config.permissions.expire_after).await {
                tracing::info!(request_id = %request.request_id, "permission request expired");
                self.events.publish(&json!({
                    "type": "permission_expired",
                    "request_id": request.request_id,
                    "by": "expired",
                    "ts": now_ms(),
                }));
            }
        }
    }
}
