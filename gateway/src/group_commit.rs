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
}

impl GroupCommit {
    /// Starts the writers on the current Tokio runtime; outside one, every
    /// delivery is stored on its own.
    pub fn start(store: Store) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self { queue: None, store };
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let writers = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        for _ in 0..writers {
            runtime.spawn(write_groups(store.clone(), rx.clone()));
        }
        Self {
            queue: Some(tx),
            store,
        }
    }

    /// Stores `delivery` (and its audit row) and says whether it was new.
    pub async fn store(&self, delivery: NewDelivery) -> Result<Inserted, String> {
        let Some(queue) = &self.queue else {
            return store_alone(&self.store, delivery).await;
        };
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::SendError((delivery, _))) = queue.send((delivery, answer)).await {
            return store_alone(&self.store, delivery).await;
        }
        answered
            .await
            .unwrap_or_else(|_| Err("the inbox writer stopped".into()))
    }
}

async fn store_alone(store: &Store, delivery: NewDelivery) -> Result<Inserted, String> {
    store
        .insert_deliveries(std::slice::from_ref(&delivery), received)
        .await
        .map_err(|e| e.to_string())
        .map(|mut v| v.pop().unwrap_or(Inserted::Duplicate))
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

async fn write_groups(store: Store, queue: Arc<Mutex<mpsc::Receiver<(NewDelivery, Answer)>>>) {
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
        match store.insert_deliveries(&deliveries, received).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            // Nothing of the group was stored: one delivery must not cost the
            // others theirs, so each is tried alone.
            Err(e) if deliveries.len() > 1 => {
                tracing::warn!(error = %e, size = deliveries.len(), "storing a group of deliveries failed; storing them one by one");
                for (delivery, answer) in deliveries.into_iter().zip(answers) {
                    let _ = answer.send(store_alone(&store, delivery).await);
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
