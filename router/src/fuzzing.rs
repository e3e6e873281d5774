//! The SQL entry point as one function, for the fuzz target `fuzz/fuzz_targets/sql.rs`.
//!
//! ```text
//!  text ─► parse ─► catalog rewrite ─► view expansion ─► planner (4 shards)
//!                                                    └─► engine bind + execute (in memory)
//! ```
//! No network and no storage: the planner sees a cluster map with a few tables on four shards,
//! and queries run over in-memory copies of those tables, the way the router runs gathered
//! rows. Every error is an answer; only a panic (or a hang) is a bug.

use protocol::cluster::{
    ClusterState, DEFAULT_KEYSPACE, KeyspaceInfo, MetaCommand, NodeInfo, ShardInfo,
};
use protocol::schema::TableSchema;
use protocol::{Value, hash};
use sqlparser::ast::Statement;

use crate::memtxn::MemTables;
use crate::plan::Planner;

const TABLES: &[&str] = &[
    "CREATE TABLE t (a int PRIMARY KEY, b text, c float8, d numeric(10,2), e bool)",
    "CREATE TABLE u (x bigint, y text, z date, PRIMARY KEY (x, y))",
    "CREATE TABLE w (id int PRIMARY KEY, v text, n int CHECK (n > 0), j jsonb, ts timestamptz)",
];

/// Tables with their rows.
pub type Tables = Vec<(TableSchema, Vec<Vec<Value>>)>;

/// A cluster map with the tables above on four shards, and a few rows for each.
pub fn world() -> (ClusterState, Tables) {
    let mut state = ClusterState::default();
    state.nodes.insert(
        1,
        NodeInfo {
            id: 1,
            addr: "127.0.0.1:1".into(),
        },
    );
    let _ = state.apply(&MetaCommand::CreateKeyspace(KeyspaceInfo {
        name: DEFAULT_KEYSPACE.into(),
        shard_count: 4,
        replication_factor: 1,
        nodes: Vec::new(),
    }));
    let shards = hash::split_space(4)
        .into_iter()
        .enumerate()
        .map(|(i, range)| ShardInfo {
            id: i as u32,
            keyspace: DEFAULT_KEYSPACE.into(),
            range,
            primary: 1,
            replicas: Vec::new(),
            epoch: 1,
            frozen: false,
            sealed: false,
            split_from: None,
        })
        .collect();
    let _ = state.apply(&MetaCommand::PlaceShards {
        keyspace: DEFAULT_KEYSPACE.into(),
        shards,
    });
    let mut tables = Vec::new();
    for sql in TABLES {
        let Ok(stmts) = engine::sql::parse(sql) else {
            continue;
        };
        let Some(stmt) = stmts.first() else { continue };
        if let Ok(crate::plan::Plan::CreateTable { info, .. }) =
            Planner::new(&state, &[]).plan(stmt)
        {
            let _ = state.apply(&MetaCommand::CreateTable(info.clone()));
            let rows = (0..20)
                .map(|i| {
                    info.schema
                        .columns
                        .iter()
                        .map(|c| sample(&c.data_type, i))
                        .collect()
                })
                .collect();
            tables.push((info.schema, rows));
        }
    }
    (state, tables)
}

/// A value of `t` for row `i` (NULL now and then).
fn sample(t: &protocol::DataType, i: i64) -> Value {
    use protocol::DataType as T;
    if i % 7 == 6 {
        return Value::Null;
    }
    let text = match t {
        T::Date => format!("2024-01-{:02}", i + 1),
        T::Numeric(_) => format!("{}.25", i * 10),
        _ => format!("v{}", i % 5),
    };
    match t {
        T::Int2 | T::Int4 | T::Int8 => Value::Int(i - 3),
        T::Float4 | T::Float8 => Value::Float(i as f64 / 3.0),
        T::Bool => Value::Bool(i % 2 == 0),
        _ => t.parse_text(&text).unwrap_or(Value::Text(text)),
    }
}

/// Runs `sql` through parsing, rewriting, planning and (for queries) execution.
pub fn run_sql(sql: &str, state: &ClusterState, tables: &Tables) {
    let Ok(stmts) = engine::sql::parse(sql) else {
        return;
    };
    for stmt in stmts {
        let stmt = crate::catalog::rewrite(&stmt);
        let stmt = match crate::views::expand(&stmt, state) {
            Ok(Some(s)) => s,
            Ok(None) => stmt,
            Err(_) => continue,
        };
        let stmt = crate::table_functions::expand(&stmt).unwrap_or(stmt);
        let _ = Planner::new(state, &[]).plan(&stmt);
        if matches!(stmt, Statement::Query(_)) {
            let mut mem = MemTables::new(10_000);
            for (schema, rows) in tables {
                mem.add_table(schema.clone());
                let _ = mem.add_rows(&schema.name, rows.clone());
            }
            let _ = engine::sql::query(&stmt, &[], &mem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_has_its_tables_and_queries_run() {
        let (state, tables) = world();
        assert_eq!(tables.len(), TABLES.len());
        assert_eq!(state.tables.len(), TABLES.len());
        run_sql(
            "SELECT b, count(*) FROM t JOIN u ON t.a = u.x GROUP BY b; SELEC; SELECT 1/0",
            &state,
            &tables,
        );
    }
}
