//! Panics on an inject whose content is "panic"; reports what the sandbox
//! allows on an inject saying "probe". Numbers replies, so a test
//! can see that an instance is replaced (the count restarts). Floods stdout
//! and the log on a permission request for the tool "chatty".

use opzero_guest_sdk::prelude::*;

struct Panicky {
    replies: u32,
}

impl Filter for Panicky {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Panicky { replies: 0 })
    }

    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        if message.content == "panic" {
            panic!("boom: the filter gave up on {:?}", message.content);
        }
        if message.content == "probe" {
            // What the sandbox lets through: nothing, by design.
            let env = std::env::vars().count();
            let file = std::fs::read("/etc/hostname").is_ok() || std::fs::read_dir(".").is_ok();
            let net = std::net::TcpStream::connect("127.0.0.1:9").is_ok();
            return InjectVerdict::Pass(Message {
                content: format!("env={env} file={file} net={net}"),
                meta: message.meta,
                files: message.files,
            });
        }
        InjectVerdict::Pass(message)
    }

    fn on_reply(&mut self, mut reply: Reply) -> ReplyVerdict {
        self.replies += 1;
        reply.text = format!("{} #{}", reply.text, self.replies);
        ReplyVerdict::Pass(reply)
    }

    fn on_permission_request(&mut self, request: PermissionRequest) -> PermissionVerdict {
        if request.tool_name == "chatty" {
            info!("about to flood stdout");
            for i in 0..10_000 {
                println!("line {i} of a filter that talks too much");
            }
            eprintln!("and some stderr");
            for i in 0..10_000 {
                info!("log line {i}");
            }
        }
        PermissionVerdict::Relay
    }
}

export_filter!(Panicky);
