//! `tessera dev`: the whole cluster in one process keeps its data across kill -9 and a
//! restart on the same data directory and port; psql (when installed) can talk to it.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

const ROWS: i64 = 100;

fn dev_args(dir: &TempDir, port: u16) -> Vec<String> {
    vec![
        "dev".into(),
        "--data".into(),
        dir.join("data").display().to_string(),
        "--port".into(),
        port.to_string(),
    ]
}

fn ready_line(port: u16) -> String {
    format!("psql -h 127.0.0.1 -p {port} -U tessera -d tessera")
}

/// Runs `sql` until it succeeds (bounded): after a restart the shards may take a moment to
/// open. Wrong answers are not retried, only errors.
async fn query_retry(port: u16, sql: &str, wait: Duration) -> Vec<tokio_postgres::Row> {
    let deadline = Instant::now() + wait;
    loop {
        let err = match try_connect(port).await {
            Ok(c) => match c.query(sql, &[]).await {
                Ok(rows) => return rows,
                Err(e) => format!("{e:?}"),
            },
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("{sql} kept failing for {wait:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_survives_kill9_restart() {
    let dir = TempDir::new("dev");
    let port = free_port();
    let t0 = Instant::now();
    let mut dev = Proc::start("dev", dev_args(&dir, port), &ready_line(port), dir.path()).await;
    eprintln!("dev ready after {:?}", t0.elapsed());
    within(
        Duration::from_secs(90),
        "dev_cluster_survives_kill9_restart",
        dev_body(&mut dev, port, t0),
    )
    .await;
}

async fn dev_body(dev: &mut Proc, port: u16, t0: Instant) {
    let client = connect(port, Duration::from_secs(10)).await;
    client
        .batch_execute("CREATE TABLE kv (k bigint primary key, v text)")
        .await
        .expect("CREATE TABLE");
    let insert = client
        .prepare_typed(
            "INSERT INTO kv (k, v) VALUES ($1, $2)",
            &[
                tokio_postgres::types::Type::INT8,
                tokio_postgres::types::Type::TEXT,
            ],
        )
        .await
        .expect("prepare insert");
    for k in 0..ROWS {
        let n = client
            .execute(&insert, &[&k, &format!("row-{k}")])
            .await
            .unwrap_or_else(|e| panic!("insert {k}: {e:?}\n{}", dev.log_tail(30)));
        assert_eq!(n, 1);
    }
    let before: i64 = client
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(before, ROWS);
    drop(client);

    dev.kill9().await;
    let t_restart = Instant::now();
    dev.restart().await;
    eprintln!(
        "dev ready again {:?} after the restart",
        t_restart.elapsed()
    );

    let rows = query_retry(port, "SELECT count(*) FROM kv", Duration::from_secs(15)).await;
    let after: i64 = rows[0].get(0);
    assert_eq!(
        after,
        ROWS,
        "rows after kill -9 and restart\n{}",
        dev.log_tail(30)
    );
    let rows = query_retry(
        port,
        "SELECT v FROM kv WHERE k = 37",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(rows.len(), 1, "key 37 after restart");
    assert_eq!(rows[0].get::<_, String>(0), "row-37");
    let rows = query_retry(port, "SELECT k, v FROM kv", Duration::from_secs(5)).await;
    let mut keys: Vec<i64> = rows
        .iter()
        .map(|r| {
            let k: i64 = r.get(0);
            assert_eq!(r.get::<_, String>(1), format!("row-{k}"));
            k
        })
        .collect();
    keys.sort();
    assert_eq!(keys, (0..ROWS).collect::<Vec<_>>());

    // Writes work after the restart too.
    let client = connect(port, Duration::from_secs(10)).await;
    assert_eq!(
        client
            .execute("INSERT INTO kv (k, v) VALUES (1000, 'after')", &[])
            .await
            .expect("insert after restart"),
        1
    );

    // psql, when installed.
    let has_psql = std::process::Command::new("which")
        .arg("psql")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_psql {
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "tessera",
                    "-d",
                    "tessera",
                    "-X",
                    "-w",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-At",
                    "-c",
                    "select 1",
                ])
                .env("PGCONNECT_TIMEOUT", "10")
                .env("PGPASSWORD", "tessera")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("psql finishes within 20 s")
        .expect("run psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "psql failed: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        assert_eq!(stdout.trim(), "1", "psql output:\n{stdout}\n{stderr}");
    } else {
        eprintln!("note: psql is not installed; skipping the psql check");
    }
    eprintln!("dev restart test took {:?}", t0.elapsed());
}
