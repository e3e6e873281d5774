//! sqlx check for `tests/drivers/run.sh`: DDL, a prepared insert with typed parameters, types
//! and values read back as sqlx decodes them, a rolled-back transaction, SQLSTATEs, and a
//! cancel. sqlx has no CancelRequest API, so the cancel is the server's: `statement_timeout`
//! ends a statement stuck on a row lock with 57014, as PostgreSQL does. Prints one line,
//! `PASS sqlx` or `FAIL sqlx: <reasons>`.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Column, Connection, Row, TypeInfo};

const T: &str = "drv_sqlx";
const COLUMNS: &str = "id int PRIMARY KEY, c_int int, c_bigint bigint, c_text text, c_bool bool, \
    c_float8 float8, c_numeric numeric(10,2), c_date date, c_timestamptz timestamptz, \
    c_uuid uuid, c_bytea bytea";
const NAMES: &str = "id, c_int, c_bigint, c_text, c_bool, c_float8, c_numeric, c_date, c_timestamptz, c_uuid, c_bytea";
const TEXT: &str = "héllo \"wörld\" 'q' \\ ✓";
const BYTEA: [u8; 4] = [0x00, 0xff, 0x10, 0xde];

fn options() -> PgConnectOptions {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    PgConnectOptions::new()
        .host(&env("PGHOST", "127.0.0.1"))
        .port(env("PGPORT", "5432").parse().unwrap_or(5432))
        .username(&env("PGUSER", "tessera"))
        .password(&env("PGPASSWORD", ""))
        .database(&env("PGDATABASE", "tessera"))
}

fn sqlstate(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
        other => other.to_string(),
    }
}

