//! CREATE TABLE and DROP TABLE.
//!
//! Tessera stores rows by primary key; a table declared without one gets a hidden `ctid`
//! row id as its storage key (see `protocol::schema::ROWID_COLUMN`). UNIQUE constraints
//! become unique indexes (`index_ddl`), CHECK constraints are kept for every write to test
//! (`checks`), FOREIGN KEY constraints are enforced within the shard (`foreign_keys`).
//! Storage parameters in `WITH (...)` (shard key, distribution, keyspace) belong to the
//! router and meta; the shard-local executor ignores them.

use protocol::schema::{ColumnDef, QueryResult, ROWID_COLUMN, TableSchema};
use protocol::{Error, Result, sqlstate};
use sqlparser::ast::{self, ColumnOption, TableConstraint};

use super::bind::Binder;
use super::parse::{column_type, ident, object_name, parse_expr};
use crate::txn::WriteTxn;

fn key_columns(columns: &[ast::IndexColumn]) -> Result<Vec<String>> {
    columns
        .iter()
        .map(|c| match &c.column.expr {
            ast::Expr::Identifier(i) => Ok(ident(i)),
            other => Err(Error::unsupported(format!(
                "primary key on expression {other} is not supported"
            ))),
        })
        .collect()
}

/// The schema a CREATE TABLE statement declares.
pub fn schema_from_create(stmt: &ast::Statement) -> Result<TableSchema> {
    let ast::Statement::CreateTable(ct) = stmt else {
        return Err(Error::internal(
            "schema_from_create needs a CREATE TABLE statement",
        ));
    };
    if ct.query.is_some() {
        return Err(Error::unsupported("CREATE TABLE ... AS is not supported"));
    }
    if ct.like.is_some() || ct.clone.is_some() {
        return Err(Error::unsupported("CREATE TABLE ... LIKE is not supported"));
    }
    if ct.temporary || ct.external || ct.or_replace {
        return Err(Error::unsupported(
            "temporary, external and OR REPLACE tables are not supported",
        ));
    }
    let name = object_name(&ct.name)?;
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(ct.columns.len());
    let mut primary_key: Option<Vec<String>> = None;
    let set_pk = |cols: Vec<String>, pk: &mut Option<Vec<String>>| -> Result<()> {
        if pk.is_some() {
            return Err(Error::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!("multiple primary keys for table \"{name}\" are not allowed"),
            ));
        }
        *pk = Some(cols);
        Ok(())
    };
    for c in &ct.columns {
        let cname = ident(&c.name);
        if columns.iter().any(|x| x.name == cname) {
            return Err(Error::new(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{cname}\" specified more than once"),
            ));
        }
        let mut def = ColumnDef {
            name: cname.clone(),
            data_type: column_type(&c.data_type)?,
            nullable: true,
            default: None,
        };
        for opt in &c.options {
            match &opt.option {
                ColumnOption::Null => def.nullable = true,
                ColumnOption::NotNull => def.nullable = false,
                ColumnOption::Default(e) => {
                    // Stored as SQL text and evaluated per insert; it must at least parse back.
                    let text = e.to_string();
                    parse_expr(&text)?;
                    def.default = Some(text);
                }
                ColumnOption::PrimaryKey(_) => set_pk(vec![cname.clone()], &mut primary_key)?,
                // Collected with the table-level ones once every column is known.
                ColumnOption::Unique(_) => {}
                // Collected with the table-level ones once every column is known.
                ColumnOption::ForeignKey(_) => {}
                // Collected with the table-level ones once every column is known.
                ColumnOption::Check(_) => {}
                ColumnOption::Collation(_) => {
                    return Err(Error::unsupported("COLLATE is not supported"));
                }
                other => {
                    return Err(Error::unsupported(format!(
                        "column option {other} is not supported"
                    )));
                }
            }
        }
        columns.push(def);
    }
    for constraint in &ct.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => set_pk(key_columns(&pk.columns)?, &mut primary_key)?,
            TableConstraint::Unique(_) => {}
            TableConstraint::ForeignKey(_) => {}
            TableConstraint::Check(_) => {}
            other => {
                return Err(Error::unsupported(format!(
                    "constraint {other} is not supported"
                )));
            }
        }
    }
    if let Some(c) = columns.iter().find(|c| c.name == ROWID_COLUMN) {
        return Err(Error::new(
            sqlstate::DUPLICATE_COLUMN,
            format!(
                "column name \"{}\" conflicts with a system column name",
                c.name
            ),
        ));
    }
    let Some(pk_names) = primary_key else {
        // Rows still need a storage key: a hidden row id the shard assigns on insert.
        columns.push(ColumnDef {
            name: ROWID_COLUMN.to_string(),
            data_type: protocol::DataType::Int8,
            nullable: false,
            default: None,
        });
        let rowid = columns.len() - 1;
        let mut schema = TableSchema {
            name,
            columns,
            primary_key: vec![rowid],
            indexes: Vec::new(),
            checks: Vec::new(),
            foreign_keys: Vec::new(),
        };
        schema.indexes = super::index_ddl::unique_constraints(&schema, ct)?;
        schema.checks = super::checks::from_create(&schema, ct)?;
        schema.foreign_keys = super::foreign_keys::from_create(&schema, ct)?;
        return Ok(schema);
    };
    let mut pk = Vec::with_capacity(pk_names.len());
    for n in &pk_names {
        let i = columns.iter().position(|c| &c.name == n).ok_or_else(|| {
            Error::new(
                sqlstate::UNDEFINED_COLUMN,
                format!("column \"{n}\" named in key does not exist"),
            )
        })?;
        if pk.contains(&i) {
            return Err(Error::new(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{n}\" appears twice in primary key constraint"),
            ));
        }
        // Primary-key columns are implicitly NOT NULL, as in PostgreSQL.
        columns[i].nullable = false;
        pk.push(i);
    }
    let mut schema = TableSchema {
        name,
        columns,
        primary_key: pk,
        indexes: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    schema.indexes = super::index_ddl::unique_constraints(&schema, ct)?;
    schema.checks = super::checks::from_create(&schema, ct)?;
    schema.foreign_keys = super::foreign_keys::from_create(&schema, ct)?;
    Ok(schema)
}

