//! The replica side of a shard: follow an upstream's change log and apply it.
//!
//! ```text
//!  loop: connect upstream ─► Subscribe{from = local lsn}
//!          ├─ SnapshotBegin/Rows/End ─► replace local contents in one redb transaction
//!          └─ Changes[records]       ─► Shard::apply (records + lsn in one transaction)
//!        on any error or disconnect: back off, resubscribe from the durable lsn
//! ```
//! Because the applied LSN is stored in the same redb transaction as the rows, a replica that
//! crashes resumes exactly where its data stands: nothing applied twice, nothing skipped.
//! That holds for writes that skip the fsync too (a crash takes records and LSN back
//! together), so batches are applied without one and synced every `SYNC_EVERY` under load,
//! or once the stream goes quiet: one fsync per 50 ms instead of one per primary commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::shard::Shard;
use protocol::cluster::NodeId;
use protocol::error::{Error, Result};
use protocol::message::{Request, Response, StreamItem};
use protocol::rpc::Pool;

/// The most change records applied in one write when several batches are waiting.
const APPLY_MAX_RECORDS: usize = 4096;

/// Applied records are synced at least this often while changes keep coming...
const SYNC_EVERY: Duration = Duration::from_millis(50);
/// ...and as soon as the stream has been quiet this long.
const SYNC_WHEN_IDLE: Duration = Duration::from_millis(5);

/// Which shard's log a copy follows: its own, or, while it is being split off another
/// shard, that shard's (as long as that shard's epoch is `split_epoch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub shard: protocol::cluster::ShardId,
    pub split_epoch: Option<u64>,
}

impl Source {
    pub fn own(shard: protocol::cluster::ShardId) -> Source {
        Source {
            shard,
            split_epoch: None,
        }
    }
}

/// Follows `upstream`'s copy of `source` into `shard` until the task is aborted.
pub async fn follow(shard: Arc<Shard>, source: Source, me: NodeId, upstream: String, pool: Pool) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match follow_once(&shard, source, me, &upstream, &pool).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::debug!(shard = shard.id, %upstream, "replication stream ended: {e}");
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        // The upstream may be gone for good: what this copy holds must survive it.
        sync(&shard).await;
        tokio::time::sleep(backoff).await;
    }
}

