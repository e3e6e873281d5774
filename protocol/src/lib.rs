//! Tessera's shared vocabulary: values and types, key and row encodings, the shard hash, the
//! cluster map, change-log records, SQLSTATE errors, and the internal protocol (frames,
//! handshake, multiplexed RPC) that routers, nodes and meta speak to each other.
//!
//! ```text
//!  value ─► keycode (memcomparable keys)   hash (shard placement)
//!  schema, changes, cluster ─► message ─► frame ─► rpc (over net, after auth)
//! ```
//! Nothing here depends on another Tessera crate; every format defined here is written down
//! byte by byte in `docs/FORMATS.md`.

pub mod auth;
pub mod changes;
pub mod clock;
pub mod cluster;
pub mod error;
pub mod frame;
pub mod hash;
pub mod jobs;
pub mod keycode;
pub mod message;
pub mod net;
pub mod row;
pub mod rpc;
pub mod schema;
pub mod value;

pub use error::{Error, Result, sqlstate};
pub use value::{DataType, Value};
