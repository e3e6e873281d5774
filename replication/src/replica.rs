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

use std::sync::Arc;
use std::time::Duration;

use engine::shard::Shard;
use protocol::cluster::NodeId;
use protocol::error::{Error, Result};
use protocol::message::{Request, Response, StreamItem};
use protocol::rpc::Pool;

/// Follows `upstream` for `shard` until the task is aborted.
pub async fn follow(shard: Arc<Shard>, me: NodeId, upstream: String, pool: Pool) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match follow_once(&shard, me, &upstream, &pool).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::debug!(shard = shard.id, %upstream, "replication stream ended: {e}");
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn follow_once(shard: &Arc<Shard>, me: NodeId, upstream: &str, pool: &Pool) -> Result<()> {
    let client = pool.get(upstream).await?;
    let from_lsn = shard.lsn();
    let mut stream = client
        .stream(
            Request::Subscribe {
                shard: shard.id,
                from_lsn,
                subscriber: me,
            },
            8,
        )
        .await?;
    let mut loading: Option<SnapshotJob> = None;
    while let Some(resp) = stream.recv().await {
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
            StreamItem::Changes(records) => {
                let s = shard.clone();
                let lsn = tokio::task::spawn_blocking(move || s.apply(&records))
                    .await
                    .map_err(|e| Error::internal(format!("apply task failed: {e}")))??;
                // Best effort: the upstream uses it only to judge how far replicas are.
                let _ = client
                    .call(Request::ReportApplied {
                        shard: shard.id,
                        subscriber: me,
                        lsn,
                    })
                    .await;
            }
            StreamItem::SnapshotBegin { lsn, tables } => {
                tracing::info!(shard = shard.id, lsn, "installing snapshot from {upstream}");
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
