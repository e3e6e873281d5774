//! `tessera admin add-node | drain-node | remove-node | rebalance | split | jobs`: the operator's
//! commands that change placement. They plan through `replication::operations` (the same
//! code behind the `tessera.*()` SQL functions), queue moves as jobs in meta, and then follow
//! the jobs with one progress bar per move until they end.
//!
//! ```text
//!  shard 3  node 1 -> node 3  [#########-----]  6120/9800 rows  2.1 MiB  lag 12  copying
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use protocol::auth::ClusterSecret;
use protocol::jobs::{JobId, JobPhase, MoveJob};
use replication::meta::MetaClient;
use replication::operations;

/// How to reach meta.
#[derive(Args, Clone)]
pub struct MetaConn {
    /// Meta voter addresses (comma separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub meta: Vec<String>,
    /// Cluster secret (or TESSERA_SECRET).
    #[arg(long, env = "TESSERA_SECRET", hide_env_values = true)]
    pub secret: String,
}

#[derive(Subcommand)]
pub enum PlacementCommand {
    /// Register a node by id and internal address (nodes also register themselves on start).
    AddNode {
        #[arg(long)]
        id: u64,
        /// The node's internal-protocol address, host:port.
        #[arg(long)]
        addr: String,
        #[command(flatten)]
        conn: MetaConn,
    },
    /// Move every shard copy off a node (before removing it), while clients keep working.
    DrainNode {
        /// The node to empty.
        node: u64,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Queue the moves and return without following them.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: MetaConn,
    },
    /// Create a keyspace: its own shard count, copies per shard and, with --nodes, its own
    /// machines (federation). Tables join it with CREATE TABLE … WITH (keyspace = 'NAME').
    CreateKeyspace {
        name: String,
        #[arg(long, default_value_t = 4)]
        shards: u32,
        #[arg(long, default_value_t = 2)]
        replicas: u32,
        /// Node ids its shards may use (comma separated); default: any node.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<u64>,
        #[command(flatten)]
        conn: MetaConn,
    },
    /// Forget a node that holds no shard copy any more.
    RemoveNode {
        node: u64,
        #[command(flatten)]
        conn: MetaConn,
    },
    /// Plan moves that even out shard copies (and bytes) per node, print the plan, run it.
    Rebalance {
        /// Only this keyspace's shards.
        #[arg(long)]
        keyspace: Option<String>,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Queue the moves and return without following them.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: MetaConn,
    },
    /// Split a shard's hash range in two online: a new shard takes the upper half.
    Split {
        /// The shard to split.
        #[arg(long)]
        shard: u32,
        /// The node for the new shard's primary (default: the one holding the fewest copies).
        #[arg(long)]
        to: Option<u64>,
        /// Queue the split and return without following it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: MetaConn,
    },
    /// Roll a running move or split back (a split already trimming finishes instead).
    Cancel {
        /// The job id (see `tessera admin status`).
        job: u64,
        #[command(flatten)]
        conn: MetaConn,
    },
    /// Follow the running moves with progress bars until they end.
    Jobs {
        #[command(flatten)]
        conn: MetaConn,
    },
}

pub async fn run(cmd: PlacementCommand) -> Result<()> {
    match cmd {
        PlacementCommand::AddNode { id, addr, conn } => {
            let meta = connect(&conn).await?;
            operations::add_node(&meta, id, &addr).await?;
            println!("node {id} registered at {addr}");
            println!("run `tessera admin rebalance` to move shard copies onto it");
            Ok(())
        }
        PlacementCommand::CreateKeyspace {
            name,
            shards,
            replicas,
            mut nodes,
            conn,
        } => {
            let meta = connect(&conn).await?;
            nodes.sort_unstable();
            nodes.dedup();
            operations::create_keyspace(
                &meta,
                protocol::cluster::KeyspaceInfo {
                    name: name.clone(),
                    shard_count: shards,
                    replication_factor: replicas,
                    nodes,
                },
                false,
            )
            .await?;
            let state = meta.state();
            println!("keyspace {name} created:");
            for s in state.keyspace_shards(&name) {
                println!(
                    "  shard {} primary node {} replicas {:?}",
                    s.id, s.primary, s.replicas
                );
            }
            Ok(())
        }
        PlacementCommand::RemoveNode { node, conn } => {
            let meta = connect(&conn).await?;
            operations::remove_node(&meta, node).await?;
            println!("node {node} removed");
            Ok(())
        }
        PlacementCommand::DrainNode {
            node,
            dry_run,
            no_wait,
            conn,
        } => {
            let meta = connect(&conn).await?;
            let pool = protocol::rpc::Pool::new(ClusterSecret::new(conn.secret.clone()));
            let moves = operations::drain_node(&meta, &pool, node, dry_run).await?;
            show_and_follow(&meta, &moves, dry_run, no_wait).await
        }
        PlacementCommand::Rebalance {
            keyspace,
            dry_run,
            no_wait,
            conn,
        } => {
            let meta = connect(&conn).await?;
            let pool = protocol::rpc::Pool::new(ClusterSecret::new(conn.secret.clone()));
            let moves = operations::rebalance(&meta, &pool, keyspace.as_deref(), dry_run).await?;
            show_and_follow(&meta, &moves, dry_run, no_wait).await
        }
        PlacementCommand::Split {
            shard,
            to,
            no_wait,
            conn,
        } => {
            let meta = connect(&conn).await?;
            let job = operations::split(&meta, shard, to).await?;
            show_and_follow(&meta, std::slice::from_ref(&job), false, no_wait).await
        }
        PlacementCommand::Cancel { job, conn } => {
            let meta = connect(&conn).await?;
            operations::cancel_job(&meta, job).await?;
            println!("job {job} will roll back");
            follow(&meta, [job].into()).await
        }
        PlacementCommand::Jobs { conn } => {
            let meta = connect(&conn).await?;
            let ids = meta
                .state()
                .jobs
                .values()
                .filter(|j| j.phase.is_active())
                .map(|j| j.id)
                .collect();
            follow(&meta, ids).await
        }
    }
}

