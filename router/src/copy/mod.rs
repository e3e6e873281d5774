//! COPY … FROM STDIN and COPY … TO STDOUT, split across shards.
//!
//! ```text
//!  CopyData chunks ─► Decoder ─► row ─► typed values ─► shard of the row's shard key
//!                                                          │ per-shard batch (BATCH_ROWS)
//!                                                          ▼
//!              shard: "COPY t (cols) FROM STDIN" with the batch's values as parameters
//!  CopyDone ─► flush the batches ─► commit (two-phase if several shards were written)
//! ```
//! A COPY is one statement: all of its rows commit or none do. Outside a transaction block
//! it runs as its own distributed transaction; inside one it joins the block. Rows are
//! converted at the router, so a bad value fails with PostgreSQL's message before any shard
//! sees it, and only one batch per shard is held in memory.
//!
//! COPY TO runs `SELECT cols FROM t` (or the given query) through the router and writes the
//! rows in the requested format.

pub mod format;

use std::collections::BTreeMap;

use bytes::Bytes;
use protocol::cluster::{ShardId, TableInfo};
use protocol::error::{Error, Result, sqlstate};
use protocol::hash::shard_hash;
use protocol::schema::QueryResult;
use protocol::{DataType, Value};
use sqlparser::ast::{self, CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource};

use crate::dispatch::Router;
use crate::encode;
use crate::names::table_name;
use crate::plan::{Target, quote_ident, target};
use crate::session::SessionTxn;
use format::{Decoder, Encoder, Format, Options, RawRow};

/// Rows sent to a shard in one call.
const BATCH_ROWS: usize = 2000;

/// What a COPY statement asks for.
pub struct CopyCommand {
    pub to: bool,
    pub opts: Options,
    /// COPY TO only: the query whose rows are written.
    pub query: Option<String>,
    /// COPY FROM only: the table and the columns the data holds, in order.
    pub table: String,
    pub columns: Vec<String>,
}

fn single_char(c: char, what: &str) -> Result<u8> {
    u8::try_from(c)
        .ok()
        .filter(|b| b.is_ascii())
        .ok_or_else(|| {
            Error::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("COPY {what} must be a single one-byte character"),
            )
        })
}

/// Rewrites PostgreSQL's boolean spellings after FREEZE and HEADER (`on`, `off`, `1`, `0`,
/// `yes`, `no`) to `true`/`false`, the only ones sqlparser reads there; pgbench sends
/// `COPY … WITH (FREEZE ON)`. Other statements pass through untouched.
pub fn normalize_options(sql: &str) -> std::borrow::Cow<'_, str> {
    let head = sql.trim_start();
    if !head
        .get(..4)
        .is_some_and(|h| h.eq_ignore_ascii_case("copy"))
    {
        return sql.into();
    }
    let bytes = sql.as_bytes();
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' || c == b'"' {
            // Skip a quoted literal or identifier ('' and "" double their quote).
            i += 1;
            while i < bytes.len() {
                if bytes[i] == c {
                    if bytes.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            words.push((start, i));
        } else {
            i += 1;
        }
    }
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for pair in words.windows(2) {
        let (prev, (start, end)) = (&sql[pair[0].0..pair[0].1], pair[1]);
        if !(prev.eq_ignore_ascii_case("freeze") || prev.eq_ignore_ascii_case("header")) {
            continue;
        }
        let value = match sql[start..end].to_ascii_lowercase().as_str() {
            "on" | "1" | "yes" => "true",
            "off" | "0" | "no" => "false",
            _ => continue,
        };
        out.push_str(&sql[last..start]);
        out.push_str(value);
        last = end;
    }
    if last == 0 {
        return sql.into();
    }
    out.push_str(&sql[last..]);
    out.into()
}

