//! Plans: what binding makes of a statement, and what execution runs.
//!
//! A query plan is a small tree in the spirit of toyDB's: a row [`Source`] (table scan, join,
//! subquery, or the single empty row of a FROM-less SELECT), then filter, grouping,
//! projection, DISTINCT, sort and LIMIT. Everything here is already name-resolved and
//! type-checked, so `describe` can answer from a plan without running it, and execution
//! (`exec.rs`) needs no catalog lookups beyond the scans themselves.

use protocol::schema::{ResultColumn, TableSchema};

use super::aggregate::AggCall;
use super::expr::Expr;
use super::recursive::Recursion;
use super::window::WindowCall;

/// A query: a body, then the clauses that apply to its output rows.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryPlan {
    pub body: Node,
    /// The visible output columns; the body's rows may carry `hidden` more after them.
    pub columns: Vec<ResultColumn>,
    pub distinct: bool,
    pub order: Vec<SortKey>,
    /// Trailing sort-only columns (`ORDER BY` expressions not in the SELECT list).
    pub hidden: usize,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
    /// FETCH … WITH TIES: rows that sort equal to the last one kept are kept too.
    pub with_ties: bool,
    /// DISTINCT ON: positions in the body's row whose values pick one row each (the first
    /// in ORDER BY order).
    pub distinct_on: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    /// Position in the body's output row.
    pub column: usize,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Select(Box<SelectNode>),
    /// `VALUES (...), (...)`: expressions over no input.
    Values(Vec<Vec<Expr>>),
    SetOp {
        op: SetOp,
        all: bool,
        left: Box<QueryPlan>,
        right: Box<QueryPlan>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SetOp {
    Union,
    Intersect,
    Except,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SelectNode {
    pub source: Source,
    pub filter: Option<Expr>,
    /// Present when the SELECT aggregates; `projection` and `having` then read the aggregated
    /// row: the group key values followed by the aggregate results.
    pub grouping: Option<Grouping>,
    pub having: Option<Expr>,
    /// Window calls, computed after HAVING over the (grouped) rows and appended to each row
    /// as extra columns, which `projection` reads.
    pub windows: Vec<WindowCall>,
    /// Output expressions, visible ones first, then hidden sort keys.
    pub projection: Vec<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Grouping {
    pub keys: Vec<Expr>,
    pub aggregates: Vec<AggCall>,
}

#[derive(Clone, Debug, PartialEq)]
// A plan is built once per statement and walked by reference: the size of a variant costs
// nothing that matters, and boxing the schema would only add indirection.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// One row with no columns: the input of `SELECT 1`.
    Unit,
    Scan {
        schema: TableSchema,
        access: Access,
    },
    Subquery(Box<QueryPlan>),
    Join(Box<JoinNode>),
    /// A WITH RECURSIVE query, run to its fixpoint.
    Recursive(Box<Recursion>),
    /// The self-reference inside a recursive term: the previous iteration's rows.
    WorkingTable {
        id: usize,
        width: usize,
    },
}

impl Source {
    /// How many columns the source's rows have.
    pub fn width(&self) -> usize {
        match self {
            Source::Unit => 0,
            Source::Scan { schema, .. } => schema.columns.len(),
            Source::Subquery(q) => q.columns.len(),
            Source::Join(j) => j.left.width() + j.right.width(),
            Source::Recursive(r) => r.columns.len(),
            Source::WorkingTable { width, .. } => *width,
        }
    }
}

/// How a scan reaches its rows. Every choice reads a superset of the rows the WHERE clause
/// keeps (the filter still runs), so a key that cannot be computed falls back to `Full`.
#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    Full,
    /// Every primary-key column is pinned by `=`: one point lookup.
    Key(Vec<Expr>),
    /// The leading primary-key columns are pinned: a scan of that key prefix.
    Prefix(Vec<Expr>),
    /// A single-column integer key bounded by `<`, `<=`, `>`, `>=` (bool: inclusive).
    Range {
        lower: Option<(Expr, bool)>,
        upper: Option<(Expr, bool)>,
    },
    /// A secondary index: its leading columns pinned by `=` (`eq`), and the next one
    /// optionally bounded (bool: inclusive). Rows are fetched by the keys its entries hold.
    Index {
        name: String,
        eq: Vec<Expr>,
        lower: Option<(Expr, bool)>,
        upper: Option<(Expr, bool)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JoinNode {
    pub left: Source,
    pub right: Source,
    pub kind: JoinKind,
    /// Equality pairs (left side expression, right side expression) used as a hash join
    /// key; both are bound over the combined row.
    pub equi: Vec<(Expr, Expr)>,
    /// The rest of the ON condition, over the combined row.
    pub on: Option<Expr>,
}

/// RETURNING or a SELECT list over one table's rows.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Projection {
    pub exprs: Vec<Expr>,
    pub columns: Vec<ResultColumn>,
}
