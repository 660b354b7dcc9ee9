//! One ordered log of everything that goes out to the phone (replies,
//! permission prompts and their outcome). Every SSE subscriber reads from it.
//!
//! Events get a monotonic id per host process and the last `capacity` are
//! kept, so a subscriber can resume with `Last-Event-ID`. Subscribers *pull*
//! from the log at their own pace: a slow one never blocks the host or the
//! others, and holds no queue of its own. One that falls more than
//! `lag_limit` events behind the live head is cut off (it can resume by id):
//! its next pull says so, and, since a client that never reads is never
//! pulled for, `publish` also fires the subscription's cut-off signal so the
//! bridge can close the connection.
//!
//! An event counts as delivered once some subscriber's stream has taken it.
//! A new subscriber that does not say where to start gets every event that no
//! subscriber has taken yet, so replies made while the phone was away are not
//! lost even for clients that never send `Last-Event-ID`.
//!
//! Filters with the `event` hook do not subscribe (that would take events
//! and make replies read): they [`EventLog::tap`] the log, which sees every
//! event as it is published, takes nothing, and drops the oldest for a
//! tap that falls [`EVENT_TAP_CAPACITY`] behind, saying how many.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch, Notify};

/// How many events one tap holds before it drops the oldest: the queue of
/// one `event` filter.
pub const EVENT_TAP_CAPACITY: usize = 64;

/// Milliseconds since the epoch: every event's `ts`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug)]
pub struct Event {
    pub id: u64,
    /// The JSON object sent as the SSE `data:` line.
    pub data: String,
    /// A reply (or an answer said only in the terminal): while no client
    /// has taken it, it is unread.
    unread: bool,
}

#[derive(Debug, Clone)]
pub enum Item {
    Event(Arc<Event>),
    /// Events `from..=to` fell out of the buffer before this subscriber asked.
    Gap { from: u64, to: u64 },
}

pub struct EventLog {
    state: Mutex<State>,
    /// The id of the newest event (0 before the first).
    head: watch::Sender<u64>,
    /// The highest id any subscriber's stream has taken, for whoever
    /// watches what is unread (`GET /watch`). Set under the state's lock.
    taken: watch::Sender<u64>,
    lag_limit: u64,
    /// Every event, as published, for the taps.
    tap: broadcast::Sender<Arc<Event>>,
}

struct State {
    buffer: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Open subscriptions, by a key of their own.
    readers: HashMap<u64, Arc<Reader>>,
    next_reader: u64,
}

/// What the log knows of one subscription.
struct Reader {
    /// The last id it has been given.
    cursor: AtomicU64,
    /// The head when it subscribed: replaying older events is not lag.
    live_from: u64,
    lagged: AtomicBool,
    /// Fired once when it falls too far behind.
    cut_off: Option<Arc<Notify>>,
}

impl Reader {
    fn behind(&self, head: u64) -> u64 {
        head.saturating_sub(self.cursor.load(Ordering::SeqCst).max(self.live_from))
    }
}

impl EventLog {
    pub fn new(capacity: usize, lag_limit: usize) -> Arc<EventLog> {
        Arc::new(EventLog {
            state: Mutex::new(State {
                buffer: VecDeque::with_capacity(capacity.min(1024)),
                capacity: capacity.max(1),
                readers: HashMap::new(),
                next_reader: 0,
            }),
            head: watch::channel(0).0,
            taken: watch::channel(0).0,
            lag_limit: lag_limit.max(1) as u64,
            tap: broadcast::channel(EVENT_TAP_CAPACITY).0,
        })
    }

    /// Appends an event; `data` must serialize to a JSON object.
    pub fn publish(&self, data: &serde_json::Value) -> u64 {
        let unread = matches!(data["type"].as_str(), Some("reply" | "unanswered"));
        let data = data.to_string();
        let mut st = self.state.lock().unwrap();
        let id = *self.head.borrow() + 1;
        if st.buffer.len() == st.capacity {
            st.buffer.pop_front();
        }
        let event = Arc::new(Event { id, data, unread });
        st.buffer.push_back(event.clone());
        // Under the lock, so ids reach subscribers and taps in order. With
        // no tap open this fails, and nothing is lost.
        let _ = self.tap.send(event);
        self.head.send_replace(id);
        for r in st.readers.values() {
            if r.behind(id) > self.lag_limit
                && !r.lagged.swap(true, Ordering::SeqCst)
                && let Some(cut) = &r.cut_off
            {
                cut.notify_one();
            }
        }
        id
    }

