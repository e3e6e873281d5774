//! Bound expressions and their evaluation.
//!
//! Binding (`bind.rs`) turns sqlparser's `Expr` into this smaller tree: names become row
//! positions, literals become values of their final type, and every operator has already been
//! type-checked, so evaluation only computes. Evaluation follows SQL's three-valued logic: NULL
//! propagates through operators, AND/OR treat it as "unknown", and a WHERE keeps a row only
//! when its condition is true.
//!
//! A column reference carries a `depth`: 0 is the current row, 1 the row of the enclosing
//! query (for correlated subqueries), and so on up the [`Env`] chain.

use std::cmp::Ordering;
use std::sync::OnceLock;

use protocol::{DataType, Error, Result, Value, sqlstate};

use super::functions::Func;
use super::plan::QueryPlan;
use super::types::{self, Ty};
use crate::txn::ReadTxn;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    /// The bitwise operators `&`, `|`, `#` (xor), `<<` and `>>`, on integers only.
    BitAnd,
    BitOr,
    BitXor,
    ShiftLeft,
    ShiftRight,
}

impl ArithOp {
    pub fn is_bitwise(self) -> bool {
        matches!(
            self,
            ArithOp::BitAnd
                | ArithOp::BitOr
                | ArithOp::BitXor
                | ArithOp::ShiftLeft
                | ArithOp::ShiftRight
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    /// The comparison a binary operator is, if it is one (`=`, `<>`, `<`, `<=`, `>`, `>=`).
    pub(super) fn of(op: &sqlparser::ast::BinaryOperator) -> Option<CmpOp> {
        use sqlparser::ast::BinaryOperator as B;
        Some(match op {
            B::Eq => CmpOp::Eq,
            B::NotEq => CmpOp::NotEq,
            B::Lt => CmpOp::Lt,
            B::LtEq => CmpOp::LtEq,
            B::Gt => CmpOp::Gt,
            B::GtEq => CmpOp::GtEq,
            _ => return None,
        })
    }

    pub(super) fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }

    /// The same comparison with its operands swapped (`1 < x` is `x > 1`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }
}

/// A subquery used as an expression. An uncorrelated one runs once per statement; its rows
/// are kept in `cache`.
#[derive(Clone, Debug, PartialEq)]
pub struct SubqueryExpr {
    pub plan: Box<QueryPlan>,
    pub correlated: bool,
    pub cache: OnceLock<Vec<Vec<Value>>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(Value),
    Column {
        depth: usize,
        index: usize,
    },
    /// A 0-based parameter position; values are converted to their inferred types up front.
    Param(usize),
    Negate {
        expr: Box<Expr>,
        ty: DataType,
    },
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: DataType,
    },
    Compare {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Concat(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// `IS [NOT] TRUE` / `IS [NOT] FALSE`, which never yield NULL.
    IsBool {
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    IsDistinct {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<Box<Expr>>,
        case_insensitive: bool,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Coalesce(Vec<Expr>),
    Cast {
        expr: Box<Expr>,
        from: Ty,
        to: DataType,
    },
    Function {
        func: Func,
        args: Vec<Expr>,
    },
    /// An array operation or set-returning function (see `arrays.rs`).
    Array {
        op: super::arrays::ArrayOp,
        args: Vec<Expr>,
    },
    Subquery(SubqueryExpr),
    Exists {
        subquery: SubqueryExpr,
        negated: bool,
    },
    InSubquery {
        expr: Box<Expr>,
        subquery: SubqueryExpr,
        negated: bool,
    },
    /// `expr op ANY (subquery)` (`all` false) or `expr op ALL (subquery)`.
    Quantified {
        expr: Box<Expr>,
        op: CmpOp,
        subquery: SubqueryExpr,
        all: bool,
    },
    /// The i-th aggregate of the enclosing SELECT; exists only during binding, which rewrites
    /// it into a column of the aggregated row.
    Aggregate(usize),
    /// The i-th window call of the enclosing SELECT; binding rewrites it into the column the
    /// window's values are appended as.
    Window(usize),
}

/// What evaluation needs from the statement: its snapshot (for subqueries) and parameters.
pub struct Ctx<'a> {
    pub txn: &'a dyn ReadTxn,
    pub params: &'a [Value],
    /// The working rows of each running WITH RECURSIVE (by `Recursion::id`).
    working: std::cell::RefCell<std::collections::HashMap<usize, Vec<Vec<Value>>>>,
    /// Bytes of intermediate rows the statement may still hold (see `charge`).
    budget: std::cell::Cell<usize>,
}

/// The memory one statement's intermediate results may take on a shard (or at the router),
/// in bytes; set once per process from its configuration (`--query-memory-mb`).
pub static QUERY_MEMORY: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(1 << 30);

/// A rough size of a row in memory.
pub(super) fn row_bytes(row: &[Value]) -> usize {
    24 + row
        .iter()
        .map(|v| match v {
            Value::Text(s) | Value::Json(s) | Value::Jsonb(s) | Value::BpChar(s) => 32 + s.len(),
            Value::Bytes(b) => 32 + b.len(),
            Value::Array(items) => 32 + row_bytes(items),
            _ => 32,
        })
        .sum::<usize>()
}

impl<'a> Ctx<'a> {
    pub fn new(txn: &'a dyn ReadTxn, params: &'a [Value]) -> Self {
        Ctx {
            txn,
            params,
            working: Default::default(),
            budget: std::cell::Cell::new(QUERY_MEMORY.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }

    /// Counts rows an operator holds (scans, join outputs, groups, sorts) against the
    /// statement's memory budget: past it the statement fails with 53200 instead of growing
    /// without bound. Tessera does not spill to disk.
    pub fn charge(&self, rows: &[Vec<Value>]) -> Result<()> {
        self.reserve(rows.iter().map(|r| row_bytes(r)).sum())
    }

    /// Takes `bytes` from the statement's budget (53200 when it is spent).
    pub fn reserve(&self, bytes: usize) -> Result<()> {
        let left = self.budget.get();
        if bytes > left {
            let limit = QUERY_MEMORY.load(std::sync::atomic::Ordering::Relaxed);
            return Err(Error::new(
                sqlstate::OUT_OF_MEMORY,
                "out of memory",
            )
            .with_detail(format!(
                "The statement's intermediate results need more than the {} MB a statement may hold (query memory budget).",
                limit >> 20
            )));
        }
        self.budget.set(left - bytes);
        Ok(())
    }

    pub fn set_working(&self, id: usize, rows: Vec<Vec<Value>>) {
        self.working.borrow_mut().insert(id, rows);
    }

    pub fn clear_working(&self, id: usize) {
        self.working.borrow_mut().remove(&id);
    }

    /// The current working rows of recursion `id` (none outside its recursive term).
    pub fn working(&self, id: usize) -> Vec<Vec<Value>> {
        self.working.borrow().get(&id).cloned().unwrap_or_default()
    }
}

/// The row an expression sees, and the rows of the queries around it.
pub struct Env<'a> {
    pub row: &'a [Value],
    pub outer: Option<&'a Env<'a>>,
    pub ctx: &'a Ctx<'a>,
}

impl<'a> Env<'a> {
    pub fn new(row: &'a [Value], outer: Option<&'a Env<'a>>, ctx: &'a Ctx<'a>) -> Self {
        Env { row, outer, ctx }
    }

    fn column(&self, depth: usize, index: usize) -> Result<Value> {
        let mut env = self;
        for _ in 0..depth {
            env = env
                .outer
                .ok_or_else(|| Error::internal("outer column reference without an outer row"))?;
        }
        env.row
            .get(index)
            .cloned()
            .ok_or_else(|| Error::internal("column reference out of range"))
    }
}

fn truth(v: &Value) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(Error::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "argument of boolean operator must be type boolean, not type {}",
                other.type_name()
            ),
        )),
    }
}

