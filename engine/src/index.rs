//! Secondary indexes in storage: derived data, kept in step with the rows they index.
//!
//! ```text
//!  "t/<table>"          keycode(pk)              → row
//!  "x/<table>/<index>"  keycode(index values) ‖ keycode(pk) → keycode(pk)
//! ```
//! An entry's key is the row's index values followed by its primary key, so entries are
//! unique even where index values repeat (and NULLs, which a unique index allows many of),
//! and a prefix scan over index values finds every row holding them. The value repeats the
//! primary key so a scan need not know where the index values end.
//!
//! Index entries are not in the change log: `write_record` derives them from the row changes
//! it applies, on a primary and a replica alike, in the same redb write transaction as the
//! rows, so rows and indexes can never disagree after a crash. A change that rewrites a
//! table's definition (`AlterTable`, which is also how CREATE/DROP INDEX travel) rebuilds that
//! table's indexes from its rows once the whole record is applied. See docs/FORMATS.md.

use std::collections::{BTreeSet, HashMap};

use protocol::error::Result;
use protocol::keycode::encode_key;
use protocol::schema::{IndexDef, TableSchema};
use protocol::{Value, row};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::storage::{data_table, data_table_name, storage_err};

/// The redb table that holds an index's entries.
pub fn index_table_name(table: &str, index: &str) -> String {
    format!("x/{table}/{index}")
}

pub fn index_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// The encoded index values of a row: the prefix every entry for these values starts with.
pub fn values_prefix(schema: &TableSchema, index: &IndexDef, row: &[Value]) -> Vec<u8> {
    encode_key(&schema.index_values(index, row))
}

/// The entry key of a row (stored under primary key `pk`) in an index.
pub fn entry_key(schema: &TableSchema, index: &IndexDef, row: &[Value], pk: &[u8]) -> Vec<u8> {
    let mut key = values_prefix(schema, index, row);
    key.extend_from_slice(pk);
    key
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Index upkeep for one change record: the schemas it needs, and the tables whose indexes
/// must be rebuilt at its end.
#[derive(Default)]
pub struct Upkeep {
    schemas: HashMap<String, Option<TableSchema>>,
    rebuild: BTreeSet<String>,
    /// Single new indexes of tables whose layout stayed the same (table, index).
    build: BTreeSet<(String, String)>,
}

impl Upkeep {
    /// The table's schema as the catalog holds it, when it has indexes that need upkeep now.
    fn indexed<'a>(
        &'a mut self,
        catalog: &redb::Table<&str, &[u8]>,
        table: &str,
    ) -> Result<Option<&'a TableSchema>> {
        if self.rebuild.contains(table) {
            return Ok(None);
        }
        if !self.schemas.contains_key(table) {
            let schema = match catalog.get(table).map_err(storage_err)? {
                Some(bytes) => Some(crate::storage::decode_schema(bytes.value())?),
                None => None,
            };
            self.schemas.insert(table.to_string(), schema);
        }
        Ok(self
            .schemas
            .get(table)
            .and_then(|s| s.as_ref())
            .filter(|s| !s.indexes.is_empty()))
    }

    /// True if changes to `table` need index upkeep as they are applied.
    pub fn tracks(&mut self, catalog: &redb::Table<&str, &[u8]>, table: &str) -> Result<bool> {
        Ok(self.indexed(catalog, table)?.is_some())
    }

    /// A row was stored under `key`, replacing `old` (its previous bytes, if any).
    pub fn put(
        &mut self,
        txn: &WriteTransaction,
        catalog: &redb::Table<&str, &[u8]>,
        table: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<()> {
        let Some(schema) = self.indexed(catalog, table)? else {
            return Ok(());
        };
        let old = old.map(row::decode_row).transpose()?;
        let new = row::decode_row(new)?;
        for index in &schema.indexes {
            let mut t = txn
                .open_table(index_table(&index_table_name(table, &index.name)))
                .map_err(storage_err)?;
            if let Some(old) = &old {
                let k = entry_key(schema, index, old, key);
                t.remove(k.as_slice()).map_err(storage_err)?;
            }
            let k = entry_key(schema, index, &new, key);
            t.insert(k.as_slice(), key).map_err(storage_err)?;
        }
        Ok(())
    }

    /// The row stored under `key` (previously `old`) was deleted.
    pub fn delete(
        &mut self,
        txn: &WriteTransaction,
        catalog: &redb::Table<&str, &[u8]>,
        table: &str,
        key: &[u8],
        old: Option<&[u8]>,
    ) -> Result<()> {
        let Some(old) = old else {
            return Ok(());
        };
        let Some(schema) = self.indexed(catalog, table)? else {
            return Ok(());
        };
        let old = row::decode_row(old)?;
        for index in &schema.indexes {
            let mut t = txn
                .open_table(index_table(&index_table_name(table, &index.name)))
                .map_err(storage_err)?;
            let k = entry_key(schema, index, &old, key);
            t.remove(k.as_slice()).map_err(storage_err)?;
        }
        Ok(())
    }

    /// The table's definition changes (`old` → `new`, either absent when created or
    /// dropped): its old index tables go now, and the new ones are built by `finish`.
    pub fn redefine(
        &mut self,
        txn: &WriteTransaction,
        old: Option<&TableSchema>,
        new: Option<&TableSchema>,
    ) -> Result<()> {
        if let (Some(o), Some(n)) = (old, new)
            && same_layout(o, n)
        {
            // Rows keep their layout: indexes that did not change stay as they are.
            for idx in o.indexes.iter().filter(|i| !n.indexes.contains(i)) {
                let name = index_table_name(&o.name, &idx.name);
                txn.delete_table(index_table(&name)).map_err(storage_err)?;
                self.build.remove(&(o.name.clone(), idx.name.clone()));
            }
            for idx in n.indexes.iter().filter(|i| !o.indexes.contains(i)) {
                self.build.insert((n.name.clone(), idx.name.clone()));
            }
            self.schemas.remove(&n.name);
            return Ok(());
        }
        if let Some(old) = old {
            drop_indexes(txn, old)?;
        }
        let name = match (old, new) {
            (_, Some(s)) | (Some(s), None) => s.name.clone(),
            (None, None) => return Ok(()),
        };
        self.schemas.remove(&name);
        if let Some(new) = new {
            if new.name != name {
                self.schemas.remove(&new.name);
            }
            if !new.indexes.is_empty() {
                self.rebuild.insert(new.name.clone());
            }
        } else {
            self.rebuild.remove(&name);
        }
        Ok(())
    }

    /// Builds the indexes of every table whose definition the record changed.
    pub fn finish(self, txn: &WriteTransaction) -> Result<()> {
        let catalog = txn
            .open_table(crate::storage::CATALOG)
            .map_err(storage_err)?;
        for table in &self.rebuild {
            if let Some(bytes) = catalog.get(table.as_str()).map_err(storage_err)? {
                let schema = crate::storage::decode_schema(bytes.value())?;
                build_indexes(txn, &schema)?;
            }
        }
        for (table, index) in &self.build {
            if self.rebuild.contains(table) {
                continue;
            }
            if let Some(bytes) = catalog.get(table.as_str()).map_err(storage_err)? {
                let mut schema = crate::storage::decode_schema(bytes.value())?;
                schema.indexes.retain(|i| &i.name == index);
                build_indexes(txn, &schema)?;
            }
        }
        Ok(())
    }
}

