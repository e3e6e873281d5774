//! Transactions through the wire protocol: isolation behaviour, row locks, concurrency.
//!
//! Two-session scenarios follow the Hermitage test suite's shape (github.com/ept/hermitage):
//! each step names the session and the statement; the expected outcome is PostgreSQL's.

mod inproc;

use std::time::Duration;

use inproc::start_cluster;
use tokio_postgres::Client;

async fn setup(c: &Client, table: &str) {
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, value int); \
         INSERT INTO {table} VALUES (1, 10), (2, 20)"
    ))
    .await
    .unwrap();
}

async fn values(c: &Client, table: &str) -> Vec<(i32, i32)> {
    c.query(&format!("SELECT id, value FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// 8 clients × 500 `UPDATE … SET n = n + 1` in READ COMMITTED: no increment is lost and no
/// client sees an error (writers queue on the row lock and re-read the newest version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_never_lost() {
    let cluster = start_cluster(2, 4, 2).await;
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE counters (id int PRIMARY KEY, n bigint); INSERT INTO counters VALUES (1, 0)",
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = cluster.client().await;
        tasks.push(tokio::spawn(async move {
            let stmt = client
                .prepare("UPDATE counters SET n = n + 1 WHERE id = 1")
                .await
                .unwrap();
            for _ in 0..500 {
                assert_eq!(client.execute(&stmt, &[]).await.unwrap(), 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n: i64 = c
        .query_one("SELECT n FROM counters WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4000);
}

/// G0 (write cycles) and G1a/G1b/G1c (no dirty or intermediate reads): at every level a
/// transaction sees no uncommitted write, and a rolled-back write never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dirty_reads_and_aborted_writes_vanish() {
    let cluster = start_cluster(1, 1, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    for level in ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] {
        setup(&t1, "hermitage").await;
        t1.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .await
            .unwrap();
        t2.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .await
            .unwrap();
        t1.execute("UPDATE hermitage SET value = 101 WHERE id = 1", &[])
            .await
            .unwrap();
        // G1a/G1b: T2 does not see T1's uncommitted (and later aborted) write.
        assert_eq!(
            values(&t2, "hermitage").await,
            vec![(1, 10), (2, 20)],
            "{level}"
        );
        t1.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            values(&t2, "hermitage").await,
            vec![(1, 10), (2, 20)],
            "{level}"
        );
        t2.batch_execute("COMMIT").await.unwrap();
        assert_eq!(
            values(&t1, "hermitage").await,
            vec![(1, 10), (2, 20)],
            "{level}"
        );
    }
}

/// G0 write cycles are prevented: the second writer of a row waits for the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_waits_for_the_first() {
    let cluster = start_cluster(1, 1, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    setup(&t1, "g0").await;
    t1.batch_execute("BEGIN").await.unwrap();
    t2.batch_execute("BEGIN").await.unwrap();
    t1.execute("UPDATE g0 SET value = 11 WHERE id = 1", &[])
        .await
        .unwrap();
    let blocked = tokio::spawn(async move {
        t2.execute("UPDATE g0 SET value = 12 WHERE id = 1", &[])
            .await
            .unwrap();
        t2.batch_execute("COMMIT").await.unwrap();
        t2
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished(), "T2 must wait for T1's row lock");
    t1.batch_execute("COMMIT").await.unwrap();
    let _t2 = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values(&t1, "g0").await, vec![(1, 12), (2, 20)]);
}

/// A client that goes away inside a transaction block leaves no row locks behind: its
/// session rolls the block back on every shard it touched, as PostgreSQL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_leaves_no_locks() {
    let cluster = start_cluster(2, 4, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    setup(&t1, "gone").await;
    t1.batch_execute("BEGIN").await.unwrap();
    for id in [1, 2] {
        t1.execute("UPDATE gone SET value = value + 1 WHERE id = $1", &[&id])
            .await
            .unwrap();
    }
    drop(t1);
    // A lock left behind would fail this with 55P03 instead of waiting for ever.
    t2.batch_execute("SET lock_timeout = '5s'; BEGIN")
        .await
        .unwrap();
    for id in [1, 2] {
        t2.execute("UPDATE gone SET value = value + 2 WHERE id = $1", &[&id])
            .await
            .unwrap();
    }
    t2.batch_execute("COMMIT").await.unwrap();
    assert_eq!(values(&t2, "gone").await, vec![(1, 12), (2, 22)]);
}

/// P4 (lost update): READ COMMITTED re-reads the newest row (no update is lost);
/// REPEATABLE READ and SERIALIZABLE fail the second writer with 40001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_update_by_isolation_level() {
    let cluster = start_cluster(1, 1, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    for (level, expect_error) in [
        ("READ COMMITTED", false),
        ("REPEATABLE READ", true),
        ("SERIALIZABLE", true),
    ] {
        setup(&t1, "p4").await;
        t1.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .await
            .unwrap();
        t2.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .await
            .unwrap();
        assert_eq!(values(&t1, "p4").await[0], (1, 10));
        assert_eq!(values(&t2, "p4").await[0], (1, 10));
        t1.execute("UPDATE p4 SET value = value + 1 WHERE id = 1", &[])
            .await
            .unwrap();
        let t2_task = {
            let t2 = &t2;
            async move {
                t2.execute("UPDATE p4 SET value = value + 1 WHERE id = 1", &[])
                    .await
            }
        };
        let (second, _) = tokio::join!(t2_task, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            t1.batch_execute("COMMIT").await.unwrap();
        });
        match second {
            Ok(n) => {
                assert!(!expect_error, "{level}: second writer should fail");
                assert_eq!(n, 1);
                t2.batch_execute("COMMIT").await.unwrap();
                assert_eq!(
                    values(&t1, "p4").await[0],
                    (1, 12),
                    "{level}: no lost update"
                );
            }
            Err(e) => {
                assert!(expect_error, "{level}: unexpected error {e}");
                assert_eq!(code(&e), "40001", "{level}");
                t2.batch_execute("ROLLBACK").await.unwrap();
                assert_eq!(values(&t1, "p4").await[0], (1, 11));
            }
        }
    }
}

/// G2-item (write skew): only SERIALIZABLE refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_skew_only_prevented_by_serializable() {
    let cluster = start_cluster(1, 1, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    for (level, prevented) in [("REPEATABLE READ", false), ("SERIALIZABLE", true)] {
        setup(&t1, "g2").await;
        t1.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .await
            .unwrap();
        t2.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .await
            .unwrap();
        t1.query("SELECT * FROM g2 WHERE id IN (1, 2)", &[])
            .await
            .unwrap();
        t2.query("SELECT * FROM g2 WHERE id IN (1, 2)", &[])
            .await
            .unwrap();
        t1.execute("UPDATE g2 SET value = 11 WHERE id = 1", &[])
            .await
            .unwrap();
        t2.execute("UPDATE g2 SET value = 21 WHERE id = 2", &[])
            .await
            .unwrap();
        t1.batch_execute("COMMIT").await.unwrap();
        let second = t2.batch_execute("COMMIT").await;
        if prevented {
            let e = second.expect_err("write skew must not commit under SERIALIZABLE");
            assert_eq!(code(&e), "40001");
            assert_eq!(values(&t1, "g2").await, vec![(1, 11), (2, 20)]);
        } else {
            second.unwrap();
            assert_eq!(values(&t1, "g2").await, vec![(1, 11), (2, 21)]);
        }
    }
}

/// Errors abort the block (25P02) until ROLLBACK; COMMIT of a failed block rolls back;
/// a deadlock makes one victim fail with 40P01; READ ONLY refuses writes (25006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_blocks_deadlocks_and_read_only() {
    let cluster = start_cluster(1, 1, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    setup(&t1, "blk").await;
    t1.batch_execute("BEGIN").await.unwrap();
    t1.execute("UPDATE blk SET value = 0 WHERE id = 1", &[])
        .await
        .unwrap();
    let e = t1.query("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(code(&e), "22012");
    let e = t1.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    t1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        values(&t1, "blk").await[0],
        (1, 10),
        "a failed block's writes never commit"
    );

    t1.batch_execute("BEGIN READ ONLY").await.unwrap();
    let e = t1
        .execute("UPDATE blk SET value = 0 WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006");
    t1.batch_execute("ROLLBACK").await.unwrap();

    t1.batch_execute("BEGIN").await.unwrap();
    t2.batch_execute("BEGIN").await.unwrap();
    t1.execute("UPDATE blk SET value = 1 WHERE id = 1", &[])
        .await
        .unwrap();
    t2.execute("UPDATE blk SET value = 2 WHERE id = 2", &[])
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        t1.execute("UPDATE blk SET value = 1 WHERE id = 2", &[]),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            t2.execute("UPDATE blk SET value = 2 WHERE id = 1", &[])
                .await
        }
    );
    let codes: Vec<String> = [&a, &b]
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(code)
        .collect();
    assert_eq!(
        codes,
        vec!["40P01".to_string()],
        "exactly one victim: {a:?} {b:?}"
    );
    t1.batch_execute("ROLLBACK").await.unwrap();
    t2.batch_execute("ROLLBACK").await.unwrap();
}

/// SELECT … FOR UPDATE locks the rows it returns until the transaction ends: a second locker
/// waits (or fails at once with NOWAIT, 55P03) and then sees the newest committed values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_for_update_locks_rows() {
    let cluster = start_cluster(2, 4, 2).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    setup(&t1, "fu").await;
    t1.batch_execute("BEGIN").await.unwrap();
    let rows = t1
        .query("SELECT value FROM fu WHERE id = 1 FOR UPDATE", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 10);
    t2.batch_execute("BEGIN").await.unwrap();
    let e = t2
        .query("SELECT value FROM fu WHERE id = 1 FOR UPDATE NOWAIT", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55P03");
    t2.batch_execute("ROLLBACK").await.unwrap();
    t2.batch_execute("BEGIN").await.unwrap();
    let waiter = tokio::spawn(async move {
        let v: i32 = t2
            .query_one("SELECT value FROM fu WHERE id = 1 FOR UPDATE", &[])
            .await
            .unwrap()
            .get(0);
        t2.batch_execute("COMMIT").await.unwrap();
        v
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the second locker waits for the first"
    );
    t1.execute("UPDATE fu SET value = 11 WHERE id = 1", &[])
        .await
        .unwrap();
    t1.batch_execute("COMMIT").await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen, 11,
        "READ COMMITTED returns the newest version once the lock is granted"
    );
    // Across shards: every shard the query reads locks its rows.
    t1.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        t1.query("SELECT id FROM fu FOR UPDATE", &[])
            .await
            .unwrap()
            .len(),
        2
    );
    let t3 = cluster.client().await;
    let e = t3
        .query("SELECT id FROM fu WHERE id = 2 FOR UPDATE NOWAIT", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55P03");
    t1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        t3.query("SELECT id FROM fu WHERE id = 2 FOR UPDATE NOWAIT", &[])
            .await
            .unwrap()
            .len(),
        1
    );
}

/// statement_timeout cancels a statement (57014) that waits too long for a row lock, and the
/// cancelled write never commits; lock_timeout gives 55P03 instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_and_lock_timeouts() {
    let cluster = start_cluster(1, 1, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    setup(&t1, "st").await;
    t1.batch_execute("BEGIN").await.unwrap();
    t1.execute("UPDATE st SET value = 11 WHERE id = 1", &[])
        .await
        .unwrap();
    t2.batch_execute("SET statement_timeout = 300")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = t2
        .execute("UPDATE st SET value = 99 WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "57014");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cancelled near its deadline"
    );
    // lock_timeout holds outside a block too (it used to wait for the deadlock timeout).
    t2.batch_execute("SET statement_timeout = 0; SET lock_timeout = '200ms'")
        .await
        .unwrap();
    gives_up_on_the_lock(&t2, "UPDATE st SET value = 97 WHERE id = 1").await;
    t2.batch_execute("SET statement_timeout = 0; SET lock_timeout = '200ms'; BEGIN")
        .await
        .unwrap();
    gives_up_on_the_lock(&t2, "UPDATE st SET value = 98 WHERE id = 1").await;
    t2.batch_execute("ROLLBACK").await.unwrap();
    // A SET inside the block applies from the next statement on, also on a shard the block
    // already opened (it used to keep the value the block began with).
    t2.batch_execute("SET lock_timeout = 0; BEGIN; SELECT value FROM st WHERE id = 2")
        .await
        .unwrap();
    t2.batch_execute("SET lock_timeout = '200ms'")
        .await
        .unwrap();
    gives_up_on_the_lock(&t2, "UPDATE st SET value = 96 WHERE id = 1").await;
    t2.batch_execute("ROLLBACK").await.unwrap();
    t1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        values(&t1, "st").await[0],
        (1, 11),
        "neither timed-out write committed"
    );
}

/// Runs `sql`, which must give up waiting for a row lock with 55P03 (lock_timeout), well
/// before the 5 s deadlock timeout would have ended the wait.
async fn gives_up_on_the_lock(client: &tokio_postgres::Client, sql: &str) {
    let started = std::time::Instant::now();
    let e = client.execute(sql, &[]).await.unwrap_err();
    assert_eq!(code(&e), "55P03", "{sql}: {e:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "{sql}");
}

/// lock_timeout also bounds a statement outside a block that becomes a distributed
/// transaction of its own (an UPDATE of every shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_bounds_an_implicit_distributed_write() {
    let cluster = start_cluster(1, 4, 1).await;
    let (t1, t2) = (cluster.client().await, cluster.client().await);
    setup(&t1, "lt").await;
    t1.batch_execute("BEGIN; UPDATE lt SET value = 11 WHERE id = 1")
        .await
        .unwrap();
    t2.batch_execute("SET lock_timeout = '200ms'")
        .await
        .unwrap();
    gives_up_on_the_lock(&t2, "UPDATE lt SET value = value + 1").await;
    t1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        values(&t1, "lt").await,
        vec![(1, 11), (2, 20)],
        "the timed-out write changed nothing"
    );
}

