//! Takes a `threshold` that must be at least 1: a config the filter itself
//! refuses, as opposed to one that does not deserialize.

use opzero_guest_sdk::prelude::*;

#[config]
struct Settings {
    threshold: u32,
}

struct BadConfig;

impl Filter for BadConfig {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        if config.threshold == 0 {
            return Err("threshold: must be at least 1".into());
        }
        Ok(BadConfig)
    }
}

export_filter!(BadConfig);
