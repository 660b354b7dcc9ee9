//! Sleeps for ten seconds on an inject whose content is "sleep": a wait in
//! a host call (WASI's clock), where the epoch deadline never looks.
//! Passes anything else.

use opzero_guest_sdk::prelude::*;

struct Sleepy;

impl Filter for Sleepy {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Sleepy)
    }

    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        if message.content == "sleep" {
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
        InjectVerdict::Pass(message)
    }
}

export_filter!(Sleepy);
