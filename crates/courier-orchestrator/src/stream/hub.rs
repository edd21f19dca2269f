//! Per-sandbox broadcast channels, and subscriptions that replay from the store before
//! going live (see the [stream docs](super)).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use courier_store::{Cluster, Message, MessageStatus, SandboxId, Store};
use tokio::sync::{broadcast, mpsc};

use super::event::{EventKind, SandboxEvent};
use super::tail::{Tail, TailHandle};
use super::writer::StoreWriter;
use crate::Result;

/// How many events a slow subscriber may fall behind before it resynchronises from the
/// store.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1024;

/// Page size of a replay from the store.
const REPLAY_PAGE: u32 = 200;

/// Per-sandbox broadcast channels. Cheap to clone; all clones share the channels.
#[derive(Debug, Clone)]
pub struct EventHub {
    channels: Arc<Mutex<HashMap<SandboxId, broadcast::Sender<SandboxEvent>>>>,
    capacity: usize,
    cluster: Option<Arc<ClusterFeed>>,
    /// The write-behind queue of each store recorders of this hub write to (one, in
    /// practice).
    writers: Writers,
}

/// The hub's store writers, shared by its clones and its subscriptions.
type Writers = Arc<Mutex<Vec<StoreWriter>>>;

/// Waits until everything queued for any of `writers` so far is stored.
async fn settle(writers: &Writers) {
    let writers = writers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for writer in writers {
        writer.settle().await;
    }
}

/// What a hub of one replica in a cluster adds: wake-ups for the others, and tails of the
/// sandboxes other replicas follow.
struct ClusterFeed {
    store: Arc<dyn Store>,
    /// Sandboxes this replica follows (it publishes their events itself).
    local: Mutex<HashSet<SandboxId>>,
    /// Tails of sandboxes followed elsewhere that have subscribers here.
    tails: tokio::sync::Mutex<HashMap<SandboxId, TailHandle>>,
    /// Sandboxes with new events, for the notifier.
    dirty: mpsc::UnboundedSender<SandboxId>,
}

impl std::fmt::Debug for ClusterFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFeed").finish_non_exhaustive()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(DEFAULT_CHANNEL_CAPACITY)
    }
}

impl EventHub {
    /// A hub whose channels hold `capacity` events per sandbox.
    pub fn new(capacity: usize) -> Self {
        EventHub {
            channels: Arc::default(),
            capacity: capacity.max(1),
            cluster: None,
            writers: Arc::default(),
        }
    }

