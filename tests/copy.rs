//! COPY FROM STDIN and COPY TO STDOUT through the wire protocol, on a 4-shard cluster:
//! text, CSV and binary formats, rows split across shards, atomicity of a failing COPY,
//! COPY inside a transaction block, and errors with PostgreSQL's SQLSTATEs.

mod inproc;

use futures::{SinkExt, StreamExt, pin_mut};
use inproc::start_cluster;
use tokio_postgres::Client;

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

async fn copy_in(c: &Client, sql: &str, data: &[u8]) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in(sql).await?;
    pin_mut!(sink);
    // Uneven chunks: rows must survive any split.
    for chunk in data.chunks(7) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    sink.finish().await
}

async fn copy_out(c: &Client, sql: &str) -> Vec<u8> {
    let stream = c.copy_out(sql).await.unwrap();
    pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

async fn count(c: &Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_formats_round_trip_across_shards() {
    let cluster = start_cluster(2, 4, 1).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE cp (id int PRIMARY KEY, name text, v float8, ok bool)")
        .await
        .unwrap();
    let mut text = Vec::new();
    for i in 0..1000 {
        let name = match i % 3 {
            0 => "\\N".to_string(),
            1 => format!("tab\\there {i}"),
            _ => format!("plain{i}"),
        };
        text.extend_from_slice(format!("{i}\t{name}\t{}.5\tt\n", i).as_bytes());
    }
    assert_eq!(
        copy_in(&c, "COPY cp FROM STDIN", &text).await.unwrap(),
        1000
    );
    assert_eq!(count(&c, "cp").await, 1000);
    let row = c
        .query_one("SELECT name, v FROM cp WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("tab\there 1")
    );
    assert_eq!(row.get::<_, f64>(1), 1.5);
    let nulls: i64 = c
        .query_one("SELECT count(*) FROM cp WHERE name IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 334);

    // Text out, then back in to a second table: identical contents.
    let out = copy_out(&c, "COPY (SELECT * FROM cp ORDER BY id) TO STDOUT").await;
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1000);
    c.batch_execute("CREATE TABLE cp2 (id int PRIMARY KEY, name text, v float8, ok bool)")
        .await
        .unwrap();
    copy_in(&c, "COPY cp2 FROM STDIN", &out).await.unwrap();
    let diff: i64 = c
        .query_one(
            "SELECT count(*) FROM cp a JOIN cp2 b ON a.id = b.id \
             WHERE a.name IS DISTINCT FROM b.name OR a.v <> b.v",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(diff, 0);

    // CSV with a header, quoted delimiters and newlines, and a column list.
    let csv = b"id,name\n5000,\"a,b\"\n5001,\"line\nbreak\"\n5002,\n";
    copy_in(
        &c,
        "COPY cp (id, name) FROM STDIN WITH (FORMAT csv, HEADER true)",
        csv,
    )
    .await
    .unwrap();
    let names: Vec<Option<String>> = c
        .query("SELECT name FROM cp WHERE id >= 5000 ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        vec![Some("a,b".into()), Some("line\nbreak".into()), None]
    );
    let out = copy_out(
        &c,
        "COPY (SELECT id, name FROM cp WHERE id >= 5000 ORDER BY id) TO STDOUT (FORMAT csv)",
    )
    .await;
    assert_eq!(out, b"5000,\"a,b\"\n5001,\"line\nbreak\"\n5002,\n");

    // Binary out of one table, binary in to another.
    c.batch_execute("CREATE TABLE cp3 (id int PRIMARY KEY, name text, v float8, ok bool)")
        .await
        .unwrap();
    let bin = copy_out(&c, "COPY cp TO STDOUT (FORMAT binary)").await;
    assert!(bin.starts_with(b"PGCOPY\n\xff\r\n\0"));
    assert_eq!(
        copy_in(&c, "COPY cp3 FROM STDIN (FORMAT binary)", &bin)
            .await
            .unwrap(),
        1003
    );
    assert_eq!(count(&c, "cp3").await, 1003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_copy_leaves_nothing_and_session_goes_on() {
    let cluster = start_cluster(2, 4, 1).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE cpf (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    // Rows for every shard, then a bad value: no row may stay behind.
    let mut data = Vec::new();
    for i in 0..5000 {
        data.extend_from_slice(format!("{i}\t{i}\n").as_bytes());
    }
    data.extend_from_slice(b"9999\tnot-a-number\n");
    let err = copy_in(&c, "COPY cpf FROM STDIN", &data).await.unwrap_err();
    assert_eq!(code(&err), "22P02", "{err:?}");
    assert_eq!(count(&c, "cpf").await, 0);

    // A duplicate key is 23505, also when the rows reach different batches.
    let dup = b"1\t1\n2\t2\n1\t3\n";
    let err = copy_in(&c, "COPY cpf FROM STDIN", dup).await.unwrap_err();
    assert_eq!(code(&err), "23505");
    assert_eq!(count(&c, "cpf").await, 0);

    // Wrong column counts, unknown tables and columns.
    let err = copy_in(&c, "COPY cpf FROM STDIN", b"1\n")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "22P04");
    let err = copy_in(&c, "COPY cpf FROM STDIN", b"1\t2\t3\n")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "22P04");
    // tokio-postgres answers a COPY that fails to start with CopyFail + Sync, whose extra
    // ReadyForQuery (PostgreSQL sends one too) confuses its next request: use a fresh
    // connection after each such failure.
    let c = cluster.client().await;
    let err = copy_in(&c, "COPY nosuch FROM STDIN", b"")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42P01");
    let c = cluster.client().await;
    let err = copy_in(&c, "COPY cpf (nope) FROM STDIN", b"")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42703", "{err:?}");
    let c = cluster.client().await;
    let err = copy_in(&c, "COPY cpf FROM '/etc/passwd'", b"")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42501");
    let c = cluster.client().await;

    // Inside a transaction block, the COPY joins it and rolls back with it.
    c.batch_execute("BEGIN").await.unwrap();
    copy_in(&c, "COPY cpf FROM STDIN", b"1\t1\n2\t2\n3\t3\n")
        .await
        .unwrap();
    assert_eq!(count(&c, "cpf").await, 3);
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&c, "cpf").await, 0);

    // A failing COPY aborts the block: 25P02 until ROLLBACK.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(copy_in(&c, "COPY cpf FROM STDIN", b"x\t1\n").await.is_err());
    let err = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&err), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    copy_in(&c, "COPY cpf FROM STDIN", b"7\t7\n").await.unwrap();
    assert_eq!(count(&c, "cpf").await, 1);
}

/// COPY that leaves out a SERIAL key: the router fills each row's value from the sequence,
/// so rows route by their new keys and no value repeats across shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fills_serial_columns_across_shards() {
    let cluster = start_cluster(2, 4, 1).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE cps (id bigserial PRIMARY KEY, v text)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO cps (v) VALUES ('first')")
        .await
        .unwrap();
    let data: Vec<u8> = (0..500)
        .flat_map(|i| format!("row{i}\n").into_bytes())
        .collect();
    assert_eq!(
        copy_in(&c, "COPY cps (v) FROM STDIN", &data).await.unwrap(),
        500
    );
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM cps",
            &[],
        )
        .await
        .unwrap();
    let (n, distinct, min, max): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((n, distinct, min, max), (501, 501, 1, 501));
    let shards: i64 = c
        .query_one("SELECT count(*) FROM tessera.shards WHERE rows > 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shards, 4, "rows on all 4 shards");
}

