//! Per-connection session state: run-time settings (SET / SHOW / RESET).
//!
//! Settings live at the router because the router owns the client's session; node
//! connections are shared, so nothing session-scoped is left on them.

use std::collections::BTreeMap;
use std::sync::Mutex;

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
    ("tessera.read_from", "primary"),
];

#[derive(Default)]
pub struct Session {
    settings: Mutex<BTreeMap<String, String>>,
}

impl Session {
    pub fn get(&self, name: &str) -> Option<String> {
        let name = name.to_lowercase();
        if let Some(v) = self.settings.lock().ok()?.get(&name) {
            return Some(v.clone());
        }
        DEFAULTS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
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

    pub fn reset_all(&self) {
        if let Ok(mut s) = self.settings.lock() {
            s.clear();
        }
    }
}
