//! Every live session, as the hub knows it. The discovery directory is
//! followed through file-change notifications; each live host is watched
//! through its `GET /watch` stream, which says what its page lists (Claude
//! busy or idle, prompts waiting, replies unread) each time it changes.
//! Watching takes no event from a host's log, so its own clients get
//! exactly what they would without a hub. An idle hub is woken by nothing:
//! no timer runs, and `/watch` sends no pings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::watch;

use crate::bridge::Summary;
use crate::discovery::{self, Record};

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// One entry of `GET /sessions`. Never the host's secret or port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed {
    pub session_id: String,
    pub name: Option<String>,
    pub cwd: Option<String>,
    /// `busy` or `idle`; null while unknown.
    pub state: Option<String>,
    /// Null until the host has said.
    pub pending: Option<usize>,
    pub unread: Option<usize>,
    pub started_at: u64,
    pub version: String,
}

struct Entry {
    record: Record,
    summary: Option<Summary>,
    watching: tokio::task::AbortHandle,
}

impl Entry {
    fn listed(&self) -> Listed {
        let s = self.summary.as_ref();
        Listed {
            session_id: self.record.session_id.clone(),
            name: s.and_then(|s| s.name.clone()),
            cwd: s.and_then(|s| s.cwd.clone()),
            state: s.and_then(|s| s.state.clone()),
            pending: s.map(|s| s.pending),
            unread: s.map(|s| s.unread),
            started_at: self.record.created_at,
            version: self.record.version.clone(),
        }
    }
}

pub struct Sessions {
    dir: PathBuf,
    client: Client,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Bumped each time the list changes, for `GET /events`.
    changed: watch::Sender<u64>,
}

impl Sessions {
    pub fn new(dir: PathBuf, client: Client) -> Arc<Sessions> {
        Arc::new(Sessions { dir, client, entries: Mutex::default(), changed: watch::Sender::new(0) })
    }

    /// The list, oldest session first.
    pub fn list(&self) -> Vec<Listed> {
        let entries = self.entries.lock().unwrap();
        let mut list: Vec<Listed> = entries.values().map(Entry::listed).collect();
        list.sort_by(|a, b| (a.started_at, &a.session_id).cmp(&(b.started_at, &b.session_id)));
        list
    }

    /// Where a live session's bridge is, and its secret.
    pub fn record(&self, session_id: &str) -> Option<Record> {
        self.entries.lock().unwrap().get(session_id).map(|e| e.record.clone())
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Follows the discovery directory until the returned watcher is
    /// dropped: each change there reads it again.
    pub fn follow(self: &Arc<Self>) -> anyhow::Result<notify::RecommendedWatcher> {
        crate::private::create_dir(&self.dir)
            .map_err(|e| anyhow::anyhow!("cannot use the discovery directory {}: {e}", self.dir.display()))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Not reads: reading the files would wake the reader again.
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        let sessions = self.clone();
        tokio::spawn(async move {
            loop {
                sessions.rescan();
                if rx.recv().await.is_none() {
                    return;
                }
                // A discovery file is written in several steps: one read for all.
                while rx.try_recv().is_ok() {}
            }
        });
        Ok(watcher)
    }

    /// Reads the directory: new sessions are watched, ended ones leave the
    /// list (files of dead processes are deleted, as `sessions` does).
    fn rescan(self: &Arc<Self>) {
        let Ok(live) = discovery::live_sessions(&self.dir)
            .inspect_err(|e| tracing::warn!("cannot read {}: {e}", self.dir.display()))
        else {
            return;
        };
        let mut entries = self.entries.lock().unwrap();
        let before = entries.len();
        entries.retain(|id, entry| {
            let keep = live.iter().any(|r| r.session_id == *id && *r == entry.record);
            if !keep {
                tracing::info!(session = %id, "session ended");
                entry.watching.abort();
            }
            keep
        });
        let mut changed = entries.len() != before;
        for record in live {
            if entries.contains_key(&record.session_id) {
                continue;
            }
            tracing::info!(session = %record.session_id, port = record.port, "session started");
            let watching = tokio::spawn(self.clone().watch(record.clone())).abort_handle();
            entries.insert(record.session_id.clone(), Entry { record, summary: None, watching });
            changed = true;
        }
        drop(entries);
        if changed {
            self.bump();
        }
    }

    /// Follows one host's `GET /watch` for as long as it lives. When the
    /// stream ends the host has most likely exited: the directory is read
    /// again at once; if the host is still there, it is asked again, at
    /// longer and longer intervals.
    async fn watch(self: Arc<Self>, record: Record) {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.stream(&record).await {
                Ok(()) => wait = Duration::from_millis(100),
                Err(e) => tracing::debug!(session = %record.session_id, "not watching: {e:#}"),
            }
            if !discovery::pid_alive(record.pid) {
                self.rescan();
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    async fn stream(&self, record: &Record) -> anyhow::Result<()> {
        let req = http::Request::get(format!("http://127.0.0.1:{}/watch", record.port))
            .header("x-opzero-secret", &record.secret)
            .body(Body::empty())?;
        let resp = self.client.request(req).await?;
        if !resp.status().is_success() {
            anyhow::bail!("the host answered {} to GET /watch (is it older than this hub?)", resp.status());
        }
        let mut events = http_body_util::BodyDataStream::new(resp.into_body()).eventsource();
        while let Some(event) = events.next().await {
            let summary: Summary = serde_json::from_str(&event?.data)?;
            let mut entries = self.entries.lock().unwrap();
            let Some(entry) = entries.get_mut(&record.session_id).filter(|e| e.record == *record) else {
                return Ok(());
            };
            if entry.summary.as_ref() != Some(&summary) {
                entry.summary = Some(summary);
                drop(entries);
                self.bump();
            }
        }
        Ok(())
    }
}
