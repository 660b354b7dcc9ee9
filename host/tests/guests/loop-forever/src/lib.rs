//! Spins forever on an inject whose content is "loop"; passes anything else,
//! so a test can show the host still serves this filter after the timeout.

use opzero_guest_sdk::prelude::*;

struct LoopForever;

impl Filter for LoopForever {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(LoopForever)
    }

    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        if message.content == "loop" {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        InjectVerdict::Pass(message)
    }
}

export_filter!(LoopForever);
