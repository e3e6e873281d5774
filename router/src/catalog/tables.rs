//! The rows of every catalog relation, built from the cluster map.

use protocol::cluster::ClusterState;
use protocol::schema::{ColumnDef, TableSchema};
use protocol::value::array::Elem;
use protocol::{DataType, Value};

/// Namespace OIDs, as in PostgreSQL.
pub const PG_CATALOG: i64 = 11;
pub const PUBLIC: i64 = 2200;
pub const INFORMATION_SCHEMA: i64 = 13_000;
/// The one role: the bootstrap superuser's OID in PostgreSQL.
pub const SUPERUSER: i64 = 10;
const DATABASE_OWNER_ROLE: i64 = 6171;
const DATABASE_OID: i64 = 16_384;
const HEAP_AM: i64 = 2;
const BTREE_AM: i64 = 403;
const DEFAULT_TABLESPACE: i64 = 1663;

/// Who and where the session is (one database, one superuser).
pub struct Ctx<'a> {
    pub state: &'a ClusterState,
    pub user: &'a str,
    /// Whether the session may see stored password hashes (pg_authid.rolpassword).
    pub superuser: bool,
    pub database: &'a str,
}

/// Column kinds: `o` oid, `n` name, `t` text, `c` "char", `b` bool, `s` int2, `i` int4,
/// `l` int8, `f` float4, `z` timestamptz; arrays: `a` text[], `A` int2[], `O` oid[], `v`
/// int2vector, `w` oidvector (`Row::set` takes arrays in text form).
type Spec = &'static str;

