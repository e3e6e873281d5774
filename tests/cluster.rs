//! Black-box tests of a cluster of separate processes: 1 meta, 2 nodes, 1 router, all on
//! 127.0.0.1. Each test starts its own cluster.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

const ROWS: i64 = 1000;

async fn create_kv(client: &tokio_postgres::Client) {
    client
        .batch_execute("CREATE TABLE kv (k bigint primary key, v text)")
        .await
        .expect("CREATE TABLE kv");
}

/// Inserts keys 0..ROWS with value `v{k}` on eight concurrent sessions: half of the keys
/// with simple-protocol batches of single-row INSERTs (`batch_execute`), the other half with a
/// prepared INSERT whose shard key is a bound parameter.
async fn load_rows(cluster: &Cluster) {
    const WORKERS: i64 = 4;
    let half = ROWS / 2;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let port = cluster.router_port;
        tasks.push(tokio::spawn(async move {
            let c = connect(port, Duration::from_secs(10)).await;
            let keys: Vec<i64> = (0..half).filter(|k| k % WORKERS == w).collect();
            for chunk in keys.chunks(25) {
                let sql: String = chunk
                    .iter()
                    .map(|k| format!("INSERT INTO kv (k, v) VALUES ({k}, 'v{k}');"))
                    .collect();
                c.batch_execute(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("batch insert {chunk:?}: {e:?}"));
            }
        }));
        tasks.push(tokio::spawn(async move {
            let c = connect(port, Duration::from_secs(10)).await;
            let stmt = c
                .prepare_typed(
                    "INSERT INTO kv (k, v) VALUES ($1, $2)",
                    &[Type::INT8, Type::TEXT],
                )
                .await
                .expect("prepare insert");
            for k in (half..ROWS).filter(|k| k % WORKERS == w) {
                let n = c
                    .execute(&stmt, &[&k, &format!("v{k}")])
                    .await
                    .unwrap_or_else(|e| panic!("prepared insert {k}: {e:?}"));
                assert_eq!(n, 1, "INSERT of key {k} reported {n} rows");
            }
        }));
    }
    for t in tasks {
        t.await.expect("insert task");
    }
}