fn from_truth(b: Option<bool>) -> Value {
    b.map(Value::Bool).unwrap_or(Value::Null)
}

impl Expr {
    pub fn boxed(self) -> Box<Expr> {
        Box::new(self)
    }

    /// True if the expression reads nothing of the current row, so it is one value for a
    /// whole scan (literals, parameters, outer columns).
    pub fn is_row_independent(&self) -> bool {
        let mut independent = true;
        self.walk(&mut |e| match e {
            Expr::Column { depth: 0, .. }
            | Expr::Subquery(_)
            | Expr::Exists { .. }
            | Expr::InSubquery { .. }
            | Expr::Quantified { .. } => independent = false,
            Expr::Aggregate(_) | Expr::Window(_) => independent = false,
            _ => {}
        });
        independent
    }

    /// True for a NULL literal, possibly cast (`NULL`, `CAST(NULL AS int)`, `-NULL`).
    pub fn is_null_constant(&self) -> bool {
        match self {
            Expr::Const(Value::Null) => true,
            Expr::Cast { expr, .. } | Expr::Negate { expr, .. } => expr.is_null_constant(),
            // Strict operators over a NULL constant fold to NULL.
            Expr::Arith { left, right, .. } | Expr::Compare { left, right, .. } => {
                left.is_null_constant() || right.is_null_constant()
            }
            _ => false,
        }
    }

