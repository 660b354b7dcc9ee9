//! Rejects an inject with a file whose type starts with `refuse_mime`, or
//! that is larger than `max_bytes`; says what it saw of the files.

use opzero_guest_sdk::prelude::*;

#[config]
struct Settings {
    refuse_mime: String,
    max_bytes: u64,
}

struct FileGate(Settings);

impl Filter for FileGate {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        Ok(FileGate(config))
    }

    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        for f in &message.files {
            info!("file {} {} {}", f.name, f.mime, f.size);
            if f.mime.starts_with(&self.0.refuse_mime) {
                return InjectVerdict::Reject(format!("{} is {}: not taken here", f.name, f.mime));
            }
            if f.size > self.0.max_bytes {
                return InjectVerdict::Reject(format!("{} is {} bytes, more than {}", f.name, f.size, self.0.max_bytes));
            }
        }
        InjectVerdict::Pass(message)
    }
}

export_filter!(FileGate);
