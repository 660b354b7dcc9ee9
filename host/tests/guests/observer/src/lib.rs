//! Logs each event it observes as one line (`observed ...`), then sleeps
//! `sleep_ms` in a host call (WASI's clock): an observer as slow as its
//! deadline. Its inject hook logs and passes, to show the two do not wait
//! on each other.

use opzero_guest_sdk::prelude::*;

#[config]
struct Settings {
    #[serde(default)]
    sleep_ms: u64,
}

struct Observer {
    sleep_ms: u64,
    seen: u64,
}

impl Filter for Observer {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        Ok(Observer { sleep_ms: config.sleep_ms, seen: 0 })
    }

    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        info!("inject {:?}", message.content);
        InjectVerdict::Pass(message)
    }

    fn on_event(&mut self, event: Event) {
        self.seen += 1;
        let line = match event {
            Event::ReplySent(r) => format!("reply-sent id={} chat={} text={:?} edit-of={:?}", r.id, r.chat_id, r.text, r.edit_of),
            Event::PermissionRelayed(p) => format!("permission-relayed {} {}", p.request_id, p.tool_name),
            Event::PermissionResolved(p) => {
                format!("permission-resolved {} {:?} by={} reason={:?}", p.request_id, p.outcome, p.by, p.reason)
            }
            Event::StatusChanged(s) => format!("status-changed {s:?}"),
            Event::Receipt(r) => format!("receipt {} chat={} {:?} reason={:?}", r.message_id, r.chat_id, r.state, r.reason),
        };
        info!("observed #{} {line}", self.seen);
        if self.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        }
    }
}

export_filter!(Observer);
