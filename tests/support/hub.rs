//! The real `opzero-host hub`, on a state directory its hosts share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{collect, http, Response, Sse, BIN, WAIT};

pub struct Hub {
    pub child: Child,
    pub state: PathBuf,
    pub port: u16,
    pub secret: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Hub {
    /// Starts a hub on a port of the system's choosing (unless `args` or
    /// the state's `hub.toml` say) and waits until `hub.json` names it.
    pub fn spawn(state: &Path, args: &[&str]) -> Hub {
        let mut child = Command::new(BIN)
            .arg("hub")
            .args(if args.contains(&"--port") || state.join("hub.toml").exists() { &[][..] } else { &["--port", "0"][..] })
            .args(args)
            .env("OPZERO_HOME", state)
            .env("OPZERO_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        let file = state.join("hub.json");
        let deadline = Instant::now() + WAIT;
        let record: Value = loop {
            let pid = child.id();
            if let Some(v) = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                && v["pid"] == pid
            {
                break v;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the hub exited ({status}): {}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "no hub.json; stderr:\n{}", stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(5));
        };
        Hub {
            child,
            state: state.to_path_buf(),
            port: record["port"].as_u64().unwrap() as u16,
            secret: record["secret"].as_str().unwrap().to_string(),
            stderr,
        }
    }

    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        http(self.port, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.http("GET", path, &[("X-OPZero-Secret", &self.secret)], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        let headers = [("X-OPZero-Secret", self.secret.as_str()), ("Content-Type", "application/json")];
        self.http("POST", path, &headers, Some(body.to_string().as_bytes()))
    }

    pub fn sse(&self, path: &str, extra: &[(&str, &str)]) -> Sse {
        let mut headers = vec![("X-OPZero-Secret", self.secret.as_str())];
        headers.extend_from_slice(extra);
        Sse::open(self.port, path, &headers)
    }

    /// `GET /sessions`' list.
    pub fn sessions(&self) -> Vec<Value> {
        let r = self.get("/sessions");
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["sessions"].as_array().unwrap().clone()
    }

    /// Waits until the list holds for `done`, and returns it.
    pub fn wait_sessions(&self, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let list = self.sessions();
            if done(&list) {
                return list;
            }
            assert!(Instant::now() < deadline, "gave up waiting; the list is {list:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let stderr = self.stderr();
        super::end_child(&mut self.child, "hub", &stderr);
    }
}
