//! Distributed planning: decide where a statement runs and how its results combine.
//!
//! ```text
//!  statement ─► tables it touches ─► shard-key pins in WHERE / VALUES
//!     ├─ all on one shard ............ Direct   (sent whole to that shard)
//!     ├─ INSERT … VALUES across shards  Split    (one INSERT per shard with its rows)
//!     ├─ UPDATE/DELETE across shards .. Direct   (same statement on every shard, counts summed)
//!     ├─ SELECT across shards ......... Gather   (filtered rows fetched from every shard, then
//!     │                                           the query runs at the router over them)
//!     ├─ tessera.* system views ....... Local
//!     └─ CREATE/DROP TABLE ............ Ddl      (meta first, then every shard)
//! ```
//! Gather is always correct (the router runs the engine's executor over exactly the rows a
//! single shard would hold) and bounded by the router's row budget; pushing partial
//! aggregates and ORDER BY … LIMIT down to shards is an optimisation layered on top later.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use protocol::cluster::{
    ClusterState, DEFAULT_KEYSPACE, Distribution, ShardId, ShardInfo, TableInfo,
};
use protocol::error::{Error, Result, sqlstate};
use protocol::hash::shard_hash;
use protocol::schema::TableSchema;
use protocol::{DataType, Value};
use sqlparser::ast::{
    self, BinaryOperator, CreateTableOptions, Expr, SetExpr, SqlOption, Statement, TableFactor,
    UnaryOperator,
};

use crate::names::{self, is_system, table_name};

/// Where one piece of a plan is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub shard: ShardId,
    pub node: u64,
    pub addr: String,
    pub epoch: u64,
    /// The shard's hash range when the statement was planned: if a split changes it, the
    /// statement must be planned again, not resent.
    pub range: protocol::hash::HashRange,
}

/// How the router combines one column of per-shard partial aggregates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Combine {
    Sum,
    Min,
    Max,
}

/// A fetch of one table's (filtered) rows from one shard, for Gather.
#[derive(Clone, Debug)]
pub struct Fetch {
    pub table: String,
    pub target: Target,
    pub sql: String,
}

#[derive(Debug)]
pub enum Plan {
    /// The statement runs whole on each target; results concatenate.
    Direct { targets: Vec<Target>, sql: String },
    /// One statement per target.
    Split { parts: Vec<(Target, String)> },
    /// Each target computes the aggregates over its rows; the router combines them
    /// (count and sum add up, min and max take the extreme). One row comes back.
    Partial {
        targets: Vec<Target>,
        sql: String,
        combine: Vec<Combine>,
    },
    /// Rows are fetched, then `stmt` runs at the router over them.
    Gather {
        fetches: Vec<Fetch>,
        tables: Vec<TableSchema>,
        stmt: Box<Statement>,
    },
    /// Answered by the router from the cluster map (system views).
    Local {
        stmt: Box<Statement>,
        views: Vec<String>,
    },
    /// A write to a reference table: the same statement on every copy of the keyspace, in
    /// one (two-phase) transaction; the first copy's result is the statement's (the others
    /// must report the same count).
    Replicated { targets: Vec<Target>, sql: String },
    CreateTable {
        info: TableInfo,
        if_not_exists: bool,
        sql: String,
        targets: Vec<Target>,
    },
    /// An UPDATE that assigns the shard key: it runs on `sources` with `RETURNING *`, and
    /// every returned row whose new key hashes to another shard is deleted from its source
    /// and inserted on that shard — all in one distributed transaction.
    MoveUpdate {
        sources: Vec<Target>,
        sql: String,
        table: Box<TableInfo>,
        shards: BTreeMap<ShardId, Target>,
    },
    DropTable {
        names: Vec<String>,
        if_exists: bool,
        targets: Vec<Target>,
    },
    /// ALTER TABLE (also CREATE INDEX and DROP INDEX, which change a table's definition):
    /// every shard of the keyspace alters its copy (atomically, with 2PC), then meta records
    /// the new definition.
    AlterTable {
        /// The command tag: "ALTER TABLE", "CREATE INDEX" or "DROP INDEX".
        tag: &'static str,
        name: String,
        /// `None` for ALTER TABLE IF EXISTS of a table that does not exist: nothing to do.
        info: Option<Box<TableInfo>>,
        targets: Vec<Target>,
        sql: String,
    },
}

impl Plan {
    /// The plan as EXPLAIN prints it, one line per row.
    pub fn explain(&self) -> Vec<String> {
        let shard = |t: &Target| format!("shard {} on node {} ({})", t.shard, t.node, t.addr);
        let mut out = Vec::new();
        match self {
            Plan::Direct { targets, sql } => {
                out.push(format!(
                    "Direct to {} shard(s); results concatenated",
                    targets.len()
                ));
                for t in targets {
                    out.push(format!("  {}: {sql}", shard(t)));
                }
            }
            Plan::Partial {
                targets,
                sql,
                combine,
            } => {
                let how: Vec<&str> = combine
                    .iter()
                    .map(|c| match c {
                        Combine::Sum => "sum",
                        Combine::Min => "min",
                        Combine::Max => "max",
                    })
                    .collect();
                out.push(format!(
                    "Partial aggregates on {} shard(s); router combines by {}",
                    targets.len(),
                    how.join(", ")
                ));
                for t in targets {
                    out.push(format!("  {}: {sql}", shard(t)));
                }
            }
            Plan::Replicated { targets, sql } => {
                out.push(format!(
                    "Replicated write on all {} copies of a reference table, one transaction",
                    targets.len()
                ));
                for t in targets {
                    out.push(format!("  {}: {sql}", shard(t)));
                }
            }
            Plan::Split { parts } => {
                out.push(format!("Split into {} per-shard statement(s)", parts.len()));
                for (t, sql) in parts {
                    out.push(format!("  {}: {sql}", shard(t)));
                }
            }
            Plan::Gather { fetches, stmt, .. } => {
                out.push(format!("Router executes: {stmt}"));
                out.push(format!(
                    "  over rows gathered from {} fetch(es):",
                    fetches.len()
                ));
                for f in fetches {
                    out.push(format!("    {}: {}", shard(&f.target), f.sql));
                }
            }
            Plan::Local { stmt, views } => {
                out.push(format!("Router executes: {stmt}"));
                out.push(format!("  over system view(s) {}", views.join(", ")));
            }
            Plan::CreateTable {
                info, sql, targets, ..
            } => {
                let key: Vec<&str> = info
                    .shard_key
                    .iter()
                    .map(|&i| info.schema.columns[i].name.as_str())
                    .collect();
                out.push(format!(
                    "Create table {} in keyspace {} ({:?}, shard key {})",
                    info.schema.name,
                    info.keyspace,
                    info.distribution,
                    key.join(", ")
                ));
                out.push("  meta: register table".into());
                for t in targets {
                    out.push(format!("  {}: {sql}", shard(t)));
                }
            }
            Plan::MoveUpdate {
                sources,
                sql,
                table,
                ..
            } => {
                out.push(format!(
                    "Update moving rows by shard key of {} (one distributed transaction)",
                    table.schema.name
                ));
                for t in sources {
                    out.push(format!("  {}: {sql}", shard(t)));
                }
                out.push("  then each row whose new key belongs elsewhere: DELETE at its source, INSERT at its new shard".into());
            }
            Plan::AlterTable {
                tag,
                name,
                targets,
                sql,
                ..
            } => {
                out.push(format!("{} on table {name}", tag.to_lowercase()));
                for t in targets {
                    out.push(format!("  {}: {sql}", shard(t)));
                }
                out.push("  meta: record the new definition".into());
            }
            Plan::DropTable { names, targets, .. } => {
                out.push(format!("Drop table(s) {}", names.join(", ")));
                out.push("  meta: unregister table(s)".into());
                for t in targets {
                    out.push(format!(
                        "  {}: DROP TABLE IF EXISTS {}",
                        shard(t),
                        names.join(", ")
                    ));
                }
            }
        }
        out
    }
}

pub struct Planner<'a> {
    pub state: &'a ClusterState,
    pub params: &'a [Value],
    /// Set by `pinned_shards` when the condition that pinned the shards was `key = $n`.
    pinned_by: std::cell::Cell<Option<usize>>,
    /// Set when the plan is one shard's, chosen by parameter `$n + 1` alone (the table and
    /// `Some(n)`), or the only shard of a one-shard keyspace whatever the parameters (a
    /// table of it and `None`); see [`Planner::point_param`].
    point: std::cell::RefCell<Option<(String, Option<usize>)>>,
}