async fn check(problems: &mut Vec<String>) -> Result<(), sqlx::Error> {
    let mut c = PgConnection::connect_with(&options()).await?;
    sqlx::query(&format!("DROP TABLE IF EXISTS {T}")).execute(&mut c).await?;
    sqlx::query(&format!("CREATE TABLE {T} ({COLUMNS})")).execute(&mut c).await?;

    let insert =
        format!("INSERT INTO {T} ({NAMES}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
    let numeric = Decimal::from_str("12345.67").expect("decimal");
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
    let ts: DateTime<Utc> = DateTime::from_timestamp_micros(1_709_210_096_789_123).expect("ts");
    let uuid = uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").expect("uuid");
    sqlx::query(&insert)
        .bind(1i32)
        .bind(i32::MAX)
        .bind(9_007_199_254_740_993i64)
        .bind(TEXT)
        .bind(true)
        .bind(std::f64::consts::PI)
        .bind(numeric)
        .bind(date)
        .bind(ts)
        .bind(uuid)
        .bind(BYTEA.to_vec())
        .execute(&mut c)
        .await?;
    sqlx::query(&insert)
        .bind(2i32)
        .bind(None::<i32>)
        .bind(None::<i64>)
        .bind(None::<String>)
        .bind(None::<bool>)
        .bind(None::<f64>)
        .bind(None::<Decimal>)
        .bind(None::<NaiveDate>)
        .bind(None::<DateTime<Utc>>)
        .bind(None::<uuid::Uuid>)
        .bind(None::<Vec<u8>>)
        .execute(&mut c)
        .await?;

    let rows = sqlx::query(&format!("SELECT {NAMES} FROM {T} ORDER BY id"))
        .fetch_all(&mut c)
        .await?;
    let want = [
        "INT4", "INT4", "INT8", "TEXT", "BOOL", "FLOAT8", "NUMERIC", "DATE", "TIMESTAMPTZ",
        "UUID", "BYTEA",
    ];
    let got: Vec<String> = rows[0]
        .columns()
        .iter()
        .map(|c| c.type_info().name().to_string())
        .collect();
    if got != want {
        problems.push(format!("column types {got:?}, expected {want:?}"));
    }
    let r = &rows[0];
    let mut expect = |name: &str, ok: bool, got: String| {
        if !ok {
            problems.push(format!("{name}: got {got}"));
        }
    };
    let v: i32 = r.try_get(1)?;
    expect("c_int", v == i32::MAX, v.to_string());
    let v: i64 = r.try_get(2)?;
    expect("c_bigint", v == 9_007_199_254_740_993, v.to_string());
    let v: String = r.try_get(3)?;
    expect("c_text", v == TEXT, v.clone());
    let v: bool = r.try_get(4)?;
    expect("c_bool", v, v.to_string());
    let v: f64 = r.try_get(5)?;
    expect("c_float8", v == std::f64::consts::PI, v.to_string());
    let v: Decimal = r.try_get(6)?;
    expect("c_numeric", v == numeric && v.scale() == 2, v.to_string());
    let v: NaiveDate = r.try_get(7)?;
    expect("c_date", v == date, v.to_string());
    let v: DateTime<Utc> = r.try_get(8)?;
    expect("c_timestamptz", v == ts, v.to_string());
    let v: uuid::Uuid = r.try_get(9)?;
    expect("c_uuid", v == uuid, v.to_string());
    let v: Vec<u8> = r.try_get(10)?;
    expect("c_bytea", v == BYTEA, format!("{v:?}"));
    let nulls = rows.get(1).map(|r| {
        (1..11).all(|i| {
            r.try_get_raw(i)
                .map(|v| sqlx::ValueRef::is_null(&v))
                .unwrap_or(false)
        })
    });
    if rows.len() != 2 || nulls != Some(true) {
        problems.push(format!("{} rows, NULL row read back as NULLs: {nulls:?}", rows.len()));
    }

    // A rolled-back transaction leaves nothing behind.
    let mut tx = c.begin().await?;
    sqlx::query(&format!("INSERT INTO {T} (id) VALUES (3)"))
        .execute(&mut *tx)
        .await?;
    tx.rollback().await?;
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {T} WHERE id = 3"))
        .fetch_one(&mut c)
        .await?;
    if n != 0 {
        problems.push("rolled-back insert is visible".into());
    }

    // Errors carry their SQLSTATE, and the connection keeps working.
    match sqlx::query(&format!("INSERT INTO {T} (id) VALUES (1)")).execute(&mut c).await {
        Err(e) if sqlstate(&e) == "23505" => {}
        other => problems.push(format!("duplicate key: {:?}", other.map(|_| ()))),
    }
    match sqlx::query("SELECT * FROM drv_sqlx_missing").execute(&mut c).await {
        Err(e) if sqlstate(&e) == "42P01" => {}
        other => problems.push(format!("unknown table: {:?}", other.map(|_| ()))),
    }

    // Cancel: a statement waiting on a row another transaction holds ends with 57014.
    let mut holder = PgConnection::connect_with(&options()).await?;
    let mut held = holder.begin().await?;
    sqlx::query(&format!("UPDATE {T} SET c_int = 0 WHERE id = 1"))
        .execute(&mut *held)
        .await?;
    sqlx::query("SET statement_timeout = '1s'").execute(&mut c).await?;
    let started = std::time::Instant::now();
    let waited = tokio::time::timeout(
        Duration::from_secs(20),
        sqlx::query(&format!("UPDATE {T} SET c_int = 1 WHERE id = 1")).execute(&mut c),
    )
    .await;
    match waited {
        Ok(Err(e)) if sqlstate(&e) == "57014" => {}
        Ok(other) => problems.push(format!("cancel: {:?}", other.map(|_| ()))),
        Err(_) => problems.push("cancel: the statement still waits after 20 s".into()),
    }
    if started.elapsed() > Duration::from_secs(10) {
        problems.push(format!("cancel took {:?}", started.elapsed()));
    }
    held.rollback().await?;
    sqlx::query("SET statement_timeout = 0").execute(&mut c).await?;
    let v: i32 = sqlx::query_scalar(&format!("SELECT c_int FROM {T} WHERE id = 1"))
        .fetch_one(&mut c)
        .await?;
    if v != i32::MAX {
        problems.push(format!("the cancelled update or the held one left c_int = {v}"));
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let mut problems = Vec::new();
    if let Err(e) = check(&mut problems).await {
        problems.push(format!("error: {e}"));
    }
    if problems.is_empty() {
        println!("PASS sqlx");
    } else {
        println!("FAIL sqlx: {}", problems.join("; "));
        std::process::exit(1);
    }
}
