//! Several `courier serve` replicas on one PostgreSQL database: who is alive, which
//! replica follows each live sandbox, jobs that run once across the cluster, and
//! wake-ups for replicas that stream a sandbox another replica follows.
//!
//! # Liveness
//!
//! A replica is alive exactly while its database session holds its *presence lock*, a
//! session-level advisory lock on a random key stored in its `courier_replicas` row. A
//! replica that dies (crash, `SIGKILL`, lost host) loses its session and so its lock at
//! once: PostgreSQL ends the session when the connection closes, and every replica sees
//! the death in `pg_locks` on its next look, with no heartbeat timeout to wait out. A
//! replica that loses its own presence session (the database restarted, a network cut)
//! must stop acting as an owner: [`Cluster::check_presence`] reports it, and `courier
//! serve` exits so it restarts as a new replica rather than racing the one that took its
//! sandboxes over.
//!
//! # Ownership
//!
//! Every live sandbox has one owner row (`sandbox_owners`), written by the replica that
//! creates it ([`Cluster::own`]). Replicas claim the sandboxes of dead replicas with one
//! `UPDATE … WHERE owner not alive` ([`Cluster::claim_orphans`]): PostgreSQL re-checks
//! the condition after waiting for a racing claimer, so exactly one replica wins each
//! sandbox. A live sandbox without an owner row older than the grace period (a replica
//! that died between recording a sandbox and owning it, or a database from before the
//! cluster tables) is claimed the same way.
//!
//! # Singleton jobs
//!
//! [`Cluster::lead`] takes a session-level advisory lock named by the job on the
//! presence session: at most one live replica holds it, and it is freed with the
//! replica's death.
//!
//! # Wake-ups
//!
//! The store stays the only source of events: a replica that streams a sandbox it does not
//! own reads the sandbox's messages from the store. [`Cluster::notify`] tells the others
//! which sandboxes changed (`NOTIFY`, delivered at commit, in order); [`Wakeups`] receives
//! them. A lost notification costs latency, never an event: readers also poll.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgListener, PgPool};
use sqlx::{Connection as _, Row as _};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{PgStore, Result, SandboxId, StoreError};

/// The `NOTIFY` channel of sandbox wake-ups, followed by the digest of the schema's name
/// (deployments in separate schemas of one database do not wake each other).
const EVENTS_CHANNEL: &str = "courier_events";
/// The statuses of live sandboxes (the ones a replica follows).
const LIVE: &str = "('creating', 'running', 'paused')";
/// The largest `NOTIFY` payload PostgreSQL takes is 8000 bytes; ids are 36 bytes plus a
/// comma, so a batch of 200 stays well below it.
const NOTIFY_BATCH: usize = 200;

/// Whether the replica holding `lock_key` is alive, as SQL over `pg_locks` (a bigint
/// advisory key shows its high half in `classid`, its low half in `objid`, with
/// `objsubid` 1).
fn alive(lock_key: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
         AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = {lock_key})"
    )
}

/// A replica of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its id (a fresh one each time a process joins).
    pub id: String,
    /// Where other replicas reach its API.
    pub url: String,
}

/// Who follows a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This replica.
    Me,
    /// Another replica, alive.
    Replica(Replica),
    /// Nobody alive: no owner row, or its replica died (claim it with
    /// [`Cluster::claim`]).
    Nobody,
}