/// `(schema, relation, columns)`; information_schema relations are views in PostgreSQL.
pub const RELATIONS: &[(&str, &str, Spec)] = &[
    (
        "pg_catalog",
        "pg_namespace",
        "oid:o nspname:n nspowner:o nspacl:a",
    ),
    (
        "pg_catalog",
        "pg_class",
        "oid:o relname:n relnamespace:o reltype:o reloftype:o relowner:o relam:o relfilenode:o \
         reltablespace:o relpages:i reltuples:f relallvisible:i reltoastrelid:o relhasindex:b \
         relisshared:b relpersistence:c relkind:c relnatts:s relchecks:s relhasrules:b \
         relhastriggers:b relhassubclass:b relrowsecurity:b relforcerowsecurity:b \
         relispopulated:b relreplident:c relispartition:b relrewrite:o relfrozenxid:l \
         relminmxid:l relacl:a reloptions:a relpartbound:t",
    ),
    (
        "pg_catalog",
        "pg_attribute",
        "attrelid:o attname:n atttypid:o attstattarget:i attlen:s attnum:s attndims:i \
         attcacheoff:i atttypmod:i attbyval:b attalign:c attstorage:c attcompression:c \
         attnotnull:b atthasdef:b atthasmissing:b attidentity:c attgenerated:c attisdropped:b \
         attislocal:b attinhcount:i attcollation:o attacl:a attoptions:a attfdwoptions:a \
         attmissingval:a",
    ),
    (
        "pg_catalog",
        "pg_type",
        "oid:o typname:n typnamespace:o typowner:o typlen:s typbyval:b typtype:c \
         typcategory:c typispreferred:b typisdefined:b typdelim:c typrelid:o typsubscript:t \
         typelem:o typarray:o typinput:t typoutput:t typreceive:t typsend:t typmodin:t \
         typmodout:t typanalyze:t typalign:c typstorage:c typnotnull:b typbasetype:o \
         typtypmod:i typndims:i typcollation:o typdefaultbin:t typdefault:t typacl:a",
    ),
    (
        "pg_catalog",
        "pg_index",
        "indexrelid:o indrelid:o indnatts:s indnkeyatts:s indisunique:b indnullsnotdistinct:b \
         indisprimary:b indisexclusion:b indimmediate:b indisclustered:b indisvalid:b \
         indcheckxmin:b indisready:b indislive:b indisreplident:b indkey:v indcollation:w \
         indclass:w indoption:v indexprs:t indpred:t",
    ),
    (
        "pg_catalog",
        "pg_constraint",
        "oid:o conname:n connamespace:o contype:c condeferrable:b condeferred:b \
         convalidated:b conrelid:o contypid:o conindid:o conparentid:o confrelid:o \
         confupdtype:c confdeltype:c confmatchtype:c conislocal:b coninhcount:i \
         connoinherit:b conkey:A confkey:A conpfeqop:a conppeqop:a conffeqop:a \
         confdelsetcols:a conexclop:a conbin:t",
    ),
    (
        "pg_catalog",
        "pg_attrdef",
        "oid:o adrelid:o adnum:s adbin:t",
    ),
    (
        "pg_catalog",
        "pg_database",
        "oid:o datname:n datdba:o encoding:i datlocprovider:c datistemplate:b \
         datallowconn:b datconnlimit:i datfrozenxid:l datminmxid:l dattablespace:o \
         datcollate:t datctype:t daticulocale:t datcollversion:t datacl:a",
    ),
    (
        "pg_catalog",
        "pg_roles",
        "rolname:n rolsuper:b rolinherit:b rolcreaterole:b rolcreatedb:b rolcanlogin:b \
         rolreplication:b rolconnlimit:i rolpassword:t rolvaliduntil:z rolbypassrls:b \
         rolconfig:a oid:o",
    ),
    (
        "pg_catalog",
        "pg_authid",
        "oid:o rolname:n rolsuper:b rolinherit:b rolcreaterole:b rolcreatedb:b \
         rolcanlogin:b rolreplication:b rolbypassrls:b rolconnlimit:i rolpassword:t \
         rolvaliduntil:z",
    ),
    (
        "pg_catalog",
        "pg_user",
        "usename:n usesysid:o usecreatedb:b usesuper:b userepl:b usebypassrls:b passwd:t \
         valuntil:z useconfig:a",
    ),
    (
        "pg_catalog",
        "pg_auth_members",
        "oid:o roleid:o member:o grantor:o admin_option:b",
    ),
    (
        "pg_catalog",
        "pg_description",
        "objoid:o classoid:o objsubid:i description:t",
    ),
    (
        "pg_catalog",
        "pg_shdescription",
        "objoid:o classoid:o description:t",
    ),
    (
        "pg_catalog",
        "pg_inherits",
        "inhrelid:o inhparent:o inhseqno:i inhdetachpending:b",
    ),
    ("pg_catalog", "pg_am", "oid:o amname:n amhandler:t amtype:c"),
    (
        "pg_catalog",
        "pg_range",
        "rngtypid:o rngsubtype:o rngmultitypid:o rngcollation:o rngsubopc:o rngcanonical:t \
         rngsubdiff:t",
    ),
    (
        "pg_catalog",
        "pg_opclass",
        "oid:o opcmethod:o opcname:n opcnamespace:o opcowner:o opcfamily:o opcintype:o \
         opcdefault:b opckeytype:o",
    ),
    (
        "pg_catalog",
        "pg_tablespace",
        "oid:o spcname:n spcowner:o spcacl:a spcoptions:a",
    ),
    (
        "pg_catalog",
        "pg_settings",
        "name:t setting:t unit:t category:t short_desc:t extra_desc:t context:t vartype:t \
         source:t min_val:t max_val:t enumvals:a boot_val:t reset_val:t sourcefile:t \
         sourceline:i pending_restart:b",
    ),
    (
        "pg_catalog",
        "pg_proc",
        "oid:o proname:n pronamespace:o proowner:o prolang:o procost:f prorows:f \
         provariadic:o prosupport:t prokind:c prosecdef:b proleakproof:b proisstrict:b \
         proretset:b provolatile:c proparallel:c pronargs:s pronargdefaults:s prorettype:o \
         proargtypes:w proallargtypes:O proargmodes:a proargnames:a proargdefaults:t \
         protrftypes:a prosrc:t probin:t prosqlbody:t proconfig:a proacl:a",
    ),
    (
        "pg_catalog",
        "pg_collation",
        "oid:o collname:n collnamespace:o collowner:o collprovider:c \
         collisdeterministic:b collencoding:i collcollate:t collctype:t colliculocale:t \
         collversion:t",
    ),
    (
        "pg_catalog",
        "pg_policy",
        "oid:o polname:n polrelid:o polcmd:c polpermissive:b polroles:a polqual:t \
         polwithcheck:t",
    ),
    (
        "pg_catalog",
        "pg_statistic_ext",
        "oid:o stxrelid:o stxname:n stxnamespace:o stxowner:o stxstattarget:i stxkeys:t \
         stxkind:a stxexprs:t",
    ),
    (
        "pg_catalog",
        "pg_publication",
        "oid:o pubname:n pubowner:o puballtables:b pubinsert:b pubupdate:b pubdelete:b \
         pubtruncate:b pubviaroot:b",
    ),
    (
        "pg_catalog",
        "pg_publication_rel",
        "oid:o prpubid:o prrelid:o prqual:t prattrs:t",
    ),
    (
        "pg_catalog",
        "pg_publication_namespace",
        "oid:o pnpubid:o pnnspid:o",
    ),
    (
        "pg_catalog",
        "pg_trigger",
        "oid:o tgrelid:o tgparentid:o tgname:n tgfoid:o tgtype:s tgenabled:c \
         tgisinternal:b tgconstrrelid:o tgconstrindid:o tgconstraint:o tgdeferrable:b \
         tginitdeferred:b tgnargs:s tgattr:t tgargs:t tgqual:t tgoldtable:n tgnewtable:n",
    ),
    (
        "pg_catalog",
        "pg_rewrite",
        "oid:o rulename:n ev_class:o ev_type:c ev_enabled:c is_instead:b ev_qual:t \
         ev_action:t",
    ),
    (
        "pg_catalog",
        "pg_extension",
        "oid:o extname:n extowner:o extnamespace:o extrelocatable:b extversion:t \
         extconfig:a extcondition:a",
    ),
    (
        "pg_catalog",
        "pg_enum",
        "oid:o enumtypid:o enumsortorder:f enumlabel:n",
    ),
    (
        "pg_catalog",
        "pg_sequence",
        "seqrelid:o seqtypid:o seqstart:l seqincrement:l seqmax:l seqmin:l seqcache:l \
         seqcycle:b",
    ),
    (
        "pg_catalog",
        "pg_tables",
        "schemaname:n tablename:n tableowner:n tablespace:n hasindexes:b hasrules:b \
         hastriggers:b rowsecurity:b",
    ),
    (
        "pg_catalog",
        "pg_indexes",
        "schemaname:n tablename:n indexname:n tablespace:n indexdef:t",
    ),
    (
        "pg_catalog",
        "pg_views",
        "schemaname:n viewname:n viewowner:n definition:t",
    ),
    // What pg_get_indexdef and pg_get_constraintdef return, by object OID.
    ("pg_catalog", "tessera_objdefs", "oid:o def:t pretty:t"),
    (
        "information_schema",
        "schemata",
        "catalog_name:n schema_name:n schema_owner:n default_character_set_catalog:n \
         default_character_set_schema:n default_character_set_name:n sql_path:t",
    ),
    (
        "information_schema",
        "tables",
        "table_catalog:n table_schema:n table_name:n table_type:t \
         self_referencing_column_name:n reference_generation:t user_defined_type_catalog:n \
         user_defined_type_schema:n user_defined_type_name:n is_insertable_into:t is_typed:t \
         commit_action:t",
    ),
    (
        "information_schema",
        "columns",
        "table_catalog:n table_schema:n table_name:n column_name:n ordinal_position:i \
         column_default:t is_nullable:t data_type:t character_maximum_length:i \
         character_octet_length:i numeric_precision:i numeric_precision_radix:i \
         numeric_scale:i datetime_precision:i interval_type:t interval_precision:i \
         character_set_catalog:n character_set_schema:n character_set_name:n \
         collation_catalog:n collation_schema:n collation_name:n domain_catalog:n \
         domain_schema:n domain_name:n udt_catalog:n udt_schema:n udt_name:n scope_catalog:n \
         scope_schema:n scope_name:n maximum_cardinality:i dtd_identifier:n \
         is_self_referencing:t is_identity:t identity_generation:t identity_start:t \
         identity_increment:t identity_maximum:t identity_minimum:t identity_cycle:t \
         is_generated:t generation_expression:t is_updatable:t",
    ),
    (
        "information_schema",
        "table_constraints",
        "constraint_catalog:n constraint_schema:n constraint_name:n table_catalog:n \
         table_schema:n table_name:n constraint_type:t is_deferrable:t initially_deferred:t \
         enforced:t nulls_distinct:t",
    ),
    (
        "information_schema",
        "key_column_usage",
        "constraint_catalog:n constraint_schema:n constraint_name:n table_catalog:n \
         table_schema:n table_name:n column_name:n ordinal_position:i \
         position_in_unique_constraint:i",
    ),
    (
        "information_schema",
        "views",
        "table_catalog:n table_schema:n table_name:n view_definition:t check_option:t \
         is_updatable:t is_insertable_into:t is_trigger_updatable:t \
         is_trigger_deletable:t is_trigger_insertable_into:t",
    ),
    (
        "information_schema",
        "referential_constraints",
        "constraint_catalog:n constraint_schema:n constraint_name:n \
         unique_constraint_catalog:n unique_constraint_schema:n unique_constraint_name:n \
         match_option:t update_rule:t delete_rule:t",
    ),
];

/// Relations that hold no rows in Tessera (no policies, publications, inheritance, …).
pub const ALWAYS_EMPTY: &[&str] = &[
    "pg_auth_members",
    "pg_description",
    "pg_shdescription",
    "pg_inherits",
    // Every index uses its column type's default operator class, which SQLAlchemy and
    // psql only look up when it is not the default.
    "pg_opclass",
    // Tessera has no range types.
    "pg_range",
    "pg_proc",
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_trigger",
    "pg_rewrite",
    "pg_extension",
    "pg_enum",
    "pg_sequence",
    "referential_constraints",
];