async fn connect(conn: &MetaConn) -> Result<MetaClient> {
    let meta = MetaClient::connect(conn.meta.clone(), ClusterSecret::new(conn.secret.clone()))
        .await
        .context("connecting to meta")?;
    if meta.state().version == 0 {
        bail!("meta has no cluster map yet");
    }
    Ok(meta)
}

/// Prints the plan, then (unless it was only a plan, or the caller does not wait) follows
/// the queued jobs to their end.
async fn show_and_follow(
    meta: &MetaClient,
    moves: &[MoveJob],
    dry_run: bool,
    no_wait: bool,
) -> Result<()> {
    print_plan(meta, moves, dry_run);
    if dry_run || no_wait {
        return Ok(());
    }
    follow(meta, moves.iter().map(|m| m.id).collect()).await
}

fn print_plan(meta: &MetaClient, moves: &[MoveJob], dry_run: bool) {
    let state = meta.state();
    if moves.is_empty() {
        println!("balanced: nothing to move");
        return;
    }
    println!(
        "{} {} move(s):",
        if dry_run { "plan:" } else { "queued" },
        moves.len()
    );
    for m in moves {
        let text = operations::describe(m, &state);
        if dry_run {
            println!("  {text}");
        } else {
            println!("  job {:<4} {text}", m.id);
        }
    }
}

/// Shows a progress bar per job until every job in `ids` has ended, then a summary.
async fn follow(meta: &MetaClient, ids: BTreeSet<JobId>) -> Result<()> {
    if ids.is_empty() {
        println!("no moves running");
        return Ok(());
    }
    let started = Instant::now();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} rows  {msg}")
        .map(|s| s.progress_chars("#>-"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut shown: std::collections::BTreeMap<JobId, ProgressBar> = Default::default();
    let mut rx = meta.subscribe();
    loop {
        let state = rx.borrow_and_update().clone();
        let jobs: Vec<&MoveJob> = ids.iter().filter_map(|id| state.jobs.get(id)).collect();
        for job in &jobs {
            let bar = shown.entry(job.id).or_insert_with(|| {
                let b = bars.add(ProgressBar::new(1));
                b.set_style(style.clone());
                b.set_prefix(format!(
                    "shard {} node {} -> node {}",
                    job.shard, job.from, job.to
                ));
                b
            });
            let p = &job.progress;
            if bar.is_finished() {
                continue;
            }
            bar.set_length(p.rows_total.max(1));
            bar.set_position(p.rows_copied.min(p.rows_total.max(1)));
            let msg = match job.phase {
                JobPhase::Queued => "queued".to_string(),
                JobPhase::Copying => format!(
                    "{:.1}/{:.1} MiB  lag {}  copying{}",
                    mib(p.bytes_copied),
                    mib(p.bytes_total),
                    p.lag,
                    if p.attempts > 0 {
                        format!(" (switch attempt {})", p.attempts + 1)
                    } else {
                        String::new()
                    }
                ),
                JobPhase::Frozen => format!("lag {}  switching (writes held)", p.lag),
                JobPhase::Trimming => "trimming both halves (statements held)".to_string(),
                JobPhase::Done => format!("done, writes paused {} ms", p.pause_ms),
                JobPhase::RolledBack => format!(
                    "rolled back: {}",
                    job.error.as_deref().unwrap_or("cancelled")
                ),
            };
            bar.set_message(msg);
            if !job.phase.is_active() {
                bar.finish();
            }
        }
        if jobs.iter().all(|j| !j.phase.is_active()) {
            summary(&jobs, started.elapsed());
            return Ok(());
        }
        // Progress arrives with the map; the timer only keeps a quiet bar's clock honest.
        let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
    }
}

fn summary(jobs: &[&MoveJob], took: Duration) {
    let done: Vec<&&MoveJob> = jobs.iter().filter(|j| j.phase == JobPhase::Done).collect();
    let rolled_back = jobs.len() - done.len();
    let rows: u64 = done.iter().map(|j| j.progress.rows_total).sum();
    let bytes: u64 = done.iter().map(|j| j.progress.bytes_total).sum();
    let max_pause = done.iter().map(|j| j.progress.pause_ms).max().unwrap_or(0);
    println!(
        "\n{} moved, {} rolled back in {:.1} s: {} rows, {:.1} MiB copied; longest write pause {} ms",
        done.len(),
        rolled_back,
        took.as_secs_f64(),
        rows,
        mib(bytes),
        max_pause
    );
    for j in jobs.iter().filter(|j| j.phase == JobPhase::RolledBack) {
        println!(
            "  shard {} node {} -> node {} rolled back: {}",
            j.shard,
            j.from,
            j.to,
            j.error.as_deref().unwrap_or("cancelled")
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