/// `v` of key `k` read with a literal key (simple protocol), `None` when absent.
async fn value_of(client: &tokio_postgres::Client, k: i64) -> Option<String> {
    let rows = query_text(client, &format!("SELECT v FROM kv WHERE k = {k}"))
        .await
        .unwrap_or_else(|e| panic!("read key {k}: {e:?}"));
    assert!(rows.len() <= 1, "key {k} returned {rows:?}");
    rows.first()
        .map(|r| text(r, "v").expect("v not null").to_string())
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get::<_, i64>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_crud_explain_and_replication() {
    let cluster = Cluster::start("crud").await;
    within(
        Duration::from_secs(90),
        "sharded_crud_explain_and_replication",
        sharded_crud_explain_and_replication_body(&cluster),
    )
    .await;
}

async fn sharded_crud_explain_and_replication_body(cluster: &Cluster) {
    let t0 = Instant::now();
    let client = cluster.client().await;
    create_kv(&client).await;
    load_rows(cluster).await;
    eprintln!("loaded {ROWS} rows in {:?}", t0.elapsed());

    // Placement: 4 shards, each with a primary and one replica on the other node.
    let shards = shards_view(&client).await.expect("tessera.shards");
    assert_eq!(shards.len(), SHARDS, "tessera.shards: {shards:?}");
    for s in &shards {
        let primary = int(s, "primary_node").expect("primary_node");
        let replicas = text(s, "replica_nodes").unwrap_or_default().to_string();
        let replicas: Vec<i64> = replicas
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| x.trim().parse().expect("replica node id"))
            .collect();
        assert!([1, 2].contains(&primary), "shard row {s:?}");
        assert_eq!(replicas.len(), 1, "one replica per shard: {s:?}");
        assert_ne!(replicas[0], primary, "replica on the primary's node: {s:?}");
        assert!(
            int(s, "rows").unwrap_or(0) > 0,
            "every shard holds some of the {ROWS} rows: {shards:?}"
        );
    }
    let sum = query_text(&client, "SELECT sum(rows) AS total FROM tessera.shards")
        .await
        .expect("sum(rows)");
    assert_eq!(sum.len(), 1);
    let total = sum[0]
        .values()
        .next()
        .cloned()
        .flatten()
        .expect("sum not null");
    assert_eq!(
        total.trim().parse::<i64>().ok(),
        Some(ROWS),
        "sum(rows) = {total}"
    );

    let repl = query_text(&client, "SELECT * FROM tessera.replication")
        .await
        .expect("tessera.replication");
    assert_eq!(repl.len(), SHARDS * 2, "tessera.replication: {repl:?}");
    for shard in 0..SHARDS as i64 {
        let roles: BTreeSet<&str> = repl
            .iter()
            .filter(|r| int(r, "shard") == Some(shard))
            .filter_map(|r| text(r, "role"))
            .collect();
        assert_eq!(
            roles,
            BTreeSet::from(["primary", "replica"]),
            "shard {shard}: {repl:?}"
        );
    }
    let nodes = query_text(&client, "SELECT * FROM tessera.nodes")
        .await
        .expect("tessera.nodes");
    assert_eq!(nodes.len(), 2, "tessera.nodes: {nodes:?}");
    let primaries: i64 = nodes.iter().map(|n| int(n, "primaries").unwrap_or(0)).sum();
    assert_eq!(primaries, SHARDS as i64, "tessera.nodes: {nodes:?}");

    // EXPLAIN: one shard for a point read, all of them for a count.
    let plan = explain(&client, "SELECT v FROM kv WHERE k = 42").await;
    assert!(
        plan.first()
            .is_some_and(|l| l.starts_with("Direct to 1 shard(s)")),
        "point-read plan: {plan:#?}"
    );
    assert_eq!(
        explained_shards(&plan).len(),
        1,
        "point-read plan: {plan:#?}"
    );
    // count(*) is pre-aggregated on every shard and summed at the router.
    let plan = explain(&client, "SELECT count(*) FROM kv").await;
    assert!(
        plan.first()
            .is_some_and(|l| l.starts_with("Partial aggregates on 4 shard(s)")),
        "count plan: {plan:#?}"
    );
    assert!(
        plan.iter().any(|l| l.ends_with("SELECT count(*) FROM kv")),
        "count plan: {plan:#?}"
    );
    // Anything else that spans shards is gathered and run at the router.
    let plan = explain(&client, "SELECT avg(k) FROM kv").await;
    assert!(
        plan.first()
            .is_some_and(|l| l.starts_with("Router executes:")),
        "avg plan: {plan:#?}"
    );
    assert_eq!(explained_shards(&plan).len(), SHARDS, "avg plan: {plan:#?}");
    let plan = explain(&client, "SELECT count(*) FROM kv").await;
    assert_eq!(
        explained_shards(&plan),
        (0..SHARDS as u32).collect::<Vec<_>>(),
        "count plan: {plan:#?}"
    );

    // Reads.
    assert_eq!(count(&client, "SELECT count(*) FROM kv").await, ROWS);
    let v: String = client
        .query_one("SELECT v FROM kv WHERE k = 42", &[])
        .await
        .expect("point read")
        .get(0);
    assert_eq!(v, "v42");
    for k in [0i64, 7, 500, 999] {
        assert_eq!(
            value_of(&client, k).await.as_deref(),
            Some(format!("v{k}").as_str())
        );
    }
    assert_eq!(
        value_of(&client, ROWS).await,
        None,
        "key {ROWS} was never inserted"
    );

    // Writes across shards with correct affected counts.
    let n = client
        .execute("UPDATE kv SET v = 'x' WHERE k < 10", &[])
        .await
        .expect("update k < 10");
    assert_eq!(n, 10, "UPDATE ... WHERE k < 10");
    assert_eq!(
        count(&client, "SELECT count(*) FROM kv WHERE v = 'x'").await,
        10
    );
    let n = client
        .execute("DELETE FROM kv WHERE k >= 990", &[])
        .await
        .expect("delete k >= 990");
    assert_eq!(n, 10, "DELETE ... WHERE k >= 990");
    assert_eq!(count(&client, "SELECT count(*) FROM kv").await, ROWS - 10);

    // And by prepared statement with the shard key bound.
    let upd = client
        .prepare_typed(
            "UPDATE kv SET v = $2 WHERE k = $1",
            &[Type::INT8, Type::TEXT],
        )
        .await
        .expect("prepare update");
    assert_eq!(
        client
            .execute(&upd, &[&500i64, &"five hundred"])
            .await
            .expect("update"),
        1
    );
    assert_eq!(
        client
            .execute(&upd, &[&995i64, &"gone"])
            .await
            .expect("update"),
        0
    );
    assert_eq!(
        value_of(&client, 500).await.as_deref(),
        Some("five hundred")
    );
    let del = client
        .prepare_typed("DELETE FROM kv WHERE k = $1", &[Type::INT8])
        .await
        .expect("prepare delete");
    assert_eq!(client.execute(&del, &[&501i64]).await.expect("delete"), 1);
    assert_eq!(
        client
            .execute(&del, &[&501i64])
            .await
            .expect("delete again"),
        0
    );
    assert_eq!(value_of(&client, 501).await, None, "key 501 was deleted");
    assert_eq!(count(&client, "SELECT count(*) FROM kv").await, ROWS - 11);
    let shards = shards_view(&client).await.expect("tessera.shards");
    let total: i64 = shards.iter().map(|s| int(s, "rows").unwrap_or(0)).sum();
    assert_eq!(
        total,
        ROWS - 11,
        "tessera.shards rows after deletes: {shards:?}"
    );
    // Replicas catch up (checked last, so that a replication stall does not hide the SQL
    // checks above): replica_lsn = primary_lsn and lag 0 on every shard, and every replica's
    // checksum equals its primary's.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = shards_view(&client).await.expect("tessera.shards");
        let caught_up = rows.len() == SHARDS
            && rows.iter().all(|r| {
                int(r, "primary_lsn").is_some()
                    && int(r, "replica_lsn") == int(r, "primary_lsn")
                    && int(r, "lag_lsn") == Some(0)
            });
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not catch up within 15 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = cluster.meta_client().await;
    let sums = shard_checksums(&meta, &cluster.secret).await;
    assert!(
        sums.len() == SHARDS && checksums_agree(&sums),
        "replica checksums differ from their primaries': {sums:#?}"
    );
    eprintln!("crud test body took {:?}", t0.elapsed());
}

