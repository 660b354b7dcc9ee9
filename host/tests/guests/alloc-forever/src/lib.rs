//! Allocates without bound on an inject whose content is "grow"; passes
//! anything else.

use opzero_guest_sdk::prelude::*;

struct AllocForever {
    hoard: Vec<Vec<u8>>,
}

impl Filter for AllocForever {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(AllocForever { hoard: Vec::new() })
    }

    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        if message.content == "grow" {
            loop {
                // Touch the memory so nothing is optimised away.
                self.hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&self.hoard);
            }
        }
        InjectVerdict::Pass(message)
    }
}

export_filter!(AllocForever);