/// SELECT … FOR UPDATE SKIP LOCKED, the job-queue pattern: each worker gets the first rows
/// nobody else holds, without waiting, on one shard and across four (where a worker may lock
/// up to LIMIT rows on every shard, more than it returns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_locked_hands_each_worker_different_rows() {
    for shards in [1, 4] {
        let cluster = start_cluster(2, shards, 1).await;
        let a = cluster.client().await;
        let b = cluster.client().await;
        a.batch_execute(
            "CREATE TABLE jobs (id int PRIMARY KEY, done bool); \
             INSERT INTO jobs VALUES (1, false), (2, false), (3, false), (4, false), (5, false)",
        )
        .await
        .unwrap();
        let take = "SELECT id FROM jobs WHERE NOT done ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED";
        let ids = |rows: Vec<tokio_postgres::Row>| -> Vec<i32> {
            rows.iter().map(|r| r.get(0)).collect()
        };
        a.batch_execute("BEGIN").await.unwrap();
        assert_eq!(
            ids(a.query(take, &[]).await.unwrap()),
            vec![1, 2],
            "shards={shards}"
        );
        b.batch_execute("BEGIN").await.unwrap();
        let started = std::time::Instant::now();
        let second = ids(b.query(take, &[]).await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(2));
        if shards == 1 {
            assert_eq!(second, vec![3, 4]);
        } else {
            // Across shards each shard locks up to the limit of its own rows, so the first
            // worker may hold more than it returned: the second gets only rows nobody holds.
            assert!(second.iter().all(|id| *id > 2), "{second:?}");
        }
        // Plain FOR UPDATE NOWAIT on a row a holds still fails at once.
        let err = b
            .query("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT", &[])
            .await
            .unwrap_err();
        assert_eq!(code(&err), "55P03");
        b.batch_execute("ROLLBACK").await.unwrap();
        a.batch_execute("UPDATE jobs SET done = true WHERE id IN (1, 2); COMMIT")
            .await
            .unwrap();
        assert_eq!(ids(b.query(take, &[]).await.unwrap()), vec![3, 4]);
        drop(cluster);
    }
}

/// FOR UPDATE on a table without a primary key locks rows by their hidden row id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_update_locks_rows_of_a_table_without_a_key() {
    let cluster = start_cluster(1, 1, 1).await;
    let a = cluster.client().await;
    let b = cluster.client().await;
    a.batch_execute("CREATE TABLE nk (v int); INSERT INTO nk VALUES (1), (1), (2)")
        .await
        .unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        a.query("SELECT v FROM nk WHERE v = 1 FOR UPDATE", &[])
            .await
            .unwrap()
            .len(),
        2
    );
    let err = b
        .query("SELECT v FROM nk WHERE v = 1 FOR UPDATE NOWAIT", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&err), "55P03");
    assert_eq!(
        b.query("SELECT v FROM nk WHERE v = 2 FOR UPDATE NOWAIT", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    a.batch_execute("ROLLBACK").await.unwrap();
}
