//! CancelRequest: a client cancels a running statement and gets 57014, and a cancelled write
//! never takes effect later (the shard is told, and the router waits for its real outcome).

mod inproc;

use std::time::{Duration, Instant};

use inproc::start_cluster;
use tokio_postgres::NoTls;

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_lock_wait_and_the_write_never_lands() {
    let cluster = start_cluster(2, 4, 1).await;
    let holder = cluster.client().await;
    holder
        .batch_execute("CREATE TABLE cn (id int PRIMARY KEY, v int); INSERT INTO cn VALUES (1, 1)")
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; UPDATE cn SET v = 2 WHERE id = 1")
        .await
        .unwrap();

    for in_block in [false, true] {
        let waiter = cluster.client().await;
        if in_block {
            waiter.batch_execute("BEGIN").await.unwrap();
        }
        let token = waiter.cancel_token();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            token.cancel_query(NoTls).await.unwrap();
        });
        let start = Instant::now();
        let err = waiter
            .execute("UPDATE cn SET v = 3 WHERE id = 1", &[])
            .await
            .unwrap_err();
        canceller.await.unwrap();
        assert_eq!(code(&err), "57014", "{err:?}");
        // Well before the 5 s lock-wait limit: the shard stopped waiting when told.
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        if in_block {
            let err = waiter.query("SELECT 1", &[]).await.unwrap_err();
            assert_eq!(code(&err), "25P02");
            waiter.batch_execute("ROLLBACK").await.unwrap();
        }
        // The session goes on.
        assert_eq!(waiter.query("SELECT 1", &[]).await.unwrap().len(), 1);
    }

    // Once the lock holder rolls back, the cancelled updates must not apply late.
    holder.batch_execute("ROLLBACK").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v: i32 = holder
        .query_one("SELECT v FROM cn WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);

    // A cancel for an idle session does nothing to its next statement.
    let idle = cluster.client().await;
    idle.cancel_token().cancel_query(NoTls).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idle.query("SELECT 1", &[]).await.unwrap().len(), 1);
}

/// `pg_backend_pid()` names a session and `pg_cancel_backend(pid)` from another session
/// cancels its running statement with 57014, as in PostgreSQL; an unknown pid answers false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_cancel_backend_cancels_another_session() {
    let cluster = start_cluster(2, 4, 1).await;
    let holder = cluster.client().await;
    holder
        .batch_execute("CREATE TABLE cb (id int PRIMARY KEY, v int); INSERT INTO cb VALUES (1, 1)")
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; UPDATE cb SET v = 2 WHERE id = 1")
        .await
        .unwrap();
    let waiter = cluster.client().await;
    let row = waiter
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_eq!(row.columns()[0].name(), "pg_backend_pid");
    let pid: i32 = row.get(0);
    let admin = cluster.client().await;
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cancelled: bool = admin
            .query_one(&format!("SELECT pg_cancel_backend({pid})"), &[])
            .await
            .unwrap()
            .get(0);
        let unknown: bool = admin
            .query_one("SELECT pg_cancel_backend(1)", &[])
            .await
            .unwrap()
            .get(0);
        (cancelled, unknown)
    });
    let err = waiter
        .execute("UPDATE cb SET v = 3 WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&err), "57014", "{err:?}");
    assert_eq!(canceller.await.unwrap(), (true, false));
    holder.batch_execute("ROLLBACK").await.unwrap();
}
