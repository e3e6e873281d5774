//! Micro benchmarks of the hot paths: key and frame encoding, a shard's point read, a
//! single-row commit and a 10k-row range scan. Run: `cargo bench --bench micro`.

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
    drop(shard);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, encoding, shard);
criterion_main!(benches);
