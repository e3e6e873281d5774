//! Online rebalance with real processes (1 meta + nodes + 1 router, 4 shards, 2 copies).
//!
//! `rebalance_and_drain_under_transfer_load`: 8 clients run cross-shard transfers
//! (`BEGIN; UPDATE lower id; UPDATE higher id; COMMIT` — a fixed lock order, so no deadlock
//! and no retry is ever expected) while a third node joins and `SELECT tessera.rebalance()`
//! moves shards onto it, then `SELECT tessera.drain_node(1)` empties node 1. Every client
//! error fails the test; afterwards every balance equals 1000 plus the acknowledged
//! transfers (nothing lost, nothing doubled), every copy of every shard has the same
//! checksum, node 1 holds no copy and no shard file, and the longest statement any client
//! waited — the write pause the moves caused — is printed.
//!
//! `moves_finish_or_roll_back_after_kill9`: a move is queued and at once one participant is
//! killed -9 (the source node, the target node, meta, the router), then restarted. The job
//! must end (done or rolled back), the table's contents must equal what they were before,
//! every shard's copies must agree, and no node may keep a file for a shard it does not hold.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, checksums_agree, connect, int, query_text, shard_checksums, within};
use protocol::cluster::MetaCommand;
use protocol::jobs::{JobPhase, MoveJob};
use tokio::time::Instant;
use tokio_postgres::Client;

const ACCOUNTS: i32 = 200;
const INITIAL: i64 = 1000;
const CLIENTS: usize = 8;
const STATEMENT_WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Load {
    /// (from, to, amount) of every acknowledged transfer.
    acked: Mutex<Vec<(i32, i32, i64)>>,
    errors: Mutex<Vec<String>>,
    retries: Mutex<u64>,
    /// The longest single statement, in microseconds, and when it ended.
    longest: Mutex<(u128, String)>,
    stop: AtomicBool,
}

/// Runs one statement, timing it; an error is (SQLSTATE or "", message).
async fn timed(client: &Client, sql: &str, load: &Load) -> Result<u64, (String, String)> {
    let started = Instant::now();
    let r = tokio::time::timeout(STATEMENT_WAIT, client.simple_query(sql)).await;
    let took = started.elapsed().as_micros();
    {
        let mut l = load.longest.lock().unwrap();
        if took > l.0 {
            *l = (took, sql.to_string());
        }
    }
    match r {
        Err(_) => Err((String::new(), format!("{sql}: timed out"))),
        Ok(Err(e)) => Err((
            e.as_db_error()
                .map(|d| d.code().code().to_string())
                .unwrap_or_default(),
            format!("{sql}: {e:?}"),
        )),
        Ok(Ok(msgs)) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .next_back()
            .unwrap_or(0)),
    }
}

/// Transfers until told to stop. With `retry_serialization`, a 40001 (a split re-planned
/// a statement of an open transaction) rolls the transfer back and tries it again; any other
/// error, or a 40001 without it, is recorded.
async fn worker(port: u16, seed: u64, load: Arc<Load>, retry_serialization: bool) {
    let client = connect(port, Duration::from_secs(15)).await;
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    while !load.stop.load(Ordering::SeqCst) {
        let a = next(ACCOUNTS as u64) as i32;
        let b = (a + 1 + next(ACCOUNTS as u64 - 1) as i32) % ACCOUNTS;
        let amount = 1 + next(50) as i64;
        let (first, second) = (a.min(b), a.max(b));
        let delta = |id: i32| if id == a { -amount } else { amount };
        let steps = [
            "BEGIN".to_string(),
            format!(
                "UPDATE accounts SET balance = balance + ({}) WHERE id = {first}",
                delta(first)
            ),
            format!(
                "UPDATE accounts SET balance = balance + ({}) WHERE id = {second}",
                delta(second)
            ),
            "COMMIT".to_string(),
        ];
        for sql in &steps {
            match timed(&client, sql, &load).await {
                Ok(n) if sql.starts_with("UPDATE") && n != 1 => {
                    load.errors
                        .lock()
                        .unwrap()
                        .push(format!("{sql} updated {n} rows"));
                    let _ = client.simple_query("ROLLBACK").await;
                    break;
                }
                Ok(_) => {
                    if sql == "COMMIT" {
                        load.acked.lock().unwrap().push((a, b, amount));
                    }
                }
                Err((code, e)) => {
                    if retry_serialization && code == "40001" {
                        *load.retries.lock().unwrap() += 1;
                    } else {
                        load.errors.lock().unwrap().push(e);
                    }
                    let _ = client.simple_query("ROLLBACK").await;
                    break;
                }
            }
        }
    }
}