pub(crate) fn target(state: &ClusterState, shard: &ShardInfo) -> Result<Target> {
    let addr = state.node_addr(shard.primary).ok_or_else(|| {
        Error::connection(format!(
            "primary node {} of shard {} is unknown",
            shard.primary, shard.id
        ))
    })?;
    Ok(Target {
        shard: shard.id,
        node: shard.primary,
        addr: addr.to_string(),
        epoch: shard.epoch,
        range: shard.range,
    })
}

impl<'a> Planner<'a> {
    pub fn new(state: &'a ClusterState, params: &'a [Value]) -> Self {
        Planner {
            state,
            params,
            pinned_by: Default::default(),
            point: Default::default(),
        }
    }

    fn keyspace_targets(&self, keyspace: &str) -> Result<Vec<Target>> {
        let shards = self.state.keyspace_shards(keyspace);
        if shards.is_empty() {
            return Err(Error::new(
                sqlstate::CANNOT_CONNECT_NOW,
                format!("keyspace \"{keyspace}\" has no shards placed yet (are its nodes up?)"),
            ));
        }
        shards.into_iter().map(|s| target(self.state, s)).collect()
    }

    fn table(&self, name: &str) -> Result<&'a TableInfo> {
        self.state
            .tables
            .get(name)
            .ok_or_else(|| Error::undefined_table(name))
    }

    /// After [`Planner::plan`]: the parameter (0-based) whose value alone chose the plan's one
    /// shard, through `shard key = $n` over one sharded table; or `None` with a table of a
    /// one-shard keyspace whose only shard takes the statement whatever the parameters.
    /// Planning the same statement with other parameters picks the shard of that
    /// parameter's value (or the same shard) and changes nothing else, which is what lets a
    /// prepared statement skip planning (`crate::route_cache`).
    pub fn point_param(&self) -> Option<(String, Option<usize>)> {
        self.point.borrow().clone()
    }

    pub fn plan(&self, stmt: &Statement) -> Result<Plan> {
        match stmt {
            Statement::CreateTable(create) => self.plan_create(stmt, create),
            Statement::Drop {
                object_type: ast::ObjectType::Table,
                if_exists,
                names,
                ..
            } => {
                let names: Vec<String> = names.iter().map(table_name).collect();
                for n in &names {
                    let referenced = self.state.tables.values().any(|t| {
                        !names.contains(&t.schema.name)
                            && t.schema.foreign_keys.iter().any(|f| &f.ref_table == n)
                    });
                    if referenced {
                        return Err(Error::new(
                            sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                            format!("cannot drop table {n} because other objects depend on it"),
                        ));
                    }
                }
                let mut keyspaces = BTreeSet::new();
                for n in &names {
                    match self.state.tables.get(n) {
                        Some(t) => {
                            keyspaces.insert(t.keyspace.clone());
                        }
                        None if self.state.relation_exists(n) => {
                            return Err(Error::new(
                                sqlstate::WRONG_OBJECT_TYPE,
                                format!("\"{n}\" is not a table"),
                            ));
                        }
                        None if *if_exists => {}
                        None => {
                            return Err(Error::new(
                                sqlstate::UNDEFINED_TABLE,
                                format!("table \"{n}\" does not exist"),
                            ));
                        }
                    }
                }
                let mut targets = Vec::new();
                for ks in keyspaces {
                    targets.extend(self.keyspace_targets(&ks)?);
                }
                Ok(Plan::DropTable {
                    names,
                    if_exists: *if_exists,
                    targets,
                })
            }
            Statement::Insert(insert) => self.plan_insert(stmt, insert),
            Statement::AlterTable(at) => self.plan_alter(stmt, at),
            Statement::CreateIndex(ci) => self.plan_create_index(ci),
            Statement::Drop {
                object_type: ast::ObjectType::Index,
                if_exists,
                names,
                ..
            } => self.plan_drop_index(names, *if_exists),
            Statement::Truncate(t) => {
                // Every shard of the tables' keyspace deletes its rows, atomically.
                let mut keyspaces = BTreeSet::new();
                for target in &t.table_names {
                    let name = table_name(&target.name);
                    match self.state.tables.get(&name) {
                        Some(info) => {
                            keyspaces.insert(info.keyspace.clone());
                        }
                        None if t.if_exists => {}
                        None => return Err(Error::undefined_table(&name)),
                    }
                }
                let mut targets = Vec::new();
                for ks in keyspaces {
                    targets.extend(self.keyspace_targets(&ks)?);
                }
                if targets.is_empty() {
                    // TRUNCATE IF EXISTS of nothing: any shard agrees there is nothing to do.
                    targets = self.keyspace_targets(DEFAULT_KEYSPACE)?;
                    targets.truncate(1);
                }
                Ok(Plan::Direct {
                    targets,
                    sql: stmt.to_string(),
                })
            }
            _ => self.plan_by_tables(stmt),
        }
    }

    fn plan_create(&self, stmt: &Statement, create: &ast::CreateTable) -> Result<Plan> {
        let schema = engine::sql::schema_from_create(stmt)?;
        let mut keyspace = DEFAULT_KEYSPACE.to_string();
        let mut distribution = Distribution::Sharded;
        let mut shard_key: Option<Vec<String>> = None;
        let options = match &create.table_options {
            CreateTableOptions::With(opts) => opts.as_slice(),
            _ => &[],
        };
        for opt in options {
            let SqlOption::KeyValue { key, value } = opt else {
                return Err(Error::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("unrecognized table option {opt}"),
                ));
            };
            let key = table_name(key);
            let text = option_text(value);
            match key.as_str() {
                "shard_key" => {
                    shard_key = Some(text.split(',').map(|s| s.trim().to_lowercase()).collect())
                }
                "keyspace" => keyspace = text.to_lowercase(),
                "distribution" => {
                    distribution = match text.to_lowercase().as_str() {
                        "sharded" => Distribution::Sharded,
                        "reference" => Distribution::Reference,
                        "single" => {
                            return Err(Error::unsupported(
                                "distribution 'single' is not available; put the table in a keyspace with one shard instead",
                            ));
                        }
                        other => {
                            return Err(Error::new(
                                sqlstate::INVALID_PARAMETER_VALUE,
                                format!(
                                    "invalid distribution \"{other}\" (expected sharded, reference or single)"
                                ),
                            ));
                        }
                    }
                }
                // PostgreSQL's heap storage parameters: accepted (tools such as pgbench set
                // them) and without effect, since redb lays out pages itself.
                "fillfactor" => match text.parse::<i64>() {
                    Ok(10..=100) => {}
                    _ => {
                        return Err(Error::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("value {text} out of bounds for option \"fillfactor\""),
                        )
                        .with_detail("Valid values are between \"10\" and \"100\"."));
                    }
                },
                other
                    if other.starts_with("autovacuum_")
                        || other.starts_with("toast.")
                        || matches!(
                            other,
                            "parallel_workers"
                                | "toast_tuple_target"
                                | "user_catalog_table"
                                | "vacuum_index_cleanup"
                                | "vacuum_truncate"
                                | "log_autovacuum_min_duration"
                        ) => {}
                other => {
                    return Err(Error::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("unrecognized parameter \"{other}\""),
                    ));
                }
            }
        }
        if !self.state.keyspaces.contains_key(&keyspace) {
            return Err(Error::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("keyspace \"{keyspace}\" does not exist"),
            ));
        }
        if distribution == Distribution::Reference && shard_key.is_some() {
            return Err(Error::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                "a reference table has no shard key: every shard holds all of its rows",
            ));
        }
        let key_cols = match shard_key {
            _ if distribution == Distribution::Reference => Vec::new(),
            Some(cols) => cols
                .iter()
                .map(|c| {
                    schema.column_index(c).ok_or_else(|| {
                        Error::new(
                            sqlstate::UNDEFINED_COLUMN,
                            format!("shard key column \"{c}\" does not exist"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            // Without a declared primary key, the first column decides the shard, and the
            // row id that keys the row within it is local to that shard.
            None if schema.rowid().is_some() => vec![0],
            None => schema
                .primary_key
                .first()
                .map(|&i| vec![i])
                .unwrap_or_default(),
        };
        if key_cols.is_empty() && distribution == Distribution::Sharded {
            return Err(Error::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                "a sharded table needs a primary key or shard_key",
            ));
        }
        if distribution == Distribution::Sharded
            && schema.rowid().is_none()
            && !key_cols.iter().all(|c| schema.primary_key.contains(c))
        {
            return Err(Error::unsupported(format!(
                "the primary key of sharded table \"{}\" must include its shard key",
                schema.name
            ))
            .with_detail(
                "Uniqueness is enforced within a shard, so the key must decide the shard.",
            ));
        }
        let info = TableInfo {
            schema,
            keyspace,
            distribution,
            shard_key: key_cols,
        };
        if !info.schema.foreign_keys.is_empty() {
            let single = |ks: &str| self.state.keyspace_shards(ks).len() <= 1;
            let parents_ok = info.schema.foreign_keys.iter().all(|fk| {
                fk.ref_table == info.schema.name
                    || self
                        .state
                        .tables
                        .get(&fk.ref_table)
                        .is_some_and(|p| p.keyspace == info.keyspace)
            });
            if !single(&info.keyspace) || !parents_ok {
                return Err(Error::unsupported(
                    "FOREIGN KEY is supported between tables of one keyspace with a single shard",
                )
                .with_detail("Each shard enforces a foreign key only among its own rows."));
            }
        }
        for idx in &info.schema.indexes {
            self.check_unique_shardable(&info, idx)?;
            if self.relation_taken(&idx.name) {
                return Err(Error::new(
                    sqlstate::DUPLICATE_TABLE,
                    format!("relation \"{}\" already exists", idx.name),
                ));
            }
        }
        // Shards get the table without Tessera's storage parameters.
        let mut plain = create.clone();
        plain.table_options = CreateTableOptions::None;
        plain.if_not_exists = true;
        let targets = self.keyspace_targets(&info.keyspace)?;
        Ok(Plan::CreateTable {
            info,
            if_not_exists: create.if_not_exists,
            sql: Statement::CreateTable(plain).to_string(),
            targets,
        })
    }

    /// True if a relation (table, index, sequence, view) of that name exists.
    fn relation_taken(&self, name: &str) -> bool {
        self.state.relation_exists(name)
    }

    /// A unique index can only be enforced by shards if its values decide the shard.
    fn check_unique_shardable(
        &self,
        info: &TableInfo,
        idx: &protocol::schema::IndexDef,
    ) -> Result<()> {
        if !idx.unique
            || self.state.keyspace_shards(&info.keyspace).len() <= 1
            || info.shard_key.iter().all(|k| idx.columns.contains(k))
        {
            return Ok(());
        }
        let key: Vec<&str> = info
            .shard_key
            .iter()
            .filter_map(|&k| info.schema.columns.get(k).map(|c| c.name.as_str()))
            .collect();
        Err(Error::unsupported(format!(
            "unique index \"{}\" on sharded table \"{}\" must include its shard key ({})",
            idx.name,
            info.schema.name,
            key.join(", ")
        ))
        .with_detail(
            "Uniqueness is enforced within a shard, so the indexed values must decide the shard.",
        ))
    }

    fn plan_create_index(&self, ci: &ast::CreateIndex) -> Result<Plan> {
        let name = table_name(&ci.table_name);
        let table = self.table(&name)?;
        let Some(schema) = engine::sql::index_ddl::schema_with_index(&table.schema, ci, &|n| {
            self.relation_taken(n)
        })?
        else {
            return Ok(Plan::AlterTable {
                tag: "CREATE INDEX",
                name,
                info: None,
                targets: Vec::new(),
                sql: String::new(),
            });
        };
        let idx = schema
            .indexes
            .last()
            .ok_or_else(|| Error::internal("CREATE INDEX added no index"))?;
        let info = TableInfo {
            schema: schema.clone(),
            ..table.clone()
        };
        self.check_unique_shardable(&info, idx)?;
        // Shards get the name the router chose, so every copy and meta agree on it.
        let mut named = ci.clone();
        named.name = Some(ast::ObjectName::from(vec![ast::Ident::with_quote(
            '"',
            idx.name.clone(),
        )]));
        named.if_not_exists = false;
        named.concurrently = false;
        Ok(Plan::AlterTable {
            tag: "CREATE INDEX",
            name,
            info: Some(Box::new(info)),
            targets: self.keyspace_targets(&table.keyspace)?,
            sql: Statement::CreateIndex(named).to_string(),
        })
    }

    /// DROP INDEX of one index (the dispatcher runs a list one name at a time).
    fn plan_drop_index(&self, names: &[ast::ObjectName], if_exists: bool) -> Result<Plan> {
        let [object] = names else {
            return Err(Error::internal("DROP INDEX plans one index at a time"));
        };
        let index = table_name(object);
        let owner = self.state.tables.values().find(|t| {
            t.schema.index(&index).is_some()
                || (t.schema.rowid().is_none() && t.schema.primary_key_name() == index)
        });
        let Some(table) = owner else {
            if self.state.tables.contains_key(&index) || self.state.sequences.contains_key(&index) {
                return Err(Error::new(
                    sqlstate::WRONG_OBJECT_TYPE,
                    format!("\"{index}\" is not an index"),
                ));
            }
            if if_exists {
                return Ok(Plan::AlterTable {
                    tag: "DROP INDEX",
                    name: index,
                    info: None,
                    targets: Vec::new(),
                    sql: String::new(),
                });
            }
            return Err(engine::sql::index_ddl::undefined_index(&index));
        };
        let schema = engine::sql::index_ddl::schema_without_index(&table.schema, &index)?;
        Ok(Plan::AlterTable {
            tag: "DROP INDEX",
            name: table.schema.name.clone(),
            info: Some(Box::new(TableInfo {
                schema,
                ..table.clone()
            })),
            targets: self.keyspace_targets(&table.keyspace)?,
            sql: format!("DROP INDEX {}", ast::Ident::with_quote('"', index.clone())),
        })
    }

    fn plan_alter(&self, stmt: &Statement, at: &ast::AlterTable) -> Result<Plan> {
        let name = table_name(&at.name);
        let Some(table) = self.state.tables.get(&name) else {
            if at.if_exists {
                return Ok(Plan::AlterTable {
                    tag: "ALTER TABLE",
                    name,
                    info: None,
                    targets: Vec::new(),
                    sql: stmt.to_string(),
                });
            }
            return Err(Error::undefined_table(&name));
        };
        let alt = engine::sql::alter::altered_schema(&table.schema, at)?;
        if table.distribution == Distribution::Reference {
            // Each copy would fill a new column's volatile default for itself.
            for (_, col) in alt.schema.user_columns() {
                let known = table
                    .schema
                    .columns
                    .iter()
                    .any(|c| c.name == col.name && c.default == col.default);
                if let (false, Some(name)) = (known, volatile_default(col)) {
                    return Err(Error::unsupported(format!(
                        "a column of reference table \"{}\" cannot default to {name}()",
                        table.schema.name
                    ))
                    .with_detail(
                        "Every copy would compute the default itself and store a different value.",
                    ));
                }
            }
        }
        // The shard key keeps its columns, wherever they now sit.
        let mut shard_key = Vec::with_capacity(table.shard_key.len());
        for &k in &table.shard_key {
            let pos = alt
                .layout
                .iter()
                .position(|s| *s == engine::sql::alter::Source::Old(k))
                .ok_or_else(|| {
                    Error::unsupported(format!(
                        "cannot drop column \"{}\": it is the shard key of table \"{name}\"",
                        table.schema.columns[k].name
                    ))
                })?;
            shard_key.push(pos);
        }
        if alt.schema.rowid().is_none()
            && !shard_key.iter().all(|c| alt.schema.primary_key.contains(c))
        {
            return Err(Error::unsupported(format!(
                "the primary key of sharded table \"{}\" must include its shard key",
                alt.schema.name
            ))
            .with_detail(
                "Uniqueness is enforced within a shard, so the key must decide the shard.",
            ));
        }
        if alt.schema.name != name && self.state.tables.contains_key(&alt.schema.name) {
            return Err(Error::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{}\" already exists", alt.schema.name),
            ));
        }
        let info = TableInfo {
            schema: alt.schema,
            keyspace: table.keyspace.clone(),
            distribution: table.distribution,
            shard_key,
        };
        for name in &alt.new_unique {
            if self.relation_taken(name) {
                return Err(Error::new(
                    sqlstate::DUPLICATE_TABLE,
                    format!("relation \"{name}\" already exists"),
                ));
            }
            if let Some(idx) = info.schema.index(name) {
                self.check_unique_shardable(&info, idx)?;
            }
        }
        Ok(Plan::AlterTable {
            tag: "ALTER TABLE",
            name,
            info: Some(Box::new(info)),
            targets: self.keyspace_targets(&table.keyspace)?,
            sql: stmt.to_string(),
        })
    }

    fn plan_insert(&self, stmt: &Statement, insert: &ast::Insert) -> Result<Plan> {
        let ast::TableObject::TableName(name) = &insert.table else {
            return Err(Error::unsupported("INSERT into a table function"));
        };
        let table = self.table(&table_name(name))?;
        let targets = self.keyspace_targets(&table.keyspace)?;
        if targets.len() == 1 {
            *self.point.borrow_mut() = Some((table.schema.name.clone(), None));
            return Ok(Plan::Direct {
                targets,
                sql: stmt.to_string(),
            });
        }
        if table.distribution == Distribution::Reference {
            check_deterministic_write(stmt, table)?;
            let reads_other = relations(stmt).iter().any(|r| {
                self.state.tables.get(r).is_some_and(|t| {
                    t.distribution != Distribution::Reference || t.keyspace != table.keyspace
                })
            });
            if reads_other {
                return Err(Error::unsupported(format!(
                    "a write to reference table \"{}\" may read only reference tables of its keyspace",
                    table.schema.name
                ))
                .with_detail("Every copy applies the statement itself, so each must see all the rows it reads."));
            }
            return Ok(Plan::Replicated {
                targets,
                sql: stmt.to_string(),
            });
        }
        // Each shard resolves the conflicts of its own rows; an update may not move a row.
        if let Some(ast::OnInsert::OnConflict(oc)) = &insert.on
            && let ast::OnConflictAction::DoUpdate(u) = &oc.action
        {
            let key_names: Vec<&str> = table
                .shard_key
                .iter()
                .filter_map(|&k| table.schema.columns.get(k).map(|c| c.name.as_str()))
                .collect();
            let assigns_key = u.assignments.iter().any(|a| {
                let names: Vec<&ast::ObjectName> = match &a.target {
                    ast::AssignmentTarget::ColumnName(n) => vec![n],
                    ast::AssignmentTarget::Tuple(ns) => ns.iter().collect(),
                };
                names
                    .iter()
                    .any(|n| key_names.contains(&table_name(n).as_str()))
            });
            if assigns_key {
                return Err(Error::unsupported(format!(
                    "ON CONFLICT DO UPDATE cannot assign the shard key of table \"{}\"",
                    table.schema.name
                )));
            }
        }
        let rows = match insert.source.as_deref().map(|q| q.body.as_ref()) {
            Some(SetExpr::Values(values))
                if insert.source.as_ref().is_some_and(|q| q.with.is_none()) =>
            {
                &values.rows
            }
            // DEFAULT VALUES: the shard key takes its default, which must be a constant to route.
            None => return self.plan_default_values(stmt, table),
            _ => {
                // Run at the router (crate::insert_select) before planning.
                return Err(Error::internal(
                    "INSERT … SELECT over several shards reached the planner",
                ));
            }
        };
        // Errors PostgreSQL raises for the statement as a whole come before any splitting.
        let width = rows.first().map(|r| r.content.len()).unwrap_or(0);
        if rows.iter().any(|r| r.content.len() != width) {
            return Err(Error::syntax("VALUES lists must all be the same length"));
        }
        let target_width = if insert.columns.is_empty() {
            table.schema.user_columns().count()
        } else {
            insert.columns.len()
        };
        if width > target_width {
            return Err(Error::syntax(
                "INSERT has more expressions than target columns",
            ));
        }
        let columns: Vec<String> = if insert.columns.is_empty() {
            table
                .schema
                .user_columns()
                .map(|(_, c)| c.name.clone())
                .collect()
        } else {
            insert.columns.iter().map(table_name).collect()
        };
        let key_col = *table
            .shard_key
            .first()
            .ok_or_else(|| Error::internal("table without shard key"))?;
        let key_def = &table.schema.columns[key_col];
        let Some(pos) = columns.iter().position(|c| *c == key_def.name) else {
            // Every row takes the shard key's DEFAULT: one shard gets them all (and reports
            // a NOT NULL violation in PostgreSQL's column order if there is none).
            let default = match &key_def.default {
                Some(text) => {
                    let expr =
                        sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                            .try_with_sql(text)
                            .and_then(|mut p| p.parse_expr())
                            .map_err(|e| Error::syntax(e.to_string()))?;
                    Some(self.constant(&expr)?.ok_or_else(|| {
                        Error::unsupported(format!(
                            "the shard key \"{}\" must be given: its DEFAULT is not a constant",
                            key_def.name
                        ))
                    })?)
                }
                None => None,
            };
            let shard = self.shard_of(table, &key_def.data_type, default.unwrap_or(Value::Null))?;
            return Ok(Plan::Direct {
                targets: vec![target(self.state, shard)?],
                sql: stmt.to_string(),
            });
        };
        let mut by_shard: BTreeMap<ShardId, Vec<ast::Parens<Vec<Expr>>>> = BTreeMap::new();
        for row in rows {
            let expr = row
                .content
                .get(pos)
                .ok_or_else(|| Error::syntax("INSERT has more target columns than expressions"))?;
            let value = self.constant(expr)?.ok_or_else(|| {
                Error::unsupported(format!(
                    "the shard key \"{}\" of each inserted row must be a constant or a parameter",
                    key_def.name
                ))
            })?;
            let shard = self.shard_of(table, &key_def.data_type, value)?;
            by_shard.entry(shard.id).or_default().push(row.clone());
        }
        let mut parts = Vec::new();
        for (shard_id, rows) in by_shard {
            let shard = self
                .state
                .shards
                .get(&shard_id)
                .ok_or_else(|| Error::internal("shard vanished"))?;
            let mut part = insert.clone();
            if let Some(source) = part.source.as_mut()
                && let SetExpr::Values(values) = source.body.as_mut()
            {
                values.rows = rows;
            }
            parts.push((
                target(self.state, shard)?,
                Statement::Insert(part).to_string(),
            ));
        }
        if parts.len() == 1 {
            let (t, sql) = parts.remove(0);
            return Ok(Plan::Direct {
                targets: vec![t],
                sql,
            });
        }
        Ok(Plan::Split { parts })
    }

    /// Routes `INSERT … DEFAULT VALUES` by the shard key's default; without one the key is
    /// NULL, and any shard reports that violation exactly as PostgreSQL words it.
    fn plan_default_values(&self, stmt: &Statement, table: &TableInfo) -> Result<Plan> {
        if table.distribution == Distribution::Reference {
            check_deterministic_write(stmt, table)?;
            return Ok(Plan::Replicated {
                targets: self.keyspace_targets(&table.keyspace)?,
                sql: stmt.to_string(),
            });
        }
        let key_col = &table.schema.columns[table.shard_key[0]];
        let default = match &key_col.default {
            Some(text) => {
                let expr =
                    sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                        .try_with_sql(text)
                        .and_then(|mut p| p.parse_expr())
                        .map_err(|e| Error::syntax(e.to_string()))?;
                self.constant(&expr)?
            }
            None => None,
        };
        let shard = match default {
            Some(v) if !v.is_null() => self.shard_of(table, &key_col.data_type, v)?,
            _ => self
                .state
                .keyspace_shards(&table.keyspace)
                .first()
                .copied()
                .ok_or_else(|| Error::internal("keyspace without shards"))?,
        };
        Ok(Plan::Direct {
            targets: vec![target(self.state, shard)?],
            sql: stmt.to_string(),
        })
    }

    fn shard_of(
        &self,
        table: &TableInfo,
        key_type: &DataType,
        value: Value,
    ) -> Result<&'a ShardInfo> {
        shard_of_key(self.state, table, key_type, value)
    }

    /// The value of a constant expression: a literal or bound parameter, maybe negated or cast.
    fn constant(&self, expr: &Expr) -> Result<Option<Value>> {
        Ok(match expr {
            Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => Some(match n.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Float(
                        n.parse()
                            .map_err(|_| Error::syntax(format!("invalid number {n}")))?,
                    ),
                }),
                ast::Value::SingleQuotedString(s) => Some(Value::Text(s.clone())),
                ast::Value::Boolean(b) => Some(Value::Bool(*b)),
                ast::Value::Null => Some(Value::Null),
                ast::Value::Placeholder(p) => {
                    let n: usize = p
                        .trim_start_matches('$')
                        .parse()
                        .map_err(|_| Error::syntax(format!("bad parameter {p}")))?;
                    Some(self.params.get(n.wrapping_sub(1)).cloned().ok_or_else(|| {
                        Error::new(
                            sqlstate::UNDEFINED_PARAMETER,
                            format!("there is no parameter {p}"),
                        )
                    })?)
                }
                _ => None,
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match self.constant(expr)? {
                Some(Value::Int(i)) => Some(Value::Int(-i)),
                Some(Value::Float(f)) => Some(Value::Float(-f)),
                _ => None,
            },
            Expr::Nested(e) => self.constant(e)?,
            Expr::Cast { expr, .. } => self.constant(expr)?,
            _ => None,
        })
    }

    /// Shards a single-table statement's WHERE confines it to, or `None` for all.
    fn pinned_shards(
        &self,
        table: &TableInfo,
        selection: Option<&Expr>,
    ) -> Result<Option<BTreeSet<ShardId>>> {
        let Some(selection) = selection else {
            return Ok(None);
        };
        let [key_col] = table.shard_key.as_slice() else {
            return Ok(None);
        };
        let key = &table.schema.columns[*key_col];
        let mut conjuncts = Vec::new();
        split_and(selection, &mut conjuncts);
        for c in conjuncts {
            self.pinned_by.set(match c {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } if is_column(left, &key.name) => placeholder(right),
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } if is_column(right, &key.name) => placeholder(left),
                _ => None,
            });
            let values = match c {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } => {
                    if is_column(left, &key.name) {
                        self.constant(right)?.map(|v| vec![v])
                    } else if is_column(right, &key.name) {
                        self.constant(left)?.map(|v| vec![v])
                    } else {
                        None
                    }
                }
                Expr::In {
                    expr,
                    target: ast::InTarget::List(list),
                    negated: false,
                    ..
                } if is_column(expr, &key.name) => {
                    let mut vals = Vec::new();
                    for e in list {
                        match self.constant(e)? {
                            Some(v) => vals.push(v),
                            None => {
                                vals.clear();
                                break;
                            }
                        }
                    }
                    (!vals.is_empty()).then_some(vals)
                }
                _ => None,
            };
            if let Some(values) = values {
                let mut shards = BTreeSet::new();
                for v in values {
                    if v.is_null() {
                        continue; // `k = NULL` matches nothing
                    }
                    match key.data_type.coerce(v) {
                        Ok(v) => {
                            shards.insert(self.shard_of(table, &key.data_type, v)?.id);
                        }
                        // A value the key type cannot hold: let a shard report the error.
                        Err(_) => return Ok(None),
                    }
                }
                if shards.is_empty() {
                    // Nothing can match; one shard answers the empty result with correct types.
                    if let Some(first) = self.state.keyspace_shards(&table.keyspace).first() {
                        shards.insert(first.id);
                    }
                }
                return Ok(Some(shards));
            }
        }
        Ok(None)
    }

    fn plan_by_tables(&self, stmt: &Statement) -> Result<Plan> {
        // A catalog query (or one without tables, which may call catalog functions) is planned
        // as rewritten: its empty parts no longer read anything.
        let rewritten;
        let before = relations(stmt);
        let rewrote = before.is_empty() || before.iter().any(|t| crate::catalog::is_catalog(t));
        let (stmt, relations) = if rewrote {
            rewritten = crate::catalog::rewrite(stmt);
            (&rewritten, relations(&rewritten))
        } else {
            (stmt, before)
        };
        let ctes = cte_names(stmt);
        let tables: Vec<String> = relations
            .into_iter()
            .filter(|t| !ctes.contains(t))
            .collect();
        let (system, user): (Vec<String>, Vec<String>) =
            tables.into_iter().partition(|t| is_system(t));
        if !system.is_empty() {
            if !user.is_empty() {
                return Err(Error::unsupported(
                    "a query cannot mix tessera.* system views with tables",
                ));
            }
            if !matches!(stmt, Statement::Query(_)) {
                return Err(Error::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "system views are read-only",
                ));
            }
            return Ok(Plan::Local {
                stmt: Box::new(stmt.clone()),
                views: system,
            });
        }
        let infos: Vec<&TableInfo> = user.iter().map(|t| self.table(t)).collect::<Result<_>>()?;
        if infos.is_empty() {
            // No table: any shard evaluates it.
            let shard = self
                .state
                .keyspace_shards(DEFAULT_KEYSPACE)
                .first()
                .copied()
                .or_else(|| self.state.shards.values().next())
                .ok_or_else(|| {
                    Error::new(sqlstate::CANNOT_CONNECT_NOW, "no shard is placed yet")
                })?;
            return Ok(Plan::Direct {
                targets: vec![target(self.state, shard)?],
                sql: stmt.to_string(),
            });
        }
        let keyspaces: BTreeSet<&str> = infos.iter().map(|t| t.keyspace.as_str()).collect();
        // Every table on one single-shard keyspace: the shard answers everything itself.
        if keyspaces.len() == 1 {
            let ks = *keyspaces.iter().next().unwrap_or(&DEFAULT_KEYSPACE);
            // (With no shard placed, `keyspace_targets` reports that.)
            if self.state.keyspace_shards(ks).len() <= 1 {
                let targets = self.keyspace_targets(ks)?;
                // Only a statement planned as written: a catalog rewrite is left to planning.
                if !rewrote {
                    *self.point.borrow_mut() = Some((infos[0].schema.name.clone(), None));
                }
                return Ok(Plan::Direct {
                    targets,
                    sql: stmt.to_string(),
                });
            }
        }
        if infos
            .iter()
            .any(|t| t.distribution == Distribution::Reference)
        {
            return self.plan_with_reference(stmt, &infos);
        }
        let single = (infos.len() == 1).then(|| infos[0]);
        let selection = single_table_selection(stmt);
        if let Statement::Update(update) = stmt {
            // A new shard-key value may belong to another shard: the row must move there, in
            // the same distributed transaction as the update itself.
            let moves_key = infos.iter().any(|t| {
                let Some(&key) = t.shard_key.first() else {
                    return false;
                };
                let key = &t.schema.columns[key].name;
                update.assignments.iter().any(|a| assigns_column(a, key))
            });
            if moves_key {
                let Some(table) = single else {
                    return Err(Error::unsupported(
                        "updating a shard key while reading other tables is not supported yet",
                    ));
                };
                if update.returning.is_some() {
                    return Err(Error::unsupported(
                        "RETURNING on an update that moves rows between shards is not supported yet",
                    ));
                }
                let sources: Vec<Target> = match self.pinned_shards(table, selection)? {
                    Some(shards) => shards
                        .iter()
                        .filter_map(|id| self.state.shards.get(id))
                        .map(|s| target(self.state, s))
                        .collect::<Result<_>>()?,
                    None => self.keyspace_targets(&table.keyspace)?,
                };
                let mut returning = update.clone();
                let mut items = vec![ast::SelectItem::Wildcard(
                    ast::WildcardAdditionalOptions::default(),
                )];
                // A row-id table's rows come back whole, so the old copy can be found by id.
                if table.schema.rowid().is_some() {
                    items.push(ast::SelectItem::UnnamedExpr(Expr::Identifier(
                        ast::Ident::new(protocol::schema::ROWID_COLUMN),
                    )));
                }
                returning.returning = Some(items);
                let by_shard: BTreeMap<ShardId, Target> = self
                    .keyspace_targets(&table.keyspace)?
                    .into_iter()
                    .map(|t| (t.shard, t))
                    .collect();
                return Ok(Plan::MoveUpdate {
                    sources,
                    sql: Statement::Update(returning).to_string(),
                    table: Box::new(table.clone()),
                    shards: by_shard,
                });
            }
        }
        if let Some(table) = single {
            let pinned = self.pinned_shards(table, selection)?;
            if let Some(shards) = &pinned
                && let [only] = shards.iter().collect::<Vec<_>>().as_slice()
            {
                let shard = self
                    .state
                    .shards
                    .get(only)
                    .ok_or_else(|| Error::internal("shard vanished"))?;
                if table.distribution == Distribution::Sharded
                    && let Some(n) = self.pinned_by.get()
                {
                    *self.point.borrow_mut() = Some((table.schema.name.clone(), Some(n)));
                }
                return Ok(Plan::Direct {
                    targets: vec![target(self.state, shard)?],
                    sql: stmt.to_string(),
                });
            }
            let targets: Vec<Target> = match &pinned {
                Some(shards) => shards
                    .iter()
                    .filter_map(|id| self.state.shards.get(id))
                    .map(|s| target(self.state, s))
                    .collect::<Result<_>>()?,
                None => self.keyspace_targets(&table.keyspace)?,
            };
            match stmt {
                Statement::Update(_) | Statement::Delete(_) => {
                    // Each shard would run the subquery over its own rows only.
                    if self.subquery_reads_spread_table(stmt) {
                        return Err(Error::unsupported(
                            "UPDATE or DELETE with a subquery that reads a table spread over several shards is not supported",
                        )
                        .with_detail("Run the subquery first and pass its values, or use a transaction: SELECT the keys, then UPDATE/DELETE by key."));
                    }
                    return Ok(Plan::Direct {
                        targets,
                        sql: stmt.to_string(),
                    });
                }
                Statement::Query(_) => {
                    if let Some(g) = crate::pushdown::grouped(stmt, table) {
                        let fetches = targets
                            .into_iter()
                            .map(|t| Fetch {
                                table: table.schema.name.clone(),
                                target: t,
                                sql: g.shard_sql.clone(),
                            })
                            .collect();
                        return Ok(Plan::Gather {
                            fetches,
                            tables: vec![g.partials],
                            stmt: Box::new(g.final_stmt),
                        });
                    }
                    if let Some(combine) = partial_aggregates(stmt) {
                        return Ok(Plan::Partial {
                            targets,
                            sql: stmt.to_string(),
                            combine,
                        });
                    }
                    // A locking read locks on every shard it reads from.
                    let locks: String = match stmt {
                        Statement::Query(q) => q.locks.iter().map(|l| format!(" {l}")).collect(),
                        _ => String::new(),
                    };
                    // A subquery anywhere in the statement may read this table again: then the
                    // router needs all of its rows, not only those the WHERE keeps.
                    let fetch_sql = match (selection, single_table_factor(stmt)) {
                        (Some(sel), Some(rel)) if !statement_has_subquery(stmt) => {
                            format!("SELECT * FROM {rel} WHERE {sel}")
                        }
                        (_, Some(rel)) => format!("SELECT * FROM {rel}"),
                        _ => format!("SELECT * FROM {}", table.schema.name),
                    };
                    // SKIP LOCKED takes rows in the query's order and stops at its limit on
                    // each shard, so queue workers do not lock rows they will not return.
                    let bounded = match stmt {
                        Statement::Query(q)
                            if q.locks
                                .iter()
                                .any(|l| matches!(l.nonblock, Some(ast::NonBlock::SkipLocked))) =>
                        {
                            let order = q
                                .order_by
                                .as_ref()
                                .map(|o| format!(" {o}"))
                                .unwrap_or_default();
                            let limit = match &q.limit_clause {
                                Some(ast::LimitClause::LimitOffset {
                                    limit: Some(limit),
                                    offset,
                                    ..
                                }) => {
                                    let n = |e: &Expr| match e {
                                        Expr::Value(v) => match &v.value {
                                            ast::Value::Number(n, _) => n.parse::<u64>().ok(),
                                            _ => None,
                                        },
                                        _ => None,
                                    };
                                    let off = offset.as_ref().map_or(Some(0), |o| n(&o.value));
                                    match (n(limit), off) {
                                        (Some(l), Some(o)) => format!(" LIMIT {}", l + o),
                                        _ => String::new(),
                                    }
                                }
                                _ => String::new(),
                            };
                            format!("{order}{limit}")
                        }
                        _ => crate::pushdown::top_n(stmt, table).unwrap_or_default(),
                    };
                    let fetch_sql = format!("{fetch_sql}{bounded}{locks}");
                    let fetches = targets
                        .into_iter()
                        .map(|t| Fetch {
                            table: table.schema.name.clone(),
                            target: t,
                            sql: fetch_sql.clone(),
                        })
                        .collect();
                    return Ok(Plan::Gather {
                        fetches,
                        tables: vec![table.schema.clone()],
                        stmt: Box::new(stmt.clone()),
                    });
                }
                _ => {}
            }
        }
        if let Statement::Query(q) = stmt
            && keyspaces.len() == 1
            && q.locks.is_empty()
            && crate::colocate::rows_form_on_one_shard(stmt, &infos)
        {
            let ks = *keyspaces.iter().next().unwrap_or(&DEFAULT_KEYSPACE);
            if let Some(plan) = on_every_shard(stmt, self.keyspace_targets(ks)?) {
                return Ok(plan);
            }
        }
        match stmt {
            Statement::Query(q) if !q.locks.is_empty() => Err(Error::unsupported(
                "FOR UPDATE/SHARE is supported on a SELECT from one table",
            )),
            Statement::Query(_) => {
                let mut fetches = Vec::new();
                for table in &infos {
                    for t in self.keyspace_targets(&table.keyspace)? {
                        fetches.push(Fetch {
                            table: table.schema.name.clone(),
                            target: t,
                            sql: format!("SELECT * FROM {}", quote_ident(&table.schema.name)),
                        });
                    }
                }
                Ok(Plan::Gather {
                    fetches,
                    tables: infos.iter().map(|t| t.schema.clone()).collect(),
                    stmt: Box::new(stmt.clone()),
                })
            }
            _ => Err(Error::unsupported(
                "a write that reads other tables across shards is not supported yet",
            )),
        }
    }
}

