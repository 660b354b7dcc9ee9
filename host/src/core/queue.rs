//! The queues that filtered work waits in.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;


/// Jobs done one at a time, in the order they were pushed, each to its
/// end even if whoever pushed it stops waiting: a filter call cut off
/// half-way would leave its instance unusable. Jobs pushed before
/// [`Queue::start`] wait for it.
pub(super) struct Queue<J> {
    tx: mpsc::UnboundedSender<J>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<J>>>,
    /// Jobs pushed and not yet done.
    pending: Arc<AtomicUsize>,
}

impl<J: Send + 'static> Queue<J> {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Queue { tx, rx: Mutex::new(Some(rx)), pending: Arc::default() }
    }

    pub(super) fn push(&self, job: J) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        // The receiver lives as long as the runtime: nothing to report.
        let _ = self.tx.send(job);
    }

    /// Some job is waiting or under way: work that would skip the queue
    /// (its hook has no filter since a reload) must wait behind it, or it
    /// would overtake it.
    pub(super) fn busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// Runs `work(with, job)` for each job, one at a time.
    pub(super) fn start<W, F>(&self, with: W, work: fn(W, J) -> F)
    where
        W: Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(mut jobs) = self.rx.lock().unwrap().take() else { return };
        let pending = self.pending.clone();
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                work(with.clone(), job).await;
                pending.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
}
