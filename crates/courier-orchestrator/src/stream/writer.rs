//! The write-behind pipeline: agents' text and raw lines stored by one task per store in
//! group commits, while their events are already published (see the [stream docs](super)).
//!
//! A recorder reserves its batch's positions (`content_end`, `raw_end`) from its own
//! counters, queues the batch here and publishes at once; the writer drains everything
//! queued, merges it per message and stores it with one
//! [`Store::append_messages`] transaction. Each batch's text and raw lines stay in one
//! append, so a replica killed mid-pipeline loses whole batches (that a re-attach feeds
//! again from the stored raw log) and never stores text without its raw line.
//!
//! Batches get tickets in queue order; [`StoreWriter::settle`] waits until every batch
//! queued before the call is stored, which is what a replay from the store (a subscribe,
//! a resync, a finish) waits for so it never misses what was already published.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use courier_store::{MessageAppend, MessageId, SandboxId, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::{OrchestratorError, Result};

/// Batches queued but not stored, across all recorders of a store, before a recorder
/// waits (a store slower than its agents for long makes them wait, not memory grow).
const QUEUE_LIMIT: usize = 4096;
/// Batches merged into one transaction at most.
const GROUP_LIMIT: usize = 1024;

/// What one recorder shares with the writer: where a failed write is reported, and (by
/// being dropped) that its queued batches are no longer wanted.
#[derive(Debug, Default)]
pub(crate) struct WriteState {
    failed: Mutex<Option<String>>,
    has_failed: AtomicBool,
}

impl WriteState {
    fn fail(&self, reason: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert(reason);
        self.has_failed.store(true, Ordering::Release);
    }

    /// The first failed write of `message_id`'s batches, as an error.
    pub(crate) fn check(&self, message_id: MessageId) -> Result<()> {
        if !self.has_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        match failed.as_ref() {
            Some(reason) => Err(OrchestratorError::OutputWrite {
                message_id,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

struct Job {
    ticket: u64,
    sandbox_id: SandboxId,
    append: MessageAppend,
    /// Dropped with the recorder: an aborted recorder's batches are not stored, as if
    /// the process had died (a re-attach feeds them again from the stored position).
    owner: Weak<WriteState>,
    /// Wakes other replicas once stored (a cluster hub's notifier).
    dirty: Option<mpsc::UnboundedSender<SandboxId>>,
    _permit: OwnedSemaphorePermit,
}

/// One store's write-behind queue and its writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StoreWriter {
    store: Arc<dyn Store>,
    /// The queue and the last ticket handed out, locked together so tickets enter the
    /// queue in order.
    queue: Arc<Mutex<(u64, mpsc::UnboundedSender<Job>)>>,
    room: Arc<Semaphore>,
    stored: watch::Receiver<u64>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("stored", &*self.stored.borrow())
            .finish_non_exhaustive()
    }
}

impl StoreWriter {
    /// Starts the writer task of `store`.
    pub(crate) fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stored_tx, stored) = watch::channel(0);
        tokio::spawn(run(store.clone(), rx, stored_tx));
        StoreWriter {
            store,
            queue: Arc::new(Mutex::new((0, tx))),
            room: Arc::new(Semaphore::new(QUEUE_LIMIT)),
            stored,
        }
    }

    /// Whether this writer writes to `store`.
    pub(crate) fn writes_to(&self, store: &Arc<dyn Store>) -> bool {
        Arc::ptr_eq(&self.store, store)
    }

    /// Queues one batch of a message; its ticket, for [`settle_to`](Self::settle_to).
    /// Waits only while the queue is full.
    pub(crate) async fn queue(
        &self,
        sandbox_id: SandboxId,
        append: MessageAppend,
        owner: &Arc<WriteState>,
        dirty: Option<mpsc::UnboundedSender<SandboxId>>,
    ) -> Result<u64> {
        let permit = self.room.clone().acquire_owned().await.map_err(|_| {
            OrchestratorError::OutputWrite {
                message_id: append.id,
                reason: "the store writer stopped".into(),
            }
        })?;
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = queue.0 + 1;
        let message_id = append.id;
        queue
            .1
            .send(Job {
                ticket,
                sandbox_id,
                append,
                owner: Arc::downgrade(owner),
                dirty,
                _permit: permit,
            })
            .map_err(|_| OrchestratorError::OutputWrite {
                message_id,
                reason: "the store writer stopped".into(),
            })?;
        queue.0 = ticket;
        Ok(ticket)
    }

    /// Waits until the batch with `ticket` and every one before it is stored (or failed).
    pub(crate) async fn settle_to(&self, ticket: u64) {
        let mut stored = self.stored.clone();
        // The writer task ends only with the runtime; an error means nothing more comes.
        let _ = stored.wait_for(|s| *s >= ticket).await;
    }

    /// Waits until every batch queued before the call is stored.
    pub(crate) async fn settle(&self) {
        let last = self.queue.lock().unwrap_or_else(|e| e.into_inner()).0;
        self.settle_to(last).await;
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    stored: watch::Sender<u64>,
) {
    let mut jobs = Vec::with_capacity(GROUP_LIMIT);
    while rx.recv_many(&mut jobs, GROUP_LIMIT).await > 0 {
        let last = jobs.iter().map(|j| j.ticket).max().unwrap_or(0);
        // Consecutive batches of one message become one append (order kept per message).
        let mut appends: Vec<MessageAppend> = Vec::new();
        let mut owners: Vec<Arc<WriteState>> = Vec::new();
        for job in &jobs {
            let Some(owner) = job.owner.upgrade() else {
                continue;
            };
            match appends.last_mut() {
                Some(prev) if prev.id == job.append.id => {
                    prev.content.push_str(&job.append.content);
                    prev.raw_log.push_str(&job.append.raw_log);
                }
                _ => {
                    appends.push(job.append.clone());
                    owners.push(owner);
                }
            }
        }
        match store.append_messages(&appends).await {
            Ok(missed) => {
                for (append, owner) in appends.iter().zip(&owners) {
                    if missed.contains(&append.id) {
                        owner.fail(format!("message {} is no longer streaming", append.id));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, batches = appends.len(), "could not store agent output");
                for owner in &owners {
                    owner.fail(e.to_string());
                }
            }
        }
        stored.send_replace(last);
        for job in &jobs {
            if let Some(dirty) = &job.dirty {
                // The notifier lives as long as its hub; a send fails only at shutdown.
                let _ = dirty.send(job.sandbox_id);
            }
        }
        jobs.clear();
    }
}
