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
    // Once every participant finished, the router has the coordinator forget the decision,
    // so decision records do not pile up (`ShardDecisions` leaves out forgets that are only
    // queued; the coordinator's next batch deletes those).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kept = cluster.decisions_kept().await;
        if kept == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kept} decision records kept after {total_committed} transfers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shards = c
        .simple_query("SELECT count(*) FROM tessera.shards WHERE rows > 0")
        .await
        .unwrap();
    assert!(
        matches!(&shards[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("4"))
    );
    // Replicas kept up from the change log: none needed a snapshot (a subscriber that once
    // read a commit before the primary's LSN watch moved was sent a whole new copy).
    let snapshots = c
        .simple_query("SELECT sum(snapshots)::int8 FROM tessera.replication")
        .await
        .unwrap();
    assert!(
        matches!(&snapshots[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("0")),
        "{snapshots:?}"
    );
}

/// Federation: CREATE KEYSPACE places a keyspace's shards on the nodes it names only, its
/// tables live there, and queries join across keyspaces and with reference tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_by_sql_on_its_own_nodes() {
    let cluster = start_cluster(3, 2, 1).await;
    let c = cluster.client().await;
    let e = c
        .batch_execute("CREATE KEYSPACE billing WITH (shards = 3, replicas = 2, nodes = '9')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42704", "{e:?}");
    let e = c
        .batch_execute("CREATE KEYSPACE billing WITH (shards = 3, replicas = 3, nodes = '2,3')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e:?}");
    c.batch_execute("CREATE KEYSPACE billing WITH (shards = 3, replicas = 2, nodes = '2,3')")
        .await
        .unwrap();
    let e = c
        .batch_execute("CREATE KEYSPACE billing")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42710");
    c.batch_execute("CREATE KEYSPACE IF NOT EXISTS billing")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    let e = c.batch_execute("CREATE KEYSPACE other").await.unwrap_err();
    assert_eq!(code(&e), "25001");
    c.batch_execute("ROLLBACK").await.unwrap();
    let state = cluster.router.router.meta.state();
    let shards = state.keyspace_shards("billing");
    assert_eq!(shards.len(), 3);
    for s in &shards {
        let mut on = vec![s.primary];
        on.extend(&s.replicas);
        on.sort();
        assert_eq!(on, vec![2, 3], "shard {} is on nodes 2 and 3 only", s.id);
    }
    c.batch_execute(
        "CREATE TABLE invoices (id int PRIMARY KEY, customer int, amount int) WITH (keyspace = 'billing');
         CREATE TABLE plans (code text PRIMARY KEY, price int) WITH (keyspace = 'billing', distribution = 'reference');
         CREATE TABLE customers (id int PRIMARY KEY, name text);
         INSERT INTO plans VALUES ('basic', 10), ('pro', 30);
         INSERT INTO customers VALUES (1, 'ann'), (2, 'bob');
         INSERT INTO invoices VALUES (1, 1, 10), (2, 2, 30), (3, 1, 30), (4, 2, 10), (5, 1, 30);",
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT c.name, sum(i.amount)::int FROM invoices i JOIN customers c ON c.id = i.customer GROUP BY c.name ORDER BY c.name",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![("ann".into(), 70), ("bob".into(), 40)]);
    let rows = c
        .query(
            "SELECT count(*) FROM invoices i JOIN plans p ON p.price = i.amount WHERE p.code = 'pro'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 3);
    // The billing tables are on nodes 2 and 3 only: node 1 holds none of their shards.
    let shard_rows = c
        .simple_query("SELECT shard, primary_node, rows FROM tessera.shards")
        .await
        .unwrap();
    let billing: Vec<u32> = shards.iter().map(|s| s.id).collect();
    for m in shard_rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let shard: u32 = r.get(0).unwrap().parse().unwrap();
            let node: u64 = r.get(1).unwrap().parse().unwrap();
            if billing.contains(&shard) {
                assert_ne!(node, 1, "billing shard {shard} has its primary on node 1");
            }
        }
    }
    // A keyspace may not use a node outside its set when rebalanced either.
    let moves = replication::meta::plan_rebalance(
        &cluster.router.router.meta.state(),
        Some("billing"),
        &Default::default(),
    );
    assert!(
        moves.iter().all(|m| m.to != 1),
        "rebalance keeps billing off node 1: {moves:?}"
    );
}

/// INSERT … SELECT into a table of a one-shard keyspace runs on that shard only when the
/// query reads nothing else; rows from another keyspace pass through the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_into_a_one_shard_keyspace_reads_other_keyspaces() {
    let cluster = start_cluster(2, 2, 1).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE KEYSPACE solo WITH (shards = 1, replicas = 1)")
        .await
        .unwrap();
    c.batch_execute(
        "CREATE TABLE src (id int PRIMARY KEY, v int);
         INSERT INTO src VALUES (1, 10), (2, 20), (3, 30);
         CREATE TABLE dst (id int PRIMARY KEY, v int) WITH (keyspace = 'solo')",
    )
    .await
    .unwrap();
    let sum = async || -> i64 {
        c.query_one("SELECT coalesce(sum(v), 0)::bigint FROM dst", &[])
            .await
            .unwrap()
            .get(0)
    };
    let n = c
        .execute("INSERT INTO dst SELECT id, v FROM src WHERE v > 10", &[])
        .await
        .unwrap();
    assert_eq!((n, sum().await), (2, 50));
    // Reading only its own keyspace, the shard runs it.
    let n = c
        .execute(
            "INSERT INTO dst WITH d AS (SELECT id, v FROM dst) SELECT id + 100, v FROM d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((n, sum().await), (2, 100));
}
