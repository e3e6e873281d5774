//! Crash recovery under a transactional workload, with real processes (1 meta + 2 nodes +
//! 1 router, 4 shards, 2 copies each).
//!
//! 1000 accounts of 1000 are spread over the 4 shards. 8 clients run transfers
//! (`BEGIN; debit; credit; COMMIT`, READ COMMITTED) between random accounts, retrying on
//! 40001/40P01, while a chaos loop kills -9 a node (alternating nodes) or, every third round,
//! the router (clients reconnect; transactions it left prepared are resolved by the nodes'
//! in-doubt resolvers from the coordinator's record), lets the workload run
//! against the outage, restarts it and waits until the cluster serves transfers again:
//! `CRASH_ROUNDS` rounds (default 5; e.g. 20 for a longer run). Each transfer attempt is
//! recorded as acknowledged (COMMIT succeeded), failed (an error before COMMIT, or 40001/40P01
//! at COMMIT: certainly not applied) or unknown (the connection broke or another error came
//! back at COMMIT).
//!
//! After the workload stops and every node is up, the test asserts:
//! - within 10 s the sum of balances is exactly 200 × 1000 over exactly 200 rows, every row can
//!   be written again (no lock of an in-doubt prepared transaction is left), and the sum stays
//!   exact (so no prepared transaction is left in doubt);
//! - every replica catches up (lag 0) and its checksum equals its primary's;
//! - every account's balance is 1000 plus the effects of all acknowledged transfers plus those
//!   of some of the unknown ones (each applied whole or not at all), and of no failed one.
//!
//! The checker is shown to fail on broken histories (`checker_rejects_broken_histories`, and
//! on the run's own final state with one debit removed). `CRASH_LOOP_BROKEN=1` makes the
//! clients run debit and credit as two autocommit statements — a known-bad client whose
//! transfers can be half-applied by a crash — and the test then fails on the sum.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Cluster, SHARDS, checksums_agree, connect, int, shard_checksums, shards_view, within,
};
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

const ACCOUNTS: i32 = 1000;
const INITIAL: i64 = 1000;
const CLIENTS: usize = 8;
/// Bound on one statement of the workload.
const STATEMENT_WAIT: Duration = Duration::from_secs(10);
/// Attempts of one transfer that fails with 40001/40P01.
const ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------------------------
// History and its checker
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// COMMIT succeeded.
    Acked,
    /// Certainly not applied.
    Failed,
    /// May or may not have been applied.
    Unknown,
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    from: i32,
    to: i32,
    amount: i64,
    outcome: Outcome,
}

/// Largest number of unknown transfers on one account the exact check enumerates.
const MAX_UNKNOWN_PER_ACCOUNT: usize = 16;