pub(crate) fn quote_ident(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn option_text(value: &Expr) -> String {
    match value {
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(id) => id.value.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn split_and<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(e) => split_and(e, out),
        other => out.push(other),
    }
}

/// The shard that owns `value` (coerced to `key_type`) as the shard key of `table`.
pub(crate) fn shard_of_key<'s>(
    state: &'s ClusterState,
    table: &TableInfo,
    key_type: &DataType,
    value: Value,
) -> Result<&'s ShardInfo> {
    let value = key_type.coerce(value)?;
    state
        .shard_for_hash(&table.keyspace, shard_hash(&value))
        .ok_or_else(|| Error::internal(format!("no shard covers the hash of {value}")))
}

/// `n - 1` of a bare `$n`.
fn placeholder(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => p
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1)),
            _ => None,
        },
        _ => None,
    }
}

fn is_column(expr: &Expr, name: &str) -> bool {
    match expr {
        Expr::Identifier(id) => names::ident(id) == name,
        Expr::CompoundIdentifier(ids) => ids.last().is_some_and(|id| names::ident(id) == name),
        Expr::Nested(e) => is_column(e, name),
        _ => false,
    }
}

fn assigns_column(a: &ast::Assignment, name: &str) -> bool {
    match &a.target {
        ast::AssignmentTarget::ColumnName(n) => n.0.last().is_some_and(|p| match p {
            ast::ObjectNamePart::Identifier(id) => names::ident(id) == name,
            _ => false,
        }),
        ast::AssignmentTarget::Tuple(cols) => cols.iter().any(|n| table_name(n) == name),
    }
}

