//! Group commit: deliveries that arrive together are stored together.
//!
//! Each verified delivery is handed to a writer with a channel for its
//! answer; a writer takes every delivery waiting (up to [`MAX_GROUP`]) and
//! stores them, with their audit rows, in one transaction. A request is still
//! answered only after its delivery is committed; what changes is that eight
//! concurrent requests cost one commit (one fsync) instead of sixteen. SQLite
//! has one writer, so it gets one writer task; PostgreSQL gets a few, so a
//! commit in flight does not hold the next group back.

use issueops_core::audit::{kind, AuditEvent};
use issueops_core::store::inbox::{Inserted, NewDelivery};
use issueops_core::store::{Backend, StoreError};
use issueops_core::Store;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Deliveries stored in one transaction at most.
const MAX_GROUP: usize = 64;
/// Requests waiting for a writer before senders wait too.
const QUEUE: usize = 1024;

type Answer = oneshot::Sender<Result<Inserted, String>>;

/// The writers' queue (cheap to clone).
#[derive(Clone)]
pub struct GroupCommit {
    queue: Option<mpsc::Sender<(NewDelivery, Answer)>>,
    store: Store,
    counts: Arc<Counts>,
}

/// What the writers did, for tests and `/metrics`.
#[derive(Default)]
struct Counts {
    transactions: AtomicU64,
    deliveries: AtomicU64,
    largest: AtomicU64,
    /// Taken by a writer, not yet committed (or failed).
    writing: AtomicU64,
}

impl Counts {
    fn committed(&self, group: usize) {
        let n = group as u64;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.deliveries.fetch_add(n, Ordering::Relaxed);
        self.largest.fetch_max(n, Ordering::Relaxed);
        issueops_core::metrics::inbox_group(group);
    }
}

/// Group commit's work so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// Transactions that stored deliveries (groups and lone ones).
    pub transactions: u64,
    /// Deliveries those transactions held (duplicates included).
    pub deliveries: u64,
    /// The most deliveries one transaction held.
    pub largest: u64,
    /// Deliveries waiting for a writer now.
    pub waiting: usize,
    /// Deliveries a writer has taken and is storing now.
    pub writing: u64,
}

impl GroupCommit {
    /// Starts the writers on the current Tokio runtime; outside one, every
    /// delivery is stored on its own.
    pub fn start(store: Store) -> Self {
        let counts = Arc::new(Counts::default());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self {
                queue: None,
                store,
                counts,
            };
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let writers = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        for _ in 0..writers {
            runtime.spawn(write_groups(store.clone(), rx.clone(), counts.clone()));
        }
        Self {
            queue: Some(tx),
            store,
            counts,
        }
    }

    pub fn stats(&self) -> GroupStats {
        GroupStats {
            transactions: self.counts.transactions.load(Ordering::Relaxed),
            deliveries: self.counts.deliveries.load(Ordering::Relaxed),
            largest: self.counts.largest.load(Ordering::Relaxed),
            writing: self.counts.writing.load(Ordering::Relaxed),
            waiting: self
                .queue
                .as_ref()
                .map_or(0, |q| q.max_capacity() - q.capacity()),
        }
    }

    /// Stores `delivery` (and its audit row) and says whether it was new.
    pub async fn store(&self, delivery: NewDelivery) -> Result<Inserted, String> {
        let Some(queue) = &self.queue else {
            return store_alone(&self.store, &self.counts, delivery).await;
        };
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::SendError((delivery, _))) = queue.send((delivery, answer)).await {
            return store_alone(&self.store, &self.counts, delivery).await;
        }
        answered
            .await
            .unwrap_or_else(|_| Err("the inbox writer stopped".into()))
    }
}

async fn store_alone(
    store: &Store,
    counts: &Counts,
    delivery: NewDelivery,
) -> Result<Inserted, String> {
    let mut stored = store
        .insert_deliveries(std::slice::from_ref(&delivery), received)
        .await
        .map_err(|e| e.to_string())?;
    counts.committed(1);
    Ok(stored.pop().unwrap_or(Inserted::Duplicate))
}

/// The audit row of a delivery stored as inbox row `seq`.
fn received(d: &NewDelivery, seq: i64) -> AuditEvent {
    let mut audit = AuditEvent::new(kind::DELIVERY_RECEIVED, "stored")
        .delivery(d.delivery_id.clone())
        .detail(json!({ "event": d.event, "action": d.action, "repo": d.repo, "inbox_seq": seq }));
    if let Some(sender) = &d.sender {
        audit = audit.actor(sender.clone());
    }
    audit
}

async fn write_groups(
    store: Store,
    queue: Arc<Mutex<mpsc::Receiver<(NewDelivery, Answer)>>>,
    counts: Arc<Counts>,
) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(first) => group.push(first),
                None => return,
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        let (deliveries, answers): (Vec<NewDelivery>, Vec<Answer>) = group.into_iter().unzip();
        let taken = deliveries.len() as u64;
        counts.writing.fetch_add(taken, Ordering::Relaxed);
        let stored = store.insert_deliveries(&deliveries, received).await;
        counts.writing.fetch_sub(taken, Ordering::Relaxed);
        match stored {
            Ok(results) => {
                counts.committed(deliveries.len());
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            // Nothing of the group was stored: one delivery must not cost the
            // others theirs, so each is tried alone.
            Err(e) if deliveries.len() > 1 => {
                tracing::warn!(error = %e, size = deliveries.len(), "storing a group of deliveries failed; storing them one by one");
                for (delivery, answer) in deliveries.into_iter().zip(answers) {
                    let _ = answer.send(store_alone(&store, &counts, delivery).await);
                }
            }
            Err(e) => fail(answers, &e),
        }
    }
}

/// Nothing was stored: the sender is told (GitHub redelivers what it was refused).
fn fail(answers: Vec<Answer>, e: &StoreError) {
    for answer in answers {
        let _ = answer.send(Err(e.to_string()));
    }
}