/// Builtin types: (oid, typname, typlen, typbyval, typcategory, typalign, typstorage,
/// array type oid, typcollation, typispreferred, typtype).
type TypeRow = (
    i64,
    &'static str,
    i64,
    bool,
    char,
    char,
    char,
    i64,
    i64,
    bool,
    char,
);
pub const TYPES: &[TypeRow] = &[
    (16, "bool", 1, true, 'B', 'c', 'p', 1000, 0, true, 'b'),
    (17, "bytea", -1, false, 'U', 'i', 'x', 1001, 0, false, 'b'),
    (18, "char", 1, true, 'Z', 'c', 'p', 1002, 0, false, 'b'),
    (19, "name", 64, false, 'S', 'c', 'p', 1003, 950, false, 'b'),
    (20, "int8", 8, true, 'N', 'd', 'p', 1016, 0, false, 'b'),
    (21, "int2", 2, true, 'N', 's', 'p', 1005, 0, false, 'b'),
    (
        22,
        "int2vector",
        -1,
        false,
        'A',
        'i',
        'p',
        1006,
        0,
        false,
        'b',
    ),
    (23, "int4", 4, true, 'N', 'i', 'p', 1007, 0, false, 'b'),
    (24, "regproc", 4, true, 'N', 'i', 'p', 1008, 0, false, 'b'),
    (25, "text", -1, false, 'S', 'i', 'x', 1009, 100, true, 'b'),
    (26, "oid", 4, true, 'N', 'i', 'p', 1028, 0, true, 'b'),
    (
        30,
        "oidvector",
        -1,
        false,
        'A',
        'i',
        'p',
        1013,
        0,
        false,
        'b',
    ),
    (114, "json", -1, false, 'U', 'i', 'x', 199, 0, false, 'b'),
    (700, "float4", 4, true, 'N', 'i', 'p', 1021, 0, false, 'b'),
    (701, "float8", 8, true, 'N', 'd', 'p', 1022, 0, true, 'b'),
    (705, "unknown", -2, false, 'X', 'c', 'p', 0, 0, false, 'p'),
    (
        1042, "bpchar", -1, false, 'S', 'i', 'x', 1014, 100, false, 'b',
    ),
    (
        1043, "varchar", -1, false, 'S', 'i', 'x', 1015, 100, false, 'b',
    ),
    (1082, "date", 4, true, 'D', 'i', 'p', 1182, 0, false, 'b'),
    (1083, "time", 8, true, 'D', 'd', 'p', 1183, 0, false, 'b'),
    (
        1114,
        "timestamp",
        8,
        true,
        'D',
        'd',
        'p',
        1115,
        0,
        false,
        'b',
    ),
    (
        1184,
        "timestamptz",
        8,
        true,
        'D',
        'd',
        'p',
        1185,
        0,
        true,
        'b',
    ),
    (
        1186, "interval", 16, false, 'T', 'd', 'p', 1187, 0, true, 'b',
    ),
    (
        1700, "numeric", -1, false, 'N', 'i', 'm', 1231, 0, false, 'b',
    ),
    (
        2205, "regclass", 4, true, 'N', 'i', 'p', 2210, 0, false, 'b',
    ),
    (2206, "regtype", 4, true, 'N', 'i', 'p', 2211, 0, false, 'b'),
    (
        2249, "record", -1, false, 'P', 'd', 'x', 2287, 0, false, 'p',
    ),
    (2278, "void", 4, true, 'P', 'i', 'p', 0, 0, false, 'p'),
    (2950, "uuid", 16, false, 'U', 'c', 'p', 2951, 0, false, 'b'),
    (3802, "jsonb", -1, false, 'U', 'i', 'x', 3807, 0, false, 'b'),
];

/// The relation a (canonical) name refers to: `pg_class` and `pg_catalog.pg_class` are the
/// same; information_schema relations must be qualified.
pub fn lookup(name: &str) -> Option<&'static (&'static str, &'static str, Spec)> {
    let (schema, rel) = match name.split_once('.') {
        Some((s, r)) => (s, r),
        None => ("pg_catalog", name),
    };
    RELATIONS.iter().find(|(s, r, _)| *s == schema && *r == rel)
}

pub fn kind_type(kind: &str) -> DataType {
    match kind {
        "b" => DataType::Bool,
        "s" => DataType::Int2,
        "i" => DataType::Int4,
        "o" => DataType::Oid,
        "l" => DataType::Int8,
        "f" => DataType::Float4,
        "z" => DataType::TimestampTz,
        "a" => DataType::Array(Elem::Text),
        "A" => DataType::Array(Elem::Int2),
        "O" => DataType::Array(Elem::Oid),
        "v" => DataType::Vector(Elem::Int2),
        "w" => DataType::Vector(Elem::Oid),
        _ => DataType::Text,
    }
}

/// The type of column `col` of catalog relation `name`.
pub fn column_type(name: &str, col: &str) -> Option<DataType> {
    let (_, _, spec) = lookup(name)?;
    columns(spec)
        .find(|(c, _)| *c == col)
        .map(|(_, k)| kind_type(k))
}

fn columns(spec: Spec) -> impl Iterator<Item = (&'static str, &'static str)> {
    spec.split_whitespace().filter_map(|c| c.split_once(':'))
}

/// A stable OID for a named object, in the range PostgreSQL gives user objects.
pub fn oid_of(kind: &str, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    16_385 + (h % (i32::MAX as u64 - 16_385)) as i64
}

/// One row under construction: columns not set keep a neutral default (0, false, '' or NULL).
struct Row {
    spec: Spec,
    values: Vec<Value>,
}

impl Row {
    fn new(spec: Spec) -> Row {
        let values = columns(spec)
            .map(|(_, k)| match k {
                "o" | "s" | "i" | "l" => Value::Int(0),
                "f" => Value::Float(0.0),
                "b" => Value::Bool(false),
                "n" | "c" => Value::Text(String::new()),
                _ => Value::Null,
            })
            .collect();
        Row { spec, values }
    }

    fn set(mut self, col: &str, v: impl Into<V>) -> Row {
        if let Some((i, (_, kind))) = columns(self.spec).enumerate().find(|(_, (c, _))| *c == col) {
            self.values[i] = match (kind_type(kind), v.into().0) {
                // Arrays are given in their text form.
                (t @ (DataType::Array(_) | DataType::Vector(_)), Value::Text(s)) => {
                    t.parse_text(&s).unwrap_or(Value::Null)
                }
                (_, v) => v,
            };
        }
        self
    }
}

/// A value for `Row::set`.
struct V(Value);
impl From<i64> for V {
    fn from(v: i64) -> V {
        V(Value::Int(v))
    }
}
impl From<bool> for V {
    fn from(v: bool) -> V {
        V(Value::Bool(v))
    }
}
impl From<&str> for V {
    fn from(v: &str) -> V {
        V(Value::Text(v.into()))
    }
}
impl From<String> for V {
    fn from(v: String) -> V {
        V(Value::Text(v))
    }
}
impl From<char> for V {
    fn from(v: char) -> V {
        V(Value::Text(v.to_string()))
    }
}
impl From<Option<i64>> for V {
    fn from(v: Option<i64>) -> V {
        V(v.map(Value::Int).unwrap_or(Value::Null))
    }
}
impl From<Option<String>> for V {
    fn from(v: Option<String>) -> V {
        V(v.map(Value::Text).unwrap_or(Value::Null))
    }
}

