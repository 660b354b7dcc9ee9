//! A local HTTP server (axum, on 127.0.0.1) that records every request it
//! gets and answers each with what the test says: the stand-in for ntfy, a
//! webhook, or a host a filter must not reach.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Recorded {
    /// `METHOD PATH BODY`.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Recorder {
    pub port: u16,
    got: Arc<Mutex<Vec<Recorded>>>,
}

type Answer = Arc<dyn Fn(&str) -> Response + Send + Sync>;

impl Recorder {
    /// Answers every request `200 ok`.
    pub fn ok() -> Recorder {
        Recorder::answering(|_| Response::new("ok".into()))
    }

    /// Answers each request with `answer(path)`.
    pub fn answering(answer: impl Fn(&str) -> Response + Send + Sync + 'static) -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let record = got.clone();
        let answer: Answer = Arc::new(answer);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
                    record.lock().unwrap().push(Recorded {
                        method: method.to_string(),
                        path: path.clone(),
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let response = answer(&path);
                    async move { response }
                });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Recorder { port, got }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What has arrived so far.
    pub fn got(&self) -> Vec<Recorded> {
        self.got.lock().unwrap().clone()
    }

    /// `METHOD PATH BODY` of each request so far.
    pub fn lines(&self) -> Vec<String> {
        self.got().iter().map(Recorded::line).collect()
    }

    /// Waits up to `within` for `n` requests, and returns all that came.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let end = Instant::now() + within;
        while self.got.lock().unwrap().len() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.got()
    }
}
