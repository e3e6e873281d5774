//! Per-connection session state: run-time settings (SET / SHOW / RESET).
//!
//! Settings live at the router because the router owns the client's session; node
//! connections are shared, so nothing session-scoped is left on them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use protocol::cluster::ShardId;
use protocol::message::TxnSpec;

/// Settings every session starts with, as PostgreSQL 15 reports them.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("server_version", "15.0 (Tessera)"),
    ("server_version_num", "150000"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("timezone", "UTC"),
    ("application_name", ""),
    ("search_path", "\"$user\", public"),
    ("statement_timeout", "0"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("is_superuser", "on"),
    ("session_authorization", "tessera"),
    ("password_encryption", "scram-sha-256"),
    ("tessera.read_from", "primary"),
    ("lock_timeout", "0"),
    ("transaction_read_only", "off"),
    ("default_transaction_read_only", "off"),
    ("default_table_access_method", "heap"),
];

/// A client transaction (BEGIN … COMMIT) as the router tracks it.
#[derive(Debug)]
pub struct SessionTxn {
    pub spec: TxnSpec,
    /// Shards the transaction has run statements on, with the address used.
    pub touched: BTreeMap<ShardId, String>,
    /// Shards it has written on (at most one until two-phase commit exists).
    pub written: BTreeSet<ShardId>,
    /// An error aborted it: everything but ROLLBACK/COMMIT fails with 25P02.
    pub failed: bool,
    /// Open SAVEPOINTs, oldest first, with the shards touched and written when each was set.
    pub savepoints: Vec<SavepointMark>,
    /// Tables CREATEd inside this block: created at once (DDL goes through meta) and dropped
    /// again if the block rolls back.
    pub created: Vec<String>,
}

impl SessionTxn {
    /// A transaction that has run nothing yet.
    pub fn new(spec: TxnSpec) -> Self {
        SessionTxn {
            spec,
            touched: Default::default(),
            written: Default::default(),
            failed: false,
            savepoints: Vec::new(),
            created: Vec::new(),
        }
    }

    /// The distributed transaction of one statement run outside a block (a multi-shard
    /// write, a COPY): READ COMMITTED, with a fresh random id and the session's
    /// lock_timeout (0: the deadlock timeout).
    pub fn implicit(lock_timeout_ms: u64) -> Self {
        SessionTxn::new(TxnSpec {
            id: rand::random::<u64>() | 1,
            isolation: protocol::message::Isolation::ReadCommitted,
            read_only: false,
            lock_timeout_ms,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SavepointMark {
    pub name: String,
    pub touched: BTreeMap<ShardId, String>,
    pub written: BTreeSet<ShardId>,
}

#[derive(Default)]
pub struct Session {
    settings: Mutex<BTreeMap<String, String>>,
    /// The open transaction block, if any. Statements of one session run one at a time, so
    /// this lock is never contended; it is async because it is held across shard calls.
    pub txn: tokio::sync::Mutex<Option<SessionTxn>>,
    /// Signalled by a CancelRequest for this session: the running statement (if any) ends
    /// with 57014. Waiters only, no stored permit: a cancel between statements does nothing.
    pub cancel: tokio::sync::Notify,
    /// Statements prepared with SQL PREPARE, by name.
    pub prepared: Mutex<BTreeMap<String, sqlparser::ast::Statement>>,
    /// A COPY FROM STDIN receiving data.
    pub copy: tokio::sync::Mutex<Option<crate::copy::CopyIn>>,
    /// currval/lastval state.
    pub sequences: std::sync::Arc<Mutex<crate::sequences::SessionSequences>>,
    /// The backend pid this session announced in BackendKeyData (`pg_backend_pid()`).
    pub pid: std::sync::atomic::AtomicI32,
    /// The authentication exchange under way, between its messages.
    pub auth: Mutex<Option<crate::auth::Exchange>>,
    /// The role the session logged in as, once authenticated.
    user: std::sync::OnceLock<(String, Option<u32>, bool)>,
    /// Set when a transaction block begins: a session that ends with a block still open (its
    /// client went away) rolls it back on every shard it touched, as PostgreSQL does, instead
    /// of leaving its row locks held.
    pub router: std::sync::OnceLock<std::sync::Arc<crate::dispatch::Router>>,
    /// Simple-protocol statement shapes this session has met (`crate::shapes`).
    pub shapes: Mutex<crate::shapes::ShapeCache>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(txn) = self.txn.get_mut().take() else {
            return;
        };
        let (Some(router), Ok(runtime)) = (
            self.router.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        runtime.spawn(async move {
            let _ = router.end_transaction(&txn, false).await;
        });
    }
}

impl Session {
    /// A duration setting (statement_timeout, lock_timeout) in milliseconds; 0 if unset.
    /// `name` is lower case. Read for every statement, so it copies nothing.
    pub fn millis(&self, name: &str) -> u64 {
        self.with_value(name, parse_millis).flatten().unwrap_or(0)
    }

    pub fn get(&self, name: &str) -> Option<String> {
        let name = name.to_lowercase();
        match name.as_str() {
            "is_superuser" => return Some(if self.is_superuser() { "on" } else { "off" }.into()),
            "session_authorization" => return Some(self.user().to_string()),
            _ => {}
        }
        self.with_value(&name, str::to_string)
    }

    /// `f` of a setting's value (set in the session, else its default); `name` is lower case.
    fn with_value<R>(&self, name: &str, f: impl FnOnce(&str) -> R) -> Option<R> {
        if let Some(v) = self.settings.lock().ok()?.get(name) {
            return Some(f(v));
        }
        DEFAULTS.iter().find(|(k, _)| *k == name).map(|(_, v)| f(v))
    }

    pub fn set(&self, name: &str, value: String) {
        if let Ok(mut s) = self.settings.lock() {
            s.insert(name.to_lowercase(), value);
        }
    }

    pub fn reset(&self, name: &str) {
        if let Ok(mut s) = self.settings.lock() {
            s.remove(&name.to_lowercase());
        }
    }

    /// Records the authenticated role (once, at the end of startup): its name, its OID (`None`
    /// for a trust login on a cluster without roles) and whether it was a superuser then.
    pub fn set_user(&self, user: String, oid: Option<u32>, superuser: bool) {
        let _ = self.user.set((user, oid, superuser));
    }

    /// The OID of the role the session logged in as.
    pub fn role_oid(&self) -> Option<u32> {
        self.user.get().and_then(|(_, oid, _)| *oid)
    }

    /// The role the session logged in as (`current_user`).
    pub fn user(&self) -> &str {
        self.user
            .get()
            .map(|(u, _, _)| u.as_str())
            .unwrap_or(crate::catalog::USER)
    }

    /// Whether the session's role is a superuser (as of login, as PostgreSQL reports it).
    pub fn is_superuser(&self) -> bool {
        self.user.get().is_none_or(|(_, _, s)| *s)
    }

    pub fn reset_all(&self) {
        if let Ok(mut s) = self.settings.lock() {
            s.clear();
        }
    }
}

/// Parses a PostgreSQL duration setting (`500`, `500ms`, `2s`, `1min`) into milliseconds.
pub fn parse_millis(text: &str) -> Option<u64> {
    let t = text.trim().trim_matches('\'').to_ascii_lowercase();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = t[digits.len()..].trim();
    Some(match unit {
        "" | "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return None,
    })
}
