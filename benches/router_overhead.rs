//! Router overhead: a primary-key SELECT through the router (pgwire, extended protocol,
//! prepared once) against the same lookup sent straight to the shard's primary over the
//! internal protocol (`Request::Execute`), on an in-process cluster (1 meta, 2 nodes,
//! 4 shards, replicas on). One client, sequential, so each figure is one round trip.
//!
//!   cargo bench --bench router_overhead            # 20 000 lookups each
//!   LOOKUPS=5000 cargo bench --bench router_overhead
//!
//! Prints mean, p50 and p99 latency for both paths and the difference, which is what the
//! router adds: pgwire decoding, bind, planning (pruning by the key), one RPC, encoding.

use std::time::{Duration, Instant};

use protocol::Value;
use protocol::hash::shard_hash;

#[path = "../tests/inproc/mod.rs"]
mod inproc;
use protocol::message::{Request, Response};

const ROWS: i64 = 10_000;

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len().max(1) as f64;
    let at = |q: f64| us(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    (mean, at(0.5), at(0.99))
}

fn main() {
    let lookups: usize = std::env::var("LOOKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(lookups));
}

async fn run(lookups: usize) {
    let cluster = inproc::start_cluster(2, 4, 2).await;
    let router = &cluster.router;
    let conn = format!(
        "host=127.0.0.1 port={} user=tessera password=tessera dbname=tessera",
        router.addr.port()
    );
    let client = loop {
        match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Ok((c, task)) => {
                tokio::spawn(task);
                if c.simple_query("SELECT 1").await.is_ok()
                    && router.router.meta.state().shards.len() >= 4
                {
                    break c;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    client
        .batch_execute("CREATE TABLE ro (k bigint PRIMARY KEY, v text)")
        .await
        .expect("create");
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk.iter().map(|k| format!("({k}, 'v{k}')")).collect();
        client
            .batch_execute(&format!("INSERT INTO ro VALUES {}", values.join(",")))
            .await
            .expect("insert");
    }

    // Through the router: a prepared statement, the key bound per call.
    let stmt = client
        .prepare("SELECT v FROM ro WHERE k = $1")
        .await
        .expect("prepare");
    let mut through = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let k = (i as i64 * 7919) % ROWS;
        let t = Instant::now();
        let rows = client.query(&stmt, &[&k]).await.expect("lookup");
        through.push(t.elapsed());
        assert_eq!(rows.len(), 1);
    }

    // Straight to the shard's primary: the same statement and parameter.
    let state = router.router.meta.state();
    // The router's own connection pool to the nodes: the same authenticated connections.
    let pool = router.router.pool.clone();
    let mut direct = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let k = (i as i64 * 7919) % ROWS;
        let shard = state
            .shard_for_hash("default", shard_hash(&Value::Int(k)))
            .expect("shard");
        let addr = state.node_addr(shard.primary).expect("addr").to_string();
        let req = Request::Execute {
            shard: shard.id,
            epoch: shard.epoch,
            sql: "SELECT v FROM ro WHERE k = $1".into(),
            params: vec![Value::Int(k)],
            txn: None,
            timeout_ms: 0,
            lock_timeout_ms: 0,
        };
        let t = Instant::now();
        let resp = pool.call(&addr, req).await.expect("direct lookup");
        direct.push(t.elapsed());
        match resp {
            Response::Result(r) => assert_eq!(r.rows.len(), 1),
            other => panic!("unexpected {other:?}"),
        }
    }
    let (tm, t50, t99) = stats(through);
    let (dm, d50, d99) = stats(direct);
    println!("primary-key lookup, {lookups} sequential calls, 4 shards, release build");
    println!("  through the router : mean {tm:7.1} µs  p50 {t50:7.1} µs  p99 {t99:7.1} µs");
    println!("  straight to shard  : mean {dm:7.1} µs  p50 {d50:7.1} µs  p99 {d99:7.1} µs");
    println!(
        "  router adds        : {:.1} µs per lookup at the mean ({:.2}x)",
        tm - dm,
        tm / dm
    );
}