/// Reads a COPY statement; files and programs are refused (the router has no file system
/// to offer a client: psql's `\copy` sends the data over the connection instead).
pub fn command(stmt: &ast::Statement) -> Result<CopyCommand> {
    let ast::Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return Err(Error::internal("not a COPY statement"));
    };
    match (to, target) {
        (false, ast::CopyTarget::Stdin) | (true, ast::CopyTarget::Stdout) => {}
        _ => {
            return Err(Error::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "COPY to or from a file or program is not allowed on Tessera",
            )
            .with_detail("Use COPY ... FROM STDIN / TO STDOUT, for example psql's \\copy."));
        }
    }
    let mut format = Format::Text;
    for o in options {
        if let CopyOption::Format(f) = o {
            format = match f.value.to_ascii_lowercase().as_str() {
                "text" => Format::Text,
                "csv" => Format::Csv,
                "binary" => Format::Binary,
                other => {
                    return Err(Error::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("COPY format \"{other}\" not recognized"),
                    ));
                }
            };
        }
    }
    for o in legacy_options {
        match o {
            CopyLegacyOption::Binary => format = Format::Binary,
            CopyLegacyOption::Csv(_) => format = Format::Csv,
            _ => {}
        }
    }
    let mut opts = Options::new(format);
    for o in options {
        match o {
            CopyOption::Format(_) | CopyOption::Freeze(_) | CopyOption::Encoding(_) => {}
            CopyOption::Delimiter(c) => opts.delimiter = single_char(*c, "delimiter")?,
            CopyOption::Null(s) => opts.null = s.clone(),
            CopyOption::Header(h) => opts.header = *h,
            CopyOption::Quote(c) => opts.quote = single_char(*c, "quote")?,
            CopyOption::Escape(c) => opts.escape = single_char(*c, "escape")?,
            other => {
                return Err(Error::unsupported(format!(
                    "COPY option {other} is not supported"
                )));
            }
        }
    }
    for o in legacy_options {
        match o {
            CopyLegacyOption::Binary => {}
            CopyLegacyOption::Csv(csv) => {
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => opts.header = true,
                        CopyLegacyCsvOption::Quote(q) => opts.quote = single_char(*q, "quote")?,
                        CopyLegacyCsvOption::Escape(e) => opts.escape = single_char(*e, "escape")?,
                        other => {
                            return Err(Error::unsupported(format!(
                                "COPY option {other} is not supported"
                            )));
                        }
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => opts.delimiter = single_char(*c, "delimiter")?,
            CopyLegacyOption::Null(s) => opts.null = s.clone(),
            CopyLegacyOption::Header => opts.header = true,
            other => {
                return Err(Error::unsupported(format!(
                    "COPY option {other} is not supported"
                )));
            }
        }
    }
    if format == Format::Binary && opts.header {
        return Err(Error::unsupported("cannot specify HEADER in BINARY mode"));
    }
    match source {
        CopySource::Table {
            table_name: name,
            columns,
        } => {
            let table = table_name(name);
            let columns: Vec<String> = columns.iter().map(crate::names::ident).collect();
            let query = to.then(|| {
                let list = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|c| quote_ident(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("SELECT {list} FROM {}", quote_ident(&table))
            });
            Ok(CopyCommand {
                to: *to,
                opts,
                query,
                table,
                columns,
            })
        }
        CopySource::Query(q) if *to => Ok(CopyCommand {
            to: true,
            opts,
            query: Some(q.to_string()),
            table: String::new(),
            columns: Vec::new(),
        }),
        CopySource::Query(_) => Err(Error::syntax("COPY FROM a query is not valid")),
    }
}

/// Encodes COPY TO's result rows as CopyData payloads (header first, if any).
pub fn encode_rows(cmd: &CopyCommand, result: &QueryResult) -> Vec<Bytes> {
    let enc = Encoder::new(cmd.opts.clone());
    let names: Vec<String> = result.columns.iter().map(|c| c.name.clone()).collect();
    let mut out = Vec::with_capacity(result.rows.len() + 1);
    if let Some(h) = enc.header(&names) {
        out.push(Bytes::from(h));
    }
    let binary = cmd.opts.format == Format::Binary;
    for row in &result.rows {
        let fields: Vec<Option<Vec<u8>>> = row
            .iter()
            .zip(&result.columns)
            .map(|(v, c)| field_bytes(v, &c.data_type, binary))
            .collect();
        out.push(Bytes::from(enc.row(&fields)));
    }
    out
}

fn field_bytes(v: &Value, t: &DataType, binary: bool) -> Option<Vec<u8>> {
    if v.is_null() {
        return None;
    }
    if binary {
        if let Some(b) = encode::binary_of(v, t) {
            return Some(b);
        }
        return Some(match (v, t) {
            (Value::Int(i), DataType::Int2) => (*i as i16).to_be_bytes().to_vec(),
            (Value::Int(i), DataType::Int4) => (*i as i32).to_be_bytes().to_vec(),
            (Value::Int(i), DataType::Int8) => i.to_be_bytes().to_vec(),
            (Value::Float(f), DataType::Float4) => (*f as f32).to_be_bytes().to_vec(),
            (Value::Float(f), DataType::Float8) => f.to_be_bytes().to_vec(),
            (Value::Bool(b), DataType::Bool) => vec![u8::from(*b)],
            (Value::Bytes(b), DataType::Bytea) => b.clone(),
            (v, t) => v.to_pg_text(t)?.into_bytes(),
        });
    }
    v.to_pg_text(t).map(String::into_bytes)
}

/// A COPY FROM STDIN in progress on one session.
pub struct CopyIn {
    decoder: Decoder,
    binary: bool,
    table: TableInfo,
    /// Types of the copied columns, in data order.
    types: Vec<DataType>,
    names: Vec<String>,
    /// Index, within the copied columns and then the `serial` ones, of the shard-key column.
    key: Option<usize>,
    /// Sequences of the SERIAL/IDENTITY columns the data leaves out: each row gets their next
    /// values here, after its own columns.
    serial: Vec<String>,
    targets: BTreeMap<ShardId, Target>,
    /// The keyspace's hash ranges as the COPY started: every row routes by the same map as
    /// `targets` (a newer map mid-COPY is met as a stale-epoch error at the shard).
    ranges: Vec<(protocol::hash::HashRange, ShardId)>,
    batches: BTreeMap<ShardId, Vec<Value>>,
    sql: String,
    pub rows: u64,
    /// The COPY's own distributed transaction; `None` when it runs inside the client's block.
    pub own: Option<SessionTxn>,
    /// The first error; later data is ignored until CopyDone or CopyFail reports it.
    pub error: Option<Error>,
}

impl CopyIn {
    /// Prepares to receive rows for `cmd`, checking the table and columns as PostgreSQL does.
    /// `lock_timeout_ms`: the session's, for the transaction of a COPY outside a block.
    pub fn start(
        router: &Router,
        cmd: &CopyCommand,
        in_block: bool,
        lock_timeout_ms: u64,
    ) -> Result<CopyIn> {
        let state = router.meta.state();
        let table = state
            .tables
            .get(&cmd.table)
            .cloned()
            .ok_or_else(|| Error::undefined_table(&cmd.table))?;
        let schema = &table.schema;
        let positions: Vec<usize> = if cmd.columns.is_empty() {
            schema.user_columns().map(|(i, _)| i).collect()
        } else {
            let mut out = Vec::new();
            for c in &cmd.columns {
                let i = schema
                    .column_index(c)
                    .filter(|i| !schema.is_system(*i))
                    .ok_or_else(|| {
                        Error::new(
                            sqlstate::UNDEFINED_COLUMN,
                            format!(
                                "column \"{c}\" of relation \"{}\" does not exist",
                                schema.name
                            ),
                        )
                    })?;
                if out.contains(&i) {
                    return Err(Error::new(
                        sqlstate::DUPLICATE_COLUMN,
                        format!("column \"{c}\" specified more than once"),
                    ));
                }
                out.push(i);
            }
            out
        };
        let serial: Vec<(usize, String)> = schema
            .user_columns()
            .filter(|(i, _)| !positions.contains(i))
            .filter_map(|(i, c)| {
                Some((i, crate::sequences::serial_sequence(c.default.as_deref()?)?))
            })
            .collect();
        let sent: Vec<usize> = positions
            .iter()
            .copied()
            .chain(serial.iter().map(|(i, _)| *i))
            .collect();
        if table.distribution == protocol::cluster::Distribution::Reference {
            // Each copy would fill an omitted column's volatile default for itself.
            for (i, col) in schema.columns.iter().enumerate() {
                if !sent.contains(&i)
                    && let Some(name) = crate::plan::volatile_default(col)
                {
                    return Err(Error::unsupported(format!(
                        "COPY into reference table \"{}\" must give column \"{}\": its default calls {name}()",
                        schema.name, col.name
                    )));
                }
            }
        }
        let key_col = table.shard_key.first().copied();
        let key = key_col.and_then(|k| sent.iter().position(|&p| p == k));
        let mut targets = BTreeMap::new();
        let mut ranges = Vec::new();
        for s in state.keyspace_shards(&table.keyspace) {
            targets.insert(s.id, target(&state, s)?);
            ranges.push((s.range, s.id));
        }
        if targets.is_empty() {
            return Err(Error::new(
                sqlstate::CANNOT_CONNECT_NOW,
                format!("keyspace \"{}\" has no shards placed yet", table.keyspace),
            ));
        }
        let names: Vec<String> = positions
            .iter()
            .map(|&i| schema.columns[i].name.clone())
            .collect();
        let sql = format!(
            "COPY {} ({}) FROM STDIN",
            quote_ident(&schema.name),
            sent.iter()
                .map(|&i| quote_ident(&schema.columns[i].name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let own = (!in_block).then(|| SessionTxn::implicit(lock_timeout_ms));
        Ok(CopyIn {
            decoder: Decoder::new(cmd.opts.clone()),
            binary: cmd.opts.format == Format::Binary,
            types: positions
                .iter()
                .map(|&i| schema.columns[i].data_type)
                .collect(),
            names,
            key,
            serial: serial.into_iter().map(|(_, s)| s).collect(),
            targets,
            ranges,
            batches: BTreeMap::new(),
            sql,
            rows: 0,
            own,
            error: None,
            table,
        })
    }

    /// How many columns the data has.
    pub fn columns(&self) -> usize {
        self.types.len()
    }

    /// Takes one CopyData chunk: rows it completes are converted and batched; full batches
    /// go to their shards within `txn`.
    pub async fn data(
        &mut self,
        router: &Router,
        txn: &mut SessionTxn,
        chunk: &[u8],
    ) -> Result<()> {
        self.decoder.feed(chunk)?;
        self.drain(router, txn, false).await
    }

    /// The end of the data: the last rows and batches go out. The caller then commits.
    pub async fn done(&mut self, router: &Router, txn: &mut SessionTxn) -> Result<u64> {
        self.drain(router, txn, true).await?;
        self.decoder.finish()?;
        let full: Vec<ShardId> = self.batches.keys().copied().collect();
        self.flush(router, txn, &full).await?;
        Ok(self.rows)
    }

    async fn drain(&mut self, router: &Router, txn: &mut SessionTxn, at_end: bool) -> Result<()> {
        while let Some(raw) = self.decoder.next_row(at_end)? {
            let mut row = self.convert(raw)?;
            for seq in &self.serial {
                row.push(Value::Int(router.next_value(seq).await?));
            }
            self.rows += 1;
            if self.table.distribution == protocol::cluster::Distribution::Reference {
                // Every copy of a reference table gets every row.
                let all: Vec<ShardId> = self.targets.keys().copied().collect();
                for shard in &all {
                    self.batches
                        .entry(*shard)
                        .or_default()
                        .extend(row.iter().cloned());
                }
                if self.batches.values().next().map_or(0, |b| b.len()) >= self.batch_values() {
                    self.flush(router, txn, &all).await?;
                }
                continue;
            }
            let key = match self.key {
                Some(k) => self.table.schema.columns[self.table.shard_key[0]]
                    .data_type
                    .coerce(row[k].clone())?,
                None => Value::Null,
            };
            let hash = shard_hash(&key);
            let shard = self
                .ranges
                .iter()
                .find(|(range, _)| range.contains(hash))
                .map(|(_, id)| *id)
                .ok_or_else(|| Error::internal("no shard covers a copied row"))?;
            let full = self.batch_values();
            // Sized for a whole batch at once: grown by doubling, each batch's vector was
            // copied a dozen times into freshly faulted pages.
            let batch = self
                .batches
                .entry(shard)
                .or_insert_with(|| Vec::with_capacity(full));
            batch.extend(row);
            if batch.len() >= full {
                self.flush(router, txn, &[shard]).await?;
            }
        }
        Ok(())
    }

    /// Values in a full batch: `BATCH_ROWS` rows of the data's and the serial columns.
    fn batch_values(&self) -> usize {
        BATCH_ROWS * (self.types.len() + self.serial.len()).max(1)
    }

    fn convert(&self, raw: RawRow) -> Result<Vec<Value>> {
        let line = self.decoder.line;
        let context = |e: Error, col: &str| {
            let detail = format!("COPY {}, line {line}, column {col}", self.table.schema.name);
            let mut e = e;
            e.detail = Some(detail);
            e
        };
        if raw.len() > self.types.len() {
            return Err(Error::new("22P04", "extra data after last expected column")
                .with_detail(format!("COPY {}, line {line}", self.table.schema.name)));
        }
        if raw.len() < self.types.len() {
            let missing = &self.names[raw.len()];
            return Err(
                Error::new("22P04", format!("missing data for column \"{missing}\""))
                    .with_detail(format!("COPY {}, line {line}", self.table.schema.name)),
            );
        }
        let mut out = Vec::with_capacity(raw.len());
        for ((field, t), name) in raw.into_iter().zip(&self.types).zip(&self.names) {
            let v = match field {
                None => Value::Null,
                Some(bytes) if self.binary => {
                    encode::decode_param(Some(&Bytes::from(bytes)), t, true)
                        .map_err(|e| context(e, name))?
                }
                Some(bytes) => {
                    let text = String::from_utf8(bytes).map_err(|_| {
                        Error::new("22021", "invalid byte sequence for encoding \"UTF8\"")
                    })?;
                    if t.is_text() {
                        t.coerce(Value::Text(text)).map_err(|e| context(e, name))?
                    } else {
                        t.parse_text(&text).map_err(|e| context(e, name))?
                    }
                }
            };
            out.push(v);
        }
        Ok(out)
    }

    async fn flush(
        &mut self,
        router: &Router,
        txn: &mut SessionTxn,
        shards: &[ShardId],
    ) -> Result<()> {
        let mut calls = Vec::new();
        for shard in shards {
            let Some(values) = self.batches.remove(shard) else {
                continue;
            };
            let target = self
                .targets
                .get(shard)
                .ok_or_else(|| Error::internal("copied row for an unknown shard"))?
                .clone();
            txn.touched.insert(target.shard, target.addr.clone());
            txn.written.insert(target.shard);
            calls.push((target, values));
        }
        let spec = txn.spec;
        let sends = calls
            .iter()
            .map(|(t, values)| router.send(t, self.sql.clone(), values, Some(spec)));
        for r in futures::future::join_all(sends).await {
            r?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_options;

    #[test]
    fn boolean_options_are_spelled_for_sqlparser() {
        assert_eq!(
            normalize_options("copy pgbench_accounts from stdin with (freeze on)"),
            "copy pgbench_accounts from stdin with (freeze true)"
        );
        assert_eq!(
            normalize_options("COPY t TO STDOUT (FORMAT csv, HEADER off, NULL 'on')"),
            "COPY t TO STDOUT (FORMAT csv, HEADER false, NULL 'on')"
        );
        assert_eq!(
            normalize_options("select 'freeze on'"),
            "select 'freeze on'"
        );
    }
}