/// What the background writer saw.
#[derive(Default)]
struct WriterStats {
    acked: Mutex<Vec<i64>>,
    attempts: AtomicU64,
    failures: AtomicU64,
    /// Successful inserts since the last failure.
    streak: AtomicU64,
    last_error: Mutex<String>,
}

/// A new session with the statement prepared again (bounded).
async fn reconnect(
    port: u16,
    sql: &str,
    types: &[Type],
) -> (tokio_postgres::Client, tokio_postgres::Statement) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let client = connect(port, Duration::from_secs(10)).await;
        match client.prepare_typed(sql, types).await {
            Ok(stmt) => return (client, stmt),
            Err(e) if Instant::now() >= deadline => panic!("cannot prepare {sql}: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn writer(port: u16, stop: Arc<AtomicBool>, stats: Arc<WriterStats>) -> i64 {
    let sql = "INSERT INTO kv (k, v) VALUES ($1, $2)";
    let types = [Type::INT8, Type::TEXT];
    let mut client = connect(port, Duration::from_secs(10)).await;
    let mut stmt = client
        .prepare_typed(sql, &types)
        .await
        .expect("prepare insert");
    let mut k = 0i64;
    while !stop.load(Ordering::SeqCst) {
        k += 1;
        stats.attempts.fetch_add(1, Ordering::SeqCst);
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            client.execute(&stmt, &[&k, &format!("w{k}")]),
        )
        .await;
        match res {
            Ok(Ok(1)) => {
                stats.acked.lock().unwrap().push(k);
                stats.streak.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(n)) => panic!("INSERT of key {k} reported {n} rows"),
            Ok(Err(e)) => {
                stats.failures.fetch_add(1, Ordering::SeqCst);
                stats.streak.store(0, Ordering::SeqCst);
                *stats.last_error.lock().unwrap() = format!("{e:?}");
                if client.is_closed() {
                    (client, stmt) = reconnect(port, sql, &types).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                stats.failures.fetch_add(1, Ordering::SeqCst);
                stats.streak.store(0, Ordering::SeqCst);
                *stats.last_error.lock().unwrap() = "insert timed out".into();
                (client, stmt) = reconnect(port, sql, &types).await;
            }
        }
    }
    k
}

/// Waits until `cond` holds, polling; panics with `what` after `wait`.
async fn wait_for(wait: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + wait;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out after {wait:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_kill9_and_restart_keeps_acknowledged_writes() {
    let mut cluster = Cluster::start("kill9").await;
    within(
        Duration::from_secs(90),
        "node_kill9_and_restart_keeps_acknowledged_writes",
        node_kill9_and_restart_keeps_acknowledged_writes_body(&mut cluster),
    )
    .await;
}

async fn node_kill9_and_restart_keeps_acknowledged_writes_body(cluster: &mut Cluster) {
    let client = cluster.client().await;
    create_kv(&client).await;

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(WriterStats::default());
    let task = tokio::spawn(writer(cluster.router_port, stop.clone(), stats.clone()));
    let acked = || stats.acked.lock().unwrap().len();

    wait_for(
        Duration::from_secs(15),
        "200 inserts before the kill",
        || acked() >= 200,
    )
    .await;
    let t_kill = Instant::now();
    cluster.nodes[1].kill9().await;
    let (a0, f0) = (acked(), stats.failures.load(Ordering::SeqCst));
    // Writes to the dead node's primaries fail; writes to the survivor's primaries go on.
    wait_for(
        Duration::from_secs(15),
        "failed inserts (dead node's primaries) and acknowledged inserts (survivor's) during the outage",
        || stats.failures.load(Ordering::SeqCst) >= f0 + 10 && acked() >= a0 + 30,
    )
    .await;
    eprintln!(
        "outage: {} acked, {} failed (last error {})",
        acked() - a0,
        stats.failures.load(Ordering::SeqCst) - f0,
        stats.last_error.lock().unwrap()
    );
    cluster.nodes[1].restart().await;
    let restarted = Instant::now();
    // After the restart every shard takes writes again: a long run of inserts without error.
    wait_for(
        Duration::from_secs(20),
        "60 consecutive successful inserts after the restart",
        || stats.streak.load(Ordering::SeqCst) >= 60,
    )
    .await;
    eprintln!(
        "writes recovered {:?} after the restart",
        restarted.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    let last_key = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("writer stops")
        .expect("writer task");
    let acked: BTreeSet<i64> = stats.acked.lock().unwrap().iter().copied().collect();
    eprintln!(
        "writer: {} attempts, {} acked, {} failed",
        stats.attempts.load(Ordering::SeqCst),
        acked.len(),
        stats.failures.load(Ordering::SeqCst)
    );

    // Every replica of every shard converges on its primary's checksum.
    let meta = cluster.meta_client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let sums = loop {
        let sums = shard_checksums(&meta, &cluster.secret).await;
        if sums.len() == SHARDS && checksums_agree(&sums) {
            break sums;
        }
        if Instant::now() >= deadline {
            panic!(
                "replicas did not converge within 20 s of the writes stopping: {sums:#?}\nmap: {:?}",
                meta.state()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "checksums agree: {sums:?} ({:?} after the kill)",
        t_kill.elapsed()
    );

    // Every acknowledged insert is readable; nothing appears that was never attempted.
    let rows = client
        .query("SELECT k, v FROM kv", &[])
        .await
        .expect("SELECT k, v");
    let mut present = BTreeSet::new();
    for r in &rows {
        let k: i64 = r.get(0);
        let v: String = r.get(1);
        assert_eq!(v, format!("w{k}"), "value of key {k}");
        assert!(present.insert(k), "key {k} returned twice");
    }
    let lost: Vec<i64> = acked.difference(&present).copied().collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged inserts are missing: {lost:?}",
        lost.len()
    );
    assert!(
        present.iter().all(|k| (1..=last_key).contains(k)),
        "rows that were never attempted"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM kv").await,
        present.len() as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_harmless() {
    let cluster = Cluster::start("badinput").await;
    within(
        Duration::from_secs(60),
        "bad_input_is_refused_and_harmless",
        bad_input_is_refused_and_harmless_body(&cluster),
    )
    .await;
}

async fn bad_input_is_refused_and_harmless_body(cluster: &Cluster) {
    let client = cluster.client().await;
    create_kv(&client).await;
    client
        .batch_execute("INSERT INTO kv (k, v) VALUES (1, 'one')")
        .await
        .expect("insert");

    // SQL errors carry PostgreSQL's SQLSTATEs and leave the session usable.
    let e = client
        .simple_query("SELEC 1")
        .await
        .expect_err("syntax error");
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR), "{e:?}");
    let e = client
        .prepare("SELECT FROM WHERE")
        .await
        .expect_err("syntax error (extended)");
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR), "{e:?}");
    let e = client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .expect_err("unknown table");
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e:?}");
    let e = client
        .query("SELECT * FROM no_such_table WHERE k = $1", &[&1i64])
        .await
        .expect_err("unknown table (extended)");
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e:?}");
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1")
        .get(0);
    assert_eq!(one, 1);

    // Garbage startup packets to the router: the connection is closed, nothing else suffers.
    let router = format!("127.0.0.1:{}", cluster.router_port);
    let mut idle = TcpStream::connect(&router).await.expect("connect router");
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "bogus protocol code",
            vec![0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78],
        ),
        ("2 GiB length", vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]),
        ("length below the minimum", vec![0, 0, 0, 2, 0, 3, 0, 0]),
        ("random bytes", junk(300, 7)),
    ];
    for (what, bytes) in garbage {
        let mut s = TcpStream::connect(&router).await.expect("connect router");
        s.write_all(&bytes).await.expect("write garbage");
        match read_until_closed(&mut s, Duration::from_secs(10)).await {
            Ok(got) => assert!(
                got.is_empty() || got[0] == b'E',
                "router answered {what} with {got:?} instead of an ErrorResponse"
            ),
            Err(got) => {
                panic!("router kept the connection open 10 s after {what} (sent back {got:?})")
            }
        }
        let one: i32 = client
            .query_one("SELECT 1", &[])
            .await
            .expect("SELECT 1")
            .get(0);
        assert_eq!(one, 1, "after {what}");
    }
    // After a good startup packet, a message header claiming 2 GiB is refused from the
    // header alone: FATAL 08P01 after whatever authentication request came first, then close.
    let mut startup = vec![0u8, 3, 0, 0];
    startup.extend_from_slice(b"user\0tessera\0database\0tessera\0\0");
    let mut packet = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    packet.extend_from_slice(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b'x']);
    let mut s = TcpStream::connect(&router).await.expect("connect router");
    s.write_all(&packet)
        .await
        .expect("write startup and header");
    let got = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("router closes after an oversized message");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("FATAL") && text.contains("08P01") && text.contains("exceeds the limit"),
        "oversized message answered with {text:?}"
    );
    let _ = idle.shutdown().await;
    let other = cluster.client().await;
    let v: String = other
        .query_one("SELECT v FROM kv WHERE k = 1", &[])
        .await
        .expect("read from a new session")
        .get(0);
    assert_eq!(v, "one");

    // The internal protocol refuses a wrong secret, on nodes and on meta.
    let node_addr = cluster.nodes[0].listen_addr();
    for addr in [&node_addr, &cluster.meta_addr] {
        let wrong = tokio::time::timeout(
            Duration::from_secs(10),
            protocol::rpc::RpcClient::connect(addr, &protocol::auth::ClusterSecret::new("wrong")),
        )
        .await
        .expect("handshake with a wrong secret ends in time");
        assert!(
            wrong.is_err(),
            "{addr} accepted a peer with the wrong secret"
        );
    }
    // ...and closes connections that send junk.
    let junk_inputs: Vec<(&str, Vec<u8>)> = vec![
        (
            "huge frame length",
            [vec![0xff, 0xff, 0xff, 0xff], junk(60, 3)].concat(),
        ),
        (
            "small frame of junk",
            [vec![0, 0, 0, 40], junk(40, 11)].concat(),
        ),
        ("random bytes", junk(500, 5)),
    ];
    for (what, bytes) in junk_inputs {
        let mut s = TcpStream::connect(&node_addr).await.expect("connect node");
        let _ = s.write_all(&bytes).await;
        if let Err(got) = read_until_closed(&mut s, Duration::from_secs(10)).await {
            panic!(
                "node kept the connection open 10 s after {what} (sent back {} bytes)",
                got.len()
            );
        }
    }
    // The node still serves authenticated peers and the cluster still answers.
    let stats = rpc_call(
        &node_addr,
        &cluster.secret,
        protocol::message::Request::ShardStats { shard: 0 },
    )
    .await;
    let meta = cluster.meta_client().await;
    let hosts_0 = {
        let st = meta.state();
        let s0 = &st.shards[&0];
        s0.primary == 1 || s0.replicas.contains(&1)
    };
    if hosts_0 {
        assert!(
            matches!(stats, Ok(protocol::message::Response::ShardStats(_))),
            "ShardStats after junk: {stats:?}"
        );
    }
    assert_eq!(count(&client, "SELECT count(*) FROM kv").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_status_lists_nodes_and_shards() {
    let cluster = Cluster::start("admin").await;
    within(
        Duration::from_secs(60),
        "admin_status_lists_nodes_and_shards",
        admin_status_lists_nodes_and_shards_body(&cluster),
    )
    .await;
}

async fn admin_status_lists_nodes_and_shards_body(cluster: &Cluster) {
    let client = cluster.client().await;
    let shards = shards_view(&client).await.expect("tessera.shards");
    let meta = cluster.meta_client().await;
    let state = meta.state();

    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(bin())
            .args([
                "admin",
                "status",
                "--meta",
                &cluster.meta_addr,
                "--secret",
                &cluster.secret,
            ])
            .env_remove("TESSERA_SECRET")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("admin status finishes within 20 s")
    .expect("run admin status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "admin status failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );

    assert_eq!(state.nodes.len(), 2, "{state:?}");
    for node in state.nodes.values() {
        assert!(
            stdout.lines().any(|l| {
                let toks: Vec<&str> = l.split_whitespace().collect();
                toks.contains(&node.id.to_string().as_str()) && l.contains(&node.addr)
            }),
            "node {} ({}) not listed:\n{stdout}",
            node.id,
            node.addr
        );
    }
    assert_eq!(shards.len(), SHARDS);
    for s in &shards {
        let id = int(s, "shard").expect("shard id").to_string();
        let start = text(s, "hash_start").expect("hash_start").to_string();
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id.as_str()) && l.contains(&start)),
            "shard {id} (hash start {start}) not listed:\n{stdout}"
        );
    }

    // Pointed at the router instead, the report comes from the system views over SQL.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(bin())
            .args([
                "admin",
                "status",
                "--router",
                &format!("127.0.0.1:{}", cluster.router_port),
                "--password",
                "tessera",
            ])
            .env_remove("TESSERA_SECRET")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("admin status --router finishes within 20 s")
    .expect("run admin status --router");
    let via_router = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "admin status --router failed: {:?}",
        out.status
    );
    for node in state.nodes.values() {
        assert!(
            via_router.contains(&node.addr),
            "node {} missing:\n{via_router}",
            node.id
        );
    }
    for s in &shards {
        let start = text(s, "hash_start").expect("hash_start").to_string();
        assert!(
            via_router.contains(&start),
            "shard starting {start} missing:\n{via_router}"
        );
    }

    // A wrong secret is an error, not a hang or a success.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(bin())
            .args([
                "admin",
                "status",
                "--meta",
                &cluster.meta_addr,
                "--secret",
                "wrong",
            ])
            .env_remove("TESSERA_SECRET")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("admin status with a wrong secret finishes within 20 s")
    .expect("run admin status");
    assert!(
        !out.status.success(),
        "admin status succeeded with a wrong secret"
    );
}

