//! Posts the text of each reply it observes to `url` with the SDK's HTTP
//! helper, and logs what came of it: `sent: STATUS BODY` or `not sent:
//! ERROR`.

use opzero_guest_sdk::http;
use opzero_guest_sdk::prelude::*;

#[config]
struct Settings {
    url: String,
}

struct Notifier {
    url: String,
}

impl Filter for Notifier {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        Ok(Notifier { url: config.url })
    }

    fn on_event(&mut self, event: Event) {
        let Event::ReplySent(reply) = event else { return };
        match http::post(&self.url, "text/plain", reply.text.into_bytes()) {
            Ok(r) => info!("sent: {} {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(e) => warn!("not sent: {e}"),
        }
    }
}

export_filter!(Notifier);
