//! Transactions across shards: two-phase commit makes them all-or-nothing.

mod inproc;

use std::time::Duration;

use inproc::start_cluster;

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// A multi-row INSERT whose rows land on several shards is atomic: one duplicate key
/// anywhere and no row is inserted; without it every row is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_shard_insert_is_all_or_nothing() {
    let cluster = start_cluster(2, 4, 2).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (2, 'two')")
        .await
        .unwrap();
    let plan = c.simple_query("EXPLAIN INSERT INTO t VALUES (100, 'a'), (101, 'b'), (102, 'c'), (103, 'd'), (2, 'dup')").await.unwrap();
    assert!(plan.len() > 3, "the insert reaches several shards");
    let e = c
        .batch_execute(
            "INSERT INTO t VALUES (100, 'a'), (101, 'b'), (102, 'c'), (103, 'd'), (2, 'dup')",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505");
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "no row of the failed statement is visible");
    c.batch_execute("INSERT INTO t VALUES (100, 'a'), (101, 'b'), (102, 'c'), (103, 'd')")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
}

/// 8 clients move money between 40 accounts spread over 4 shards in explicit transactions;
/// retried on 40001/40P01. The total never changes and no transfer is half-applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_across_shards_keep_the_total() {
    let cluster = start_cluster(2, 4, 2).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        .await
        .unwrap();
    let values: Vec<String> = (0..40).map(|i| format!("({i}, 1000)")).collect();
    c.batch_execute(&format!(
        "INSERT INTO accounts VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    let mut tasks = Vec::new();
    let clients: u64 = std::env::var("BANK_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for client_no in 0..clients {
        let client = cluster.client().await;
        tasks.push(tokio::spawn(async move {
            let debit = client
                .prepare("UPDATE accounts SET balance = balance - $2 WHERE id = $1")
                .await
                .unwrap();
            let credit = client
                .prepare("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
                .await
                .unwrap();
            let mut committed = 0;
            let mut seed = client_no * 7919 + 1;
            for _ in 0..40 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = ((seed >> 33) % 40) as i32;
                let to = ((from as u64 + 1 + (seed >> 20) % 39) % 40) as i32;
                let amount = ((seed >> 40) % 50) as i64 + 1;
                loop {
                    client.batch_execute("BEGIN").await.unwrap();
                    let step = async {
                        let d = client.execute(&debit, &[&from, &amount]).await?;
                        let c = client.execute(&credit, &[&to, &amount]).await?;
                        assert_eq!((d, c), (1, 1), "both accounts exist");
                        client.batch_execute("COMMIT").await
                    };
                    match step.await {
                        Ok(()) => {
                            committed += 1;
                            break;
                        }
                        Err(e) => {
                            let retry = matches!(code(&e).as_str(), "40001" | "40P01");
                            let _ = client.batch_execute("ROLLBACK").await;
                            assert!(retry, "unexpected error: {e:?}");
                        }
                    }
                }
            }
            committed
        }));
    }
    let mut total_committed = 0;
    for t in tasks {
        total_committed += tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(total_committed, clients as usize * 40);
    let sum: i64 = c
        .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 40_000, "money is neither created nor destroyed");
    let shards = c
        .simple_query("SELECT count(*) FROM tessera.shards WHERE rows > 0")
        .await
        .unwrap();
    assert!(
        matches!(&shards[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("4"))
    );
}