/// A COPY whose rows pass the bytes a transaction may hold on a shard
/// (`engine::buffer::TXN_MEMORY`) fails with 54000 and leaves nothing; the session goes on,
/// and a COPY within the bound succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_past_the_transaction_memory_bound_fails_with_54000() {
    // nextest runs each test in its own process, so the bound is this test's.
    engine::buffer::TXN_MEMORY.store(256 << 10, std::sync::atomic::Ordering::Relaxed);
    let cluster = start_cluster(2, 4, 1).await;
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
        .await
        .unwrap();
    let rows = |n: usize| {
        let pad = "x".repeat(200);
        let mut data = Vec::new();
        for i in 0..n {
            data.extend_from_slice(format!("{i}\t{pad}\n").as_bytes());
        }
        data
    };
    // About 250 bytes a row, a quarter of them on each shard: 8 000 rows are 500 KB a shard.
    let e = copy_whole(&c, "COPY big FROM STDIN", &rows(8_000))
        .await
        .expect_err("past the bound");
    assert_eq!(code(&e), "54000", "{e:?}");
    assert_eq!(count(&c, "big").await, 0);
    // Within a block the block fails, as after any error.
    c.batch_execute("BEGIN").await.unwrap();
    let e = copy_whole(&c, "COPY big FROM STDIN", &rows(8_000))
        .await
        .expect_err("past the bound");
    assert_eq!(code(&e), "54000", "{e:?}");
    let e = c.batch_execute("SELECT 1").await.expect_err("block failed");
    assert_eq!(code(&e), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    // 2 000 rows are about 125 KB a shard.
    assert_eq!(
        copy_whole(&c, "COPY big FROM STDIN", &rows(2_000))
            .await
            .unwrap(),
        2_000
    );
    assert_eq!(count(&c, "big").await, 2_000);
}

/// COPY FROM STDIN with the data in one message.
async fn copy_whole(c: &Client, sql: &str, data: &[u8]) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in(sql).await?;
    pin_mut!(sink);
    sink.send(bytes::Bytes::copy_from_slice(data)).await?;
    sink.finish().await
}