impl Planner<'_> {
    /// True if a subquery in the statement reads a table of a keyspace with several shards.
    /// A statement that reads or writes a reference table (full copies on every shard of its
    /// keyspace):
    /// - a write to a reference table runs on every copy (`Plan::Replicated`), and may read
    ///   only reference tables of its keyspace (each copy must compute the same change);
    /// - a statement over reference tables alone is answered by one copy;
    /// - a write to a sharded table that also reads reference tables of its keyspace runs on
    ///   each shard it would reach alone, since every shard holds the whole reference table;
    /// - a query over one sharded table joined with reference tables of its keyspace runs on
    ///   every shard when the shards' results only need concatenating (or, for plain
    ///   count/sum/min/max, combining), and otherwise gathers the sharded table's rows from
    ///   every shard and each reference table's rows from one copy.
    fn plan_with_reference(&self, stmt: &Statement, infos: &[&TableInfo]) -> Result<Plan> {
        let (reference, sharded): (Vec<&TableInfo>, Vec<&TableInfo>) = infos
            .iter()
            .partition(|t| t.distribution == Distribution::Reference);
        let keyspaces: BTreeSet<&str> = infos.iter().map(|t| t.keyspace.as_str()).collect();
        let written = match stmt {
            Statement::Update(u) => match &u.table.relation {
                TableFactor::Table { name, .. } => Some(table_name(name)),
                _ => None,
            },
            Statement::Delete(d) => {
                let from = match &d.from {
                    ast::FromTable::WithFromKeyword(f) | ast::FromTable::WithoutKeyword(f) => f,
                };
                match from.first().map(|f| &f.relation) {
                    Some(TableFactor::Table { name, .. }) => Some(table_name(name)),
                    _ => None,
                }
            }
            Statement::Query(_) => None,
            _ => {
                return Err(Error::unsupported(
                    "this statement over reference tables is not supported",
                ));
            }
        };
        let written_info = written
            .as_ref()
            .and_then(|w| infos.iter().find(|t| t.schema.name == *w));
        // One copy of every reference table: the first shard of its keyspace.
        let one_copy = |t: &TableInfo| -> Result<Target> {
            let shard = self
                .state
                .keyspace_shards(&t.keyspace)
                .first()
                .copied()
                .ok_or_else(|| Error::internal("keyspace without shards"))?;
            target(self.state, shard)
        };
        match written_info {
            Some(t) if t.distribution == Distribution::Reference => {
                if !sharded.is_empty() || keyspaces.len() > 1 {
                    return Err(Error::unsupported(format!(
                        "a write to reference table \"{}\" may read only reference tables of its keyspace",
                        t.schema.name
                    ))
                    .with_detail("Every copy applies the statement itself, so each must see all the rows it reads."));
                }
                check_deterministic_write(stmt, t)?;
                return Ok(Plan::Replicated {
                    targets: self.keyspace_targets(&t.keyspace)?,
                    sql: stmt.to_string(),
                });
            }
            Some(t) => {
                if sharded.len() > 1 || keyspaces.len() > 1 {
                    return Err(Error::unsupported(
                        "a write that reads other tables across shards is not supported yet",
                    ));
                }
                let targets = match self.pinned_shards(t, single_table_selection(stmt))? {
                    Some(shards) => shards
                        .iter()
                        .filter_map(|id| self.state.shards.get(id))
                        .map(|s| target(self.state, s))
                        .collect::<Result<_>>()?,
                    None => self.keyspace_targets(&t.keyspace)?,
                };
                if self.subquery_reads_spread_table(stmt) {
                    return Err(Error::unsupported(
                        "UPDATE or DELETE with a subquery that reads a table spread over several shards is not supported",
                    ));
                }
                if let Statement::Update(u) = stmt
                    && let Some(&key) = t.shard_key.first()
                    && u.assignments
                        .iter()
                        .any(|a| assigns_column(a, &t.schema.columns[key].name))
                {
                    return Err(Error::unsupported(
                        "updating a shard key while reading other tables is not supported yet",
                    ));
                }
                return Ok(Plan::Direct {
                    targets,
                    sql: stmt.to_string(),
                });
            }
            None if written.is_some() => {
                return Err(Error::internal(
                    "the written table is not among the statement's tables",
                ));
            }
            None => {}
        }
        let Statement::Query(q) = stmt else {
            return Err(Error::internal("a reference-table plan for a non-query"));
        };
        if keyspaces.len() == 1 && sharded.is_empty() {
            return Ok(Plan::Direct {
                targets: vec![one_copy(reference[0])?],
                sql: stmt.to_string(),
            });
        }
        let colocated = match sharded.as_slice() {
            [one] => each_row_has_one_sharded_row(stmt, &one.schema.name),
            _ => crate::colocate::rows_form_on_one_shard(stmt, infos),
        };
        if keyspaces.len() == 1
            && !sharded.is_empty()
            && q.locks.is_empty()
            && colocated
            && let Some(plan) = on_every_shard(stmt, self.keyspace_targets(&sharded[0].keyspace)?)
        {
            return Ok(plan);
        }
        if !q.locks.is_empty() {
            return Err(Error::unsupported(
                "FOR UPDATE/SHARE is supported on a SELECT from one table",
            ));
        }
        let mut fetches = Vec::new();
        for table in infos {
            let sql = format!("SELECT * FROM {}", quote_ident(&table.schema.name));
            let targets = match table.distribution {
                Distribution::Reference => vec![one_copy(table)?],
                _ => self.keyspace_targets(&table.keyspace)?,
            };
            for t in targets {
                fetches.push(Fetch {
                    table: table.schema.name.clone(),
                    target: t,
                    sql: sql.clone(),
                });
            }
        }
        Ok(Plan::Gather {
            fetches,
            tables: infos.iter().map(|t| t.schema.clone()).collect(),
            stmt: Box::new(stmt.clone()),
        })
    }

    fn subquery_reads_spread_table(&self, stmt: &Statement) -> bool {
        let mut found = false;
        let _ = ast::visit_expressions(stmt, |e| {
            let q = match e {
                Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => Some(q),
                Expr::In {
                    target: ast::InTarget::Subquery(q),
                    ..
                } => Some(q),
                _ => None,
            };
            if let Some(q) = q {
                let stmt = Statement::Query(q.clone());
                let ctes = cte_names(&stmt);
                found |= relations(&stmt).iter().any(|r| {
                    !ctes.contains(r)
                        && self.state.tables.get(r).is_some_and(|t| {
                            t.distribution != Distribution::Reference
                                && self.state.keyspace_shards(&t.keyspace).len() > 1
                        })
                });
            }
            ControlFlow::<()>::Continue(())
        });
        found
    }
}

