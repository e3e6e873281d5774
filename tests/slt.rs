//! SQL logic tests: every `tests/slt/*.slt` file through the Postgres wire protocol, against
//! an in-process cluster with one shard and against one with four shards on two nodes, in
//! both the simple and the extended query protocol. The same files must pass in all four
//! configurations: sharding may not change an answer.
//!
//! Files under `tests/slt/pending/` cover what the engine does not do yet and are not run.

mod inproc;

use std::path::PathBuf;
use std::time::Duration;

use inproc::start_cluster;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The error a statement produced, displayed as PostgreSQL's primary message so that
/// `statement error <regex>` matches it.
#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

fn sql_error(e: tokio_postgres::Error) -> SqlError {
    match e.as_db_error() {
        Some(db) => SqlError(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
        None => SqlError(e.to_string()),
    }
}

struct Db {
    client: Client,
    extended: bool,
}

fn text_cell(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some("") => "(empty)".into(),
        Some(s) => s.to_string(),
    }
}

/// A column's raw binary bytes, whatever its type.
struct Raw(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Formats a binary-decoded value in PostgreSQL's text output format.
fn typed_cell(row: &tokio_postgres::Row, i: usize) -> Result<String, SqlError> {
    let t = row.columns()[i].type_().clone();
    let err = |e: tokio_postgres::Error| SqlError(format!("decoding column {i} of type {t}: {e}"));
    // The newer types and arrays: the binary send format, decoded by Tessera's own parameter
    // decoder and printed with its text output (the protocol::value unit tests pin both
    // against PostgreSQL's byte layouts).
    let own_decoder = matches!(
        t,
        Type::NUMERIC
            | Type::DATE
            | Type::TIME
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::INTERVAL
            | Type::UUID
            | Type::JSON
            | Type::JSONB
            | Type::BPCHAR
    ) || matches!(
        protocol::DataType::from_oid(t.oid()),
        Some(protocol::DataType::Array(_) | protocol::DataType::Vector(_))
    );
    let s = match t {
        _ if own_decoder => match row.try_get::<_, Option<Raw>>(i).map_err(err)? {
            None => None,
            Some(Raw(bytes)) => {
                let ty = protocol::DataType::from_oid(t.oid())
                    .ok_or_else(|| SqlError(format!("no Tessera type for {t}")))?;
                let v = router::encode::decode_param(Some(&bytes::Bytes::from(bytes)), &ty, true)
                    .map_err(|e| SqlError(format!("decoding column {i} of type {t}: {e}")))?;
                v.to_pg_text(&ty)
            }
        },
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(err)?
            .map(|b| if b { "t".into() } else { "f".into() }),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(err)?
            .map(|v| v.to_string()),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(err)?
            .map(|v| v.to_string()),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(err)?
            .map(|v| v.to_string()),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(err)?
            .map(|v| protocol::value::format_float(v as f64, true)),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(err)?
            .map(|v| protocol::value::format_float(v, false)),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i).map_err(err)?.map(|b| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("\\x{hex}")
        }),
        _ => row.try_get::<_, Option<String>>(i).map_err(err)?,
    };
    Ok(text_cell(s.as_deref()))
}

#[async_trait::async_trait]
impl AsyncDB for Db {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        if self.extended {
            let stmt = self.client.prepare(sql).await.map_err(sql_error)?;
            if stmt.columns().is_empty() {
                let n = self.client.execute(&stmt, &[]).await.map_err(sql_error)?;
                return Ok(DBOutput::StatementComplete(n));
            }
            let rows = self.client.query(&stmt, &[]).await.map_err(sql_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(
                    (0..row.len())
                        .map(|i| typed_cell(row, i))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            let types = vec![DefaultColumnType::Any; stmt.columns().len()];
            return Ok(DBOutput::Rows { types, rows: out });
        }
        let messages = self.client.simple_query(sql).await.map_err(sql_error)?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(cols) => columns = Some(cols.len()),
                SimpleQueryMessage::Row(row) => {
                    rows.push((0..row.len()).map(|i| text_cell(row.get(i))).collect());
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(count)),
        }
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        // SLT_FILTER=name runs only the files whose name contains it (while debugging).
        .filter(|p| match std::env::var("SLT_FILTER") {
            Ok(f) => p.to_string_lossy().contains(&f),
            Err(_) => true,
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

async fn run_corpus(nodes: u64, shards: u32, replicas: u32, extended: bool) {
    let cluster = start_cluster(nodes, shards, replicas).await;
    let port = cluster.port;
    let mut failures = Vec::new();
    for file in slt_files() {
        let mut runner = Runner::new(move || async move {
            let (client, conn) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=tessera password=tessera dbname=tessera"),
                NoTls,
            )
            .await
            .map_err(sql_error)?;
            tokio::spawn(conn);
            Ok(Db { client, extended })
        });
        runner.add_label("tessera");
        runner.add_label(if shards > 1 {
            "sharded"
        } else {
            "single-shard"
        });
        if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_one_shard_simple_protocol() {
    run_corpus(1, 1, 1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_one_shard_extended_protocol() {
    run_corpus(1, 1, 1, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_four_shards_simple_protocol() {
    run_corpus(2, 4, 2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_four_shards_extended_protocol() {
    run_corpus(2, 4, 2, true).await;
}