/// Checks final balances against the history: the total is unchanged, and some choice of
/// "applied or not" for each unknown transfer (acknowledged ones applied, failed ones not)
/// explains every account's balance. The choice is checked per account (subset sums) and for
/// consistency between the two accounts of each unknown transfer (propagated to a fixpoint).
fn check_balances(
    accounts: i32,
    initial: i64,
    balances: &BTreeMap<i32, i64>,
    history: &[Transfer],
) -> Result<(), String> {
    let mut errors = Vec::new();
    let expected_rows: Vec<i32> = (0..accounts).collect();
    let rows: Vec<i32> = balances.keys().copied().collect();
    if rows != expected_rows {
        errors.push(format!(
            "accounts present: {} rows, expected ids 0..{accounts}",
            rows.len()
        ));
    }
    let total: i64 = balances.values().sum();
    if total != accounts as i64 * initial {
        errors.push(format!(
            "sum of balances is {total}, expected {} (off by {})",
            accounts as i64 * initial,
            total - accounts as i64 * initial
        ));
    }
    // Residual per account after every acknowledged transfer.
    let mut residual: BTreeMap<i32, i64> =
        balances.iter().map(|(k, v)| (*k, v - initial)).collect();
    // Unknown transfers touching each account: (index into `unknown`, delta for the account).
    let unknown: Vec<&Transfer> = history
        .iter()
        .filter(|t| t.outcome == Outcome::Unknown)
        .collect();
    let mut touching: BTreeMap<i32, Vec<(usize, i64)>> = BTreeMap::new();
    for t in history.iter().filter(|t| t.outcome == Outcome::Acked) {
        *residual.entry(t.from).or_default() += t.amount;
        *residual.entry(t.to).or_default() -= t.amount;
    }
    for (i, t) in unknown.iter().enumerate() {
        touching.entry(t.from).or_default().push((i, -t.amount));
        touching.entry(t.to).or_default().push((i, t.amount));
    }
    // Per account, the feasible subsets (bitmasks over its list of unknown transfers).
    let mut feasible: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (&account, &res) in &residual {
        let list = touching.get(&account).cloned().unwrap_or_default();
        if list.len() > MAX_UNKNOWN_PER_ACCOUNT {
            eprintln!(
                "account {account}: {} unknown transfers, not checked exactly",
                list.len()
            );
            continue;
        }
        let subsets: Vec<u32> = (0u32..(1 << list.len()))
            .filter(|mask| {
                let sum: i64 = list
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| mask & (1 << b) != 0)
                    .map(|(_, (_, d))| d)
                    .sum();
                sum == res
            })
            .collect();
        if subsets.is_empty() {
            errors.push(format!(
                "account {account}: balance {} is not 1000 plus its acknowledged transfers plus any \
                 subset of its {} unknown ones {:?} (residual {res})",
                balances.get(&account).copied().unwrap_or_default(),
                list.len(),
                list.iter().map(|(i, d)| (unknown[*i].from, unknown[*i].to, *d)).collect::<Vec<_>>()
            ));
        }
        feasible.insert(account, subsets);
    }
    // Each unknown transfer is applied on both of its accounts or on neither.
    loop {
        let mut changed = false;
        for (i, t) in unknown.iter().enumerate() {
            let mut possible = [true, true]; // [not applied, applied]
            for account in [t.from, t.to] {
                let (Some(list), Some(subsets)) = (touching.get(&account), feasible.get(&account))
                else {
                    continue;
                };
                let bit = list.iter().position(|(j, _)| *j == i).unwrap();
                let mut here = [false, false];
                for m in subsets {
                    here[((m >> bit) & 1) as usize] = true;
                }
                possible[0] &= here[0];
                possible[1] &= here[1];
            }
            for account in [t.from, t.to] {
                let (Some(list), Some(subsets)) =
                    (touching.get(&account), feasible.get_mut(&account))
                else {
                    continue;
                };
                let bit = list.iter().position(|(j, _)| *j == i).unwrap();
                let before = subsets.len();
                subsets.retain(|m| possible[((m >> bit) & 1) as usize]);
                if subsets.len() != before {
                    changed = true;
                    if subsets.is_empty() {
                        errors.push(format!(
                            "account {account}: no consistent choice for the unknown transfers \
                             (transfer {} -> {} of {} would be applied on one side only)",
                            t.from, t.to, t.amount
                        ));
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort();
        errors.dedup();
        Err(errors.join("\n"))
    }
}

/// The checker must fail on broken histories, or its passing proves nothing.
#[test]
fn checker_rejects_broken_histories() {
    let t = |from, to, amount, outcome| Transfer {
        from,
        to,
        amount,
        outcome,
    };
    let history = vec![
        t(0, 1, 5, Outcome::Acked),
        t(1, 2, 7, Outcome::Unknown),
        t(2, 3, 11, Outcome::Failed),
        t(3, 0, 13, Outcome::Unknown),
    ];
    let balances = |b: [i64; 4]| -> BTreeMap<i32, i64> { (0..4).zip(b).collect() };
    // Correct states: the acknowledged transfer, and any choice of the unknown ones.
    check_balances(4, 100, &balances([95, 105, 100, 100]), &history).unwrap();
    check_balances(4, 100, &balances([95, 98, 107, 100]), &history).unwrap();
    check_balances(4, 100, &balances([108, 98, 107, 87]), &history).unwrap();
    // A lost acknowledged transfer.
    assert!(check_balances(4, 100, &balances([100, 100, 100, 100]), &history).is_err());
    // A failed transfer that was applied.
    assert!(check_balances(4, 100, &balances([95, 105, 89, 111]), &history).is_err());
    // A transfer applied on one side only (the sum changes).
    assert!(check_balances(4, 100, &balances([95, 98, 100, 100]), &history).is_err());
    // An acknowledged transfer applied on one side, compensated elsewhere (sum unchanged).
    assert!(check_balances(4, 100, &balances([95, 100, 100, 105]), &history).is_err());
    // An unknown transfer applied on one side only, with the sum kept by another error.
    assert!(check_balances(4, 100, &balances([95, 98, 100, 107]), &history).is_err());
    // A missing row.
    let mut missing = balances([95, 105, 100, 100]);
    missing.remove(&3);
    assert!(check_balances(4, 100, &missing, &history).is_err());
}

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    history: Mutex<Vec<Transfer>>,
    acked: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    /// Things that must never happen (an UPDATE of an existing account touching ≠ 1 row).
    anomalies: Mutex<Vec<String>>,
    last_error: Mutex<String>,
}

impl Shared {
    fn record(&self, t: Transfer) {
        match t.outcome {
            Outcome::Acked => &self.acked,
            Outcome::Failed => &self.failed,
            Outcome::Unknown => &self.unknown,
        }
        .fetch_add(1, Ordering::SeqCst);
        self.history.lock().unwrap().push(t);
    }
}

enum StepError {
    /// The server answered with this SQLSTATE (08xxx included: the router reports a lost
    /// node connection so); the session is still usable.
    Sql(String, String),
    /// The connection to the router broke or the statement timed out: the session is lost.
    Connection(String),
}

async fn exec(client: &Client, sql: &str) -> Result<u64, StepError> {
    match tokio::time::timeout(STATEMENT_WAIT, client.simple_query(sql)).await {
        Err(_) => Err(StepError::Connection(format!("{sql}: timed out"))),
        Ok(Err(e)) => match e.as_db_error() {
            Some(db) => Err(StepError::Sql(
                db.code().code().to_string(),
                format!("{sql}: {}", db.message()),
            )),
            None => Err(StepError::Connection(format!("{sql}: {e}"))),
        },
        Ok(Ok(msgs)) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .next_back()
            .unwrap_or(0)),
    }
}

fn retryable(code: &str) -> bool {
    code == "40001" || code == "40P01"
}

/// What one transfer attempt did, and whether the session must be replaced.
struct Attempt {
    outcome: Outcome,
    retry: bool,
    reconnect: bool,
}

async fn transfer(
    client: &Client,
    shared: &Shared,
    from: i32,
    to: i32,
    amount: i64,
    broken: bool,
) -> Attempt {
    let debit = format!("UPDATE accounts SET balance = balance - {amount} WHERE id = {from}");
    let credit = format!("UPDATE accounts SET balance = balance + {amount} WHERE id = {to}");
    let failed = |retry, reconnect| Attempt {
        outcome: Outcome::Failed,
        retry,
        reconnect,
    };
    if broken {
        // The known-bad client: two autocommit statements, no transaction.
        for (i, sql) in [&debit, &credit].into_iter().enumerate() {
            match exec(client, sql).await {
                Ok(_) => {}
                Err(StepError::Sql(code, msg)) => {
                    *shared.last_error.lock().unwrap() = format!("{code}: {msg}");
                    return failed(i == 0 && retryable(&code), false);
                }
                Err(StepError::Connection(msg)) => {
                    *shared.last_error.lock().unwrap() = msg;
                    return failed(false, true);
                }
            }
        }
        return Attempt {
            outcome: Outcome::Acked,
            retry: false,
            reconnect: false,
        };
    }
    for (i, sql) in ["BEGIN", &debit, &credit].into_iter().enumerate() {
        match exec(client, sql).await {
            Ok(n) => {
                if i > 0 && n != 1 {
                    shared
                        .anomalies
                        .lock()
                        .unwrap()
                        .push(format!("{sql} updated {n} rows"));
                    let reconnect = exec(client, "ROLLBACK").await.is_err();
                    return failed(false, reconnect);
                }
            }
            Err(StepError::Sql(code, msg)) => {
                *shared.last_error.lock().unwrap() = format!("{code}: {msg}");
                let reconnect = exec(client, "ROLLBACK").await.is_err();
                return failed(retryable(&code), reconnect);
            }
            Err(StepError::Connection(msg)) => {
                // COMMIT was never sent: the router rolls the transaction back.
                *shared.last_error.lock().unwrap() = msg;
                return failed(false, true);
            }
        }
    }
    match exec(client, "COMMIT").await {
        Ok(_) => Attempt {
            outcome: Outcome::Acked,
            retry: false,
            reconnect: false,
        },
        // Certainly aborted: retry.
        Err(StepError::Sql(code, msg)) if retryable(&code) => {
            *shared.last_error.lock().unwrap() = format!("{code}: {msg}");
            failed(true, false)
        }
        // Any other error at COMMIT (08xxx: the router lost a node mid-commit; 25P02: a node
        // restarted and forgot the open transaction) may or may not have committed.
        Err(StepError::Sql(code, msg)) => {
            *shared.last_error.lock().unwrap() = format!("{code}: {msg}");
            let reconnect = exec(client, "ROLLBACK").await.is_err();
            Attempt {
                outcome: Outcome::Unknown,
                retry: false,
                reconnect,
            }
        }
        Err(StepError::Connection(msg)) => {
            *shared.last_error.lock().unwrap() = msg;
            Attempt {
                outcome: Outcome::Unknown,
                retry: false,
                reconnect: true,
            }
        }
    }
}

/// xorshift64*, seeded per client (no dependency on a random crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn worker(port: u16, seed: u64, shared: Arc<Shared>, broken: bool) {
    let mut rng = Rng(seed | 1);
    let mut client = connect(port, Duration::from_secs(15)).await;
    while !shared.stop.load(Ordering::SeqCst) {
        let from = rng.below(ACCOUNTS as u64) as i32;
        let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as i32) % ACCOUNTS;
        let amount = 1 + rng.below(100) as i64;
        for attempt in 0..ATTEMPTS {
            let a = transfer(&client, &shared, from, to, amount, broken).await;
            shared.record(Transfer {
                from,
                to,
                amount,
                outcome: a.outcome,
            });
            if a.reconnect || client.is_closed() {
                shared.reconnects.fetch_add(1, Ordering::SeqCst);
                client = connect(port, Duration::from_secs(15)).await;
            }
            if !a.retry || attempt + 1 == ATTEMPTS || shared.stop.load(Ordering::SeqCst) {
                break;
            }
            shared.retries.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
        }
        if shared.failed.load(Ordering::Relaxed) % 50 == 49 {
            // Do not spin against an outage.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

async fn sum_and_count(client: &Client) -> Result<(i64, i64), String> {
    let q = tokio::time::timeout(
        STATEMENT_WAIT,
        common::query_text(
            client,
            "SELECT sum(balance) AS s, count(*) AS n FROM accounts",
        ),
    )
    .await
    .map_err(|_| "sum query timed out".to_string())?
    .map_err(|e| format!("{e:?}"))?;
    let row = q.first().ok_or("no row")?;
    Ok((int(row, "s").unwrap_or(0), int(row, "n").unwrap_or(0)))
}

async fn balances(client: &Client) -> BTreeMap<i32, i64> {
    let rows = client
        .query("SELECT id, balance FROM accounts", &[])
        .await
        .expect("read balances");
    rows.iter()
        .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_survive_node_crash_loop() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut cluster = Cluster::start("crashloop").await;
    let budget = Duration::from_secs(60 + 25 * rounds as u64);
    within(
        budget,
        "transfers_survive_node_crash_loop",
        crash_loop_body(&mut cluster, rounds),
    )
    .await;
}

async fn crash_loop_body(cluster: &mut Cluster, rounds: usize) {
    let t0 = Instant::now();
    let broken = std::env::var_os("CRASH_LOOP_BROKEN").is_some();
    let client = cluster.client().await;
    client
        .batch_execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        .await
        .expect("create accounts");
    let values: Vec<String> = (0..ACCOUNTS).map(|i| format!("({i}, {INITIAL})")).collect();
    client
        .batch_execute(&format!(
            "INSERT INTO accounts VALUES {}",
            values.join(", ")
        ))
        .await
        .expect("insert accounts");
    let shards = shards_view(&client).await.expect("tessera.shards");
    assert!(
        shards.len() == SHARDS && shards.iter().all(|r| int(r, "rows").unwrap_or(0) > 0),
        "the accounts are spread over every shard: {shards:?}"
    );
    assert_eq!(
        sum_and_count(&client).await.unwrap(),
        (ACCOUNTS as i64 * INITIAL, ACCOUNTS as i64)
    );

    // The workload.
    let shared = Arc::new(Shared::default());
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash loop: {rounds} rounds, seed {seed} (CRASH_SEED), broken client: {broken}");
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(worker(
            cluster.router_port,
            seed.wrapping_add(c as u64 * 0x9E37_79B9),
            shared.clone(),
            broken,
        )));
    }
    let acked = || shared.acked.load(Ordering::SeqCst);
    let wait_acked = |n: u64, wait: Duration, what: String| {
        let shared = shared.clone();
        async move {
            let deadline = Instant::now() + wait;
            while shared.acked.load(Ordering::SeqCst) < n {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {wait:?} waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_acked(
        50,
        Duration::from_secs(20),
        "50 transfers before the first crash".into(),
    )
    .await;

    // The chaos loop.
    let mut rng = Rng(seed ^ 0xC4A0_5C4A_05C4_A05C | 1);
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        // Every third round kills the router (mid-2PC transactions are then finished by the
        // nodes' in-doubt resolvers); the others alternate between the nodes.
        let n = round % 2;
        let victim = if round % 3 == 2 {
            "router".to_string()
        } else {
            format!("node{}", n + 1)
        };
        let (a0, f0, u0) = (
            acked(),
            shared.failed.load(Ordering::SeqCst),
            shared.unknown.load(Ordering::SeqCst),
        );
        let t_kill = Instant::now();
        let proc = if round % 3 == 2 {
            &mut cluster.router
        } else {
            &mut cluster.nodes[n]
        };
        proc.kill9().await;
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
        proc.restart().await;
        cluster.wait_ready(Duration::from_secs(30)).await;
        let ready = t_kill.elapsed();
        let a1 = acked();
        wait_acked(
            a1 + 20,
            Duration::from_secs(30),
            format!("20 transfers after restarting {victim} (round {round})"),
        )
        .await;
        eprintln!(
            "round {round}: killed {victim} for {ready:?} (until ready); during it {} acked, {} failed, \
             {} unknown; transfers again {:?} after the kill; last error: {}",
            a1 - a0,
            shared.failed.load(Ordering::SeqCst) - f0,
            shared.unknown.load(Ordering::SeqCst) - u0,
            t_kill.elapsed(),
            shared.last_error.lock().unwrap()
        );
    }

    // Stop the workload (every statement is bounded, so this is too).
    shared.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a client stops")
            .expect("client task");
    }
    let history = shared.history.lock().unwrap().clone();
    eprintln!(
        "workload: {} attempts: {} acked, {} failed, {} unknown; {} retries, {} reconnects ({:?})",
        history.len(),
        acked(),
        shared.failed.load(Ordering::SeqCst),
        shared.unknown.load(Ordering::SeqCst),
        shared.retries.load(Ordering::SeqCst),
        shared.reconnects.load(Ordering::SeqCst),
        t0.elapsed()
    );
    let anomalies = shared.anomalies.lock().unwrap().clone();
    assert!(anomalies.is_empty(), "anomalies: {anomalies:?}");
    assert!(
        acked() >= 100,
        "too few acknowledged transfers to mean anything"
    );

    // Settle: every node is up; within 10 s the sum is exact and every row is writable (no
    // in-doubt transaction holds a lock), then the sum stays exact.
    cluster.wait_ready(Duration::from_secs(30)).await;
    let t_settle = Instant::now();
    let deadline = t_settle + Duration::from_secs(10);
    let client = cluster.client().await;
    let mut last;
    loop {
        last = match sum_and_count(&client).await {
            Ok((s, n)) if s == ACCOUNTS as i64 * INITIAL && n == ACCOUNTS as i64 => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(
                    left.max(Duration::from_millis(100)),
                    client.execute("UPDATE accounts SET balance = balance", &[]),
                )
                .await
                {
                    Ok(Ok(n)) if n == ACCOUNTS as u64 => break,
                    Ok(Ok(n)) => format!("touching every row updated {n} rows"),
                    Ok(Err(e)) => format!("touching every row: {e:?}"),
                    Err(_) => "touching every row timed out".into(),
                }
            }
            Ok((s, n)) => format!("sum {s} over {n} rows"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            let diagnosis =
                match check_balances(ACCOUNTS, INITIAL, &balances(&client).await, &history) {
                    Ok(()) => {
                        "the balances match the history (a prepared transaction in doubt?)".into()
                    }
                    Err(e) => e,
                };
            panic!(
                "10 s after the cluster settled the accounts are still not consistent: {last}\n\
                 {diagnosis}\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exact_after = t_settle.elapsed();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            sum_and_count(&client).await.unwrap(),
            (ACCOUNTS as i64 * INITIAL, ACCOUNTS as i64),
            "the sum changed after it was exact"
        );
    }

    // Replicas catch up and agree with their primaries.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = shards_view(&client).await.expect("tessera.shards");
        if rows.len() == SHARDS
            && rows.iter().all(|r| {
                int(r, "primary_lsn").is_some()
                    && int(r, "replica_lsn") == int(r, "primary_lsn")
                    && int(r, "lag_lsn") == Some(0)
            })
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not catch up within 20 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = cluster.meta_client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sums = shard_checksums(&meta, &cluster.secret).await;
        if sums.len() == SHARDS && checksums_agree(&sums) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica checksums differ from their primaries': {sums:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every balance is explained by the history.
    let final_balances = balances(&client).await;
    if let Err(e) = check_balances(ACCOUNTS, INITIAL, &final_balances, &history) {
        panic!("the balances do not match the history:\n{e}");
    }
    // The same checker fails on this very state with one debit undone.
    let mut broken_state = final_balances.clone();
    *broken_state.get_mut(&0).unwrap() += 7;
    assert!(check_balances(ACCOUNTS, INITIAL, &broken_state, &history).is_err());
    eprintln!(
        "crash loop passed: sum exact {exact_after:?} after the cluster settled; total {:?}",
        t0.elapsed()
    );
}