    /// Visits this expression and its sub-expressions (not into subqueries).
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Const(_)
            | Expr::Column { .. }
            | Expr::Param(_)
            | Expr::Aggregate(_)
            | Expr::Window(_) => {}
            Expr::Subquery(_) | Expr::Exists { .. } => {}
            Expr::Negate { expr, .. }
            | Expr::Not(expr)
            | Expr::IsNull { expr, .. }
            | Expr::IsBool { expr, .. } => expr.walk(f),
            Expr::Cast { expr, .. }
            | Expr::InSubquery { expr, .. }
            | Expr::Quantified { expr, .. } => expr.walk(f),
            Expr::Arith { left, right, .. }
            | Expr::Compare { left, right, .. }
            | Expr::Concat(left, right)
            | Expr::And(left, right)
            | Expr::Or(left, right)
            | Expr::IsDistinct { left, right, .. } => {
                left.walk(f);
                right.walk(f);
            }
            Expr::InList { expr, list, .. } => {
                expr.walk(f);
                list.iter().for_each(|e| e.walk(f));
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                ..
            } => {
                expr.walk(f);
                pattern.walk(f);
                if let Some(e) = escape {
                    e.walk(f);
                }
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.walk(f);
                }
                for (w, t) in whens {
                    w.walk(f);
                    t.walk(f);
                }
                if let Some(o) = otherwise {
                    o.walk(f);
                }
            }
            Expr::Coalesce(args) | Expr::Function { args, .. } | Expr::Array { args, .. } => {
                args.iter().for_each(|e| e.walk(f))
            }
        }
    }

    /// Rebuilds the expression with `f` applied to each immediate child (not into subqueries).
    pub fn map_children(self, f: &mut dyn FnMut(Expr) -> Result<Expr>) -> Result<Expr> {
        let t = |e: Box<Expr>, f: &mut dyn FnMut(Expr) -> Result<Expr>| -> Result<Box<Expr>> {
            Ok(Box::new(f(*e)?))
        };
        Ok(match self {
            Expr::Negate { expr, ty } => Expr::Negate {
                expr: t(expr, f)?,
                ty,
            },
            Expr::Not(e) => Expr::Not(t(e, f)?),
            Expr::IsNull { expr, negated } => Expr::IsNull {
                expr: t(expr, f)?,
                negated,
            },
            Expr::IsBool {
                expr,
                value,
                negated,
            } => Expr::IsBool {
                expr: t(expr, f)?,
                value,
                negated,
            },
            Expr::Cast { expr, from, to } => Expr::Cast {
                expr: t(expr, f)?,
                from,
                to,
            },
            Expr::InSubquery {
                expr,
                subquery,
                negated,
            } => Expr::InSubquery {
                expr: t(expr, f)?,
                subquery,
                negated,
            },
            Expr::Quantified {
                expr,
                op,
                subquery,
                all,
            } => Expr::Quantified {
                expr: t(expr, f)?,
                op,
                subquery,
                all,
            },
            Expr::Arith {
                op,
                left,
                right,
                ty,
            } => Expr::Arith {
                op,
                left: t(left, f)?,
                right: t(right, f)?,
                ty,
            },
            Expr::Compare { op, left, right } => Expr::Compare {
                op,
                left: t(left, f)?,
                right: t(right, f)?,
            },
            Expr::Concat(l, r) => Expr::Concat(t(l, f)?, t(r, f)?),
            Expr::And(l, r) => Expr::And(t(l, f)?, t(r, f)?),
            Expr::Or(l, r) => Expr::Or(t(l, f)?, t(r, f)?),
            Expr::IsDistinct {
                left,
                right,
                negated,
            } => Expr::IsDistinct {
                left: t(left, f)?,
                right: t(right, f)?,
                negated,
            },
            Expr::InList {
                expr,
                list,
                negated,
            } => Expr::InList {
                expr: t(expr, f)?,
                list: list.into_iter().map(&mut *f).collect::<Result<_>>()?,
                negated,
            },
            Expr::Like {
                expr,
                pattern,
                escape,
                case_insensitive,
                negated,
            } => Expr::Like {
                expr: t(expr, f)?,
                pattern: t(pattern, f)?,
                escape: escape.map(|e| t(e, f)).transpose()?,
                case_insensitive,
                negated,
            },
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => Expr::Case {
                operand: operand.map(|e| t(e, f)).transpose()?,
                whens: whens
                    .into_iter()
                    .map(|(w, r)| Ok((f(w)?, f(r)?)))
                    .collect::<Result<_>>()?,
                otherwise: otherwise.map(|e| t(e, f)).transpose()?,
            },
            Expr::Coalesce(args) => {
                Expr::Coalesce(args.into_iter().map(&mut *f).collect::<Result<_>>()?)
            }
            Expr::Function { func, args } => Expr::Function {
                func,
                args: args.into_iter().map(&mut *f).collect::<Result<_>>()?,
            },
            Expr::Array { op, args } => Expr::Array {
                op,
                args: args.into_iter().map(&mut *f).collect::<Result<_>>()?,
            },
            leaf => leaf,
        })
    }

    pub fn eval(&self, env: &Env) -> Result<Value> {
        Ok(match self {
            Expr::Const(v) => v.clone(),
            Expr::Column { depth, index } => env.column(*depth, *index)?,
            Expr::Param(i) => env.ctx.params.get(*i).cloned().ok_or_else(|| {
                Error::new(
                    sqlstate::UNDEFINED_PARAMETER,
                    format!("there is no parameter ${}", i + 1),
                )
            })?,
            Expr::Negate { expr, ty } => match expr.eval(env)? {
                Value::Null => Value::Null,
                Value::Int(i) => types::check_int(i.checked_neg(), ty)?,
                Value::Float(f) => Value::Float(-f),
                Value::Numeric(n) => Value::Numeric(n.neg()),
                Value::Interval(i) => Value::Interval(i.neg()?),
                other => {
                    return Err(Error::internal(format!(
                        "cannot negate {}",
                        other.type_name()
                    )));
                }
            },
            // A strict operator with a NULL constant operand is NULL; like PostgreSQL's
            // constant folding, the other operand is then never evaluated (`1/0 % NULL`).
            Expr::Arith { left, right, .. } | Expr::Compare { left, right, .. }
                if left.is_null_constant() || right.is_null_constant() =>
            {
                Value::Null
            }
            Expr::Arith {
                op,
                left,
                right,
                ty,
            } => arith(*op, left.eval(env)?, right.eval(env)?, ty)?,
            Expr::Array { op, args } => super::arrays::eval(*op, args, env)?,
            Expr::Compare { op, left, right } => {
                let (l, r) = (left.eval(env)?, right.eval(env)?);
                from_truth(l.sql_cmp(&r).map(|o| op.holds(o)))
            }
            Expr::Concat(l, r) => match (l.eval(env)?, r.eval(env)?) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (a, b) => Value::Text(format!("{}{}", text_of(&a), text_of(&b))),
            },
            Expr::And(l, r) => {
                // SQL does not fix the order: an error on one side does not matter when the
                // other side is false (PostgreSQL folds `1/y = 5 AND 1 = 2` to false).
                let a = match l.eval(env).and_then(|v| truth(&v)) {
                    Ok(a) => a,
                    Err(e) => match truth(&r.eval(env)?) {
                        Ok(Some(false)) => return Ok(Value::Bool(false)),
                        _ => return Err(e),
                    },
                };
                if a == Some(false) {
                    return Ok(Value::Bool(false));
                }
                let b = truth(&r.eval(env)?)?;
                from_truth(match (a, b) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                })
            }
            Expr::Or(l, r) => {
                let a = match l.eval(env).and_then(|v| truth(&v)) {
                    Ok(a) => a,
                    Err(e) => match truth(&r.eval(env)?) {
                        Ok(Some(true)) => return Ok(Value::Bool(true)),
                        _ => return Err(e),
                    },
                };
                if a == Some(true) {
                    return Ok(Value::Bool(true));
                }
                let b = truth(&r.eval(env)?)?;
                from_truth(match (a, b) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                })
            }
            Expr::Not(e) => from_truth(truth(&e.eval(env)?)?.map(|b| !b)),
            Expr::IsNull { expr, negated } => Value::Bool(expr.eval(env)?.is_null() != *negated),
            Expr::IsBool {
                expr,
                value,
                negated,
            } => {
                let is = truth(&expr.eval(env)?)? == Some(*value);
                Value::Bool(is != *negated)
            }
            Expr::IsDistinct {
                left,
                right,
                negated,
            } => {
                let (l, r) = (left.eval(env)?, right.eval(env)?);
                let distinct = match (&l, &r) {
                    (Value::Null, Value::Null) => false,
                    (Value::Null, _) | (_, Value::Null) => true,
                    _ => l.sql_cmp(&r) != Some(Ordering::Equal),
                };
                Value::Bool(distinct != *negated)
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let v = expr.eval(env)?;
                let mut items = Vec::with_capacity(list.len());
                for e in list {
                    items.push(e.eval(env)?);
                }
                in_values(&v, items.iter(), *negated)
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                case_insensitive,
                negated,
            } => {
                let (v, p) = (expr.eval(env)?, pattern.eval(env)?);
                let esc = match escape {
                    Some(e) => match e.eval(env)? {
                        Value::Null => return Ok(Value::Null),
                        Value::Text(s) => s.chars().next(),
                        other => Some(text_of(&other).chars().next().unwrap_or('\\')),
                    },
                    None => Some('\\'),
                };
                match (v, p) {
                    (Value::Null, _) | (_, Value::Null) => Value::Null,
                    (v, p) => {
                        let (mut s, mut p) = (text_of(&v), text_of(&p));
                        if *case_insensitive {
                            s = s.to_lowercase();
                            p = p.to_lowercase();
                        }
                        Value::Bool(like(&s, &p, esc)? != *negated)
                    }
                }
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                let subject = operand.as_ref().map(|o| o.eval(env)).transpose()?;
                for (when, then) in whens {
                    let w = when.eval(env)?;
                    let hit = match &subject {
                        Some(s) => s.sql_cmp(&w) == Some(Ordering::Equal),
                        None => truth(&w)? == Some(true),
                    };
                    if hit {
                        return then.eval(env);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(env)?,
                    None => Value::Null,
                }
            }
            Expr::Coalesce(args) => {
                for a in args {
                    let v = a.eval(env)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Value::Null
            }
            Expr::Cast { expr, from, to } => types::cast(expr.eval(env)?, *from, to)?,
            Expr::Function { func, args } => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(env)?);
                }
                func.eval(vals)?
            }
            Expr::Subquery(sq) => {
                let rows = sq.rows(env)?;
                match rows.len() {
                    0 => Value::Null,
                    1 => rows[0].first().cloned().unwrap_or(Value::Null),
                    _ => {
                        return Err(Error::new(
                            sqlstate::CARDINALITY_VIOLATION,
                            "more than one row returned by a subquery used as an expression",
                        ));
                    }
                }
            }
            Expr::Exists { subquery, negated } => {
                Value::Bool(subquery.rows(env)?.is_empty() == *negated)
            }
            Expr::InSubquery {
                expr,
                subquery,
                negated,
            } => {
                // An empty subquery decides alone (PostgreSQL does not evaluate the left
                // side then: `1/0 NOT IN (empty)` is true).
                let rows = subquery.rows(env)?;
                if rows.is_empty() {
                    return Ok(Value::Bool(*negated));
                }
                let v = expr.eval(env)?;
                in_values(&v, rows.iter().filter_map(|r| r.first()), *negated)
            }
            Expr::Quantified {
                expr,
                op,
                subquery,
                all,
            } => {
                let rows = subquery.rows(env)?;
                if rows.is_empty() {
                    return Ok(Value::Bool(*all));
                }
                let v = expr.eval(env)?;
                quantified(&v, *op, *all, rows.iter().filter_map(|r| r.first()))
            }
            Expr::Aggregate(_) => {
                return Err(Error::internal("aggregate evaluated outside aggregation"));
            }
            Expr::Window(_) => {
                return Err(Error::internal(
                    "window function evaluated outside its SELECT",
                ));
            }
        })
    }

    /// Evaluates a condition: only a true result keeps a row.
    pub fn is_true(&self, env: &Env) -> Result<bool> {
        Ok(truth(&self.eval(env)?)? == Some(true))
    }
}

