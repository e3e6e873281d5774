//! Prepared statements skip work on later executions: the router reuses the route of a
//! point statement (`router::route_cache`) and a node reuses a point read's bound plan
//! (`engine::read_plans`). Each execution must still reach the shard that holds its key and
//! see the table as it is now, whatever changed since the statement was prepared.

mod inproc;

use inproc::start_cluster;
use tokio_postgres::Client;

/// `INSERT INTO kv VALUES …` of `n` rows made by `row(k)`.
fn insert(n: i32, row: impl Fn(i32) -> String) -> String {
    let rows: Vec<String> = (0..n).map(row).collect();
    format!("INSERT INTO kv VALUES {}", rows.join(", "))
}

/// A 4-shard cluster with `kv (k int PRIMARY KEY, v text)` holding `(k, 'v<k>')` for k in
/// 0..rows, and a client.
async fn kv_cluster(rows: i32) -> (inproc::Cluster, Client) {
    let cluster = start_cluster(2, 4, 1).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
        .await
        .unwrap();
    c.batch_execute(&insert(rows, |k| format!("({k}, 'v{k}')")))
        .await
        .unwrap();
    (cluster, c)
}

async fn values(c: &Client, stmt: &tokio_postgres::Statement, keys: &[i32]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for k in keys {
        let rows = c.query(stmt, &[k]).await.unwrap();
        assert!(rows.len() <= 1, "key {k}: {} rows", rows.len());
        out.push(
            rows.first()
                .map(|r| r.get::<_, Option<String>>(0))
                .unwrap_or(Some("<none>".into())),
        );
    }
    out
}

/// Every key's row comes back through one prepared statement, before and after the table is
/// recreated with another shard key (the remembered route no longer holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_point_reads_follow_the_shard_key() {
    let (_cluster, c) = kv_cluster(200).await;
    let get = c.prepare("SELECT v FROM kv WHERE k = $1").await.unwrap();
    let keys: Vec<i32> = (0..200).collect();
    let expected: Vec<Option<String>> = keys.iter().map(|k| Some(format!("v{k}"))).collect();
    assert_eq!(values(&c, &get, &keys).await, expected);
    assert!(c.query(&get, &[&None::<i32>]).await.unwrap().is_empty());

    // Same columns, rows spread by another column: `k = $1` no longer picks one shard.
    c.batch_execute(
        "DROP TABLE kv;
         CREATE TABLE kv (k int, s int, v text, PRIMARY KEY (k, s)) WITH (shard_key = 's')",
    )
    .await
    .unwrap();
    c.batch_execute(&insert(200, |k| format!("({k}, {}, 'w{k}')", k * 7 + 3)))
        .await
        .unwrap();
    let expected: Vec<Option<String>> = keys.iter().map(|k| Some(format!("w{k}"))).collect();
    assert_eq!(values(&c, &get, &keys).await, expected);
}

/// A prepared read by key sees the column that carries its name now, not the one it was
/// first bound to, and rows written since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_point_reads_see_the_table_as_it_is_now() {
    let (_cluster, c) = kv_cluster(20).await;
    let get = c.prepare("SELECT v FROM kv WHERE k = $1").await.unwrap();
    let keys: Vec<i32> = (0..20).collect();
    let expected: Vec<Option<String>> = keys.iter().map(|k| Some(format!("v{k}"))).collect();
    assert_eq!(values(&c, &get, &keys).await, expected);

    c.batch_execute("UPDATE kv SET v = 'u' || k WHERE k < 10")
        .await
        .unwrap();
    let expected: Vec<Option<String>> = keys
        .iter()
        .map(|k| Some(format!("{}{k}", if *k < 10 { "u" } else { "v" })))
        .collect();
    assert_eq!(values(&c, &get, &keys).await, expected);

    c.batch_execute(inproc::REPLACE_KV_V).await.unwrap();
    let expected: Vec<Option<String>> = keys
        .iter()
        .map(|k| (*k >= 15).then(|| format!("n{k}")))
        .collect();
    assert_eq!(values(&c, &get, &keys).await, expected);
}

/// A prepared statement that reads a session setting gets the setting's value at each
/// execution, not the one it had when its route was first found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_point_reads_see_session_settings_as_they_are_now() {
    let (_cluster, c) = kv_cluster(20).await;
    let get = c
        .prepare("SELECT v FROM kv WHERE k = $1 AND v <> current_setting('application_name')")
        .await
        .unwrap();
    let keys: Vec<i32> = (0..20).collect();
    c.batch_execute("SET application_name = 'v3'")
        .await
        .unwrap();
    let hidden = |name: i32| -> Vec<Option<String>> {
        keys.iter()
            .map(|k| {
                Some(if *k == name {
                    "<none>".into()
                } else {
                    format!("v{k}")
                })
            })
            .collect()
    };
    assert_eq!(values(&c, &get, &keys).await, hidden(3));
    c.batch_execute("SET application_name = 'v4'")
        .await
        .unwrap();
    assert_eq!(values(&c, &get, &keys).await, hidden(4));
}

/// On a one-shard keyspace every statement goes to its one shard, so a prepared statement
/// remembers that route whatever its parameters; the route must not outlive the layout. The
/// table is then recreated on a keyspace of four shards, where the same prepared INSERT and
/// scan must spread and gather rows across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_on_a_one_shard_keyspace_follow_the_table() {
    let cluster = start_cluster(2, 1, 1).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let put = c.prepare("INSERT INTO kv VALUES ($1, $2)").await.unwrap();
    let count = c
        .prepare("SELECT count(*) FROM kv WHERE v LIKE $1")
        .await
        .unwrap();
    // Rows 0..40 with values `<prefix>k`, put and then counted by the prepared statements.
    let fill = async |prefix: &str| {
        for k in 0..40 {
            c.execute(&put, &[&k, &format!("{prefix}{k}")])
                .await
                .unwrap();
        }
        let n: i64 = c
            .query_one(&count, &[&format!("{prefix}%")])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 40);
    };
    fill("a").await;

    // CREATE KEYSPACE is a statement of its own (it is not sqlparser's).
    c.batch_execute("DROP TABLE kv").await.unwrap();
    c.batch_execute("CREATE KEYSPACE wide WITH (shards = 4, replicas = 1)")
        .await
        .unwrap();
    c.batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text) WITH (keyspace = 'wide')")
        .await
        .unwrap();
    fill("b").await;
    // Each row is where a fresh statement looks for it.
    for k in 0..40 {
        let row = c
            .query_one(&format!("SELECT v FROM kv WHERE k = {k}"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("b{k}"));
    }
}
