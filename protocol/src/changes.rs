//! Change-log records: a committed transaction's logical row changes.
//!
//! A shard appends one `ChangeRecord` per committed write transaction, in the same redb write
//! transaction as the rows it describes, keyed by its LSN (log sequence number: 1, 2, 3, …
//! without gaps). Replicas apply records in LSN order. Keys and rows are the shard's own
//! storage encodings (see `keycode` and docs/FORMATS.md), so applying is a byte copy.

use serde::{Deserialize, Serialize};

use crate::schema::TableSchema;

/// One committed transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub lsn: u64,
    pub txn_id: u64,
    /// HLC commit timestamp (see `clock::Hlc`).
    pub commit_ts: u64,
    /// The node whose primary committed the transaction.
    pub origin: u64,
    pub changes: Vec<Change>,
}

/// One row or schema change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Inserts or overwrites the row stored under `key`.
    Put {
        table: String,
        key: Vec<u8>,
        row: Vec<u8>,
    },
    Delete {
        table: String,
        key: Vec<u8>,
    },
    CreateTable {
        schema: TableSchema,
    },
    DropTable {
        name: String,
    },
    /// Replaces a table's schema (ALTER TABLE). Rows rewritten to fit it follow as `Put`s
    /// and `Delete`s in the same record.
    AlterTable {
        schema: TableSchema,
    },
}