impl SubqueryExpr {
    pub fn new(plan: QueryPlan, correlated: bool) -> Self {
        SubqueryExpr {
            plan: Box::new(plan),
            correlated,
            cache: OnceLock::new(),
        }
    }

    fn rows<'e>(&'e self, env: &Env) -> Result<std::borrow::Cow<'e, [Vec<Value>]>> {
        if self.correlated {
            return Ok(std::borrow::Cow::Owned(super::exec::run_query(
                &self.plan,
                env.ctx,
                Some(env),
            )?));
        }
        if let Some(rows) = self.cache.get() {
            return Ok(std::borrow::Cow::Borrowed(rows));
        }
        let rows = super::exec::run_query(&self.plan, env.ctx, Some(env))?;
        Ok(std::borrow::Cow::Borrowed(self.cache.get_or_init(|| rows)))
    }
}

/// `x op ANY (items)` (`all` false) or `x op ALL (items)`: ANY is true if one comparison
/// holds, ALL false if one fails; NULL where only unknown comparisons would decide. No items
/// make ANY false and ALL true.
pub(super) fn quantified<'v>(
    x: &Value,
    op: CmpOp,
    all: bool,
    items: impl Iterator<Item = &'v Value>,
) -> Value {
    let mut unknown = false;
    for item in items {
        match x.sql_cmp(item).map(|o| op.holds(o)) {
            Some(true) if !all => return Value::Bool(true),
            Some(false) if all => return Value::Bool(false),
            None => unknown = true,
            _ => {}
        }
    }
    if unknown {
        Value::Null
    } else {
        Value::Bool(all)
    }
}

