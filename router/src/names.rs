//! SQL names as PostgreSQL resolves them: unquoted identifiers fold to lower case, `public.`
//! is the default schema, `tessera.` holds the router's system views, and `pg_catalog.` /
//! `information_schema.` the system catalogs (see `catalog`).

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

pub const SYSTEM_SCHEMA: &str = "tessera";

pub fn ident(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// The table an object name refers to: `t` and `public.t` are `t`; `tessera.shards` stays
/// qualified.
pub fn table_name(name: &ObjectName) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => ident(id),
            ObjectNamePart::Function(f) => ident(&f.name),
        })
        .collect();
    match parts.as_slice() {
        [schema, table] if schema == "public" => table.clone(),
        _ => parts.join("."),
    }
}

/// A relation the router answers itself: a `tessera.*` view or a system catalog
/// (`pg_catalog.*`, searched before `public` as in PostgreSQL, and `information_schema.*`).
pub fn is_system(table: &str) -> bool {
    table.starts_with("tessera.") || crate::catalog::is_catalog(table)
}