pub fn create_table(stmt: &ast::Statement, txn: &mut dyn WriteTxn) -> Result<QueryResult> {
    let schema = schema_from_create(stmt)?;
    let if_not_exists = matches!(stmt, ast::Statement::CreateTable(ct) if ct.if_not_exists);
    if txn.schema(&schema.name)?.is_some() {
        if if_not_exists {
            return Ok(QueryResult::command("CREATE TABLE", 0));
        }
        return Err(Error::new(
            sqlstate::DUPLICATE_TABLE,
            format!("relation \"{}\" already exists", schema.name),
        ));
    }
    check_defaults(&schema, &*txn)?;
    super::checks::validate(&schema, &*txn)?;
    super::foreign_keys::validate(&schema, &*txn)?;
    txn.create_table(schema)?;
    Ok(QueryResult::command("CREATE TABLE", 0))
}

/// Binds every DEFAULT against its column, so a bad default fails at CREATE, not at INSERT.
pub(super) fn check_defaults(schema: &TableSchema, txn: &dyn crate::txn::ReadTxn) -> Result<()> {
    let mut b = Binder::new(txn);
    for c in &schema.columns {
        if let Some(text) = &c.default {
            let (e, t) = b.expr(&parse_expr(text)?).map_err(|e| {
                if e.code == sqlstate::UNDEFINED_COLUMN {
                    Error::new("0A000", "cannot use column reference in DEFAULT expression")
                } else {
                    e
                }
            })?;
            if !b.params.is_empty() {
                return Err(Error::syntax(
                    "there is no parameter in a DEFAULT expression",
                ));
            }
            match t {
                None => {
                    b.coerce(e, None, c.data_type)?;
                }
                Some(t)
                    if t == c.data_type
                        || (t.is_numeric() && c.data_type.is_numeric())
                        || c.data_type.is_text() => {}
                Some(t) => {
                    return Err(Error::new(
                        sqlstate::DATATYPE_MISMATCH,
                        format!(
                            "column \"{}\" is of type {} but default expression is of type {}",
                            c.name,
                            c.data_type.name(),
                            t.name()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

pub fn drop_table(stmt: &ast::Statement, txn: &mut dyn WriteTxn) -> Result<QueryResult> {
    let ast::Statement::Drop {
        object_type,
        if_exists,
        names,
        cascade,
        ..
    } = stmt
    else {
        return Err(Error::internal("drop_table needs a DROP statement"));
    };
    if *object_type == ast::ObjectType::Index {
        return super::index_ddl::drop_index(names, *if_exists, txn);
    }
    if *object_type != ast::ObjectType::Table {
        return Err(Error::unsupported(format!(
            "DROP {object_type} is not supported"
        )));
    }
    let _ = cascade;
    let mut tables = Vec::with_capacity(names.len());
    for n in names {
        let name = object_name(n)?;
        match txn.schema(&name)? {
            Some(_) => tables.push(name),
            None if *if_exists => {}
            None => return Err(Error::undefined_table(&name)),
        }
    }
    let schemas = txn.schemas()?;
    for t in &tables {
        if !super::foreign_keys::referencing_tables(&schemas, t, &tables).is_empty() {
            return Err(Error::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!("cannot drop table {t} because other objects depend on it"),
            ));
        }
    }
    for t in tables {
        txn.drop_table(&t)?;
    }
    Ok(QueryResult::command("DROP TABLE", 0))
}

/// TRUNCATE: deletes every row of the named tables, as one transactional change (PostgreSQL's
/// TRUNCATE is transactional too, and the change log must carry the deletions to replicas).
pub fn truncate(stmt: &ast::Statement, txn: &mut dyn WriteTxn) -> Result<QueryResult> {
    let ast::Statement::Truncate(t) = stmt else {
        return Err(Error::internal("truncate needs a TRUNCATE statement"));
    };
    if t.partitions.is_some() || t.on_cluster.is_some() {
        return Err(Error::unsupported("TRUNCATE form is not supported"));
    }
    let mut tables = Vec::with_capacity(t.table_names.len());
    for target in &t.table_names {
        let name = object_name(&target.name)?;
        match txn.schema(&name)? {
            Some(_) => tables.push(name),
            None if t.if_exists => {}
            None => return Err(Error::undefined_table(&name)),
        }
    }
    let schemas = txn.schemas()?;
    for name in &tables {
        if !super::foreign_keys::referencing_tables(&schemas, name, &tables).is_empty() {
            return Err(Error::unsupported(
                "cannot truncate a table referenced in a foreign key constraint",
            ));
        }
    }
    for name in tables {
        let keys: Vec<Vec<u8>> = txn
            .scan(&name, crate::txn::full_range())?
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_>>()?;
        for k in keys {
            txn.delete(&name, &k)?;
        }
    }
    Ok(QueryResult::command("TRUNCATE TABLE", 0))
}