/// True if any expression of the statement (SELECT list, WHERE, HAVING, ORDER BY, …) holds a
/// subquery.
pub(crate) fn statement_has_subquery(stmt: &Statement) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(stmt, |e| {
        if has_subquery(e) {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

pub(crate) fn has_subquery(expr: &Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(expr, |e| {
        if matches!(
            e,
            Expr::Subquery(_)
                | Expr::Exists { .. }
                | Expr::In {
                    target: ast::InTarget::Subquery(_),
                    ..
                }
        ) {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// Every table name the statement mentions, in order of first appearance.
pub fn relations(stmt: &Statement) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = ast::visit_relations(stmt, |name| {
        let n = table_name(name);
        if !out.contains(&n) {
            out.push(n);
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// Names that WITH clauses define anywhere in the statement (subqueries included).
fn cte_names(stmt: &Statement) -> BTreeSet<String> {
    crate::views::cte_names(stmt)
}

/// The WHERE of a statement over exactly one table with no joins.
fn single_table_selection(stmt: &Statement) -> Option<&Expr> {
    match stmt {
        // The WHERE must filter the table itself: not a CTE's or a derived table's rows,
        // which may be computed from every shard.
        Statement::Query(q) if q.with.is_some() => None,
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s)
                if s.from.len() == 1
                    && s.from[0].joins.is_empty()
                    && matches!(s.from[0].relation, TableFactor::Table { .. }) =>
            {
                s.selection.as_ref()
            }
            _ => None,
        },
        Statement::Update(u) if u.from.is_none() && u.table.joins.is_empty() => {
            u.selection.as_ref()
        }
        Statement::Delete(d) if d.using.is_none() => d.selection.as_ref(),
        _ => None,
    }
}

fn single_table_factor(stmt: &Statement) -> Option<&TableFactor> {
    match stmt {
        // With a WITH clause the FROM item may name a CTE, not the table.
        Statement::Query(q) if q.with.is_some() => None,
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s) if s.from.len() == 1 && s.from[0].joins.is_empty() => {
                matches!(s.from[0].relation, TableFactor::Table { .. })
                    .then_some(&s.from[0].relation)
            }
            _ => None,
        },
        _ => None,
    }
}

/// The combine step of a query every shard can pre-aggregate: a single-table SELECT whose
/// output is only count/sum/min/max calls (no DISTINCT, FILTER or window), with no GROUP BY,
/// HAVING, DISTINCT, ORDER BY, LIMIT or locking. Anything else returns `None` and is gathered.
fn partial_aggregates(stmt: &Statement) -> Option<Vec<Combine>> {
    partial_aggregates_over(stmt, false)
}

/// The SELECT of a query each shard can run over its own rows with nothing left for the
/// router but to concatenate or combine: no CTE, ORDER BY, LIMIT/FETCH, locking, set
/// operation, GROUP BY, HAVING, DISTINCT or subquery anywhere, and only plain tables in
/// FROM (one, unless `allow_joins`). A derived table must see every shard's rows at once,
/// and a subquery (in WHERE, ON or an aggregate's argument) would see one shard's rows.
fn plain_select(stmt: &Statement, allow_joins: bool) -> Option<&ast::Select> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    if q.with.is_some()
        || q.order_by.is_some()
        || q.limit_clause.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
        || statement_has_subquery(stmt)
    {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let no_group = match &s.group_by {
        ast::GroupByExpr::Expressions(exprs, mods) => exprs.is_empty() && mods.is_empty(),
        ast::GroupByExpr::All(_) => false,
    };
    let plain_table = |f: &TableFactor| matches!(f, TableFactor::Table { .. });
    let ok = no_group
        && s.having.is_none()
        && s.distinct.is_none()
        && !s.from.is_empty()
        && (allow_joins || (s.from.len() == 1 && s.from[0].joins.is_empty()))
        && s.from
            .iter()
            .all(|f| plain_table(&f.relation) && f.joins.iter().all(|j| plain_table(&j.relation)));
    ok.then_some(s.as_ref())
}

/// For a query whose rows each form on one shard: run it whole on every shard and concatenate
/// the rows, or combine pre-aggregated count/sum/min/max; `None` if it needs the rows whole.
fn on_every_shard(stmt: &Statement, targets: Vec<Target>) -> Option<Plan> {
    if concatenates(stmt) {
        return Some(Plan::Direct {
            targets,
            sql: stmt.to_string(),
        });
    }
    partial_aggregates_over(stmt, true).map(|combine| Plan::Partial {
        targets,
        sql: stmt.to_string(),
        combine,
    })
}

/// Whether each shard's result rows, concatenated, are the query's: a plain SELECT … FROM …
/// WHERE with no grouping, aggregate, window, DISTINCT, ordering, limit, set operation,
/// CTE or subquery.
fn concatenates(stmt: &Statement) -> bool {
    let Some(s) = plain_select(stmt, true) else {
        return false;
    };
    if !s.named_window.is_empty() {
        return false;
    }
    // An aggregate or window call anywhere in the select list needs every shard's rows.
    let mut needs_all = false;
    let _ = ast::visit_expressions(&s.projection, |e| {
        if let Expr::Function(f) = e {
            let name = function_name(f);
            if f.over.is_some() || engine::sql::is_aggregate(&name) {
                needs_all = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    !needs_all
}

/// Whether every row a SELECT's FROM clause produces holds exactly one row of the sharded
/// table `sharded` (the others being reference tables): inner and cross joins, and LEFT joins
/// whose preserved side already holds it. Then the union of each shard's rows is the whole
/// answer. A reference table on the preserved side of an outer join would come back once per
/// shard, NULL-extended, so such queries are gathered instead.
fn each_row_has_one_sharded_row(stmt: &Statement, sharded: &str) -> bool {
    let Statement::Query(q) = stmt else {
        return false;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return false;
    };
    let is_sharded = |f: &TableFactor| matches!(f, TableFactor::Table { name, .. } if table_name(name) == sharded);
    let mut seen = 0;
    for item in &s.from {
        let mut has = is_sharded(&item.relation);
        seen += has as usize;
        for j in &item.joins {
            let here = is_sharded(&j.relation);
            seen += here as usize;
            let ok = match &j.join_operator {
                ast::JoinOperator::Join(_)
                | ast::JoinOperator::Inner(_)
                | ast::JoinOperator::CrossJoin(_) => true,
                ast::JoinOperator::Left(_) | ast::JoinOperator::LeftOuter(_) => has && !here,
                _ => false,
            };
            if !ok {
                return false;
            }
            has |= here;
        }
    }
    seen == 1
}

/// A function's name as the engine resolves it: its last part, case-folded unless quoted
/// (`"count"`, `pg_catalog.now`).
fn function_name(f: &ast::Function) -> String {
    match f.name.0.last() {
        Some(ast::ObjectNamePart::Identifier(id)) => names::ident(id),
        Some(ast::ObjectNamePart::Function(func)) => names::ident(&func.name),
        None => String::new(),
    }
}

/// Functions whose value a shard computes for itself (its clock, its random numbers): two
/// copies of a reference table would store different values.
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "setseed",
    "random_normal",
    "now",
    "current_timestamp",
    "transaction_timestamp",
    "statement_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "localtime",
];

/// The first function of `VOLATILE` an expression (or statement) calls.
fn volatile_call<V: ast::Visit>(node: &V) -> Option<String> {
    let mut volatile = None;
    let _ = ast::visit_expressions(node, |e| {
        if let Expr::Function(f) = e {
            let name = function_name(f);
            let name = name.as_str();
            if VOLATILE.contains(&name) {
                volatile = Some(name.to_string());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    volatile
}

/// Refuses, in a write every copy of a reference table applies itself, functions whose value
/// each copy would compute differently: the copies would disagree. An INSERT that leaves a
/// column to such a DEFAULT is refused as well.
fn check_deterministic_write(stmt: &Statement, table: &TableInfo) -> Result<()> {
    check_deterministic(stmt)?;
    // An explicit DEFAULT (in VALUES or SET) takes the column's default like an omitted one.
    let mut uses_default = false;
    let _ = ast::visit_expressions(stmt, |e| {
        if let Expr::Identifier(id) = e
            && id.quote_style.is_none()
            && id.value.eq_ignore_ascii_case("default")
        {
            uses_default = true;
        }
        ControlFlow::<()>::Continue(())
    });
    if uses_default {
        for (_, col) in table.schema.user_columns() {
            if let Some(name) = volatile_default(col) {
                return Err(Error::unsupported(format!(
                    "column \"{}\" of reference table \"{}\" must be given a value: its default calls {name}()",
                    col.name, table.schema.name
                )));
            }
        }
    }
    let Statement::Insert(insert) = stmt else {
        return Ok(());
    };
    let width = match insert.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(v)) => v.rows.first().map_or(0, |r| r.content.len()),
        _ => 0,
    };
    let given: Vec<String> = if insert.columns.is_empty() {
        table
            .schema
            .user_columns()
            .take(width)
            .map(|(_, c)| c.name.clone())
            .collect()
    } else {
        insert.columns.iter().map(table_name).collect()
    };
    for (_, col) in table.schema.user_columns() {
        if given.contains(&col.name) {
            continue;
        }
        if let Some(name) = volatile_default(col) {
            return Err(Error::unsupported(format!(
                "column \"{}\" of reference table \"{}\" must be given a value: its default calls {name}()",
                col.name, table.schema.name
            ))
            .with_detail("Every copy would compute the default itself and store a different value."));
        }
    }
    Ok(())
}

/// The volatile function a column's DEFAULT calls, if any.
pub(crate) fn volatile_default(col: &protocol::schema::ColumnDef) -> Option<String> {
    let default = col.default.as_ref()?;
    let parsed = sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(default)
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    volatile_call(&parsed)
}

/// Refuses functions whose value differs from one copy of a reference table to another.
fn check_deterministic(stmt: &Statement) -> Result<()> {
    match volatile_call(stmt) {
        Some(name) => Err(Error::unsupported(format!(
            "{name}() cannot be used in a write to a reference table"
        ))
        .with_detail("Every copy evaluates the statement itself; compute the value first and pass it as a literal or parameter.")),
        None => Ok(()),
    }
}

fn partial_aggregates_over(stmt: &Statement, allow_joins: bool) -> Option<Vec<Combine>> {
    let s = plain_select(stmt, allow_joins)?;
    s.projection
        .iter()
        .map(|item| {
            let expr = match item {
                ast::SelectItem::UnnamedExpr(e)
                | ast::SelectItem::ExprWithAlias { expr: e, .. } => e,
                _ => return None,
            };
            let Expr::Function(f) = expr else { return None };
            if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
                return None;
            }
            if let ast::FunctionArguments::List(list) = &f.args
                && (list.duplicate_treatment.is_some() || !list.clauses.is_empty())
            {
                return None;
            }
            let name = match f.name.0.last()? {
                ast::ObjectNamePart::Identifier(id) => names::ident(id),
                _ => return None,
            };
            match name.as_str() {
                "count" | "sum" => Some(Combine::Sum),
                "min" => Some(Combine::Min),
                "max" => Some(Combine::Max),
                _ => None,
            }
        })
        .collect()
}
