//! Commit throughput of one shard with 1, 8 and 32 concurrent clients, fsync on every
//! commit (`Immediate`): what group commit buys. Each client runs single-row autocommit
//! INSERTs on its own keys for a fixed time. Run: `cargo bench --bench commits`.
//!
//! Prints commits/s and redb write transactions (fsyncs) per commit for each client count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::shard::{Shard, ShardOptions};
use protocol::Value;
use protocol::clock::{Hlc, SystemClock};

fn main() {
    let seconds: u64 = std::env::var("COMMIT_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("clients  commits/s  commits/fsync");
    for clients in [1usize, 8, 32] {
        let dir = std::env::temp_dir().join(format!(
            "tessera-commit-bench-{}-{clients}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let shard = Arc::new(
            Shard::open(&dir.join("s.redb"), 0, 1, hlc, ShardOptions::default()).expect("opens"),
        );
        let create = engine::sql::parse("CREATE TABLE t (k bigint PRIMARY KEY, v text)")
            .expect("parses")
            .remove(0);
        shard.execute(&create, &[]).expect("creates");
        let insert = Arc::new(
            engine::sql::parse("INSERT INTO t VALUES ($1, 'x')")
                .expect("parses")
                .remove(0),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let start_lsn = shard.lsn();
        let batches_before = shard.write_batches();
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let (shard, insert, stop, done) =
                    (shard.clone(), insert.clone(), stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut k = (c as i64) << 40;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        shard.execute(&insert, &[Value::Int(k)]).expect("commits");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("worker");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let commits = done.load(Ordering::Relaxed);
        assert_eq!(shard.lsn() - start_lsn, commits, "one LSN per commit");
        let batches = shard.write_batches() - batches_before;
        println!(
            "{clients:>7}  {:>9.0}  {:>13.2}",
            commits as f64 / elapsed,
            commits as f64 / batches.max(1) as f64
        );
        drop(shard);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
