//! tokio-postgres check for `tests/drivers/run.sh`: DDL, a prepared insert with typed binary
//! parameters, types and values read back, rollback, SQLSTATEs, cancel. Prints one line,
//! `PASS tokio-postgres` or `FAIL tokio-postgres: <reasons>`.
//!
//! The root crate enables no `with-*` features of tokio-postgres, so numeric, date and uuid
//! travel as their raw binary wire format (`Raw`) and are compared byte for byte.

use std::error::Error;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls};

const T: &str = "drv_rust";
const COLUMNS: &str = "id int PRIMARY KEY, c_int int, c_bigint bigint, c_text text, c_bool bool, \
    c_float8 float8, c_numeric numeric(10,2), c_date date, c_timestamptz timestamptz, \
    c_uuid uuid, c_bytea bytea";
const NAMES: &str = "id, c_int, c_bigint, c_text, c_bool, c_float8, c_numeric, c_date, c_timestamptz, c_uuid, c_bytea";
const TEXT: &str = "héllo \"wörld\" 'q' \\ ✓";
/// 12345.67 as binary numeric: 3 base-10000 digits, weight 1, positive, scale 2: 1 2345 6700.
const NUMERIC: [u8; 14] = [0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x09, 0x29, 0x1a, 0x2c];
/// 2024-02-29 as binary date: days since 2000-01-01.
const DATE: [u8; 4] = 8825i32.to_be_bytes();
const UUID: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];
const BYTEA: [u8; 4] = [0x00, 0xff, 0x10, 0xde];

/// A value in its binary wire format, for types without a Rust mapping here.
#[derive(Debug, PartialEq)]
struct Raw(Vec<u8>);