/// A user table as the catalog shows it.
struct Table<'a> {
    name: &'a str,
    oid: i64,
    /// (attnum, column) for every user column.
    cols: Vec<(i64, &'a ColumnDef)>,
    /// The primary key's attnums; empty when the table has none (a row-id table).
    pkey: Vec<i64>,
    /// Its indexes: the primary key's first, then secondary ones and UNIQUE constraints'.
    indexes: Vec<CatIndex>,
    /// CHECK constraints: name and expression.
    checks: Vec<(String, String)>,
    /// FOREIGN KEYs: name, attnums, referenced table, its attnums, definition text, and
    /// the update/delete action letters.
    foreign_keys: Vec<CatForeignKey>,
}

struct CatForeignKey {
    name: String,
    attnums: Vec<i64>,
    ref_table: String,
    ref_attnums: Vec<i64>,
    definition: String,
    on_update: char,
    on_delete: char,
}

/// An index as the catalog shows it.
struct CatIndex {
    name: String,
    oid: i64,
    attnums: Vec<i64>,
    columns: Vec<String>,
    desc: Vec<bool>,
    unique: bool,
    primary: bool,
    /// The constraint that owns it: 'p' (primary key) or 'u' (UNIQUE).
    constraint: Option<char>,
    constraint_oid: i64,
}