/// True if rows of `old` are laid out as rows of `new` (same name, key and column types), so
/// index entries computed for one hold for the other.
fn same_layout(old: &TableSchema, new: &TableSchema) -> bool {
    old.name == new.name
        && old.primary_key == new.primary_key
        && old.columns.len() == new.columns.len()
        && old
            .columns
            .iter()
            .zip(&new.columns)
            .all(|(a, b)| a.data_type == b.data_type)
}

/// Deletes every index table of a table.
pub fn drop_indexes(txn: &WriteTransaction, schema: &TableSchema) -> Result<()> {
    for index in &schema.indexes {
        let name = index_table_name(&schema.name, &index.name);
        txn.delete_table(index_table(&name)).map_err(storage_err)?;
    }
    Ok(())
}

/// (Re)builds every index of a table from its rows.
pub fn build_indexes(txn: &WriteTransaction, schema: &TableSchema) -> Result<()> {
    if schema.indexes.is_empty() {
        return Ok(());
    }
    drop_indexes(txn, schema)?;
    let rows_name = data_table_name(&schema.name);
    let rows = txn
        .open_table(data_table(&rows_name))
        .map_err(storage_err)?;
    let names: Vec<String> = schema
        .indexes
        .iter()
        .map(|i| index_table_name(&schema.name, &i.name))
        .collect();
    let mut tables = names
        .iter()
        .map(|n| txn.open_table(index_table(n)).map_err(storage_err))
        .collect::<Result<Vec<_>>>()?;
    for entry in rows.range::<&[u8]>(..).map_err(storage_err)? {
        let (k, v) = entry.map_err(storage_err)?;
        let values = row::decode_row(v.value())?;
        for (index, t) in schema.indexes.iter().zip(tables.iter_mut()) {
            let e = entry_key(schema, index, &values, k.value());
            t.insert(e.as_slice(), k.value()).map_err(storage_err)?;
        }
    }
    Ok(())
}