impl ToSql for Raw {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn timestamp() -> SystemTime {
    // 2024-02-29 12:34:56.789123 UTC
    SystemTime::UNIX_EPOCH + Duration::from_micros(1_709_210_096_789_123)
}

fn state(e: &tokio_postgres::Error) -> String {
    e.code()
        .map_or_else(|| e.to_string(), |c| c.code().to_string())
}

async fn connect() -> Result<Client, tokio_postgres::Error> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let config = format!(
        "host={} port={} user={} password='{}' dbname={}",
        env("PGHOST", "127.0.0.1"),
        env("PGPORT", "5432"),
        env("PGUSER", "tessera"),
        env("PGPASSWORD", "")
            .replace('\\', "\\\\")
            .replace('\'', "\\'"),
        env("PGDATABASE", "tessera")
    );
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn check(c: &Client, problems: &mut Vec<String>) -> Result<(), Box<dyn Error>> {
    let insert =
        format!("INSERT INTO {T} ({NAMES}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
    let stmt = c.prepare(&insert).await?;
    let (num, date, uuid) = (
        Raw(NUMERIC.to_vec()),
        Raw(DATE.to_vec()),
        Raw(UUID.to_vec()),
    );
    let (ts, bytea) = (timestamp(), BYTEA.to_vec());
    c.execute(
        &stmt,
        &[
            &1i32,
            &i32::MAX,
            &9_007_199_254_740_993i64,
            &TEXT,
            &true,
            &std::f64::consts::PI,
            &num,
            &date,
            &ts,
            &uuid,
            &bytea,
        ],
    )
    .await?;
    let (n32, n64, nstr, nbool) = (None::<i32>, None::<i64>, None::<&str>, None::<bool>);
    let (nf64, nraw, nts, nbytes) = (
        None::<f64>,
        None::<Raw>,
        None::<SystemTime>,
        None::<Vec<u8>>,
    );
    c.execute(
        &stmt,
        &[
            &2i32, &n32, &n64, &nstr, &nbool, &nf64, &nraw, &nraw, &nts, &nraw, &nbytes,
        ],
    )
    .await?;

    let rows = c
        .query(&format!("SELECT {NAMES} FROM {T} ORDER BY id"), &[])
        .await?;
    let want = [
        "int4",
        "int4",
        "int8",
        "text",
        "bool",
        "float8",
        "numeric",
        "date",
        "timestamptz",
        "uuid",
        "bytea",
    ];
    let got: Vec<&str> = rows[0].columns().iter().map(|c| c.type_().name()).collect();
    if got != want {
        problems.push(format!("column types {got:?}, expected {want:?}"));
    }
    let r = &rows[0];
    let mut expect = |name: &str, ok: bool, got: String| {
        if !ok {
            problems.push(format!("{name}: got {got}"));
        }
    };
    expect(
        "c_int",
        r.try_get::<_, i32>(1)? == i32::MAX,
        format!("{:?}", r.try_get::<_, i32>(1)),
    );
    expect(
        "c_bigint",
        r.try_get::<_, i64>(2)? == 9_007_199_254_740_993,
        format!("{:?}", r.try_get::<_, i64>(2)),
    );
    expect(
        "c_text",
        r.try_get::<_, &str>(3)? == TEXT,
        format!("{:?}", r.try_get::<_, &str>(3)),
    );
    expect("c_bool", r.try_get::<_, bool>(4)?, "false".into());
    expect(
        "c_float8",
        r.try_get::<_, f64>(5)? == std::f64::consts::PI,
        format!("{:?}", r.try_get::<_, f64>(5)),
    );
    expect(
        "c_numeric",
        r.try_get::<_, Raw>(6)? == num,
        format!("{:?}", r.try_get::<_, Raw>(6)),
    );
    expect(
        "c_date",
        r.try_get::<_, Raw>(7)? == date,
        format!("{:?}", r.try_get::<_, Raw>(7)),
    );
    expect(
        "c_timestamptz",
        r.try_get::<_, SystemTime>(8)? == ts,
        format!("{:?}", r.try_get::<_, SystemTime>(8)),
    );
    expect(
        "c_uuid",
        r.try_get::<_, Raw>(9)? == uuid,
        format!("{:?}", r.try_get::<_, Raw>(9)),
    );
    expect(
        "c_bytea",
        r.try_get::<_, Vec<u8>>(10)? == BYTEA,
        format!("{:?}", r.try_get::<_, Vec<u8>>(10)),
    );
    let nulls = rows
        .get(1)
        .map(|r| (1..11).all(|i| r.try_get::<_, Option<Raw>>(i).ok() == Some(None)));
    if rows.len() != 2 || nulls != Some(true) {
        problems.push(format!(
            "{} rows read back, expected 2 with row 2 all NULL",
            rows.len()
        ));
    }
    Ok(())
}

async fn rollback(c: &mut Client, problems: &mut Vec<String>) -> Result<(), Box<dyn Error>> {
    let tx = c.transaction().await?;
    tx.execute(&format!("INSERT INTO {T} (id) VALUES ($1)"), &[&3i32])
        .await?;
    tx.rollback().await?;
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {T} WHERE id = 3"), &[])
        .await?
        .get(0);
    if n != 0 {
        problems.push(format!("rolled-back row is visible (count {n})"));
    }
    Ok(())
}

/// pg_sleep() does not exist in Tessera, so the running statement is an UPDATE that waits for a
/// row lock held by another open transaction (PostgreSQL waits indefinitely).
async fn cancel(c: &Client, problems: &mut Vec<String>) -> Result<(), Box<dyn Error>> {
    let mut holder = connect().await?;
    let tx = holder.transaction().await?;
    tx.execute(&format!("UPDATE {T} SET c_text = 'held' WHERE id = 1"), &[])
        .await?;
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        token.cancel_query(NoTls).await
    });
    let start = Instant::now();
    let got = match c
        .execute(
            &format!("UPDATE {T} SET c_text = 'waiter' WHERE id = 1"),
            &[],
        )
        .await
    {
        Ok(_) => "no error".to_string(),
        Err(e) => state(&e),
    };
    let took = start.elapsed().as_secs_f64();
    tx.rollback().await?;
    canceller.await??;
    if got != SqlState::QUERY_CANCELED.code() {
        problems.push(format!(
            "cancel not supported: CancelRequest 1s into a lock wait did not cancel it \
             (got {got} after {took:.1}s, expected 57014 query_canceled)"
        ));
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let mut problems = Vec::new();
    match connect().await {
        Err(e) => problems.push(format!("connect: {e}")),
        Ok(mut c) => {
            let ddl = format!("DROP TABLE IF EXISTS {T}; CREATE TABLE {T} ({COLUMNS})");
            if let Err(e) = c.batch_execute(&ddl).await {
                problems.push(format!("DDL: {e}"));
            } else {
                if let Err(e) = check(&c, &mut problems).await {
                    problems.push(format!("insert/select: {e}"));
                }
                if let Err(e) = rollback(&mut c, &mut problems).await {
                    problems.push(format!("rollback: {e}"));
                }
                for (sql, want) in [
                    (format!("INSERT INTO {T} (id) VALUES (1)"), "23505"),
                    ("SELECT * FROM drv_no_such_table".to_string(), "42P01"),
                ] {
                    let got = match c.batch_execute(&sql).await {
                        Ok(()) => "no error".to_string(),
                        Err(e) => state(&e),
                    };
                    if got != want {
                        problems.push(format!("'{sql}': SQLSTATE {got}, expected {want}"));
                    }
                }
                if let Err(e) = cancel(&c, &mut problems).await {
                    problems.push(format!("cancel: {e}"));
                }
            }
        }
    }
    if problems.is_empty() {
        println!("PASS tokio-postgres");
    } else {
        println!("FAIL tokio-postgres: {}", problems.join("; "));
        std::process::exit(1);
    }
}