/// `v IN (items)`: true on a match, NULL if no match but a NULL was involved, else false.
fn in_values<'v>(v: &Value, items: impl Iterator<Item = &'v Value>, negated: bool) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    let mut saw_null = false;
    for item in items {
        match v.sql_cmp(item) {
            Some(Ordering::Equal) => return Value::Bool(!negated),
            None => saw_null = true,
            _ => {}
        }
    }
    if saw_null {
        Value::Null
    } else {
        Value::Bool(negated)
    }
}

/// The text form of a value for `||` and string functions.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        // character(n) becomes text without its trailing blanks.
        Value::BpChar(s) => s.trim_end_matches(' ').to_string(),
        Value::Float(f) => protocol::value::format_float(*f, false),
        other => other.to_pg_text(&DataType::Text).unwrap_or_default(),
    }
}

fn division_by_zero() -> Error {
    Error::new(sqlstate::DIVISION_BY_ZERO, "division by zero")
}

fn arith(op: ArithOp, l: Value, r: Value, ty: &DataType) -> Result<Value> {
    match (l, r) {
        (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
        (Value::Int(a), Value::Int(b)) if ty.is_integer() => types::check_int(
            match op {
                ArithOp::Add => a.checked_add(b),
                ArithOp::Sub => a.checked_sub(b),
                ArithOp::Mul => a.checked_mul(b),
                ArithOp::Div if b == 0 => return Err(division_by_zero()),
                ArithOp::Div => a.checked_div(b),
                ArithOp::Mod if b == 0 => return Err(division_by_zero()),
                // i64::MIN % -1 overflows in Rust but is 0 in SQL.
                ArithOp::Mod => Some(a.checked_rem(b).unwrap_or(0)),
                ArithOp::BitAnd => Some(a & b),
                ArithOp::BitOr => Some(a | b),
                ArithOp::BitXor => Some(a ^ b),
                // As PostgreSQL computes them in C on x86-64: int2 and int4 shift as a 32-bit
                // int (count taken mod 32; int2 then truncated), int8 as 64-bit (mod 64).
                ArithOp::ShiftLeft | ArithOp::ShiftRight => {
                    let left = op == ArithOp::ShiftLeft;
                    Some(match ty {
                        DataType::Int2 | DataType::Int4 => {
                            let n = (b & 31) as u32;
                            let v = if left {
                                (a as i32).wrapping_shl(n)
                            } else {
                                (a as i32) >> n
                            };
                            if *ty == DataType::Int2 {
                                i64::from(v as i16)
                            } else {
                                i64::from(v)
                            }
                        }
                        _ => {
                            let n = (b & 63) as u32;
                            if left { a.wrapping_shl(n) } else { a >> n }
                        }
                    })
                }
            },
            ty,
        ),
        (a, b) if op.is_bitwise() => Err(Error::internal(format!(
            "bitwise operation on {} and {}",
            a.type_name(),
            b.type_name()
        ))),
        (a, b) if matches!(ty, DataType::Numeric(_)) => {
            let num = |v: &Value| match v {
                Value::Int(i) => Some(protocol::value::Numeric::from_i64(*i)),
                Value::Numeric(n) => Some(*n),
                _ => None,
            };
            let (Some(x), Some(y)) = (num(&a), num(&b)) else {
                return Err(Error::internal(format!(
                    "numeric arithmetic on {} and {}",
                    a.type_name(),
                    b.type_name()
                )));
            };
            Ok(Value::Numeric(match op {
                ArithOp::Add => x.add(y)?,
                ArithOp::Sub => x.sub(y)?,
                ArithOp::Mul => x.mul(y)?,
                ArithOp::Div => x.div(y)?,
                ArithOp::Mod => x.rem(y)?,
                _ => return Err(Error::internal("bitwise operation on numeric")),
            }))
        }
        (a, b) if !ty.is_numeric() || !is_number(&a) || !is_number(&b) => {
            super::datetime::arith(op, a, b, ty)
        }
        (a, b) => {
            let (Some(x), Some(y)) = (as_f64(&a), as_f64(&b)) else {
                return Err(Error::internal(format!(
                    "arithmetic on {} and {}",
                    a.type_name(),
                    b.type_name()
                )));
            };
            let out = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div if y == 0.0 => return Err(division_by_zero()),
                ArithOp::Div => x / y,
                ArithOp::Mod if y == 0.0 => return Err(division_by_zero()),
                ArithOp::Mod => x % y,
                _ => return Err(Error::internal("bitwise operation on a float")),
            };
            let underflow = match op {
                ArithOp::Mul => x != 0.0 && y != 0.0,
                ArithOp::Div => x != 0.0 && !y.is_infinite(),
                _ => false,
            };
            types::check_float_range(out, x.is_finite() && y.is_finite(), underflow, ty)
        }
    }
}

pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Numeric(n) => Some(n.to_f64()),
        _ => None,
    }
}

fn is_number(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::Float(_) | Value::Numeric(_))
}

enum LikeToken {
    AnySeq,
    AnyOne,
    Lit(char),
}

/// SQL LIKE: `%` matches any sequence, `_` one character, `escape` quotes the next one.
pub fn like(s: &str, pattern: &str, escape: Option<char>) -> Result<bool> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            c if Some(c) == escape => match chars.next() {
                Some(n) => LikeToken::Lit(n),
                None => {
                    return Err(Error::new(
                        "22025",
                        "LIKE pattern must not end with escape character",
                    ));
                }
            },
            '%' => LikeToken::AnySeq,
            '_' => LikeToken::AnyOne,
            c => LikeToken::Lit(c),
        });
    }
    let s: Vec<char> = s.chars().collect();
    // Greedy matching with one backtrack point at the last `%`: linear in practice and
    // correct because `%` absorbs any run the later tokens do not need.
    let (mut si, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match tokens.get(ti) {
            Some(LikeToken::AnySeq) => {
                star = Some((ti, si));
                ti += 1;
            }
            Some(LikeToken::AnyOne) => {
                si += 1;
                ti += 1;
            }
            Some(LikeToken::Lit(c)) if *c == s[si] => {
                si += 1;
                ti += 1;
            }
            _ => match star {
                Some((st, ss)) => {
                    ti = st + 1;
                    si = ss + 1;
                    star = Some((st, ss + 1));
                }
                None => return Ok(false),
            },
        }
    }
    Ok(tokens[ti..].iter().all(|t| matches!(t, LikeToken::AnySeq)))
}