/// This process's membership in the cluster. Dropping it (or the process dying) ends the
/// membership: its sandboxes become claimable at once.
#[derive(Debug)]
pub struct Cluster {
    pool: PgPool,
    me: Replica,
    lock_key: i64,
    /// The wake-ups' channel in this schema.
    channel: String,
    /// The session holding the presence lock and the job locks.
    presence: Mutex<PgConnection>,
    /// Jobs whose lock this replica holds (a session lock is held until the session ends;
    /// asking again would only stack it).
    leading: std::sync::Mutex<HashSet<String>>,
    /// Set by [`leave`](Self::leave): it leads nothing any more.
    left: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Joins the cluster of `store`'s database as a new replica reachable at `url` (where
    /// other replicas forward requests for its sandboxes).
    pub async fn join(store: &PgStore, url: &str) -> Result<Cluster> {
        let pool = store.pool().clone();
        let mut presence = PgConnection::connect_with(&pool.connect_options()).await?;
        let id = Uuid::new_v4().to_string();
        // A positive 62-bit key: unique among live replicas (checked by taking it), and
        // composed back from `pg_locks`' two unsigned halves without sign trouble.
        let mut lock_key = 0;
        for _ in 0..8 {
            let candidate = (Uuid::new_v4().as_u128() as i64) & 0x3fff_ffff_ffff_ffff;
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(candidate)
                .fetch_one(&mut presence)
                .await?;
            if taken && candidate != 0 {
                lock_key = candidate;
                break;
            }
        }
        if lock_key == 0 {
            return Err(StoreError::Conflict(
                "could not take a presence lock for this replica".into(),
            ));
        }
        // Channel names are at most 63 bytes: the schema goes in as its digest.
        let schema: String = sqlx::query_scalar("SELECT md5(current_schema())")
            .fetch_one(&mut presence)
            .await?;
        let channel = format!("{EVENTS_CHANNEL}_{schema}");
        sqlx::query("INSERT INTO courier_replicas (id, url, lock_key) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(url)
            .bind(lock_key)
            .execute(&mut presence)
            .await?;
        // Each process start adds a row; the rows of replicas that are gone go here, so
        // the table holds about as many rows as replicas run. A replica takes its lock
        // before it writes its row, so a row whose lock is free can only be a dead one's;
        // owner rows left naming it count as dead owners (`claim_orphans`).
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM courier_replicas r WHERE NOT {}",
            alive("r.lock_key")
        )))
        .execute(&mut presence)
        .await?;
        Ok(Cluster {
            pool,
            me: Replica {
                id,
                url: url.to_owned(),
            },
            lock_key,
            channel,
            presence: Mutex::new(presence),
            leading: std::sync::Mutex::default(),
            left: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// This replica.
    pub fn me(&self) -> &Replica {
        &self.me
    }

    /// Fails when this replica's presence session is gone: its lock is released, other
    /// replicas may have claimed its sandboxes, and it must stop acting as their owner.
    pub async fn check_presence(&self) -> Result<()> {
        let mut presence = self.presence.lock().await;
        let held: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {}",
            alive(&self.lock_key.to_string())
        )))
        .fetch_one(&mut *presence)
        .await?;
        if held {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "this replica's presence lock is no longer held".into(),
            ))
        }
    }

    /// The replicas alive now (this one included).
    pub async fn live_replicas(&self) -> Result<Vec<Replica>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, url FROM courier_replicas r WHERE {} ORDER BY started_at, id",
            alive("r.lock_key")
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Replica {
                    id: row.try_get("id")?,
                    url: row.try_get("url")?,
                })
            })
            .collect()
    }

    /// Records this replica as the owner of a sandbox it just recorded. A sandbox that
    /// already has an owner keeps it.
    pub async fn own(&self, sandbox: SandboxId) -> Result<()> {
        sqlx::query(
            "INSERT INTO sandbox_owners (sandbox_id, replica_id) VALUES ($1, $2) \
             ON CONFLICT (sandbox_id) DO NOTHING",
        )
        .bind(sandbox.as_uuid())
        .bind(&self.me.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Who follows `sandbox` now.
    pub async fn owner(&self, sandbox: SandboxId) -> Result<Owner> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT r.id, r.url, {} AS alive FROM sandbox_owners o \
             JOIN courier_replicas r ON r.id = o.replica_id WHERE o.sandbox_id = $1",
            alive("r.lock_key")
        )))
        .bind(sandbox.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Owner::Nobody);
        };
        let replica = Replica {
            id: row.try_get("id")?,
            url: row.try_get("url")?,
        };
        Ok(match row.try_get::<bool, _>("alive")? {
            true if replica.id == self.me.id => Owner::Me,
            true => Owner::Replica(replica),
            false => Owner::Nobody,
        })
    }

    /// The live sandboxes this replica owns.
    pub async fn owned(&self) -> Result<HashSet<SandboxId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT o.sandbox_id FROM sandbox_owners o JOIN sandboxes s ON s.id = o.sandbox_id \
             WHERE o.replica_id = $1 AND s.status IN {LIVE}"
        )))
        .bind(&self.me.id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(SandboxId::from_uuid).collect())
    }

    /// Claims every live sandbox whose owner is not alive, and every live sandbox without
    /// an owner that was recorded more than `grace` ago; returns them. Racing replicas
    /// each get a disjoint share.
    pub async fn claim_orphans(&self, grace: Duration) -> Result<Vec<SandboxId>> {
        let mut tx = self.pool.begin().await?;
        let mut claimed: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE sandbox_owners o SET replica_id = $1, claimed_at = now() \
             FROM sandboxes s, courier_replicas r \
             WHERE s.id = o.sandbox_id AND r.id = o.replica_id AND s.status IN {LIVE} \
             AND o.replica_id <> $1 AND NOT {} RETURNING o.sandbox_id",
            alive("r.lock_key")
        )))
        .bind(&self.me.id)
        .fetch_all(&mut *tx)
        .await?;
        // Owner rows naming a replica row that is gone count as dead too.
        let dangling: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE sandbox_owners o SET replica_id = $1, claimed_at = now() FROM sandboxes s \
             WHERE s.id = o.sandbox_id AND s.status IN {LIVE} AND o.replica_id <> $1 \
             AND NOT EXISTS (SELECT 1 FROM courier_replicas r WHERE r.id = o.replica_id) \
             RETURNING o.sandbox_id"
        )))
        .bind(&self.me.id)
        .fetch_all(&mut *tx)
        .await?;
        claimed.extend(dangling);
        // Sandboxes store their times as epoch microseconds.
        let grace_us = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let ownerless: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO sandbox_owners (sandbox_id, replica_id) \
             SELECT s.id, $1 FROM sandboxes s WHERE s.status IN {LIVE} \
             AND s.created_at < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - $2 \
             AND NOT EXISTS (SELECT 1 FROM sandbox_owners o WHERE o.sandbox_id = s.id) \
             ON CONFLICT (sandbox_id) DO NOTHING RETURNING sandbox_id"
        )))
        .bind(&self.me.id)
        .bind(grace_us)
        .fetch_all(&mut *tx)
        .await?;
        claimed.extend(ownerless);
        tx.commit().await?;
        Ok(claimed.into_iter().map(SandboxId::from_uuid).collect())
    }

    /// Claims one sandbox if nobody alive owns it; whether this replica owns it now.
    pub async fn claim(&self, sandbox: SandboxId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE sandbox_owners o SET replica_id = $1, claimed_at = now() \
             WHERE o.sandbox_id = $2 AND o.replica_id <> $1 AND NOT EXISTS \
             (SELECT 1 FROM courier_replicas r WHERE r.id = o.replica_id AND {})",
            alive("r.lock_key")
        )))
        .bind(&self.me.id)
        .bind(sandbox.as_uuid())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sandbox_owners (sandbox_id, replica_id) VALUES ($1, $2) \
             ON CONFLICT (sandbox_id) DO NOTHING",
        )
        .bind(sandbox.as_uuid())
        .bind(&self.me.id)
        .execute(&mut *tx)
        .await?;
        let owner: String =
            sqlx::query_scalar("SELECT replica_id FROM sandbox_owners WHERE sandbox_id = $1")
                .bind(sandbox.as_uuid())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(owner == self.me.id)
    }

    /// Claims the pieces of work in `jobs` (workflow runs, work chains, issue sessions,
    /// each named by the caller, e.g. `run:<id>`) that no live replica drives, and
    /// returns every one of them this replica owns now (claimed before included). Racing
    /// replicas never both get one: a replica drives only what this returns, so a piece
    /// of work is driven once, and is taken over when its replica dies.
    pub async fn claim_work(&self, jobs: &[String]) -> Result<HashSet<String>> {
        // One order for every claimer, so two claims of overlapping work lock its rows in
        // the same order and cannot deadlock.
        let mut jobs = jobs.to_vec();
        jobs.sort();
        jobs.dedup();
        if jobs.is_empty() {
            return Ok(HashSet::new());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO work_owners (job, replica_id) SELECT j, $1 FROM unnest($2::text[]) AS j \
             ON CONFLICT (job) DO UPDATE SET replica_id = EXCLUDED.replica_id, claimed_at = now() \
             WHERE work_owners.replica_id <> EXCLUDED.replica_id AND NOT EXISTS \
             (SELECT 1 FROM courier_replicas r WHERE r.id = work_owners.replica_id AND {})",
            alive("r.lock_key")
        )))
        .bind(&self.me.id)
        .bind(&jobs)
        .execute(&mut *tx)
        .await?;
        let mine: Vec<String> = sqlx::query_scalar(
            "SELECT job FROM work_owners WHERE replica_id = $1 AND job = ANY($2::text[])",
        )
        .bind(&self.me.id)
        .bind(&jobs)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(mine.into_iter().collect())
    }

    /// Whether this replica runs the singleton job `job` (e.g. `"merge-poller"`): true
    /// for exactly one live replica at a time, from the first call that gets the job's
    /// lock until this replica dies.
    pub async fn lead(&self, job: &str) -> Result<bool> {
        if self.left.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(false);
        }
        if self
            .leading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(job)
        {
            return Ok(true);
        }
        let mut presence = self.presence.lock().await;
        // Keyed by the schema too, so clusters in separate schemas of one database (tests)
        // do not share jobs.
        let taken: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':job:' || $1, 0))",
        )
        .bind(job)
        .fetch_one(&mut *presence)
        .await?;
        if taken {
            self.leading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.to_owned());
        }
        Ok(taken)
    }

    /// Tells every replica that these sandboxes have new events in the store.
    pub async fn notify(&self, sandboxes: &[SandboxId]) -> Result<()> {
        for batch in sandboxes.chunks(NOTIFY_BATCH) {
            let payload = batch
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Starts receiving the wake-ups every replica sends with [`notify`](Self::notify).
    pub async fn wakeups(&self) -> Result<Wakeups> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.channel).await?;
        Ok(Wakeups { listener })
    }

    /// Leaves the cluster now (a graceful stop): the presence lock and every job lock are
    /// released, so other replicas take this one's sandboxes over at once. The membership
    /// is over: [`check_presence`](Self::check_presence) fails from now on.
    pub async fn leave(&self) {
        self.left.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut presence = self.presence.lock().await;
        // Errors do not matter: the session's end releases the locks anyway.
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut *presence)
            .await;
        self.leading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Wake-ups from [`Cluster::notify`], this replica's own included.
#[derive(Debug)]
pub struct Wakeups {
    listener: PgListener,
}

impl Wakeups {
    /// The sandboxes of the next wake-up; `None` once the store is closing. After a lost
    /// connection the listener connects again by itself; notifications sent meanwhile are
    /// lost (readers poll as well).
    pub async fn next(&mut self) -> Result<Option<Vec<SandboxId>>> {
        let notification = match self.listener.recv().await {
            Ok(notification) => notification,
            Err(sqlx::Error::PoolClosed) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(
            notification
                .payload()
                .split(',')
                .filter_map(|id| id.parse().ok())
                .collect(),
        ))
    }
}