/// Describe of a prepared statement, as PostgreSQL answers it: the types of untyped parameters
/// are inferred from the statement (what drivers rely on when they prepare without types): `$1`
/// compared with or assigned to a bigint column is int8, `$2` assigned to a text column is text;
/// a SELECT with a parameter describes its result columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_describe_parameters_and_columns() {
    let cluster = Cluster::start("infer").await;
    within(
        Duration::from_secs(60),
        "prepared_statements_describe_parameters_and_columns",
        prepared_statements_describe_parameters_and_columns_body(&cluster),
    )
    .await;
}

async fn prepared_statements_describe_parameters_and_columns_body(cluster: &Cluster) {
    let client = cluster.client().await;
    create_kv(&client).await;
    let cases: [(&str, &[Type]); 4] = [
        (
            "INSERT INTO kv (k, v) VALUES ($1, $2)",
            &[Type::INT8, Type::TEXT],
        ),
        ("SELECT v FROM kv WHERE k = $1", &[Type::INT8]),
        (
            "UPDATE kv SET v = $2 WHERE k = $1",
            &[Type::INT8, Type::TEXT],
        ),
        ("DELETE FROM kv WHERE k = $1", &[Type::INT8]),
    ];
    let mut wrong = Vec::new();
    for (sql, want) in cases {
        match client.prepare(sql).await {
            Ok(stmt) if stmt.params() == want => {}
            Ok(stmt) => wrong.push(format!(
                "{sql}: parameters {:?}, want {want:?}",
                stmt.params()
            )),
            Err(e) => wrong.push(format!("{sql}: {e:?}")),
        }
    }
    // A prepared SELECT describes its result columns, also when the parameter types are given.
    for (sql, types) in [
        ("SELECT v FROM kv WHERE k = $1", &[][..]),
        ("SELECT v FROM kv WHERE k = $1", &[Type::INT8][..]),
        ("SELECT k, v FROM kv WHERE k = $1", &[Type::INT8][..]),
    ] {
        match client.prepare_typed(sql, types).await {
            Ok(stmt) => {
                let cols: Vec<(String, Type)> = stmt
                    .columns()
                    .iter()
                    .map(|c| (c.name().to_string(), c.type_().clone()))
                    .collect();
                let want: Vec<(String, Type)> = if sql.starts_with("SELECT k, v") {
                    vec![("k".into(), Type::INT8), ("v".into(), Type::TEXT)]
                } else {
                    vec![("v".into(), Type::TEXT)]
                };
                if cols != want {
                    wrong.push(format!(
                        "{sql} (types {types:?}): columns {cols:?}, want {want:?}"
                    ));
                }
            }
            Err(e) => wrong.push(format!("{sql} (types {types:?}): {e:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "prepared statements described wrongly:\n{}",
        wrong.join("\n")
    );
    // And they run, with the shard key bound at execution.
    assert_eq!(
        client
            .execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[&7i64, &"seven"])
            .await
            .expect("insert"),
        1
    );
    let v: String = client
        .query_one("SELECT v FROM kv WHERE k = $1", &[&7i64])
        .await
        .expect("select")
        .get(0);
    assert_eq!(v, "seven");
    assert_eq!(
        client
            .execute("UPDATE kv SET v = $2 WHERE k = $1", &[&7i64, &"SEVEN"])
            .await
            .expect("update"),
        1
    );
    assert_eq!(
        client
            .execute("DELETE FROM kv WHERE k = $1", &[&7i64])
            .await
            .expect("delete"),
        1
    );
}