impl CatIndex {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .zip(&self.desc)
            .map(|(c, d)| format!("{}{}", quote_ident(c), if *d { " DESC" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// pg_get_indexdef: qualified, or (pretty) as seen on the search path.
    fn definition(&self, table: &str, qualified: bool) -> String {
        format!(
            "CREATE {}INDEX {} ON {}{} USING btree ({})",
            if self.unique { "UNIQUE " } else { "" },
            quote_ident(&self.name),
            if qualified { "public." } else { "" },
            quote_ident(table),
            self.column_list()
        )
    }

    fn constraint_definition(&self) -> String {
        let kind = if self.primary {
            "PRIMARY KEY"
        } else {
            "UNIQUE"
        };
        format!("{kind} ({})", self.column_list())
    }
}

/// A user view as the catalog shows it.
struct CatView<'a> {
    name: &'a str,
    oid: i64,
    info: &'a protocol::cluster::ViewInfo,
}

fn user_views(state: &ClusterState) -> Vec<CatView<'_>> {
    state
        .views
        .values()
        .map(|v| CatView {
            name: &v.name,
            oid: oid_of("view", &v.name),
            info: v,
        })
        .collect()
}

fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

fn user_tables(state: &ClusterState) -> Vec<Table<'_>> {
    let mut out: Vec<Table<'_>> = state
        .tables
        .iter()
        .map(|(name, info)| {
            let schema = &info.schema;
            let cols: Vec<(i64, &ColumnDef)> = schema
                .user_columns()
                .enumerate()
                .map(|(n, (_, c))| (n as i64 + 1, c))
                .collect();
            let pkey = if schema.rowid().is_some() {
                Vec::new()
            } else {
                schema
                    .primary_key
                    .iter()
                    .filter_map(|&i| {
                        let name = &schema.columns.get(i)?.name;
                        cols.iter().find(|(_, c)| &c.name == name).map(|(n, _)| *n)
                    })
                    .collect()
            };
            let attnum = |i: usize| -> Option<i64> {
                let name = &schema.columns.get(i)?.name;
                cols.iter().find(|(_, c)| &c.name == name).map(|(n, _)| *n)
            };
            let mut indexes = Vec::new();
            if !pkey.is_empty() {
                indexes.push(CatIndex {
                    name: format!("{name}_pkey"),
                    oid: oid_of("index", name),
                    attnums: pkey.clone(),
                    columns: schema
                        .primary_key
                        .iter()
                        .map(|&i| schema.columns[i].name.clone())
                        .collect(),
                    desc: vec![false; pkey.len()],
                    unique: true,
                    primary: true,
                    constraint: Some('p'),
                    constraint_oid: oid_of("constraint", name),
                });
            }
            for idx in &schema.indexes {
                indexes.push(CatIndex {
                    name: idx.name.clone(),
                    oid: oid_of("index", &format!("{name}.{}", idx.name)),
                    attnums: idx.columns.iter().filter_map(|&i| attnum(i)).collect(),
                    columns: idx
                        .columns
                        .iter()
                        .map(|&i| schema.columns[i].name.clone())
                        .collect(),
                    desc: idx.descending.clone(),
                    unique: idx.unique,
                    primary: false,
                    constraint: idx.constraint.then_some('u'),
                    constraint_oid: oid_of("constraint", &format!("{name}.{}", idx.name)),
                });
            }
            let foreign_keys = schema
                .foreign_keys
                .iter()
                .filter_map(|fk| {
                    let parent = state.tables.get(&fk.ref_table).map(|t| &t.schema)?;
                    let ref_cols: Vec<usize> = if fk.ref_columns.is_empty() {
                        parent.primary_key.clone()
                    } else {
                        fk.ref_columns
                            .iter()
                            .filter_map(|c| parent.column_index(c))
                            .collect()
                    };
                    let user_attnum =
                        |s: &protocol::schema::TableSchema, i: usize| -> Option<i64> {
                            let name = &s.columns.get(i)?.name;
                            s.user_columns()
                                .position(|(_, c)| &c.name == name)
                                .map(|p| p as i64 + 1)
                        };
                    let letter = |a: protocol::schema::FkAction| match a {
                        protocol::schema::FkAction::NoAction => 'a',
                        protocol::schema::FkAction::Restrict => 'r',
                        protocol::schema::FkAction::Cascade => 'c',
                        protocol::schema::FkAction::SetNull => 'n',
                    };
                    let clause = |what: &str, a: protocol::schema::FkAction| match a {
                        protocol::schema::FkAction::NoAction => String::new(),
                        protocol::schema::FkAction::Restrict => format!(" ON {what} RESTRICT"),
                        protocol::schema::FkAction::Cascade => format!(" ON {what} CASCADE"),
                        protocol::schema::FkAction::SetNull => format!(" ON {what} SET NULL"),
                    };
                    let cols: Vec<String> = fk
                        .columns
                        .iter()
                        .filter_map(|&i| schema.columns.get(i).map(|c| quote_ident(&c.name)))
                        .collect();
                    let refs: Vec<String> = ref_cols
                        .iter()
                        .filter_map(|&i| parent.columns.get(i).map(|c| quote_ident(&c.name)))
                        .collect();
                    Some(CatForeignKey {
                        name: fk.name.clone(),
                        attnums: fk
                            .columns
                            .iter()
                            .filter_map(|&i| user_attnum(schema, i))
                            .collect(),
                        ref_table: fk.ref_table.clone(),
                        ref_attnums: ref_cols
                            .iter()
                            .filter_map(|&i| user_attnum(parent, i))
                            .collect(),
                        definition: format!(
                            "FOREIGN KEY ({}) REFERENCES {}({}){}{}",
                            cols.join(", "),
                            quote_ident(&fk.ref_table),
                            refs.join(", "),
                            clause("UPDATE", fk.on_update),
                            clause("DELETE", fk.on_delete)
                        ),
                        on_update: letter(fk.on_update),
                        on_delete: letter(fk.on_delete),
                    })
                })
                .collect();
            Table {
                name,
                oid: oid_of("table", name),
                cols,
                pkey,
                foreign_keys,
                indexes,
                checks: schema
                    .checks
                    .iter()
                    .map(|c| (c.name.clone(), c.expr.clone()))
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(b.name));
    out
}

/// A type's typmod as pg_attribute stores it.
fn typmod(t: &DataType) -> i64 {
    i64::from(t.typmod())
}

/// A builtin type's row (`TYPES`).
pub(crate) fn type_row(oid: i64) -> Option<&'static TypeRow> {
    TYPES.iter().find(|t| t.0 == oid)
}

/// The default as pg_get_expr shows it: a quoted literal carries its type, as in PostgreSQL.
fn default_display(default: &str, t: &DataType) -> String {
    let d = default.trim();
    if d.starts_with('\'') && d.ends_with('\'') && d.len() >= 2 && !d.contains("::") {
        let base = DataType::from_oid(t.oid())
            .map(|b| b.name())
            .unwrap_or_default();
        let base = if base == "bpchar" {
            "bpchar".to_string()
        } else {
            base
        };
        format!("{d}::{base}")
    } else {
        d.to_string()
    }
}

fn info_schema_type(t: &DataType) -> String {
    match t {
        DataType::Bpchar(_) => "character".into(),
        t => DataType::from_oid(t.oid())
            .map(|b| b.name())
            .unwrap_or_else(|| "USER-DEFINED".into()),
    }
}

/// The schema and rows of one catalog relation (`None` if `name` is not one).
/// The roles in meta; before any exists (a trust cluster that never made one), the session's
/// own name as the superuser it is treated as.
fn roles(ctx: &Ctx<'_>) -> Vec<protocol::cluster::RoleInfo> {
    if !ctx.state.roles.is_empty() {
        return ctx.state.roles.values().cloned().collect();
    }
    vec![protocol::cluster::RoleInfo::superuser(
        ctx.user,
        SUPERUSER as u32,
        None,
    )]
}

pub fn build(name: &str, ctx: &Ctx<'_>) -> Option<(TableSchema, Vec<Vec<Value>>)> {
    let &(_, rel, spec) = lookup(name)?;
    let schema = TableSchema {
        name: name.to_string(),
        columns: columns(spec)
            .map(|(c, k)| ColumnDef {
                name: c.to_string(),
                data_type: kind_type(k),
                nullable: true,
                default: None,
            })
            .collect(),
        primary_key: Vec::new(),
        indexes: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    let r = || Row::new(spec);
    let tables = user_tables(ctx.state);
    let views = user_views(ctx.state);
    let (user, db) = (ctx.user, ctx.database);
    let rows: Vec<Row> = match rel {
        "pg_namespace" => vec![
            r().set("oid", PG_CATALOG)
                .set("nspname", "pg_catalog")
                .set("nspowner", SUPERUSER),
            r().set("oid", 99i64)
                .set("nspname", "pg_toast")
                .set("nspowner", SUPERUSER),
            r().set("oid", PUBLIC)
                .set("nspname", "public")
                .set("nspowner", DATABASE_OWNER_ROLE),
            r().set("oid", INFORMATION_SCHEMA)
                .set("nspname", "information_schema")
                .set("nspowner", SUPERUSER),
        ],
        "pg_class" => {
            let mut rows = Vec::new();
            for t in &tables {
                rows.push(
                    r().set("oid", t.oid)
                        .set("relname", t.name)
                        .set("relnamespace", PUBLIC)
                        .set("relowner", SUPERUSER)
                        .set("relam", HEAP_AM)
                        .set("relfilenode", t.oid)
                        .set("reltuples", V(Value::Float(-1.0)))
                        .set("relhasindex", !t.indexes.is_empty())
                        .set("relchecks", t.checks.len() as i64)
                        // PostgreSQL enforces foreign keys with triggers; psql looks for
                        // foreign keys (both ways) only where this is set.
                        .set(
                            "relhastriggers",
                            !t.foreign_keys.is_empty()
                                || tables
                                    .iter()
                                    .any(|o| o.foreign_keys.iter().any(|f| f.ref_table == t.name)),
                        )
                        .set("relpersistence", 'p')
                        .set("relkind", 'r')
                        .set("relnatts", t.cols.len() as i64)
                        .set("relispopulated", true)
                        .set("relreplident", 'd'),
                );
                for idx in &t.indexes {
                    rows.push(
                        r().set("oid", idx.oid)
                            .set("relname", idx.name.as_str())
                            .set("relnamespace", PUBLIC)
                            .set("relowner", SUPERUSER)
                            .set("relam", BTREE_AM)
                            .set("relfilenode", idx.oid)
                            .set("reltuples", V(Value::Float(-1.0)))
                            .set("relpersistence", 'p')
                            .set("relkind", 'i')
                            .set("relnatts", idx.attnums.len() as i64)
                            .set("relispopulated", true)
                            .set("relreplident", 'n'),
                    );
                }
            }
            for v in &views {
                rows.push(
                    r().set("oid", v.oid)
                        .set("relname", v.name)
                        .set("relnamespace", PUBLIC)
                        .set("relowner", SUPERUSER)
                        .set("relam", 0i64)
                        .set("reltuples", V(Value::Float(-1.0)))
                        .set("relpersistence", 'p')
                        .set("relkind", 'v')
                        .set("relnatts", v.info.columns.len() as i64)
                        .set("relispopulated", true)
                        .set("relreplident", 'n'),
                );
            }
            for (s, rel, spec) in RELATIONS {
                if rel.starts_with("tessera_") {
                    continue;
                }
                let view = *s == "information_schema"
                    || [
                        "pg_roles",
                        "pg_user",
                        "pg_settings",
                        "pg_tables",
                        "pg_indexes",
                        "pg_views",
                    ]
                    .contains(rel);
                rows.push(
                    r().set("oid", oid_of("catalog", &format!("{s}.{rel}")))
                        .set("relname", *rel)
                        .set(
                            "relnamespace",
                            if *s == "pg_catalog" {
                                PG_CATALOG
                            } else {
                                INFORMATION_SCHEMA
                            },
                        )
                        .set("relowner", SUPERUSER)
                        .set("relam", if view { 0 } else { HEAP_AM })
                        .set("relpersistence", 'p')
                        .set("relkind", if view { 'v' } else { 'r' })
                        .set("relnatts", columns(spec).count() as i64)
                        .set("relispopulated", true)
                        .set("relreplident", if view { 'n' } else { 'd' }),
                );
            }
            rows
        }
        "pg_attribute" => {
            let attr =
                |relid: i64, num: i64, name: &str, t: &DataType, notnull: bool, hasdef: bool| {
                    let ty = type_row(i64::from(t.oid()));
                    r().set("attrelid", relid)
                        .set("attname", name)
                        .set("atttypid", i64::from(t.oid()))
                        .set("attstattarget", -1i64)
                        .set("attlen", ty.map(|t| t.2).unwrap_or(-1))
                        .set("attnum", num)
                        .set("attcacheoff", -1i64)
                        .set("atttypmod", typmod(t))
                        .set("attbyval", ty.is_some_and(|t| t.3))
                        .set("attalign", ty.map(|t| t.5).unwrap_or('i'))
                        .set("attstorage", ty.map(|t| t.6).unwrap_or('p'))
                        .set("attnotnull", notnull)
                        .set("atthasdef", hasdef)
                        .set("attislocal", true)
                        .set("attcollation", ty.map(|t| t.8).unwrap_or(0))
                };
            let mut rows = Vec::new();
            for t in &tables {
                for (num, c) in &t.cols {
                    rows.push(attr(
                        t.oid,
                        *num,
                        &c.name,
                        &c.data_type,
                        !c.nullable || t.pkey.contains(num),
                        c.default.is_some(),
                    ));
                }
                for idx in &t.indexes {
                    for (i, num) in idx.attnums.iter().enumerate() {
                        if let Some((_, c)) = t.cols.iter().find(|(n, _)| n == num) {
                            rows.push(attr(
                                idx.oid,
                                i as i64 + 1,
                                &c.name,
                                &c.data_type,
                                false,
                                false,
                            ));
                        }
                    }
                }
            }
            for v in &views {
                for (i, c) in v.info.columns.iter().enumerate() {
                    rows.push(attr(
                        v.oid,
                        i as i64 + 1,
                        &c.name,
                        &c.data_type,
                        false,
                        false,
                    ));
                }
            }
            for (s, rel, spec) in RELATIONS {
                let relid = oid_of("catalog", &format!("{s}.{rel}"));
                for (i, (c, k)) in columns(spec).enumerate() {
                    rows.push(attr(relid, i as i64 + 1, c, &kind_type(k), false, false));
                }
            }
            rows
        }
        "pg_type" => TYPES
            .iter()
            .flat_map(
                |&(oid, name, len, byval, cat, align, storage, array, coll, pref, typtype)| {
                    let base = r()
                        .set("oid", oid)
                        .set("typname", name)
                        .set("typnamespace", PG_CATALOG)
                        .set("typowner", SUPERUSER)
                        .set("typlen", len)
                        .set("typbyval", byval)
                        .set("typtype", typtype)
                        .set("typcategory", cat)
                        .set("typispreferred", pref)
                        .set("typisdefined", true)
                        .set("typdelim", ',')
                        .set("typsubscript", "-")
                        // The vector types are arrays of int2 / oid.
                        .set(
                            "typelem",
                            match oid {
                                22 => 21,
                                30 => 26,
                                _ => 0i64,
                            },
                        )
                        .set("typarray", array)
                        .set("typinput", format!("{name}in"))
                        .set("typoutput", format!("{name}out"))
                        .set("typreceive", format!("{name}recv"))
                        .set("typsend", format!("{name}send"))
                        .set("typmodin", "-")
                        .set("typmodout", "-")
                        .set("typanalyze", "-")
                        .set("typalign", align)
                        .set("typstorage", storage)
                        .set("typtypmod", -1i64)
                        .set("typcollation", coll);
                    let arr = (array != 0).then(|| {
                        r().set("oid", array)
                            .set("typname", format!("_{name}"))
                            .set("typnamespace", PG_CATALOG)
                            .set("typowner", SUPERUSER)
                            .set("typlen", -1i64)
                            .set("typtype", 'b')
                            .set("typcategory", 'A')
                            .set("typisdefined", true)
                            .set("typdelim", ',')
                            .set("typsubscript", "array_subscript_handler")
                            .set("typelem", oid)
                            .set("typinput", "array_in")
                            .set("typoutput", "array_out")
                            .set("typreceive", "array_recv")
                            .set("typsend", "array_send")
                            .set("typmodin", "-")
                            .set("typmodout", "-")
                            .set("typanalyze", "array_typanalyze")
                            .set("typalign", if align == 'd' { 'd' } else { 'i' })
                            .set("typstorage", 'x')
                            .set("typtypmod", -1i64)
                            .set("typcollation", coll)
                    });
                    std::iter::once(base).chain(arr)
                },
            )
            .collect(),
        "pg_index" => tables
            .iter()
            .flat_map(|t| t.indexes.iter().map(move |idx| (t, idx)))
            .map(|(t, idx)| {
                let n = idx.attnums.len() as i64;
                let key: Vec<String> = idx.attnums.iter().map(|k| k.to_string()).collect();
                let zeros = vec!["0"; idx.attnums.len()].join(" ");
                // INDOPTION_DESC | INDOPTION_NULLS_FIRST: DESC sorts NULLs first by default.
                let options: Vec<&str> = idx
                    .desc
                    .iter()
                    .map(|d| if *d { "3" } else { "0" })
                    .collect();
                r().set("indexrelid", idx.oid)
                    .set("indrelid", t.oid)
                    .set("indnatts", n)
                    .set("indnkeyatts", n)
                    .set("indisunique", idx.unique)
                    .set("indisprimary", idx.primary)
                    .set("indimmediate", true)
                    .set("indisvalid", true)
                    .set("indisready", true)
                    .set("indislive", true)
                    .set("indkey", key.join(" "))
                    .set("indcollation", zeros.clone())
                    .set("indclass", zeros)
                    .set("indoption", options.join(" "))
            })
            .collect(),
        "pg_constraint" => {
            let mut rows = Vec::new();
            for t in &tables {
                for idx in t.indexes.iter().filter(|i| i.constraint.is_some()) {
                    let key: Vec<String> = idx.attnums.iter().map(|k| k.to_string()).collect();
                    rows.push(
                        r().set("oid", idx.constraint_oid)
                            .set("conname", idx.name.as_str())
                            .set("connamespace", PUBLIC)
                            .set("contype", idx.constraint.unwrap_or('u'))
                            .set("conparentid", 0i64)
                            .set("convalidated", true)
                            .set("conrelid", t.oid)
                            .set("conindid", idx.oid)
                            .set("confupdtype", ' ')
                            .set("confdeltype", ' ')
                            .set("confmatchtype", ' ')
                            .set("conislocal", true)
                            .set("connoinherit", true)
                            .set("conkey", format!("{{{}}}", key.join(","))),
                    );
                }
                for fk in &t.foreign_keys {
                    let list = |a: &[i64]| {
                        format!(
                            "{{{}}}",
                            a.iter()
                                .map(|k| k.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    };
                    rows.push(
                        r().set(
                            "oid",
                            oid_of("constraint", &format!("{}.{}", t.name, fk.name)),
                        )
                        .set("conname", fk.name.as_str())
                        .set("connamespace", PUBLIC)
                        .set("contype", 'f')
                        .set("conparentid", 0i64)
                        .set("convalidated", true)
                        .set("conrelid", t.oid)
                        .set("conindid", oid_of("index", &fk.ref_table))
                        .set("confrelid", oid_of("table", &fk.ref_table))
                        .set("confupdtype", fk.on_update)
                        .set("confdeltype", fk.on_delete)
                        .set("confmatchtype", 's')
                        .set("conislocal", true)
                        .set("connoinherit", true)
                        .set("conkey", list(&fk.attnums))
                        .set("confkey", list(&fk.ref_attnums)),
                    );
                }
                for (name, _) in &t.checks {
                    rows.push(
                        r().set("oid", oid_of("constraint", &format!("{}.{name}", t.name)))
                            .set("conname", name.as_str())
                            .set("connamespace", PUBLIC)
                            .set("contype", 'c')
                            .set("conparentid", 0i64)
                            .set("convalidated", true)
                            .set("conrelid", t.oid)
                            .set("conindid", 0i64)
                            .set("confupdtype", ' ')
                            .set("confdeltype", ' ')
                            .set("confmatchtype", ' ')
                            .set("conislocal", true)
                            .set("connoinherit", false)
                            .set("conkey", "{}"),
                    );
                }
            }
            rows
        }
        "pg_attrdef" => tables
            .iter()
            .flat_map(|t| {
                t.cols.iter().filter_map(move |(num, c)| {
                    let d = c.default.as_ref()?;
                    Some(
                        r().set("oid", oid_of("default", &format!("{}.{}", t.name, c.name)))
                            .set("adrelid", t.oid)
                            .set("adnum", *num)
                            .set("adbin", default_display(d, &c.data_type)),
                    )
                })
            })
            .collect(),
        "tessera_objdefs" => {
            let mut rows = Vec::new();
            for t in &tables {
                for idx in &t.indexes {
                    // Pretty-printed, a relation on the search path goes unqualified.
                    rows.push(
                        r().set("oid", idx.oid)
                            .set("def", idx.definition(t.name, true))
                            .set("pretty", idx.definition(t.name, false)),
                    );
                    if idx.constraint.is_some() {
                        let def = idx.constraint_definition();
                        rows.push(
                            r().set("oid", idx.constraint_oid)
                                .set("def", def.as_str())
                                .set("pretty", def.as_str()),
                        );
                    }
                }
                for fk in &t.foreign_keys {
                    rows.push(
                        r().set(
                            "oid",
                            oid_of("constraint", &format!("{}.{}", t.name, fk.name)),
                        )
                        .set("def", fk.definition.as_str())
                        .set("pretty", fk.definition.as_str()),
                    );
                }
                for (name, expr) in &t.checks {
                    rows.push(
                        r().set("oid", oid_of("constraint", &format!("{}.{name}", t.name)))
                            .set("def", format!("CHECK (({expr}))"))
                            .set("pretty", format!("CHECK ({expr})")),
                    );
                }
            }
            rows
        }
        "pg_database" => vec![
            r().set("oid", DATABASE_OID)
                .set("datname", db)
                .set("datdba", SUPERUSER)
                .set("encoding", 6i64)
                .set("datlocprovider", 'c')
                .set("datallowconn", true)
                .set("datconnlimit", -1i64)
                .set("dattablespace", DEFAULT_TABLESPACE)
                .set("datcollate", "C")
                .set("datctype", "C"),
        ],
        "pg_roles" | "pg_authid" => {
            let mut rows: Vec<_> = roles(ctx)
                .into_iter()
                .map(|role| {
                    let password = match (rel, &role.password) {
                        ("pg_roles", _) => Some("********".to_string()),
                        // PostgreSQL refuses pg_authid to others; here they see no hashes.
                        _ if !ctx.superuser => None,
                        (_, p) => p.clone(),
                    };
                    let mut row = r()
                        .set("oid", role.oid as i64)
                        .set("rolname", role.name.as_str())
                        .set("rolsuper", role.superuser)
                        .set("rolinherit", role.inherit)
                        .set("rolcreaterole", role.create_role)
                        .set("rolcreatedb", role.create_db)
                        .set("rolcanlogin", role.can_login)
                        .set("rolreplication", role.replication)
                        .set("rolbypassrls", role.bypass_rls)
                        .set("rolconnlimit", role.conn_limit as i64);
                    if let Some(p) = password {
                        row = row.set("rolpassword", p.as_str());
                    }
                    row
                })
                .collect();
            rows.push(
                r().set("oid", DATABASE_OWNER_ROLE)
                    .set("rolname", "pg_database_owner")
                    .set("rolinherit", true)
                    .set("rolconnlimit", -1i64),
            );
            rows
        }
        "pg_user" => roles(ctx)
            .into_iter()
            .filter(|role| role.can_login)
            .map(|role| {
                r().set("usename", role.name.as_str())
                    .set("usesysid", role.oid as i64)
                    .set("usecreatedb", role.create_db)
                    .set("usesuper", role.superuser)
                    .set("userepl", role.replication)
                    .set("usebypassrls", role.bypass_rls)
                    .set("passwd", "********")
            })
            .collect(),
        "pg_am" => vec![
            r().set("oid", HEAP_AM)
                .set("amname", "heap")
                .set("amhandler", "heap_tableam_handler")
                .set("amtype", 't'),
            r().set("oid", BTREE_AM)
                .set("amname", "btree")
                .set("amhandler", "bthandler")
                .set("amtype", 'i'),
        ],
        "pg_tablespace" => vec![
            r().set("oid", DEFAULT_TABLESPACE)
                .set("spcname", "pg_default")
                .set("spcowner", SUPERUSER),
            r().set("oid", 1664i64)
                .set("spcname", "pg_global")
                .set("spcowner", SUPERUSER),
        ],
        "pg_collation" => [
            (100i64, "default", 'd'),
            (950, "C", 'c'),
            (951, "POSIX", 'c'),
        ]
        .into_iter()
        .map(|(oid, name, provider)| {
            let locale = (provider == 'c').then(|| name.to_string());
            r().set("oid", oid)
                .set("collname", name)
                .set("collnamespace", PG_CATALOG)
                .set("collowner", SUPERUSER)
                .set("collprovider", provider)
                .set("collisdeterministic", true)
                .set("collencoding", if provider == 'd' { -1i64 } else { 6 })
                .set("collcollate", locale.clone())
                .set("collctype", locale)
        })
        .collect(),
        "pg_settings" => crate::session::DEFAULTS
            .iter()
            .map(|(name, value)| {
                r().set("name", *name)
                    .set("setting", *value)
                    .set("context", "user")
                    .set("vartype", "string")
                    .set("source", "default")
                    .set("boot_val", *value)
                    .set("reset_val", *value)
                    .set("pending_restart", false)
            })
            .collect(),
        "pg_tables" => tables
            .iter()
            .map(|t| {
                r().set("schemaname", "public")
                    .set("tablename", t.name)
                    .set("tableowner", user)
                    .set("tablespace", V(Value::Null))
                    .set("hasindexes", !t.indexes.is_empty())
            })
            .collect(),
        "pg_indexes" => tables
            .iter()
            .flat_map(|t| t.indexes.iter().map(move |idx| (t, idx)))
            .map(|(t, idx)| {
                r().set("schemaname", "public")
                    .set("tablename", t.name)
                    .set("indexname", idx.name.as_str())
                    .set("tablespace", V(Value::Null))
                    .set("indexdef", idx.definition(t.name, true))
            })
            .collect(),
        "pg_views" => views
            .iter()
            .map(|v| {
                r().set("schemaname", "public")
                    .set("viewname", v.name)
                    .set("viewowner", user)
                    .set("definition", format!(" {};", v.info.query))
            })
            .collect(),
        "views" => views
            .iter()
            .map(|v| {
                r().set("table_catalog", db)
                    .set("table_schema", "public")
                    .set("table_name", v.name)
                    .set("view_definition", format!(" {};", v.info.query))
                    .set("check_option", "NONE")
                    .set("is_updatable", "NO")
                    .set("is_insertable_into", "NO")
                    .set("is_trigger_updatable", "NO")
                    .set("is_trigger_deletable", "NO")
                    .set("is_trigger_insertable_into", "NO")
            })
            .collect(),
        "schemata" => ["information_schema", "pg_catalog", "pg_toast", "public"]
            .into_iter()
            .map(|s| {
                r().set("catalog_name", db)
                    .set("schema_name", s)
                    .set(
                        "schema_owner",
                        if s == "public" {
                            "pg_database_owner"
                        } else {
                            user
                        },
                    )
                    .set("default_character_set_catalog", V(Value::Null))
                    .set("default_character_set_schema", V(Value::Null))
                    .set("default_character_set_name", V(Value::Null))
            })
            .collect(),
        "tables" => {
            let mut rows: Vec<Row> = tables
                .iter()
                .map(|t| {
                    r().set("table_catalog", db)
                        .set("table_schema", "public")
                        .set("table_name", t.name)
                        .set("table_type", "BASE TABLE")
                        .set("is_insertable_into", "YES")
                        .set("is_typed", "NO")
                })
                .collect();
            for v in &views {
                rows.push(
                    r().set("table_catalog", db)
                        .set("table_schema", "public")
                        .set("table_name", v.name)
                        .set("table_type", "VIEW")
                        .set("is_insertable_into", "NO")
                        .set("is_typed", "NO"),
                );
            }
            for (s, rel, _) in RELATIONS
                .iter()
                .filter(|(_, r, _)| !r.starts_with("tessera_"))
            {
                let view = *s == "information_schema"
                    || [
                        "pg_roles",
                        "pg_user",
                        "pg_settings",
                        "pg_tables",
                        "pg_indexes",
                        "pg_views",
                    ]
                    .contains(rel);
                rows.push(
                    r().set("table_catalog", db)
                        .set("table_schema", *s)
                        .set("table_name", *rel)
                        .set("table_type", if view { "VIEW" } else { "BASE TABLE" })
                        .set("is_insertable_into", "NO")
                        .set("is_typed", "NO"),
                );
            }
            for row in rows.iter_mut() {
                for c in [
                    "self_referencing_column_name",
                    "user_defined_type_catalog",
                    "user_defined_type_schema",
                    "user_defined_type_name",
                ] {
                    if let Some(i) = columns(spec).position(|(n, _)| n == c) {
                        row.values[i] = Value::Null;
                    }
                }
            }
            rows
        }
        "columns" => tables
            .iter()
            .flat_map(|t| {
                t.cols.iter().map(move |(num, c)| {
                    let dt = &c.data_type;
                    let (prec, radix, scale) = match dt {
                        DataType::Int2 => (Some(16), Some(2), Some(0)),
                        DataType::Int4 => (Some(32), Some(2), Some(0)),
                        DataType::Int8 => (Some(64), Some(2), Some(0)),
                        DataType::Float4 => (Some(24), Some(2), None),
                        DataType::Float8 => (Some(53), Some(2), None),
                        DataType::Numeric(Some((p, s))) => {
                            (Some(i64::from(*p)), Some(10), Some(i64::from(*s)))
                        }
                        DataType::Numeric(None) => (None, Some(10), None),
                        _ => (None, None, None),
                    };
                    let (maxlen, octets) = match dt {
                        DataType::Varchar(Some(n)) | DataType::Bpchar(Some(n)) => {
                            (Some(i64::from(*n)), Some(i64::from(*n) * 4))
                        }
                        DataType::Varchar(None) | DataType::Bpchar(None) | DataType::Text => {
                            (None, Some(1_073_741_824))
                        }
                        _ => (None, None),
                    };
                    let dtp = match dt {
                        DataType::Date => Some(0),
                        DataType::Time
                        | DataType::Timestamp
                        | DataType::TimestampTz
                        | DataType::Interval => Some(6),
                        _ => None,
                    };
                    let udt = type_row(i64::from(dt.oid())).map(|t| t.1).unwrap_or("");
                    let notnull = !c.nullable || t.pkey.contains(num);
                    r().set("table_catalog", db)
                        .set("table_schema", "public")
                        .set("table_name", t.name)
                        .set("column_name", c.name.as_str())
                        .set("ordinal_position", *num)
                        .set(
                            "column_default",
                            c.default.as_ref().map(|d| default_display(d, dt)),
                        )
                        .set("is_nullable", if notnull { "NO" } else { "YES" })
                        .set("data_type", info_schema_type(dt))
                        .set("character_maximum_length", maxlen)
                        .set("character_octet_length", octets)
                        .set("numeric_precision", prec)
                        .set("numeric_precision_radix", radix)
                        .set("numeric_scale", scale)
                        .set("datetime_precision", dtp)
                        .set("interval_precision", V(Value::Null))
                        .set("character_set_catalog", V(Value::Null))
                        .set("character_set_schema", V(Value::Null))
                        .set("character_set_name", V(Value::Null))
                        .set("collation_catalog", V(Value::Null))
                        .set("collation_schema", V(Value::Null))
                        .set("collation_name", V(Value::Null))
                        .set("domain_catalog", V(Value::Null))
                        .set("domain_schema", V(Value::Null))
                        .set("domain_name", V(Value::Null))
                        .set("udt_catalog", db)
                        .set("udt_schema", "pg_catalog")
                        .set("udt_name", udt)
                        .set("scope_catalog", V(Value::Null))
                        .set("scope_schema", V(Value::Null))
                        .set("scope_name", V(Value::Null))
                        .set("maximum_cardinality", V(Value::Null))
                        .set("dtd_identifier", num.to_string())
                        .set("is_self_referencing", "NO")
                        .set("is_identity", "NO")
                        .set("is_generated", "NEVER")
                        .set("is_updatable", "YES")
                })
            })
            .collect(),
        "table_constraints" => {
            let row = |t: &Table<'_>, name: &str, kind: &str| {
                r().set("constraint_catalog", db)
                    .set("constraint_schema", "public")
                    .set("constraint_name", name)
                    .set("table_catalog", db)
                    .set("table_schema", "public")
                    .set("table_name", t.name)
                    .set("constraint_type", kind)
                    .set("is_deferrable", "NO")
                    .set("initially_deferred", "NO")
                    .set("enforced", "YES")
            };
            let mut rows = Vec::new();
            for t in &tables {
                for idx in t.indexes.iter().filter(|i| i.constraint.is_some()) {
                    let kind = if idx.primary { "PRIMARY KEY" } else { "UNIQUE" };
                    rows.push(row(t, &idx.name, kind));
                }
                for (name, _) in &t.checks {
                    rows.push(row(t, name, "CHECK"));
                }
            }
            rows
        }
        "key_column_usage" => tables
            .iter()
            .flat_map(|t| {
                t.indexes
                    .iter()
                    .filter(|i| i.constraint.is_some())
                    .flat_map(move |idx| {
                        idx.columns.iter().enumerate().map(move |(i, c)| {
                            r().set("constraint_catalog", db)
                                .set("constraint_schema", "public")
                                .set("constraint_name", idx.name.as_str())
                                .set("table_catalog", db)
                                .set("table_schema", "public")
                                .set("table_name", t.name)
                                .set("column_name", c.as_str())
                                .set("ordinal_position", i as i64 + 1)
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((schema, rows.into_iter().map(|r| r.values).collect()))
}
