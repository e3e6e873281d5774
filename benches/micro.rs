//! Micro benchmarks of the hot paths: key and frame encoding, a shard's point read, a
//! single-row commit, a 10k-row range scan, a 10k × 10k hash join, a 100k-row grouped
//! aggregate, and the router's planning of a point query. Run: `cargo bench --bench micro`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use engine::shard::{Shard, ShardOptions};
use protocol::clock::{Hlc, SystemClock};
use protocol::message::Request;
use protocol::{Value, frame, keycode};

fn encoding(c: &mut Criterion) {
    let key = vec![Value::Int(42), Value::Text("customer-000042".into())];
    c.bench_function("keycode/encode", |b| {
        b.iter(|| keycode::encode_key(black_box(&key)))
    });
    let encoded = keycode::encode_key(&key);
    c.bench_function("keycode/decode", |b| {
        b.iter(|| keycode::decode_key(black_box(&encoded)))
    });
    let req = Request::Execute {
        shard: 3,
        epoch: 1,
        sql: "SELECT v FROM kv WHERE k = $1".into(),
        params: vec![Value::Int(42)],
        txn: None,
        timeout_ms: 0,
        lock_timeout_ms: 0,
    };
    c.bench_function("frame/encode", |b| {
        b.iter(|| frame::encode(black_box(&(7u64, &req))))
    });
    let body = frame::encode(&(7u64, &req)).expect("encodes");
    c.bench_function("frame/decode", |b| {
        b.iter(|| frame::decode::<(u64, Request)>(black_box(&body)))
    });
}

fn shard(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("tessera-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
    let shard =
        Shard::open(&dir.join("shard.redb"), 0, 1, hlc, ShardOptions::default()).expect("opens");
    let run = |sql: &str| {
        for stmt in engine::sql::parse(sql).expect("parses") {
            shard.execute(&stmt, &[]).expect("runs");
        }
    };
    run("CREATE TABLE kv (k bigint PRIMARY KEY, v text)");
    let values: Vec<String> = (0..10_000).map(|i| format!("({i}, 'value {i}')")).collect();
    for chunk in values.chunks(1000) {
        run(&format!("INSERT INTO kv VALUES {}", chunk.join(", ")));
    }
    let point = engine::sql::parse("SELECT v FROM kv WHERE k = $1")
        .expect("parses")
        .remove(0);
    c.bench_function("shard/point_get", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 7919) % 10_000;
            shard.execute(&point, &[Value::Int(k)]).expect("runs")
        })
    });
    let scan = engine::sql::parse("SELECT k, v FROM kv WHERE k >= 0 AND k < 10000")
        .expect("parses")
        .remove(0);
    c.bench_function("shard/range_scan_10k", |b| {
        b.iter(|| shard.execute(&scan, &[]).expect("runs"))
    });
    let insert = engine::sql::parse("INSERT INTO kv VALUES ($1, 'x')")
        .expect("parses")
        .remove(0);
    let mut next = 1_000_000;
    c.bench_function("shard/insert_commit_fsync", |b| {
        b.iter(|| {
            next += 1;
            shard.execute(&insert, &[Value::Int(next)]).expect("runs")
        })
    });
    // Two 10k-row tables joined on a non-key column (a hash join), and a 100k-row table
    // grouped into 100 groups.
    run("CREATE TABLE ja (id bigint PRIMARY KEY, g bigint, v text)");
    run("CREATE TABLE jb (id bigint PRIMARY KEY, g bigint, w bigint)");
    for t in ["ja", "jb"] {
        let rows: Vec<String> = (0..10_000)
            .map(|i| match t {
                "ja" => format!("({i}, {}, 'v{i}')", (i * 7919) % 10_000),
                _ => format!("({i}, {}, {})", (i * 7919) % 10_000, i % 97),
            })
            .collect();
        for chunk in rows.chunks(1000) {
            run(&format!("INSERT INTO {t} VALUES {}", chunk.join(", ")));
        }
    }
    let join = engine::sql::parse("SELECT count(*), sum(jb.w) FROM ja JOIN jb ON ja.g = jb.g")
        .expect("parses")
        .remove(0);
    c.bench_function("shard/hash_join_10k_x_10k", |b| {
        b.iter(|| shard.execute(&join, &[]).expect("runs"))
    });
    // Equality on a non-key column of a 10k-row table: a full scan, then a secondary index.
    let by_g = engine::sql::parse("SELECT v FROM ja WHERE g = $1")
        .expect("parses")
        .remove(0);
    let mut g = 0;
    c.bench_function("shard/filter_non_key_10k_no_index", |b| {
        b.iter(|| {
            g = (g + 7919) % 10_000;
            shard.execute(&by_g, &[Value::Int(g)]).expect("runs")
        })
    });
    run("CREATE INDEX ja_g ON ja (g)");
    c.bench_function("shard/filter_non_key_10k_index", |b| {
        b.iter(|| {
            g = (g + 7919) % 10_000;
            shard.execute(&by_g, &[Value::Int(g)]).expect("runs")
        })
    });
    run("CREATE TABLE grp (id bigint PRIMARY KEY, g bigint, v bigint)");
    let rows: Vec<String> = (0..100_000)
        .map(|i| format!("({i}, {}, {i})", i % 100))
        .collect();
    for chunk in rows.chunks(2000) {
        run(&format!("INSERT INTO grp VALUES {}", chunk.join(", ")));
    }
    let group = engine::sql::parse("SELECT g, count(*), sum(v) FROM grp GROUP BY g")
        .expect("parses")
        .remove(0);
    c.bench_function("shard/group_by_100k", |b| {
        b.iter(|| shard.execute(&group, &[]).expect("runs"))
    });
    drop(shard);
    let _ = std::fs::remove_dir_all(&dir);
}

fn router_planning(c: &mut Criterion) {
    use protocol::cluster::*;
    let mut state = ClusterState::default();
    state.nodes.insert(
        1,
        NodeInfo {
            id: 1,
            addr: "127.0.0.1:1".into(),
        },
    );
    state.keyspaces.insert(
        DEFAULT_KEYSPACE.into(),
        KeyspaceInfo {
            name: DEFAULT_KEYSPACE.into(),
            shard_count: 4,
            replication_factor: 1,
            nodes: Vec::new(),
        },
    );
    for (i, range) in protocol::hash::split_space(4).into_iter().enumerate() {
        state.shards.insert(
            i as u32,
            ShardInfo {
                id: i as u32,
                keyspace: DEFAULT_KEYSPACE.into(),
                range,
                primary: 1,
                replicas: vec![],
                epoch: 1,
                frozen: false,
                sealed: false,
                split_from: None,
            },
        );
    }
    let create = engine::sql::parse("CREATE TABLE accounts (aid int PRIMARY KEY, abalance int)")
        .expect("parses")
        .remove(0);
    let schema = engine::sql::schema_from_create(&create).expect("schema");
    state.tables.insert(
        "accounts".into(),
        TableInfo {
            schema,
            keyspace: DEFAULT_KEYSPACE.into(),
            distribution: Distribution::Sharded,
            shard_key: vec![0],
        },
    );
    let stmt = engine::sql::parse("SELECT abalance FROM accounts WHERE aid = $1")
        .expect("parses")
        .remove(0);
    let params = [Value::Int(42)];
    c.bench_function("router/plan_point_query", |b| {
        b.iter(|| {
            router::plan::Planner::new(&state, &params)
                .plan(black_box(&stmt))
                .expect("plans")
        })
    });
}

criterion_group!(benches, encoding, shard, router_planning);
criterion_main!(benches);