async fn follow_once(
    shard: &Arc<Shard>,
    source: Source,
    me: NodeId,
    upstream: &str,
    pool: &Pool,
) -> Result<()> {
    let client = pool.get(upstream).await?;
    let from_lsn = shard.lsn();
    let mut stream = client
        .stream(
            Request::Subscribe {
                shard: source.shard,
                from_lsn,
                subscriber: me,
                split_epoch: source.split_epoch,
            },
            8,
        )
        .await?;
    let mut loading: Option<SnapshotJob> = None;
    // A message read ahead while gathering change batches, handled next.
    let mut ahead: Option<Response> = None;
    let mut synced = Instant::now();
    loop {
        let resp = match ahead.take() {
            Some(resp) => resp,
            // Not while a snapshot is being installed: its job holds the shard's writer.
            None if shard.unflushed() && loading.is_none() => {
                match tokio::time::timeout(SYNC_WHEN_IDLE, stream.recv()).await {
                    Ok(Some(resp)) => resp,
                    Ok(None) => break,
                    Err(_quiet) => {
                        sync(shard).await;
                        synced = Instant::now();
                        continue;
                    }
                }
            }
            None => match stream.recv().await {
                Some(resp) => resp,
                None => break,
            },
        };
        let item = match resp {
            Response::Stream(item) => item,
            Response::End => return Ok(()),
            Response::Error(e) => return Err(e),
            other => {
                return Err(Error::protocol(format!(
                    "unexpected subscription message {other:?}"
                )));
            }
        };
        match item {
            StreamItem::Changes(mut records) => {
                // Batches that arrived while the last one was applied go into the same
                // write: one fsync for all of them, so a replica keeps up with a primary
                // whose commits it would otherwise sync one by one.
                while records.len() < APPLY_MAX_RECORDS {
                    match stream.try_recv() {
                        Ok(Response::Stream(StreamItem::Changes(more))) => records.extend(more),
                        Ok(other) => {
                            ahead = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // A move's checksum holds applying at one LSN for a moment: apply up to it,
                // keep the rest until the hold is lifted (the stream waits meanwhile).
                while let Some(limit) = shard.apply_limit() {
                    let cut = records.partition_point(|r| r.lsn <= limit);
                    if cut == records.len() {
                        break;
                    }
                    if cut > 0 {
                        let head: Vec<_> = records.drain(..cut).collect();
                        let s = shard.clone();
                        tokio::task::spawn_blocking(move || s.apply(&head, false))
                            .await
                            .map_err(|e| Error::internal(format!("apply task failed: {e}")))??;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let s = shard.clone();
                let durable = synced.elapsed() >= SYNC_EVERY;
                if durable {
                    synced = Instant::now();
                }
                tokio::task::spawn_blocking(move || s.apply(&records, durable))
                    .await
                    .map_err(|e| Error::internal(format!("apply task failed: {e}")))??;
            }
            StreamItem::SnapshotBegin { lsn, tables } => {
                tracing::info!(shard = shard.id, lsn, "installing snapshot from {upstream}");
                // The install's write transaction would keep a sync waiting until it ends.
                sync(shard).await;
                loading = Some(SnapshotJob::start(shard.clone(), tables));
            }
            StreamItem::SnapshotRows { table, rows } => {
                let job = loading
                    .as_mut()
                    .ok_or_else(|| Error::protocol("snapshot rows without begin"))?;
                job.send(SnapshotPart::Rows(table, rows)).await?;
            }
            StreamItem::SnapshotEnd { lsn } => {
                let job = loading
                    .take()
                    .ok_or_else(|| Error::protocol("snapshot end without begin"))?;
                job.finish(lsn).await?;
            }
        }
    }
    Err(Error::connection("replication stream closed"))
}

/// Makes what the copy applied durable (best effort: a failure leaves it to the next try,
/// and a crash meanwhile only takes the copy back to an earlier LSN).
async fn sync(shard: &Arc<Shard>) {
    if !shard.unflushed() {
        return;
    }
    let s = shard.clone();
    let synced = tokio::task::spawn_blocking(move || s.flush())
        .await
        .unwrap_or_else(|e| Err(Error::internal(e.to_string())));
    if let Err(e) = synced {
        tracing::warn!(shard = shard.id, "syncing applied changes failed: {e}");
    }
}

enum SnapshotPart {
    Rows(String, Vec<(Vec<u8>, Vec<u8>)>),
    End(u64),
}

/// A snapshot install running on a blocking thread (it holds one redb write transaction).
struct SnapshotJob {
    tx: tokio::sync::mpsc::Sender<SnapshotPart>,
    done: tokio::task::JoinHandle<Result<()>>,
}

impl SnapshotJob {
    fn start(shard: Arc<Shard>, tables: Vec<protocol::schema::TableSchema>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SnapshotPart>(4);
        let done = tokio::task::spawn_blocking(move || {
            let mut load = shard.begin_snapshot(&tables)?;
            while let Some(part) = rx.blocking_recv() {
                match part {
                    SnapshotPart::Rows(table, rows) => load.rows(&table, &rows)?,
                    SnapshotPart::End(lsn) => return load.finish(lsn),
                }
            }
            // Dropping the load aborts its transaction: the old contents stay.
            Err(Error::connection("snapshot stream ended early"))
        });
        SnapshotJob { tx, done }
    }

    async fn send(&self, part: SnapshotPart) -> Result<()> {
        if self.tx.send(part).await.is_err() {
            return Err(Error::internal("snapshot install failed"));
        }
        Ok(())
    }

    async fn finish(self, lsn: u64) -> Result<()> {
        let _ = self.tx.send(SnapshotPart::End(lsn)).await;
        drop(self.tx);
        self.done
            .await
            .map_err(|e| Error::internal(format!("snapshot task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use engine::node::NodeService;
    use engine::shard::{Shard, ShardOptions};
    use protocol::auth::ClusterSecret;
    use protocol::clock::{Hlc, SystemClock};
    use protocol::rpc::Pool;

    use super::follow;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Dir(std::env::temp_dir().join(format!(
            "tessera-replica-{name}-{}-{nanos}",
            std::process::id()
        )))
    }

    fn run(shard: &Shard, sql: &str) {
        for stmt in engine::sql::parse(sql).unwrap() {
            shard.execute(&stmt, &[]).unwrap();
        }
    }

    async fn wait_equal(primary: &Shard, replica: &Shard) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if primary.checksum().unwrap() == replica.checksum().unwrap() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica did not converge: {:?} vs {:?}",
                primary.stats(),
                replica.stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A replica streams the log while it reaches back far enough, and gets a snapshot when
    /// the primary has trimmed the records it needs — both on first contact and after it was
    /// away while the primary moved on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replica_catches_up_by_log_and_by_snapshot() {
        let d = dir("snap");
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let opts = ShardOptions {
            log_retain: 5,
            log_retain_bytes: 64 << 20,
            sync_commits: false,
            ..ShardOptions::default()
        };
        let node =
            Arc::new(NodeService::new(1, d.0.join("primary"), hlc.clone(), opts.clone()).unwrap());
        let primary = node.host(0, true, 1, false, false).unwrap();
        let listener = protocol::net::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let secret = ClusterSecret::new("s");
        let server = tokio::spawn(protocol::rpc::serve(listener, secret.clone(), node.clone()));

        run(&primary, "CREATE TABLE t (k int PRIMARY KEY, v text)");
        for i in 0..20 {
            run(&primary, &format!("INSERT INTO t VALUES ({i}, 'v{i}')"));
        }
        assert!(
            primary.stats().unwrap().log_start > 1,
            "the log was trimmed"
        );

        std::fs::create_dir_all(d.0.join("replica")).unwrap();
        let replica = Arc::new(
            Shard::open(
                &d.0.join("replica/shard-0.redb"),
                0,
                2,
                hlc.clone(),
                opts.clone(),
            )
            .unwrap(),
        );
        let pool = Pool::new(secret.clone());
        let task = tokio::spawn(follow(
            replica.clone(),
            super::Source::own(0),
            2,
            addr.clone(),
            pool.clone(),
        ));
        wait_equal(&primary, &replica).await;
        assert_eq!(replica.lsn(), primary.lsn());

        // Streaming: new commits arrive without a new snapshot.
        run(&primary, "UPDATE t SET v = 'x' WHERE k < 3");
        run(&primary, "DELETE FROM t WHERE k = 19");
        wait_equal(&primary, &replica).await;

        // A hold stops applying at its LSN while the primary goes on; lifting it catches up.
        let held = replica.lsn();
        replica.hold_apply(Some(held));
        run(&primary, "INSERT INTO t VALUES (50, 'held')");
        run(&primary, "INSERT INTO t VALUES (51, 'held')");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(replica.lsn(), held, "nothing applied past the hold");
        replica.hold_apply(Some(held + 1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while replica.lsn() != held + 1 {
            assert!(tokio::time::Instant::now() < deadline, "hold moved forward");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            replica.lsn(),
            held + 1,
            "applied exactly up to the new hold"
        );
        replica.hold_apply(None);
        wait_equal(&primary, &replica).await;

        // Away while the primary writes past its retention: resumes through a snapshot.
        task.abort();
        for i in 100..130 {
            run(&primary, &format!("INSERT INTO t VALUES ({i}, 'w')"));
        }
        run(&primary, "CREATE TABLE u (k bigint PRIMARY KEY)");
        run(&primary, "INSERT INTO u VALUES (1), (2)");
        let task = tokio::spawn(follow(
            replica.clone(),
            super::Source::own(0),
            2,
            addr,
            pool,
        ));
        wait_equal(&primary, &replica).await;
        assert_eq!(replica.stats().unwrap().rows, primary.stats().unwrap().rows);
        assert_eq!(replica.lsn(), primary.lsn());
        task.abort();
        server.abort();
    }

    /// Applying is idempotent and refuses gaps: a replica never skips a record.
    #[test]
    fn apply_skips_duplicates_and_refuses_gaps() {
        let d = dir("apply");
        std::fs::create_dir_all(&d.0).unwrap();
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let p = Shard::open(
            &d.0.join("p.redb"),
            0,
            1,
            hlc.clone(),
            ShardOptions::default(),
        )
        .unwrap();
        let r = Shard::open(&d.0.join("r.redb"), 0, 2, hlc, ShardOptions::default()).unwrap();
        run(&p, "CREATE TABLE t (k int PRIMARY KEY)");
        run(&p, "INSERT INTO t VALUES (1)");
        run(&p, "INSERT INTO t VALUES (2)");
        let log = p.snapshot().unwrap().changes_after(0, 100).unwrap();
        assert_eq!(log.len(), 3);
        assert!(r.apply(&log[2..], true).is_err(), "a gap is refused");
        assert_eq!(r.apply(&log[..2], true).unwrap(), 2);
        assert_eq!(
            r.apply(&log, true).unwrap(),
            3,
            "records already applied are skipped"
        );
        assert_eq!(p.checksum().unwrap(), r.checksum().unwrap());
    }

    /// Records applied without an fsync are visible at once, but the copy reports (to a
    /// move's switch) only the position that would survive a crash, until it syncs.
    #[test]
    fn unsynced_applies_report_the_durable_position_until_flushed() {
        let d = dir("unsynced");
        std::fs::create_dir_all(&d.0).unwrap();
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let opts = ShardOptions::default;
        let p = Shard::open(&d.0.join("p.redb"), 0, 1, hlc.clone(), opts()).unwrap();
        let r = Shard::open(&d.0.join("r.redb"), 0, 2, hlc, opts()).unwrap();
        run(&p, "CREATE TABLE t (k int PRIMARY KEY)");
        run(&p, "INSERT INTO t VALUES (1)");
        run(&p, "INSERT INTO t VALUES (2)");
        let log = p.snapshot().unwrap().changes_after(0, 100).unwrap();
        assert_eq!(r.apply(&log[..1], true).unwrap(), 1);
        assert!(!r.unflushed());
        assert_eq!(r.apply(&log[1..2], false).unwrap(), 2);
        assert!(r.unflushed());
        let durable = |r: &Shard| r.stats().unwrap().durable_lsn;
        assert_eq!(r.stats().unwrap().lsn, 2, "applied");
        assert_eq!(durable(&r), 1, "only LSN 1 is on disk");
        // Nothing new to apply, but synced: what came before is now durable.
        assert_eq!(r.apply(&log[..2], true).unwrap(), 2);
        assert!(!r.unflushed());
        assert_eq!(durable(&r), 2);
        assert_eq!(r.apply(&log[2..], false).unwrap(), 3);
        assert_eq!(r.lsn(), 3, "applied and visible");
        assert_eq!(r.stats().unwrap().rows, 2);
        assert_eq!(durable(&r), 2);
        r.flush().unwrap();
        assert!(!r.unflushed());
        assert_eq!(durable(&r), 3);
    }
}
