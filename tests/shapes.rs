//! Simple-protocol statements that differ only in integer literals run as one prepared shape
//! (`router::shapes`). The shortcut must be taken for point statements, and must never change
//! what a statement means: where a literal and a parameter would differ (a column position,
//! a `smallint` or `text` context) the statement keeps taking the full path.

mod inproc;

use std::sync::atomic::Ordering;

use inproc::{Cluster, start_cluster};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The rows of a simple-protocol statement, as text.
async fn rows(c: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}

/// The one value of a one-row, one-column result (`None` for no row).
async fn value(c: &Client, sql: &str) -> Option<String> {
    let rows = rows(c, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(rows.len() <= 1, "{sql}: {} rows", rows.len());
    rows.first().and_then(|r| r[0].clone())
}

fn shaped_runs(cluster: &Cluster) -> u64 {
    cluster.router.router.shaped_runs.load(Ordering::Relaxed)
}

/// A 4-shard cluster with `kv (k int PRIMARY KEY, v text)` holding `(k, 'v<k>')`.
async fn kv_cluster(rows: i32) -> (Cluster, Client) {
    let cluster = start_cluster(2, 4, 1).await;
    let c = cluster.client().await;
    let values: Vec<String> = (0..rows).map(|k| format!("({k}, 'v{k}')")).collect();
    c.batch_execute(&format!(
        "CREATE TABLE kv (k int PRIMARY KEY, v text); INSERT INTO kv VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    (cluster, c)
}

/// Point reads and writes by key take the shortcut, reach the shard that owns each key, and
/// follow the table when it is recreated with another shard key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_statements_run_as_their_shape() {
    let (cluster, c) = kv_cluster(100).await;
    let before = shaped_runs(&cluster);
    for k in 0..100 {
        let got = value(&c, &format!("SELECT v FROM kv WHERE k = {k}")).await;
        assert_eq!(got, Some(format!("v{k}")), "k = {k}");
    }
    assert_eq!(value(&c, "SELECT v FROM kv WHERE k = 100").await, None);
    // The first sighting notes the shape, the second learns it (in the background), the
    // rest use it.
    assert!(
        shaped_runs(&cluster) - before >= 90,
        "the shortcut was not taken"
    );

    // Writes, inside a transaction block and out of one.
    c.simple_query("BEGIN").await.unwrap();
    for k in 0..10 {
        c.simple_query(&format!("UPDATE kv SET v = 'u' WHERE k = {k}"))
            .await
            .unwrap();
    }
    c.simple_query("ROLLBACK").await.unwrap();
    for k in 0..10 {
        c.simple_query(&format!("UPDATE kv SET v = v || '!' WHERE k = {k}"))
            .await
            .unwrap();
    }
    for k in 0..12 {
        let want = if k < 10 {
            format!("v{k}!")
        } else {
            format!("v{k}")
        };
        assert_eq!(
            value(&c, &format!("SELECT v FROM kv WHERE k = {k}")).await,
            Some(want)
        );
    }

    // The column that carries the name now, not the one the shape was learned with.
    c.batch_execute(inproc::REPLACE_KV_V).await.unwrap();
    for k in 10..20 {
        let want = (k >= 15).then(|| format!("n{k}"));
        assert_eq!(
            value(&c, &format!("SELECT v FROM kv WHERE k = {k}")).await,
            want
        );
    }

    // Same columns, rows spread by another column: the learned shape's route no longer holds.
    c.batch_execute(
        "DROP TABLE kv;
         CREATE TABLE kv (k int, s int, v text, PRIMARY KEY (k, s)) WITH (shard_key = 's')",
    )
    .await
    .unwrap();
    for k in 0..50 {
        c.simple_query(&format!(
            "INSERT INTO kv VALUES ({k}, {}, 'w{k}')",
            k * 7 + 3
        ))
        .await
        .unwrap();
    }
    for k in 0..50 {
        let got = value(&c, &format!("SELECT v FROM kv WHERE k = {k}")).await;
        assert_eq!(got, Some(format!("w{k}")), "k = {k}");
    }
}

/// Statements whose literals a parameter could not stand for keep their meaning, and do
/// not take the shortcut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_keep_their_meaning() {
    let (cluster, c) = kv_cluster(20).await;
    c.batch_execute(
        "CREATE TABLE small (k int PRIMARY KEY, x smallint);
         INSERT INTO small VALUES (1, 30000), (2, -30000)",
    )
    .await
    .unwrap();
    let before = shaped_runs(&cluster);
    for round in 0..4 {
        // A column position, not the constant 1.
        let n = 10 + round;
        let got = rows(
            &c,
            &format!("SELECT k FROM kv WHERE k < {n} ORDER BY 1 DESC"),
        )
        .await
        .unwrap();
        let want: Vec<Vec<Option<String>>> =
            (0..n).rev().map(|k| vec![Some(k.to_string())]).collect();
        assert_eq!(got, want, "round {round}");

        // smallint + integer is integer: 30000 + 10000 does not overflow.
        let add = 10000 + round;
        assert_eq!(
            value(&c, &format!("SELECT x + {add} FROM small WHERE k = 1")).await,
            Some((30000 + add).to_string())
        );

        // text = integer has no operator, whatever the number.
        let err = rows(&c, &format!("SELECT k FROM kv WHERE v = {round}"))
            .await
            .expect_err("text = integer");
        assert_eq!(
            err.code().map(|s| s.code()),
            Some("42883"),
            "round {round}: {err}"
        );

        // LIMIT keeps its literal.
        assert_eq!(
            rows(
                &c,
                &format!(
                    "SELECT k FROM kv WHERE k >= 5 ORDER BY k LIMIT {}",
                    round + 1
                )
            )
            .await
            .unwrap()
            .len(),
            round as usize + 1
        );
    }
    assert_eq!(shaped_runs(&cluster), before, "a refused shape was used");
}