    /// Replies still in the buffer that no subscriber has taken.
    pub fn unread(&self) -> usize {
        let st = self.state.lock().unwrap();
        let taken = *self.taken.borrow();
        st.buffer.iter().rev().take_while(|e| e.id > taken).filter(|e| e.unread).count()
    }

    /// Changes whenever an event is published or taken: when
    /// [`EventLog::unread`] may have changed. Watching it takes nothing.
    pub fn changes(&self) -> (watch::Receiver<u64>, watch::Receiver<u64>) {
        (self.head.subscribe(), self.taken.subscribe())
    }

    /// Every event from now on, as it is published, without taking it (see
    /// the module's doc). A receiver [`EVENT_TAP_CAPACITY`] behind loses
    /// the oldest: its next `recv` says how many.
    pub fn tap(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tap.subscribe()
    }

    /// How many SSE streams are open right now.
    pub fn subscribers(&self) -> usize {
        self.state.lock().unwrap().readers.len()
    }

    /// `since`: the last id the client has seen (`Last-Event-ID`), or `None`
    /// for "everything nobody has taken yet, then live". `cut_off` is
    /// notified once if the subscription falls too far behind.
    pub fn subscribe(self: &Arc<Self>, since: Option<u64>, cut_off: Option<Arc<Notify>>) -> Subscription {
        let mut st = self.state.lock().unwrap();
        let head = *self.head.borrow();
        let cursor = since.unwrap_or(*self.taken.borrow()).min(head);
        let reader = Arc::new(Reader {
            cursor: AtomicU64::new(cursor),
            live_from: head,
            lagged: AtomicBool::new(false),
            cut_off,
        });
        let key = st.next_reader;
        st.next_reader += 1;
        st.readers.insert(key, reader.clone());
        Subscription {
            log: self.clone(),
            rx: self.head.subscribe(),
            key,
            reader,
        }
    }
}

pub struct Subscription {
    log: Arc<EventLog>,
    rx: watch::Receiver<u64>,
    key: u64,
    reader: Arc<Reader>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The subscriber fell too far behind the live head.
    Lagged { behind: u64 },
    /// The host is shutting down.
    Shutdown,
}

impl Subscription {
    /// The next item, waiting for one if needed.
    pub async fn next(&mut self) -> Result<Item, Closed> {
        loop {
            if let Some(item) = self.try_next()? {
                return Ok(item);
            }
            self.rx.changed().await.map_err(|_| Closed::Shutdown)?;
        }
    }