/// `CLIENTS` transfer workers sharing one record of what they did.
fn start_load(
    port: u16,
    seed: u64,
    retry_serialization: bool,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let workers = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(worker(
                port,
                seed * (i as u64 + 1),
                load.clone(),
                retry_serialization,
            ))
        })
        .collect();
    (load, workers)
}

async fn create_accounts(client: &Client, accounts: i32) {
    client
        .simple_query("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        .await
        .expect("create accounts");
    let values: Vec<String> = (0..accounts).map(|i| format!("({i}, {INITIAL})")).collect();
    for chunk in values.chunks(1000) {
        client
            .simple_query(&format!("INSERT INTO accounts VALUES {}", chunk.join(",")))
            .await
            .expect("insert accounts");
    }
}

async fn balances(client: &Client) -> BTreeMap<i64, i64> {
    query_text(client, "SELECT id, balance FROM accounts")
        .await
        .expect("balances")
        .iter()
        .map(|r| (int(r, "id").unwrap(), int(r, "balance").unwrap()))
        .collect()
}

async fn sql_lines(client: &Client, sql: &str) -> Vec<String> {
    let rows = tokio::time::timeout(STATEMENT_WAIT, query_text(client, sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: timed out"))
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows.iter()
        .map(|r| r.values().next().cloned().flatten().unwrap_or_default())
        .collect()
}

/// Waits until every copy of every shard agrees (replicas catch up asynchronously).
async fn wait_copies_agree(cluster: &Cluster) {
    let meta = cluster.meta_client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sums = shard_checksums(&meta, &cluster.secret).await;
        if checksums_agree(&sums) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shard copies still differ: {sums:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the files in every node's data directory are exactly the shards the map
/// places there: a finished move leaves no orphaned copy.
async fn wait_no_orphans(cluster: &Cluster, nodes: &[u64]) {
    let meta = cluster.meta_client().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = meta.state();
        let mut wrong = Vec::new();
        for &n in nodes {
            let mut files: Vec<u32> = std::fs::read_dir(cluster.node_dir(n))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            let name = e.file_name().into_string().ok()?;
                            name.strip_prefix("shard-")?
                                .strip_suffix(".redb")?
                                .parse()
                                .ok()
                        })
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            let placed: Vec<u32> = state
                .shards
                .values()
                .filter(|s| s.placed_on(n))
                .map(|s| s.id)
                .collect();
            if files != placed {
                wrong.push(format!("node {n}: files {files:?}, placed {placed:?}"));
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "orphaned or missing copies: {wrong:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_and_drain_under_transfer_load() {
    let mut cluster = Cluster::start("rebalance").await;
    let admin = cluster.client().await;
    create_accounts(&admin, ACCOUNTS).await;

    let (load, workers) = start_load(cluster.router_port, 0x9E37_79B9, false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (baseline_us, _) = std::mem::take(&mut *load.longest.lock().unwrap());

    within(Duration::from_secs(120), "rebalance and drain", async {
        cluster.add_node(3).await;
        // Wait until the router's map lists the node.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sql_lines(&admin, "SELECT node FROM tessera.nodes")
            .await
            .contains(&"3".to_string())
        {
            assert!(Instant::now() < deadline, "node 3 never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let plan = sql_lines(&admin, "SELECT tessera.rebalance()").await;
        println!("rebalance queued:\n  {}", plan.join("\n  "));
        let waited = sql_lines(&admin, "SELECT tessera.wait_for_jobs(60)").await;
        println!("{}", waited.join("\n"));
        let moved: Vec<String> = sql_lines(
            &admin,
            "SELECT shard FROM tessera.jobs WHERE reason = 'rebalance' AND phase = 'done'",
        )
        .await;
        assert!(
            moved.len() * 2 >= common::SHARDS,
            "a rebalance onto an empty third node moves at least half the shards: {moved:?}"
        );
        let rolled_back = sql_lines(
            &admin,
            "SELECT error FROM tessera.jobs WHERE phase <> 'done'",
        )
        .await;
        assert!(rolled_back.is_empty(), "moves rolled back: {rolled_back:?}");

        let drain = sql_lines(&admin, "SELECT tessera.drain_node(1)").await;
        println!("drain queued:\n  {}", drain.join("\n  "));
        sql_lines(&admin, "SELECT tessera.wait_for_jobs(60)").await;
        let left = sql_lines(
            &admin,
            "SELECT primaries + replicas FROM tessera.nodes WHERE node = 1",
        )
        .await;
        assert_eq!(
            left,
            vec!["0".to_string()],
            "node 1 is empty after its drain"
        );
        // Keep the load on the new placement for a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;

    load.stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    check_after_load(&cluster, &load, &admin, &[1, 2, 3]).await;
    let acked = load.acked.lock().unwrap().clone();

    let pauses = sql_lines(&admin, "SELECT max(pause_ms) FROM tessera.jobs").await;
    let (longest_us, stmt) = load.longest.lock().unwrap().clone();
    println!(
        "{} transfers, 0 errors; longest statement before the moves {:.1} ms, during them {:.1} ms ({stmt}); longest freeze recorded by a job {} ms",
        acked.len(),
        baseline_us as f64 / 1000.0,
        longest_us as f64 / 1000.0,
        pauses.first().cloned().unwrap_or_default()
    );
}

/// Checks the outcome of a workload: no client error, every acknowledged transfer applied
/// exactly once, every copy of every shard equal, no orphaned shard file.
async fn check_after_load(cluster: &Cluster, load: &Load, client: &Client, nodes: &[u64]) {
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "clients saw {} errors, first: {:?}\n{}",
        errors.len(),
        errors.first(),
        cluster.logs()
    );
    let acked = load.acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the workload ran ({} transfers)",
        acked.len()
    );
    let mut expected: BTreeMap<i64, i64> = (0..ACCOUNTS as i64).map(|i| (i, INITIAL)).collect();
    for (from, to, amount) in &acked {
        *expected.get_mut(&(*from as i64)).unwrap() -= amount;
        *expected.get_mut(&(*to as i64)).unwrap() += amount;
    }
    assert_eq!(
        balances(client).await,
        expected,
        "every acknowledged transfer applied exactly once"
    );
    wait_copies_agree(cluster).await;
    wait_no_orphans(cluster, nodes).await;
}

/// Two splits while 8 clients transfer: the shard count grows from 4 to 6, every row is in
/// exactly one shard (a full count and a sum see each once), transfers keep working, and a
/// table created afterwards spreads over all six.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_under_transfer_load() {
    let cluster = Cluster::start("split").await;
    let admin = cluster.client().await;
    create_accounts(&admin, ACCOUNTS).await;
    let (load, workers) = start_load(cluster.router_port, 0x51_7CC1, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    within(Duration::from_secs(90), "two splits", async {
        for shard in [0, 1] {
            let queued = sql_lines(&admin, &format!("SELECT tessera.split_shard({shard})")).await;
            println!("{}", queued.join("\n"));
            sql_lines(&admin, "SELECT tessera.wait_for_jobs(60)").await;
        }
        let done = sql_lines(
            &admin,
            "SELECT count(*) FROM tessera.jobs WHERE phase = 'done'",
        )
        .await;
        assert_eq!(done, vec!["2".to_string()], "both splits finished");
        let shards = sql_lines(&admin, "SELECT count(*) FROM tessera.shards").await;
        assert_eq!(shards, vec!["6".to_string()]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let count = sql_lines(&admin, "SELECT count(*) FROM accounts").await;
    assert_eq!(
        count,
        vec![ACCOUNTS.to_string()],
        "each row in exactly one shard"
    );
    check_after_load(&cluster, &load, &admin, &[1, 2]).await;

    admin
        .simple_query("CREATE TABLE after_split (k int PRIMARY KEY, v text)")
        .await
        .expect("create after split");
    let values: Vec<String> = (0..600).map(|i| format!("({i}, 'v{i}')")).collect();
    admin
        .simple_query(&format!(
            "INSERT INTO after_split VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert after split");
    let per_shard = query_text(&admin, "SELECT shard, rows FROM tessera.shards")
        .await
        .expect("shards view");
    assert!(
        per_shard.iter().all(|r| int(r, "rows").unwrap_or(0) > 0),
        "rows land on every shard after the splits: {per_shard:?}"
    );
    let (longest_us, stmt) = load.longest.lock().unwrap().clone();
    println!(
        "{} transfers, {} retried after 40001; longest statement {:.1} ms ({stmt})",
        load.acked.lock().unwrap().len(),
        load.retries.lock().unwrap(),
        longest_us as f64 / 1000.0
    );
}

#[derive(Clone, Copy, Debug)]
enum Victim {
    Source,
    Target,
    Meta,
    Router,
    /// Not a kill: the operator cancels the move while it copies.
    Cancel,
    /// The source of a split (the last round: afterwards there are five shards).
    SplitSource,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_finish_or_roll_back_after_kill9() {
    let mut cluster = Cluster::start("move-kill").await;
    cluster.add_node(3).await;
    let client = cluster.client().await;
    // Enough rows that a copy takes a moment.
    create_accounts(&client, 20_000).await;
    let before = balances(&client).await;
    drop(client);
    let meta = cluster.meta_client().await;

    for (round, victim) in [
        Victim::Source,
        Victim::Target,
        Victim::Meta,
        Victim::Router,
        Victim::Cancel,
        Victim::SplitSource,
    ]
    .into_iter()
    .enumerate()
    {
        // Move some shard's primary to a node that holds no copy of it.
        let state = meta.state();
        let shard = state
            .shards
            .values()
            .nth(round % common::SHARDS)
            .cloned()
            .expect("a shard");
        let to = (1..=3u64)
            .find(|n| !shard.placed_on(*n))
            .expect("a node without a copy");
        let job = match victim {
            Victim::SplitSource => MoveJob::split(shard.id, shard.primary, to),
            _ => MoveJob::new(shard.id, shard.primary, to, "kill test"),
        };
        let queued = meta
            .propose(MetaCommand::SubmitJobs(vec![job]))
            .await
            .expect("submit move");
        let id = *queued.jobs.keys().next_back().expect("job id");
        // Kill while the copy runs (the job may already be further if the copy was quick).
        let mut rx = meta.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.jobs.get(&id).is_some_and(|j| j.phase != JobPhase::Queued)),
        )
        .await;
        let phase_at_kill = meta.state().jobs.get(&id).map(|j| j.phase);
        if let Victim::Cancel = victim {
            // The copy may already have finished; then there is nothing to cancel.
            let _ = meta.propose(MetaCommand::CancelJob { id }).await;
        }
        let proc = match victim {
            Victim::Cancel => None,
            Victim::Source | Victim::SplitSource => {
                Some(&mut cluster.nodes[(shard.primary - 1) as usize])
            }
            Victim::Target => Some(&mut cluster.nodes[(to - 1) as usize]),
            Victim::Meta => Some(&mut cluster.meta),
            Victim::Router => Some(&mut cluster.router),
        };
        if let Some(proc) = proc {
            proc.kill9().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            proc.restart().await;
        }

        within(Duration::from_secs(60), "the move after a kill", async {
            let meta = cluster.meta_client().await;
            let mut rx = meta.subscribe();
            let _ = rx.wait_for(|s| s.active_job().is_none()).await;
            let state = meta.state();
            let job = state.jobs.values().next_back().expect("the job").clone();
            println!(
                "{victim:?} killed while {phase_at_kill:?}: job {} ended {:?} {:?} (pause {} ms)",
                job.id, job.phase, job.error, job.progress.pause_ms
            );
            assert!(matches!(job.phase, JobPhase::Done | JobPhase::RolledBack));
        })
        .await;
        if !matches!(victim, Victim::SplitSource) {
            cluster.wait_ready(Duration::from_secs(30)).await;
        }
        let client = cluster.client().await;
        let count = sql_lines(&client, "SELECT count(*) FROM accounts").await;
        assert_eq!(
            count,
            vec![before.len().to_string()],
            "each row once after {victim:?}"
        );
        assert_eq!(
            balances(&client).await,
            before,
            "contents unchanged after killing the {victim:?}"
        );
        wait_copies_agree(&cluster).await;
        wait_no_orphans(&cluster, &[1, 2, 3]).await;
    }
}