    /// Makes this hub one replica's in a cluster: what it publishes wakes the other
    /// replicas, and a subscription to a sandbox another replica follows reads its events
    /// from `store` (see [`Cluster`]). Call [`follow_here`](Self::follow_here) for every
    /// sandbox this replica starts to follow.
    pub async fn join_cluster(
        mut self,
        cluster: Arc<Cluster>,
        store: Arc<dyn Store>,
    ) -> Result<Self> {
        let (dirty, mut dirty_rx) = mpsc::unbounded_channel::<SandboxId>();
        let feed = Arc::new(ClusterFeed {
            store,
            local: Mutex::default(),
            tails: tokio::sync::Mutex::default(),
            dirty,
        });
        // The notifier: one NOTIFY per batch of changed sandboxes, so a busy agent costs
        // one round trip per batch, not per event.
        let notifier = cluster.clone();
        tokio::spawn(async move {
            while let Some(first) = dirty_rx.recv().await {
                let mut batch = HashSet::from([first]);
                while let Ok(more) = dirty_rx.try_recv() {
                    batch.insert(more);
                }
                let batch: Vec<SandboxId> = batch.into_iter().collect();
                if let Err(e) = notifier.notify(&batch).await {
                    tracing::warn!(error = %e, "could not wake the other replicas (they poll)");
                }
            }
        });
        // The dispatcher: wake-ups from every replica reach the tails they concern.
        let mut wakeups = cluster.wakeups().await?;
        let weak = Arc::downgrade(&feed);
        tokio::spawn(async move {
            loop {
                let ids = match wakeups.next().await {
                    Ok(Some(ids)) => ids,
                    // The database is closing: the replica is stopping.
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the cluster's wake-ups; reconnecting (tails poll meanwhile)");
                        tokio::time::sleep(super::tail::POLL).await;
                        continue;
                    }
                };
                let Some(feed) = weak.upgrade() else { return };
                let tails = feed.tails.lock().await;
                for id in ids {
                    if let Some(tail) = tails.get(&id) {
                        tail.wake.notify_one();
                    }
                }
            }
        });
        self.cluster = Some(feed);
        Ok(self)
    }

    /// This replica follows `sandbox_id` from now on and publishes its events itself: a
    /// tail of it stops after publishing everything stored so far.
    pub async fn follow_here(&self, sandbox_id: SandboxId) {
        let Some(feed) = &self.cluster else { return };
        feed.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sandbox_id);
        let tail = feed.tails.lock().await.remove(&sandbox_id);
        if let Some(tail) = tail {
            tail.stop().await;
        }
    }

    /// Starts a tail of a sandbox followed elsewhere unless one runs.
    async fn tail_unless_local(&self, sandbox_id: SandboxId) -> Result<()> {
        let Some(feed) = &self.cluster else {
            return Ok(());
        };
        if feed
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&sandbox_id)
        {
            return Ok(());
        }
        let mut tails = feed.tails.lock().await;
        if tails.get(&sandbox_id).is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let tail = Tail::start(feed.store.clone(), sandbox_id, self.sender(sandbox_id)).await?;
        tails.insert(sandbox_id, tail);
        Ok(())
    }

    fn sender(&self, sandbox_id: SandboxId) -> broadcast::Sender<SandboxEvent> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(sandbox_id)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }

    /// Publishes an event to the sandbox's current subscribers (none is fine).
    pub fn publish(&self, event: SandboxEvent) {
        // Sending fails only when nobody listens; every event's content is in the store,
        // so a later subscriber replays it from there.
        let id = event.sandbox_id;
        let _ = self.sender(id).send(event);
        if let Some(feed) = &self.cluster {
            // The notifier lives as long as the hub; a send fails only at shutdown.
            let _ = feed.dirty.send(id);
        }
    }

    /// Publishes an event whose content is queued for the store but maybe not stored yet:
    /// to this replica's subscribers only (the store writer wakes other replicas once it
    /// is stored).
    pub(crate) fn publish_queued(&self, event: SandboxEvent) {
        // Nobody listening is fine: the content reaches the store behind, and a later
        // subscriber waits for it there.
        let _ = self.sender(event.sandbox_id).send(event);
    }

    /// The write-behind queue of `store` (started on first use).
    pub(crate) fn writer(&self, store: &Arc<dyn Store>) -> StoreWriter {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(writer) = writers.iter().find(|w| w.writes_to(store)) {
            return writer.clone();
        }
        let writer = StoreWriter::start(store.clone());
        writers.push(writer.clone());
        writer
    }

    /// What wakes other replicas for a sandbox, in a cluster.
    pub(crate) fn wake_sender(&self) -> Option<mpsc::UnboundedSender<SandboxId>> {
        self.cluster.as_ref().map(|feed| feed.dirty.clone())
    }

    /// Waits until every event published so far has its content in the store: what a
    /// re-attach reading the store's positions needs.
    pub async fn settle(&self) {
        settle(&self.writers).await;
    }

    /// Ends the sandbox's channel: subscriptions end after what they have buffered.
    pub fn close(&self, sandbox_id: SandboxId) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.remove(&sandbox_id);
        if let Some(feed) = &self.cluster {
            feed.local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&sandbox_id);
        }
    }

    /// Forgets every sandbox this replica followed (they are followed elsewhere now).
    pub fn follow_none(&self) {
        if let Some(feed) = &self.cluster {
            feed.local.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// The sandbox's live events from now on, without replay: a cheap wake-up for a
    /// waiter that reads the store itself.
    pub(crate) fn watch(&self, sandbox_id: SandboxId) -> broadcast::Receiver<SandboxEvent> {
        self.sender(sandbox_id).subscribe()
    }

    /// Subscribes to a sandbox: first every stored message with `seq > after_seq`, then
    /// live events, with nothing missed or repeated.
    pub async fn subscribe(
        &self,
        store: Arc<dyn Store>,
        sandbox_id: SandboxId,
        after_seq: i64,
    ) -> Result<Subscription> {
        // Listen before reading the store, so nothing falls between the two; a tail of a
        // sandbox followed elsewhere takes its position before the replay reads, so what
        // it publishes later overlaps the replay (and is dropped) rather than missing a
        // part.
        let rx = self.sender(sandbox_id).subscribe();
        self.tail_unless_local(sandbox_id).await?;
        // What was published before listening may still be on its way to the store: the
        // replay reads once it is there.
        settle(&self.writers).await;
        let mut sub = Subscription {
            writers: self.writers.clone(),
            rx,
            store,
            sandbox_id,
            after_seq,
            last_seq: after_seq,
            seen: BTreeMap::new(),
            pending: VecDeque::new(),
        };
        sub.replay(after_seq).await?;
        Ok(sub)
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    content_len: usize,
    /// Raw log bytes covered by what the store delivered (replay or resync): live agent
    /// events up to here are repeats.
    raw_len: usize,
    /// The raw-log end of the last live agent event delivered: later events of the same
    /// line carry the same end and are new.
    live_raw_end: Option<usize>,
    finished: bool,
}

/// A sandbox's events for one subscriber: replay from the store, then live.
pub struct Subscription {
    writers: Writers,
    rx: broadcast::Receiver<SandboxEvent>,
    store: Arc<dyn Store>,
    sandbox_id: SandboxId,
    after_seq: i64,
    last_seq: i64,
    seen: BTreeMap<i64, Seen>,
    pending: VecDeque<SandboxEvent>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sandbox_id", &self.sandbox_id)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    async fn stored_after(&self, after: i64) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .store
                .list_messages(self.sandbox_id, cursor, REPLAY_PAGE)
                .await?;
            let full = page.len() == REPLAY_PAGE as usize;
            if let Some(last) = page.last() {
                cursor = last.seq;
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn replay(&mut self, after: i64) -> Result<()> {
        for message in self.stored_after(after).await? {
            self.deliver_whole(message);
        }
        Ok(())
    }

    /// Queues a stored message as one whole `Message` event and remembers how much of it
    /// the subscriber now has.
    fn deliver_whole(&mut self, message: Message) {
        self.seen.insert(
            message.seq,
            Seen {
                content_len: message.content.len(),
                raw_len: message.raw_log.len(),
                live_raw_end: None,
                finished: message.status != MessageStatus::Streaming,
            },
        );
        self.last_seq = self.last_seq.max(message.seq);
        self.pending.push_back(SandboxEvent {
            sandbox_id: self.sandbox_id,
            seq: message.seq,
            message_id: message.id,
            kind: EventKind::Message(message),
        });
    }

    /// After falling behind the channel: what the store has beyond what was delivered
    /// (new messages whole, text tails and finishes of known ones). Non-text agent events
    /// missed meanwhile are not replayed; they remain in the messages' raw logs.
    async fn resync(&mut self) -> Result<()> {
        // The events missed were published, maybe before their content was stored.
        settle(&self.writers).await;
        let from = self
            .seen
            .iter()
            .find(|(_, s)| !s.finished)
            .map(|(seq, _)| seq - 1)
            .unwrap_or(self.last_seq);
        for message in self.stored_after(from).await? {
            let Some(seen) = self.seen.get_mut(&message.seq) else {
                self.deliver_whole(message);
                continue;
            };
            let (seq, id) = (message.seq, message.id);
            if message.content.len() > seen.content_len {
                let text = message
                    .content
                    .get(seen.content_len..)
                    .unwrap_or_default()
                    .to_owned();
                seen.content_len = message.content.len();
                self.pending.push_back(SandboxEvent {
                    sandbox_id: self.sandbox_id,
                    seq,
                    message_id: id,
                    kind: EventKind::Text {
                        text,
                        content_end: message.content.len(),
                    },
                });
            }
            seen.raw_len = seen.raw_len.max(message.raw_log.len());
            if message.status != MessageStatus::Streaming && !seen.finished {
                seen.finished = true;
                self.pending.push_back(SandboxEvent {
                    sandbox_id: self.sandbox_id,
                    seq,
                    message_id: id,
                    kind: EventKind::Finished {
                        status: message.status,
                    },
                });
            }
        }
        Ok(())
    }

    /// Whether a live event is new to this subscriber (and records it as seen).
    fn admit(&mut self, event: &SandboxEvent) -> bool {
        if event.seq <= self.after_seq {
            return false;
        }
        match &event.kind {
            EventKind::Message(message) => {
                if self.seen.contains_key(&event.seq) {
                    return false;
                }
                self.seen.insert(
                    event.seq,
                    Seen {
                        content_len: message.content.len(),
                        raw_len: message.raw_log.len(),
                        live_raw_end: None,
                        finished: message.status != MessageStatus::Streaming,
                    },
                );
                self.last_seq = self.last_seq.max(event.seq);
                true
            }
            EventKind::Text { content_end, .. } => match self.seen.get_mut(&event.seq) {
                Some(seen) if *content_end <= seen.content_len => false,
                Some(seen) => {
                    seen.content_len = *content_end;
                    true
                }
                None => true,
            },
            EventKind::Agent { raw_end, .. } => match self.seen.get_mut(&event.seq) {
                // One line can give several events (a tool use and its result), all
                // with the line's end: the first one admitted lets its siblings through.
                Some(seen)
                    if *raw_end < seen.raw_len
                        || (*raw_end == seen.raw_len && seen.live_raw_end != Some(*raw_end)) =>
                {
                    false
                }
                Some(seen) => {
                    seen.raw_len = *raw_end;
                    seen.live_raw_end = Some(*raw_end);
                    true
                }
                None => true,
            },
            EventKind::Finished { .. } => match self.seen.get_mut(&event.seq) {
                Some(seen) if seen.finished => false,
                Some(seen) => {
                    seen.finished = true;
                    true
                }
                None => true,
            },
        }
    }

    /// The next event; `None` once the sandbox's channel is closed and drained.
    pub async fn next(&mut self) -> Option<Result<SandboxEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            match self.rx.recv().await {
                Ok(event) => {
                    if self.admit(&event) {
                        return Some(Ok(event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(e) = self.resync().await {
                        return Some(Err(e));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