    fn try_next(&mut self) -> Result<Option<Item>, Closed> {
        let st = self.log.state.lock().unwrap();
        let head = *self.rx.borrow_and_update();
        let r = &self.reader;
        let behind = r.behind(head);
        if r.lagged.load(Ordering::SeqCst) || behind > self.log.lag_limit {
            r.lagged.store(true, Ordering::SeqCst);
            return Err(Closed::Lagged { behind });
        }
        let cursor = r.cursor.load(Ordering::SeqCst);
        if cursor >= head {
            return Ok(None);
        }
        let oldest = st.buffer.front().map_or(head + 1, |e| e.id);
        if cursor + 1 < oldest {
            let gap = Item::Gap {
                from: cursor + 1,
                to: oldest - 1,
            };
            r.cursor.store(oldest - 1, Ordering::SeqCst);
            return Ok(Some(gap));
        }
        let idx = (cursor + 1 - oldest) as usize;
        let event = st.buffer[idx].clone();
        r.cursor.store(event.id, Ordering::SeqCst);
        if event.id > *self.log.taken.borrow() {
            self.log.taken.send_replace(event.id);
        }
        Ok(Some(Item::Event(event)))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.log.state.lock().unwrap().readers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(items: Vec<Item>) -> Vec<String> {
        items
            .into_iter()
            .map(|i| match i {
                Item::Event(e) => e.id.to_string(),
                Item::Gap { from, to } => format!("gap {from}-{to}"),
            })
            .collect()
    }

    async fn drain(sub: &mut Subscription, n: usize) -> Vec<Item> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(sub.next().await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn untaken_events_go_to_the_next_plain_subscriber_once() {
        let log = EventLog::new(10, 100);
        for i in 0..3 {
            log.publish(&json!({ "n": i }));
        }
        let mut a = log.subscribe(None, None);
        assert_eq!(ids(drain(&mut a, 3).await), ["1", "2", "3"]);
        drop(a);
        log.publish(&json!({ "n": 3 }));
        let mut b = log.subscribe(None, None);
        assert_eq!(ids(drain(&mut b, 1).await), ["4"]);
    }

    #[tokio::test]
    async fn resume_by_id_and_gap_when_evicted() {
        let log = EventLog::new(3, 100);
        for i in 0..6 {
            log.publish(&json!({ "n": i }));
        }
        let mut s = log.subscribe(Some(4), None);
        assert_eq!(ids(drain(&mut s, 2).await), ["5", "6"]);
        let mut s = log.subscribe(Some(0), None);
        assert_eq!(ids(drain(&mut s, 4).await), ["gap 1-3", "4", "5", "6"]);
    }

    #[tokio::test]
    async fn a_subscriber_far_behind_the_live_head_is_cut_off() {
        let log = EventLog::new(100, 5);
        let mut s = log.subscribe(None, None);
        for i in 0..6 {
            log.publish(&json!({ "n": i }));
        }
        assert_eq!(s.next().await.unwrap_err(), Closed::Lagged { behind: 6 });
        assert_eq!(log.subscribers(), 1);
        drop(s);
        assert_eq!(log.subscribers(), 0);
    }

    #[tokio::test]
    async fn a_subscriber_that_is_never_polled_is_signalled_once() {
        let log = EventLog::new(100, 3);
        let cut = Arc::new(Notify::new());
        let mut reading = log.subscribe(None, None);
        let _stuck = log.subscribe(None, Some(cut.clone()));
        for i in 0..3 {
            log.publish(&json!({ "n": i }));
            reading.next().await.unwrap();
        }
        // Three behind is still within the limit.
        assert!(tokio::time::timeout(std::time::Duration::ZERO, cut.notified()).await.is_err());
        log.publish(&json!({ "n": 3 }));
        cut.notified().await;
        log.publish(&json!({ "n": 4 }));
        assert!(tokio::time::timeout(std::time::Duration::ZERO, cut.notified()).await.is_err(), "fired twice");
        // The one that reads is not affected.
        assert_eq!(ids(drain(&mut reading, 2).await), ["4", "5"]);
    }

    #[tokio::test]
    async fn replies_are_unread_until_a_subscriber_takes_them() {
        let log = EventLog::new(10, 100);
        let (_, taken) = log.changes();
        log.publish(&json!({ "type": "reply" }));
        log.publish(&json!({ "type": "status" }));
        log.publish(&json!({ "type": "unanswered" }));
        assert_eq!(log.unread(), 2);
        let mut s = log.subscribe(Some(1), None);
        assert_eq!(ids(drain(&mut s, 1).await), ["2"]);
        assert!(taken.has_changed().unwrap());
        assert_eq!(log.unread(), 1, "a client that resumes after the reply had it already");
        drain(&mut s, 1).await;
        assert_eq!(log.unread(), 0);
    }

    #[tokio::test]
    async fn a_tap_sees_everything_takes_nothing_and_counts_what_it_dropped() {
        let log = EventLog::new(1000, 1000);
        let mut tap = log.tap();
        log.publish(&json!({ "type": "reply" }));
        assert_eq!(tap.recv().await.unwrap().id, 1);
        assert_eq!(log.unread(), 1, "a tap takes nothing");
        for i in 0..EVENT_TAP_CAPACITY + 10 {
            log.publish(&json!({ "n": i }));
        }
        assert_eq!(tap.recv().await.unwrap_err(), broadcast::error::RecvError::Lagged(10));
        assert_eq!(tap.recv().await.unwrap().id, 12);
    }

    #[tokio::test]
    async fn replay_is_not_lag() {
        let log = EventLog::new(100, 5);
        for i in 0..50 {
            log.publish(&json!({ "n": i }));
        }
        let mut s = log.subscribe(Some(0), None);
        assert_eq!(drain(&mut s, 50).await.len(), 50);
    }
}
