//! The binder: resolves names against scopes and types expressions.
//!
//! A [`Scope`] lists the columns one query level can see (its FROM items, qualified by table
//! name or alias). Scopes stack as subqueries nest, so a name not found in the innermost
//! scope resolves outward into a correlated reference. The binder also records what it learns
//! about parameter types and collects aggregate calls for the SELECT being bound.

use protocol::{DataType, Error, Result, Value, sqlstate};
use sqlparser::ast::{self, BinaryOperator as B, UnaryOperator as U};

use super::aggregate::{self, AggCall};
use super::expr::{ArithOp, CmpOp, Expr, SubqueryExpr};
use super::functions::{self, Func};
use super::parse::{
    data_type, ident, internal_type_name, name_parts, object_name, placeholder_index,
};
use super::types::{self, Ty};
use super::window::{WindowCall, WindowFunc};
use crate::txn::ReadTxn;

#[derive(Clone, Debug)]
pub struct ScopeColumn {
    /// The table name or alias that qualifies the column.
    pub table: Option<String>,
    /// The table the column belongs to, when that is a stored table (which an alias hides).
    pub relation: Option<String>,
    pub name: String,
    pub ty: DataType,
    /// Reachable only qualified: the right-hand copy of a `JOIN ... USING` column.
    pub hidden: bool,
    /// A system column (the row id): reachable by name, never part of `*`.
    pub system: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub columns: Vec<ScopeColumn>,
    /// Which query level this is (unique within a statement once pushed): a CTE may read the
    /// levels around its WITH only where exactly those levels surround its reference.
    pub uid: u64,
}

impl Scope {
    pub fn of_table(schema: &protocol::schema::TableSchema, qualifier: &str) -> Scope {
        Scope {
            columns: schema
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| ScopeColumn {
                    table: Some(qualifier.to_string()),
                    relation: Some(schema.name.clone()),
                    name: c.name.clone(),
                    ty: c.data_type,
                    hidden: false,
                    system: schema.is_system(i),
                })
                .collect(),
            uid: 0,
        }
    }
}

/// A WITH query visible to the query being bound.
pub struct Cte {
    pub name: String,
    pub query: ast::Query,
    pub columns: Vec<String>,
    /// Declared under WITH RECURSIVE and reads itself.
    pub recursive: bool,
    /// Inside its own recursive term: the working table's id and columns.
    pub working: Option<(usize, Vec<protocol::schema::ResultColumn>)>,
    /// The query levels (scope uids) around the WITH: a reference surrounded by exactly
    /// these may read their columns (a WITH inside a correlated subquery), as the rows it
    /// runs with are those levels' rows.
    pub scope_uids: Vec<u64>,
}

pub struct Binder<'a> {
    pub txn: &'a dyn ReadTxn,
    /// Inferred parameter types, by position; `None` until something types the parameter.
    pub params: Vec<Ty>,
    pub scopes: Vec<Scope>,
    /// The uid the next pushed scope gets (see `Scope::uid`).
    pub next_scope_uid: u64,
    pub ctes: Vec<Cte>,
    /// Aggregate calls of the SELECT list being bound; `None` where aggregates are not allowed.
    pub aggregates: Option<Vec<AggCall>>,
    /// Where aggregates are not allowed, the clause to name in the error.
    pub no_aggregates_in: &'static str,
    /// Window calls of the SELECT list and ORDER BY being bound; `None` where window
    /// functions are not allowed (the error then names `no_aggregates_in`).
    pub windows: Option<Vec<WindowCall>>,
    /// The WINDOW clause of the SELECT being bound.
    pub named_windows: Vec<(String, ast::WindowSpec)>,
    /// The next WITH RECURSIVE working-table id.
    pub next_working: usize,
    /// The outermost scope any column reference resolved to since the last reset; tells a
    /// subquery whether it is correlated.
    pub lowest_scope: usize,
    /// The FROM scope of the SELECT bound last, kept for LIMIT and OFFSET to tell a column
    /// of the query (an error of its own) from a name that does not exist.
    pub last_select_scope: Option<Scope>,
    /// The statement's start time (µs since 2000-01-01): now(), current_date and friends are
    /// folded to it, so they are one value for the whole statement. Read from the clock on
    /// first use, so `datetime::clock_reads` tells whether a plan holds it.
    now: Option<i64>,
    /// Set when binding made a subquery: an uncorrelated one keeps its rows in the plan for
    /// the rest of the statement, so such a plan serves one execution only.
    pub made_subquery: bool,
}

/// True if the qualifier of a column reference (`t` of `t.c`, `s.t` of `s.t.c`) names the
/// FROM item of `col`, as PostgreSQL matches them: an alias or a table's own name matches `t`,
/// a table in FROM without an alias also by its unqualified name (`pg_class` of
/// `pg_catalog.pg_class`) and by `schema.table` (`public.t`, `pg_catalog.pg_class`).
fn qualifies(col: &ScopeColumn, qualifier: &[String]) -> bool {
    let Some(table) = col.table.as_deref() else {
        return false;
    };
    let unaliased = col.relation.as_deref() == Some(table);
    match qualifier {
        [t] => table == t || unaliased && table.rsplit_once('.').is_some_and(|(_, name)| name == t),
        [s, t] => {
            unaliased
                && (table == format!("{s}.{t}")
                    || (s == "public" || s == "pg_catalog") && table == t)
        }
        _ => false,
    }
}

fn is_default_keyword(e: &ast::Expr) -> bool {
    matches!(e, ast::Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

impl<'a> Binder<'a> {
    /// Pushes a query level's scope with a fresh uid.
    pub fn push_scope(&mut self, mut scope: Scope) {
        scope.uid = self.next_scope_uid;
        self.next_scope_uid += 1;
        self.scopes.push(scope);
    }

    /// The uids of the scopes now in effect.
    pub fn scope_uids(&self) -> Vec<u64> {
        self.scopes.iter().map(|s| s.uid).collect()
    }

    pub fn new(txn: &'a dyn ReadTxn) -> Self {
        Binder {
            txn,
            params: Vec::new(),
            scopes: Vec::new(),
            ctes: Vec::new(),
            aggregates: None,
            no_aggregates_in: "WHERE",
            windows: None,
            named_windows: Vec::new(),
            next_working: 0,
            next_scope_uid: 1,
            lowest_scope: usize::MAX,
            last_select_scope: None,
            now: None,
            made_subquery: false,
        }
    }

    pub fn is_default(e: &ast::Expr) -> bool {
        is_default_keyword(e)
    }

    /// Final parameter types: anything still unknown is text, as PostgreSQL assumes.
    pub fn param_types(&self) -> Vec<DataType> {
        self.params
            .iter()
            .map(|t| t.unwrap_or(DataType::Text))
            .collect()
    }

    fn resolve(&mut self, parts: &[String]) -> Result<(Expr, Ty)> {
        let (table, name) = match parts {
            [c] => (None, c),
            [_, c] => (Some(&parts[..1]), c),
            [_, _, c] => (Some(&parts[..2]), c),
            _ => {
                return Err(Error::unsupported(format!(
                    "column reference {} is not supported",
                    parts.join(".")
                )));
            }
        };
        for (depth, scope) in self.scopes.iter().rev().enumerate() {
            let mut found = None;
            for (index, col) in scope.columns.iter().enumerate() {
                let hit = match table {
                    None => !col.hidden && &col.name == name,
                    Some(t) => qualifies(col, t) && &col.name == name,
                };
                if hit {
                    if found.is_some() {
                        return Err(Error::new(
                            sqlstate::AMBIGUOUS_COLUMN,
                            format!("column reference \"{}\" is ambiguous", parts.join(".")),
                        ));
                    }
                    found = Some((index, col.ty));
                }
            }
            if let Some((index, ty)) = found {
                let level = self.scopes.len() - 1 - depth;
                self.lowest_scope = self.lowest_scope.min(level);
                return Ok((Expr::Column { depth, index }, Some(ty)));
            }
        }
        if let Some(q) = table {
            let t = &q.join(".");
            let known = self
                .scopes
                .iter()
                .any(|s| s.columns.iter().any(|c| qualifies(c, q)));
            if !known {
                // A table that is in FROM under an alias may only be named by that alias.
                let aliased = self
                    .scopes
                    .iter()
                    .flat_map(|s| &s.columns)
                    .find(|c| c.relation.as_ref() == Some(t) && c.table.as_ref() != Some(t));
                if aliased.is_some() {
                    return Err(Error::new(
                        sqlstate::UNDEFINED_TABLE,
                        format!("invalid reference to FROM-clause entry for table \"{t}\""),
                    ));
                }
                return Err(Error::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("missing FROM-clause entry for table \"{t}\""),
                ));
            }
            return Err(Error::new(
                sqlstate::UNDEFINED_COLUMN,
                format!("column {t}.{name} does not exist"),
            ));
        }
        Err(Error::undefined_column(name))
    }

    /// Gives an expression of unknown type the type `target`: literals are converted now
    /// (so a bad one is a bind-time 22P02), parameters learn their type.
    pub fn coerce(&mut self, e: Expr, ty: Ty, target: DataType) -> Result<Expr> {
        if ty.is_some() {
            return Ok(e);
        }
        Ok(match e {
            Expr::Const(Value::Text(s)) => Expr::Const(target.parse_text(&s)?),
            Expr::Const(Value::Null) => Expr::Const(Value::Null),
            Expr::Param(i) => {
                if let Some(slot) = self.params.get_mut(i) {
                    slot.get_or_insert(target);
                }
                Expr::Param(i)
            }
            other => Expr::Cast {
                expr: other.boxed(),
                from: None,
                to: target,
            },
        })
    }

    /// Binds an expression that must be boolean (WHERE, HAVING, ON, CASE WHEN).
    pub fn condition(&mut self, e: &ast::Expr, clause: &str) -> Result<Expr> {
        let (expr, ty) = self.expr(e)?;
        match ty {
            None => self.coerce(expr, ty, DataType::Bool),
            Some(DataType::Bool) => Ok(expr),
            Some(t) => Err(Error::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "argument of {clause} must be type boolean, not type {}",
                    t.name()
                ),
            )),
        }
    }

    /// Binds an expression and resolves an unknown result to text, for output columns.
    pub fn output_expr(&mut self, e: &ast::Expr) -> Result<(Expr, DataType)> {
        let (expr, ty) = self.expr(e)?;
        match ty {
            Some(t) => Ok((expr, t)),
            None => Ok((self.coerce(expr, None, DataType::Text)?, DataType::Text)),
        }
    }

    pub fn expr(&mut self, e: &ast::Expr) -> Result<(Expr, Ty)> {
        use ast::Expr as A;
        Ok(match e {
            A::Identifier(i) => {
                if is_default_keyword(e) {
                    return Err(Error::syntax("DEFAULT is not allowed in this context"));
                }
                self.resolve(&[ident(i)])?
            }
            A::CompoundIdentifier(parts) => {
                let parts: Vec<String> = parts.iter().map(ident).collect();
                self.resolve(&parts)?
            }
            A::Value(v) => self.literal(&v.value)?,
            A::TypedString(ts) => {
                let to = data_type(&ts.data_type)?;
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => {
                        s.clone()
                    }
                    other => {
                        return Err(Error::unsupported(format!(
                            "typed literal {other} is not supported"
                        )));
                    }
                };
                (
                    Expr::Const(types::cast(Value::Text(text), None, &to)?),
                    Some(to),
                )
            }
            A::Nested(inner) => self.expr(inner)?,
            A::UnaryOp { op, expr } => self.unary(op, expr)?,
            // `~~`, `~~*`, `!~~`, `!~~*`: LIKE and ILIKE in operator form.
            A::BinaryOp {
                left,
                op: op @ (B::PGLikeMatch | B::PGILikeMatch | B::PGNotLikeMatch | B::PGNotILikeMatch),
                right,
            } => {
                let negated = matches!(op, B::PGNotLikeMatch | B::PGNotILikeMatch);
                let like = if matches!(op, B::PGLikeMatch | B::PGNotLikeMatch) {
                    A::Like {
                        negated,
                        any: false,
                        expr: left.clone(),
                        pattern: right.clone(),
                        escape_char: None,
                    }
                } else {
                    A::ILike {
                        negated,
                        any: false,
                        expr: left.clone(),
                        pattern: right.clone(),
                        escape_char: None,
                    }
                };
                return self.expr(&like);
            }
            A::BinaryOp { left, op, right } => self.binary(left, op, right)?,
            A::IsNull(x) | A::IsNotNull(x) => {
                let (x, _) = self.expr(x)?;
                (
                    Expr::IsNull {
                        expr: x.boxed(),
                        negated: matches!(e, A::IsNotNull(_)),
                    },
                    Some(DataType::Bool),
                )
            }
            A::IsUnknown(x) | A::IsNotUnknown(x) => {
                let x = self.condition(x, "IS UNKNOWN")?;
                (
                    Expr::IsNull {
                        expr: x.boxed(),
                        negated: matches!(e, A::IsNotUnknown(_)),
                    },
                    Some(DataType::Bool),
                )
            }
            A::IsTrue(x) | A::IsNotTrue(x) | A::IsFalse(x) | A::IsNotFalse(x) => {
                let x = self.condition(x, "IS TRUE")?;
                let value = matches!(e, A::IsTrue(_) | A::IsNotTrue(_));
                let negated = matches!(e, A::IsNotTrue(_) | A::IsNotFalse(_));
                (
                    Expr::IsBool {
                        expr: x.boxed(),
                        value,
                        negated,
                    },
                    Some(DataType::Bool),
                )
            }
            A::IsDistinctFrom(l, r) | A::IsNotDistinctFrom(l, r) => {
                let (l, r) = self.comparison_operands(l, r, "IS DISTINCT FROM")?;
                let negated = matches!(e, A::IsNotDistinctFrom(..));
                (
                    Expr::IsDistinct {
                        left: l.boxed(),
                        right: r.boxed(),
                        negated,
                    },
                    Some(DataType::Bool),
                )
            }
            A::AnyOp {
                left,
                compare_op,
                right,
                ..
            } => return self.quantified(left, compare_op, right, true),
            A::AllOp {
                left,
                compare_op,
                right,
            } => return self.quantified(left, compare_op, right, false),
            A::In {
                expr,
                target: ast::InTarget::List(list),
                negated,
                ..
            } => {
                let (x, xt) = self.expr(expr)?;
                let mut bound = Vec::with_capacity(list.len());
                let mut tys = vec![xt];
                for item in list {
                    let (b, t) = self.expr(item)?;
                    tys.push(t);
                    bound.push((b, t));
                }
                let common = types::common_type(&tys, "IN").map_err(|_| {
                    let other = tys
                        .iter()
                        .skip(1)
                        .flatten()
                        .find(|t| xt.is_some_and(|x| !types::comparable(x, **t)));
                    types::operator_error("=", &xt, &other.copied())
                })?;
                let target = types::comparison_type(common.unwrap_or(DataType::Text));
                let x = self.coerce(x, xt, target)?;
                let list = bound
                    .into_iter()
                    .map(|(b, t)| self.coerce(b, t, target))
                    .collect::<Result<_>>()?;
                (
                    Expr::InList {
                        expr: x.boxed(),
                        list,
                        negated: *negated,
                    },
                    Some(DataType::Bool),
                )
            }
            A::In {
                expr,
                target: ast::InTarget::Subquery(subquery),
                negated,
                ..
            } => {
                let (x, xt) = self.expr(expr)?;
                let sq = self.subquery(subquery)?;
                let col = self.single_column(&sq)?;
                let x = self.coerce(x, xt, types::comparison_type(col))?;
                if let Some(t) = xt.filter(|t| !types::comparable(*t, col)) {
                    return Err(types::operator_error("=", &Some(t), &Some(col)));
                }
                (
                    Expr::InSubquery {
                        expr: x.boxed(),
                        subquery: sq,
                        negated: *negated,
                    },
                    Some(DataType::Bool),
                )
            }
            A::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (x1, lo) = self.comparison_operands(expr, low, ">=")?;
                let (x2, hi) = self.comparison_operands(expr, high, "<=")?;
                let cmp = |op, l: Expr, r: Expr| Expr::Compare {
                    op,
                    left: l.boxed(),
                    right: r.boxed(),
                };
                let out = if *negated {
                    Expr::Or(
                        cmp(CmpOp::Lt, x1, lo).boxed(),
                        cmp(CmpOp::Gt, x2, hi).boxed(),
                    )
                } else {
                    Expr::And(
                        cmp(CmpOp::GtEq, x1, lo).boxed(),
                        cmp(CmpOp::LtEq, x2, hi).boxed(),
                    )
                };
                (out, Some(DataType::Bool))
            }
            A::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            }
            | A::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(Error::unsupported("LIKE ANY is not supported"));
                }
                let op = if matches!(e, A::Like { .. }) {
                    "~~"
                } else {
                    "~~*"
                };
                let x = self.text_operand(expr, op)?;
                let p = self.text_operand(pattern, op)?;
                let escape = match escape_char {
                    Some(esc) => Some(self.text_operand(esc, "ESCAPE")?.boxed()),
                    None => None,
                };
                let case_insensitive = matches!(e, A::ILike { .. });
                (
                    Expr::Like {
                        expr: x.boxed(),
                        pattern: p.boxed(),
                        escape,
                        case_insensitive,
                        negated: *negated,
                    },
                    Some(DataType::Bool),
                )
            }
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref())?,
            A::Cast {
                kind,
                expr,
                data_type: to,
                format,
            } => {
                if format.is_some()
                    || matches!(kind, ast::CastKind::TryCast | ast::CastKind::SafeCast)
                {
                    return Err(Error::unsupported(format!("{e} is not supported")));
                }
                let to = data_type(to)?;
                let (x, xt) = self.expr(expr)?;
                let x = match (x, xt) {
                    (Expr::Const(v), None) => Expr::Const(types::cast(v, None, &to)?),
                    (Expr::Param(i), None) => self.coerce(Expr::Param(i), None, to)?,
                    (x, Some(from)) if !types::castable(from, to) => {
                        let _ = x;
                        return Err(Error::new(
                            "42846",
                            format!("cannot cast type {} to {}", from.name(), to.name()),
                        ));
                    }
                    (x, from) => Expr::Cast {
                        expr: x.boxed(),
                        from,
                        to,
                    },
                };
                (x, Some(to))
            }
            A::Function(f) => self.function(f)?,
            A::Array(a) => self.array_constructor(a)?,
            A::CompoundFieldAccess { root, access_chain } => self.subscript(root, access_chain)?,
            // Tessera compares text bytewise, which is the "C" collation (and its default).
            A::Collate { expr, collation } => {
                let parts = name_parts(collation)?;
                let name = match parts.as_slice() {
                    [n] | [_, n] => n.as_str(),
                    _ => "",
                };
                if !matches!(
                    name,
                    "default" | "C" | "POSIX" | "c" | "posix" | "ucs_basic"
                ) {
                    return Err(Error::new(
                        "42704",
                        format!(
                            "collation \"{}\" for encoding \"UTF8\" does not exist",
                            parts.join(".")
                        ),
                    ));
                }
                self.expr(expr)?
            }
            A::Interval(iv) => self.interval_literal(iv)?,
            A::Extract { field, expr, .. } => {
                let name = match field {
                    ast::DateTimeField::Custom(i) => ident(i),
                    f => f.to_string().to_lowercase(),
                };
                let field_arg = ast::Expr::value(ast::Value::SingleQuotedString(name));
                self.scalar_call("extract", &[field_arg, expr.as_ref().clone()])?
            }
            A::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![expr.as_ref().clone()];
                args.push(
                    substring_from
                        .as_deref()
                        .cloned()
                        .unwrap_or_else(|| number("1")),
                );
                if let Some(f) = substring_for {
                    args.push(f.as_ref().clone());
                }
                self.scalar_call("substring", &args)?
            }
            A::Position { expr, r#in } => {
                self.scalar_call("position", &[expr.as_ref().clone(), r#in.as_ref().clone()])?
            }
            A::Trim {
                trim_where,
                trim_what,
                expr,
                trim_characters,
            } => {
                if trim_characters.is_some() {
                    return Err(Error::unsupported(
                        "TRIM with a character list is not supported",
                    ));
                }
                let name = match trim_where {
                    Some(ast::TrimWhereField::Leading) => "ltrim",
                    Some(ast::TrimWhereField::Trailing) => "rtrim",
                    _ => "btrim",
                };
                let mut args = vec![expr.as_ref().clone()];
                if let Some(w) = trim_what {
                    args.push(w.as_ref().clone());
                }
                self.scalar_call(name, &args)?
            }
            A::Ceil { expr, field } | A::Floor { expr, field } => {
                let name = if matches!(e, A::Ceil { .. }) {
                    "ceil"
                } else {
                    "floor"
                };
                if !matches!(
                    field,
                    ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime)
                ) {
                    return Err(Error::unsupported(format!("{e} is not supported")));
                }
                self.scalar_call(name, &[expr.as_ref().clone()])?
            }
            A::Exists { subquery, negated } => {
                let sq = self.subquery(subquery)?;
                (
                    Expr::Exists {
                        subquery: sq,
                        negated: *negated,
                    },
                    Some(DataType::Bool),
                )
            }
            A::Subquery(q) => {
                let sq = self.subquery(q)?;
                let ty = self.single_column(&sq)?;
                (Expr::Subquery(sq), Some(ty))
            }
            other => {
                return Err(Error::unsupported(format!(
                    "expression is not supported: {other}"
                )));
            }
        })
    }

    /// `INTERVAL '1 day'`, `INTERVAL '2' HOUR`.
    /// `x op ANY (ARRAY[a, b])` / `x op ALL (ARRAY[a, b])`: `x = ANY` is `x IN (a, b)`,
    /// `x <> ALL` is `x NOT IN (a, b)`, any other operator the OR (ANY) or AND (ALL) of the
    /// element comparisons, which have PostgreSQL's NULL semantics; an empty array makes ANY
    /// false and ALL true. `x = ANY (subquery)` is `x IN (subquery)`, `x <> ALL` its negation.
    fn quantified(
        &mut self,
        left: &ast::Expr,
        op: &B,
        right: &ast::Expr,
        any: bool,
    ) -> Result<(Expr, Ty)> {
        let mut right = right;
        while let ast::Expr::Nested(inner) = right {
            right = inner;
        }
        let in_form = match (op, any) {
            (B::Eq, true) => Some(false),
            (B::NotEq, false) => Some(true),
            _ => None,
        };
        let quantifier = if any { "ANY" } else { "ALL" };
        match right {
            ast::Expr::Array(array) => {
                if let Some(negated) = in_form
                    && !array.elem.is_empty()
                {
                    return self.expr(&ast::Expr::In {
                        expr: Box::new(left.clone()),
                        target: ast::InTarget::List(array.elem.clone()),
                        negated,
                        global: false,
                    });
                }
                let joined = array
                    .elem
                    .iter()
                    .map(|el| {
                        ast::Expr::Nested(Box::new(ast::Expr::BinaryOp {
                            left: Box::new(left.clone()),
                            op: op.clone(),
                            right: Box::new(el.clone()),
                        }))
                    })
                    .reduce(|a, b| ast::Expr::BinaryOp {
                        left: Box::new(a),
                        op: if any { B::Or } else { B::And },
                        right: Box::new(b),
                    });
                match joined {
                    Some(e) => self.expr(&e),
                    None => Ok((Expr::Const(Value::Bool(!any)), Some(DataType::Bool))),
                }
            }
            ast::Expr::Subquery(q) if in_form.is_some() => self.expr(&ast::Expr::In {
                expr: Box::new(left.clone()),
                target: ast::InTarget::Subquery(q.clone()),
                negated: in_form == Some(true),
                global: false,
            }),
            ast::Expr::Subquery(q) => {
                let Some(cmp) = CmpOp::of(op) else {
                    return Err(Error::unsupported(format!(
                        "{op} {quantifier} (subquery) is not supported"
                    )));
                };
                let (x, xt) = self.expr(left)?;
                let sq = self.subquery(q)?;
                let col = self.single_column(&sq)?;
                let x = self.coerce(x, xt, types::comparison_type(col))?;
                if let Some(t) = xt.filter(|t| !types::comparable(*t, col)) {
                    return Err(types::operator_error(&op.to_string(), &Some(t), &Some(col)));
                }
                Ok((
                    Expr::Quantified {
                        expr: x.boxed(),
                        op: cmp,
                        subquery: sq,
                        all: !any,
                    },
                    Some(DataType::Bool),
                ))
            }
            _ => self.quantified_array(left, op, right, any),
        }
    }

    fn interval_literal(&mut self, iv: &ast::Interval) -> Result<(Expr, Ty)> {
        let text = match iv.value.as_ref() {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => {
                    s.clone()
                }
                ast::Value::Number(n, _) => n.clone(),
                other => {
                    return Err(Error::unsupported(format!(
                        "interval literal {other} is not supported"
                    )));
                }
            },
            other => {
                return Err(Error::unsupported(format!(
                    "interval expression {other} is not supported"
                )));
            }
        };
        let text = match &iv.leading_field {
            Some(f) if iv.last_field.is_none() && text.trim().parse::<f64>().is_ok() => {
                format!("{text} {}", f.to_string().to_lowercase())
            }
            _ => text,
        };
        Ok((
            Expr::Const(DataType::Interval.parse_text(&text)?),
            Some(DataType::Interval),
        ))
    }

    fn literal(&mut self, v: &ast::Value) -> Result<(Expr, Ty)> {
        use ast::Value as V;
        Ok(match v {
            V::Number(n, _) => number_value(n)?,
            V::SingleQuotedString(s)
            | V::EscapedStringLiteral(s)
            | V::UnicodeStringLiteral(s)
            | V::NationalStringLiteral(s) => (Expr::Const(Value::Text(s.clone())), None),
            V::DollarQuotedString(s) => (Expr::Const(Value::Text(s.value.clone())), None),
            V::Boolean(b) => (Expr::Const(Value::Bool(*b)), Some(DataType::Bool)),
            V::Null => (Expr::Const(Value::Null), None),
            V::Placeholder(p) => {
                let n = placeholder_index(p)?;
                if n > 65535 {
                    return Err(Error::new(
                        sqlstate::UNDEFINED_PARAMETER,
                        format!("there is no parameter ${n}"),
                    ));
                }
                if self.params.len() < n {
                    self.params.resize(n, None);
                }
                (Expr::Param(n - 1), self.params[n - 1])
            }
            other => {
                return Err(Error::unsupported(format!(
                    "literal {other} is not supported"
                )));
            }
        })
    }

    fn unary(&mut self, op: &U, x: &ast::Expr) -> Result<(Expr, Ty)> {
        // sqlparser lets a prefix sign take `2 ^ 2` as its operand, but in PostgreSQL unary
        // minus and plus bind tighter than `^`: `-2 ^ 2` is `(-2) ^ 2`.
        if matches!(op, U::Minus | U::Plus)
            && let ast::Expr::BinaryOp {
                left,
                op: B::PGExp,
                right,
            } = x
        {
            let signed = ast::Expr::UnaryOp {
                op: *op,
                expr: left.clone(),
            };
            return self.binary(&signed, &B::PGExp, right);
        }
        match op {
            U::Not => Ok((
                Expr::Not(self.condition(x, "NOT")?.boxed()),
                Some(DataType::Bool),
            )),
            U::Minus => {
                // Fold `-<number>` so that -2147483648 is an int4 literal, as in PostgreSQL.
                if let ast::Expr::Value(v) = x
                    && let ast::Value::Number(n, _) = &v.value
                {
                    return number_value(&format!("-{n}"));
                }
                let (e, t) = self.expr(x)?;
                let t = self.numeric_operand(e, t, "-")?;
                Ok((
                    Expr::Negate {
                        expr: t.0.boxed(),
                        ty: t.1,
                    },
                    Some(t.1),
                ))
            }
            U::Plus => {
                let (e, t) = self.expr(x)?;
                let (e, t) = self.numeric_operand(e, t, "+")?;
                Ok((e, Some(t)))
            }
            U::PGAbs => self.scalar_call("abs", std::slice::from_ref(x)),
            U::PGSquareRoot => self.scalar_call("sqrt", std::slice::from_ref(x)),
            other => Err(Error::unsupported(format!(
                "operator {other} is not supported"
            ))),
        }
    }

    fn numeric_operand(&mut self, e: Expr, t: Ty, op: &str) -> Result<(Expr, DataType)> {
        match t {
            Some(t) if t.is_numeric() => Ok((e, t)),
            Some(DataType::Interval) if op == "-" => Ok((e, DataType::Interval)),
            None => Ok((self.coerce(e, None, DataType::Float8)?, DataType::Float8)),
            Some(t) => Err(Error::new(
                sqlstate::UNDEFINED_FUNCTION,
                format!("operator does not exist: {op} {}", t.name()),
            )),
        }
    }

    fn text_operand(&mut self, x: &ast::Expr, op: &str) -> Result<Expr> {
        let (e, t) = self.expr(x)?;
        match t {
            None => self.coerce(e, None, DataType::Text),
            Some(t) if t.is_text() => Ok(e),
            Some(t) => Err(types::operator_error(op, &Some(t), &Some(DataType::Text))),
        }
    }

    /// Binds two operands that are compared, giving an unknown side the other's type.
    fn comparison_operands(
        &mut self,
        l: &ast::Expr,
        r: &ast::Expr,
        op: &str,
    ) -> Result<(Expr, Expr)> {
        let (le, lt) = self.expr(l)?;
        let (re, rt) = self.expr(r)?;
        match (lt, rt) {
            (Some(a), Some(b)) if types::comparable(a, b) => Ok((le, re)),
            (Some(_), Some(_)) => Err(types::operator_error(op, &lt, &rt)),
            (Some(a), None) => Ok((le, self.coerce(re, None, types::comparison_type(a))?)),
            (None, Some(b)) => Ok((self.coerce(le, None, types::comparison_type(b))?, re)),
            (None, None) => Ok((
                self.coerce(le, None, DataType::Text)?,
                self.coerce(re, None, DataType::Text)?,
            )),
        }
    }

    fn binary(&mut self, l: &ast::Expr, op: &B, r: &ast::Expr) -> Result<(Expr, Ty)> {
        // `OPERATOR(pg_catalog.~)` is the builtin operator `~`.
        if let B::PGCustomBinaryOperator(parts) = op
            && let [schema, name] = parts.as_slice()
            && schema.eq_ignore_ascii_case("pg_catalog")
        {
            let builtin = match name.as_str() {
                "~" => B::PGRegexMatch,
                "~*" => B::PGRegexIMatch,
                "!~" => B::PGRegexNotMatch,
                "!~*" => B::PGRegexNotIMatch,
                "=" => B::Eq,
                "<>" => B::NotEq,
                "<" => B::Lt,
                "<=" => B::LtEq,
                ">" => B::Gt,
                ">=" => B::GtEq,
                "+" => B::Plus,
                "-" => B::Minus,
                "*" => B::Multiply,
                "/" => B::Divide,
                "||" => B::StringConcat,
                _ => op.clone(),
            };
            if builtin != *op {
                return self.binary(l, &builtin, r);
            }
        }
        let regex = match op {
            B::PGRegexMatch => Some("textregexeq"),
            B::PGRegexNotMatch => Some("textregexne"),
            B::PGRegexIMatch => Some("texticregexeq"),
            B::PGRegexNotIMatch => Some("texticregexne"),
            _ => None,
        };
        if let Some(f) = regex {
            return self.scalar_call(f, &[l.clone(), r.clone()]);
        }
        let bool_ty = Some(DataType::Bool);
        if let Some(c) = CmpOp::of(op) {
            let (le, re) = self.comparison_operands(l, r, &op.to_string())?;
            return Ok((
                Expr::Compare {
                    op: c,
                    left: le.boxed(),
                    right: re.boxed(),
                },
                bool_ty,
            ));
        }
        let arith = match op {
            B::Plus => Some(ArithOp::Add),
            B::Minus => Some(ArithOp::Sub),
            B::Multiply => Some(ArithOp::Mul),
            B::Divide => Some(ArithOp::Div),
            B::Modulo => Some(ArithOp::Mod),
            B::BitwiseAnd => Some(ArithOp::BitAnd),
            B::BitwiseOr => Some(ArithOp::BitOr),
            B::PGBitwiseXor => Some(ArithOp::BitXor),
            B::PGBitwiseShiftLeft => Some(ArithOp::ShiftLeft),
            B::PGBitwiseShiftRight => Some(ArithOp::ShiftRight),
            _ => None,
        };
        if let Some(a) = arith {
            let sym = op.to_string();
            let (le, lt) = self.expr(l)?;
            let (re, rt) = self.expr(r)?;
            let (le, re, lty, rty) = match (lt, rt) {
                (Some(a), Some(b)) => (le, re, a, b),
                (Some(a), None) => {
                    let re = self.coerce(re, None, a)?;
                    (le, re, a, a)
                }
                (None, Some(b)) => {
                    let le = self.coerce(le, None, b)?;
                    (le, re, b, b)
                }
                (None, None) => {
                    return Err(Error::new(
                        "42725",
                        format!("operator is not unique: unknown {sym} unknown"),
                    ));
                }
            };
            let ty = if a.is_bitwise() {
                // Integers only; a shift keeps its left operand's type.
                (lty.is_integer() && rty.is_integer())
                    .then(|| match a {
                        ArithOp::ShiftLeft | ArithOp::ShiftRight => Some(lty),
                        _ => types::arithmetic_type(&sym, lty, rty),
                    })
                    .flatten()
            } else {
                types::arithmetic_type(&sym, lty, rty)
            }
            .ok_or_else(|| types::operator_error(&sym, &Some(lty), &Some(rty)))?;
            return Ok((
                Expr::Arith {
                    op: a,
                    left: le.boxed(),
                    right: re.boxed(),
                    ty,
                },
                Some(ty),
            ));
        }
        match op {
            B::And | B::Or => {
                let name = if *op == B::And { "AND" } else { "OR" };
                let le = self.condition(l, name)?;
                let re = self.condition(r, name)?;
                let e = if *op == B::And {
                    Expr::And(le.boxed(), re.boxed())
                } else {
                    Expr::Or(le.boxed(), re.boxed())
                };
                Ok((e, bool_ty))
            }
            B::StringConcat => {
                let (le, lt) = self.expr(l)?;
                let (re, rt) = self.expr(r)?;
                let is_array = |t: Ty| matches!(t, Some(DataType::Array(_)));
                if is_array(lt) || is_array(rt) {
                    return self.array_concat((le, lt), (re, rt));
                }
                let texty = |t: Ty| t.is_none_or(|t| t.is_text());
                if !texty(lt) && !texty(rt) {
                    return Err(types::operator_error("||", &lt, &rt));
                }
                // `text || anynonarray` casts the other side to text, which is not always its
                // output format: `'x' || true` is `xtrue`.
                let as_text = |b: &mut Self, e: Expr, t: Ty| match t {
                    Some(t) if !t.is_text() => Ok(Expr::Cast {
                        expr: e.boxed(),
                        from: Some(t),
                        to: DataType::Text,
                    }),
                    _ => b.coerce(e, t, DataType::Text),
                };
                let le = as_text(self, le, lt)?;
                let re = as_text(self, re, rt)?;
                Ok((Expr::Concat(le.boxed(), re.boxed()), Some(DataType::Text)))
            }
            B::PGExp => self.scalar_call("power", &[l.clone(), r.clone()]),
            B::Arrow | B::LongArrow | B::HashArrow | B::HashLongArrow => {
                let sym = op.to_string();
                let (le, lt) = self.expr(l)?;
                let (re, rt) = self.expr(r)?;
                let doc = match lt {
                    None => DataType::Jsonb,
                    Some(t @ (DataType::Json | DataType::Jsonb)) => t,
                    Some(_) => return Err(types::operator_error(&sym, &lt, &rt)),
                };
                let path = matches!(op, B::HashArrow | B::HashLongArrow);
                let key_ok = match rt {
                    None => true,
                    Some(t) => t.is_text() || (!path && t.is_integer()),
                };
                if !key_ok {
                    return Err(types::operator_error(&sym, &lt, &rt));
                }
                let le = self.coerce(le, lt, doc)?;
                let re = self.coerce(re, rt, DataType::Text)?;
                let text = matches!(op, B::LongArrow | B::HashLongArrow);
                let func = if path {
                    Func::JsonPath { text }
                } else {
                    Func::JsonGet { text }
                };
                let ty = if text { DataType::Text } else { doc };
                Ok((
                    Expr::Function {
                        func,
                        args: vec![le, re],
                    },
                    Some(ty),
                ))
            }
            B::AtArrow | B::ArrowAt => {
                let sym = op.to_string();
                let (le, lt) = self.expr(l)?;
                let (re, rt) = self.expr(r)?;
                let jsonb = |t: Ty| t.is_none_or(|t| t == DataType::Jsonb);
                if !jsonb(lt) || !jsonb(rt) {
                    return Err(types::operator_error(&sym, &lt, &rt));
                }
                let le = self.coerce(le, lt, DataType::Jsonb)?;
                let re = self.coerce(re, rt, DataType::Jsonb)?;
                let args = if *op == B::AtArrow {
                    vec![le, re]
                } else {
                    vec![re, le]
                };
                Ok((
                    Expr::Function {
                        func: Func::JsonContains,
                        args,
                    },
                    bool_ty,
                ))
            }
            other => Err(Error::unsupported(format!(
                "operator {other} is not supported"
            ))),
        }
    }

    fn case(
        &mut self,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        else_result: Option<&ast::Expr>,
    ) -> Result<(Expr, Ty)> {
        let subject = match operand {
            Some(o) => Some(self.expr(o)?),
            None => None,
        };
        let mut whens = Vec::with_capacity(conditions.len());
        let mut results = Vec::with_capacity(conditions.len());
        for c in conditions {
            whens.push(match &subject {
                Some(_) => self.expr(&c.condition)?,
                None => (
                    self.condition(&c.condition, "CASE/WHEN")?,
                    Some(DataType::Bool),
                ),
            });
            results.push(self.expr(&c.result)?);
        }
        // With an operand, every WHEN value is compared with it, so they share one type.
        let (operand, whens) = match subject {
            Some((s, st)) => {
                let mut tys = vec![st];
                tys.extend(whens.iter().map(|(_, t)| *t));
                let target = types::comparison_type(
                    types::common_type(&tys, "CASE/WHEN")?.unwrap_or(DataType::Text),
                );
                let s = self.coerce(s, st, target)?;
                let whens = whens
                    .into_iter()
                    .map(|(w, t)| self.coerce(w, t, target))
                    .collect::<Result<Vec<_>>>()?;
                (Some(s.boxed()), whens)
            }
            None => (None, whens.into_iter().map(|(w, _)| w).collect()),
        };
        let otherwise = match else_result {
            Some(e) => Some(self.expr(e)?),
            None => None,
        };
        // PostgreSQL resolves the ELSE result first, then the THEN results in order; that
        // order shows in the "CASE types ... cannot be matched" message.
        let mut tys: Vec<Ty> = otherwise.iter().map(|(_, t)| *t).collect();
        tys.extend(results.iter().map(|(_, t)| *t));
        let ty = types::common_type(&tys, "CASE")?.unwrap_or(DataType::Text);
        let mut pairs = Vec::with_capacity(whens.len());
        for (w, (then, tt)) in whens.into_iter().zip(results) {
            pairs.push((w, self.unify(then, tt, ty)?));
        }
        let otherwise = match otherwise {
            Some((e, t)) => Some(self.unify(e, t, ty)?.boxed()),
            None => None,
        };
        Ok((
            Expr::Case {
                operand,
                whens: pairs,
                otherwise,
            },
            Some(ty),
        ))
    }

    /// Converts a branch of CASE/COALESCE to the construct's common type.
    pub(super) fn unify(&mut self, e: Expr, t: Ty, target: DataType) -> Result<Expr> {
        match t {
            None => self.coerce(e, t, target),
            Some(t) if t == target || (t.is_text() && target.is_text()) => Ok(e),
            Some(t) => Ok(Expr::Cast {
                expr: e.boxed(),
                from: Some(t),
                to: target,
            }),
        }
    }

    fn function(&mut self, f: &ast::Function) -> Result<(Expr, Ty)> {
        let name = {
            let parts = name_parts(&f.name)?;
            match parts.as_slice() {
                [n] => n.clone(),
                [schema, n] if schema == "pg_catalog" => n.clone(),
                _ => {
                    return Err(Error::new(
                        sqlstate::UNDEFINED_FUNCTION,
                        format!("function {} does not exist", f.name),
                    ));
                }
            }
        };
        if !f.within_group.is_empty() {
            return Err(Error::unsupported(format!("{f} is not supported")));
        }
        let (args, distinct) = match &f.args {
            ast::FunctionArguments::None => (vec![], false),
            ast::FunctionArguments::Subquery(_) => {
                return Err(Error::unsupported(format!("{f} is not supported")));
            }
            ast::FunctionArguments::List(list) => {
                let only_order = list
                    .clauses
                    .iter()
                    .all(|c| matches!(c, ast::FunctionArgumentClause::OrderBy(_)));
                if !only_order || (!list.clauses.is_empty() && !aggregate::is_aggregate(&name)) {
                    return Err(Error::unsupported(format!("{f} is not supported")));
                }
                (
                    list.args.clone(),
                    matches!(
                        list.duplicate_treatment,
                        Some(ast::DuplicateTreatment::Distinct)
                    ),
                )
            }
        };
        let star = matches!(
            args.as_slice(),
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
        );
        let mut exprs = Vec::with_capacity(args.len());
        if !star {
            for a in &args {
                match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => {
                        exprs.push(e.clone())
                    }
                    other => {
                        return Err(Error::unsupported(format!(
                            "function argument {other} is not supported"
                        )));
                    }
                }
            }
        }
        if let Some(over) = &f.over {
            return self.window_call(&name, over, star, distinct, f.filter.as_deref(), &exprs);
        }
        if WindowFunc::by_name(&name).is_some() {
            return Err(Error::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("window function {name} requires an OVER clause"),
            ));
        }
        if aggregate::is_aggregate(&name) {
            let order: Vec<ast::OrderByExpr> = match &f.args {
                ast::FunctionArguments::List(list) => list
                    .clauses
                    .iter()
                    .flat_map(|c| match c {
                        ast::FunctionArgumentClause::OrderBy(o) => o.clone(),
                        _ => Vec::new(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let (e, ty) = self.aggregate(&name, star, distinct, f.filter.as_deref(), &exprs)?;
            if !order.is_empty()
                && let Expr::Aggregate(i) = e
            {
                let keys = self.aggregate_order(&order)?;
                if let Some(call) = self.aggregates.as_mut().and_then(|a| a.get_mut(i)) {
                    call.order = keys;
                }
            }
            return Ok((e, ty));
        }
        if f.filter.is_some() {
            return Err(Error::syntax(format!(
                "FILTER specified, but {name} is not an aggregate function"
            )));
        }
        if star || distinct {
            return Err(Error::syntax(format!("{f} is not a valid function call")));
        }
        if name == "pg_typeof" && exprs.len() == 1 {
            // The argument's type is known once bound: the call is that name.
            let (_, ty) = self.expr(&exprs[0])?;
            let shown = ty.map(|t| t.name()).unwrap_or_else(|| "unknown".into());
            return Ok((Expr::Const(Value::Text(shown)), Some(DataType::Text)));
        }
        if let Some(bound) = self.array_function(&name, &exprs)? {
            return Ok(bound);
        }
        if name == "coalesce" {
            let mut bound = Vec::with_capacity(exprs.len());
            for e in &exprs {
                bound.push(self.expr(e)?);
            }
            let tys: Vec<Ty> = bound.iter().map(|(_, t)| *t).collect();
            let ty = types::common_type(&tys, "COALESCE")?.unwrap_or(DataType::Text);
            let args = bound
                .into_iter()
                .map(|(e, t)| self.unify(e, t, ty))
                .collect::<Result<_>>()?;
            return Ok((Expr::Coalesce(args), Some(ty)));
        }
        self.scalar_call(&name, &exprs)
    }

    /// Binds a call of a scalar function from `functions.rs`.
    pub fn scalar_call(&mut self, name: &str, args: &[ast::Expr]) -> Result<(Expr, Ty)> {
        let mut bound = Vec::with_capacity(args.len());
        for a in args {
            bound.push(self.expr(a)?);
        }
        let tys: Vec<Ty> = bound.iter().map(|(_, t)| *t).collect();
        let Some(resolved) = functions::resolve(name, &tys)? else {
            return Err(Error::new(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "function {name}({}) does not exist",
                    tys.iter()
                        .map(types::ty_name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let mut now = || {
            *self
                .now
                .get_or_insert_with(protocol::value::datetime::now_micros)
        };
        let folded = match resolved.func {
            Func::Now => Some(Value::TimestampTz(now())),
            Func::LocalTimestamp => Some(Value::Timestamp(now())),
            Func::CurrentDate => Some(Value::Date(
                now().div_euclid(protocol::value::datetime::USECS_PER_DAY) as i32,
            )),
            Func::LocalTime => Some(Value::Time(
                now().rem_euclid(protocol::value::datetime::USECS_PER_DAY),
            )),
            _ => None,
        };
        if let Some(v) = folded {
            return Ok((Expr::Const(v), Some(resolved.ret)));
        }
        let mut out = Vec::with_capacity(bound.len());
        for ((e, t), want) in bound.into_iter().zip(&resolved.arg_types) {
            out.push(match (want, resolved.func) {
                (Some(w), Func::Greatest | Func::Least) => self.unify(e, t, *w)?,
                (Some(w), _) => self.coerce(e, t, *w)?,
                (None, _) => self.coerce(e, t, DataType::Text)?,
            });
        }
        Ok((
            Expr::Function {
                func: resolved.func,
                args: out,
            },
            Some(resolved.ret),
        ))
    }

    fn aggregate(
        &mut self,
        name: &str,
        star: bool,
        distinct: bool,
        filter: Option<&ast::Expr>,
        args: &[ast::Expr],
    ) -> Result<(Expr, Ty)> {
        let Some(collected) = self.aggregates.take() else {
            let msg = if self.no_aggregates_in == "aggregate" {
                "aggregate function calls cannot be nested".to_string()
            } else {
                format!(
                    "aggregate functions are not allowed in {}",
                    self.no_aggregates_in
                )
            };
            return Err(Error::new(sqlstate::GROUPING_ERROR, msg));
        };
        // Arguments are bound with aggregates disallowed (they cannot nest); the collected
        // calls go back in place before anything can fail.
        let saved_clause = std::mem::replace(&mut self.no_aggregates_in, "aggregate");
        let saved_windows = self.windows.take();
        let bound: Result<Vec<(Expr, Ty)>> = args.iter().map(|a| self.expr(a)).collect();
        let filter = filter.map(|f| self.condition(f, "FILTER")).transpose();
        self.no_aggregates_in = saved_clause;
        self.windows = saved_windows;
        self.aggregates = Some(collected);
        let (bound, filter) = (bound?, filter?);
        let tys: Vec<Ty> = bound.iter().map(|(_, t)| *t).collect();
        let (func, ty, want) = aggregate::resolve(name, star, &tys)?;
        let mut exprs = Vec::with_capacity(bound.len());
        for ((e, t), w) in bound
            .into_iter()
            .zip(want.iter().chain(std::iter::repeat(&None)))
        {
            exprs.push(self.coerce(e, t, w.unwrap_or(DataType::Text))?);
        }
        let collected = self.aggregates.get_or_insert_with(Vec::new);
        collected.push(AggCall {
            func,
            args: exprs,
            distinct,
            filter,
            order: Vec::new(),
            ty,
        });
        Ok((Expr::Aggregate(collected.len() - 1), Some(ty)))
    }

    /// The ORDER BY of an aggregate call, bound over the input rows.
    fn aggregate_order(&mut self, order: &[ast::OrderByExpr]) -> Result<Vec<(Expr, bool, bool)>> {
        let saved_clause = std::mem::replace(&mut self.no_aggregates_in, "aggregate");
        let saved_aggs = self.aggregates.take();
        let bound = order
            .iter()
            .map(|o| {
                let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
                let (e, _) = self.expr(&o.expr)?;
                Ok((e, desc, o.options.nulls_first.unwrap_or(desc)))
            })
            .collect::<Result<Vec<_>>>();
        self.no_aggregates_in = saved_clause;
        self.aggregates = saved_aggs;
        bound
    }

    /// Binds a subquery in a new scope level, noting whether it reads the enclosing rows.
    pub fn subquery(&mut self, q: &ast::Query) -> Result<SubqueryExpr> {
        let saved_aggs = self.aggregates.take();
        let saved_windows = self.windows.take();
        let saved_named = std::mem::take(&mut self.named_windows);
        let saved_clause = self.no_aggregates_in;
        let saved_lowest = std::mem::replace(&mut self.lowest_scope, usize::MAX);
        let level = self.scopes.len();
        let plan = self.query(q);
        let correlated = self.lowest_scope < level;
        self.lowest_scope = saved_lowest.min(self.lowest_scope);
        self.aggregates = saved_aggs;
        self.windows = saved_windows;
        self.named_windows = saved_named;
        self.no_aggregates_in = saved_clause;
        self.made_subquery = true;
        Ok(SubqueryExpr::new(plan?, correlated))
    }

    fn single_column(&self, sq: &SubqueryExpr) -> Result<DataType> {
        match sq.plan.columns.as_slice() {
            [c] => Ok(c.data_type),
            _ => Err(Error::syntax("subquery must return only one column")),
        }
    }

    /// The table named by `name`, or 42P01.
    pub fn table(&self, name: &ast::ObjectName) -> Result<protocol::schema::TableSchema> {
        let n = object_name(name)?;
        self.txn
            .schema(&n)?
            .ok_or_else(|| Error::undefined_table(&n))
    }
}

fn number(n: &str) -> ast::Expr {
    ast::Expr::value(ast::Value::Number(n.to_string(), false))
}

/// A numeric literal: int4 if it fits, else int8, else numeric. A numeric beyond what
/// `numeric` holds here (about 28 digits) falls back to float8.
fn number_value(n: &str) -> Result<(Expr, Ty)> {
    if let Ok(i) = n.parse::<i64>() {
        let ty = if i32::try_from(i).is_ok() {
            DataType::Int4
        } else {
            DataType::Int8
        };
        return Ok((Expr::Const(Value::Int(i)), Some(ty)));
    }
    if let Ok(num) = protocol::value::Numeric::parse(n) {
        // Keep the literal exact only if no digit was rounded away.
        let digits: String = n
            .split(['e', 'E'])
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
        let kept = num.digits_exponent().map(|(_, d, _)| d.len()).unwrap_or(0);
        if kept >= significant {
            return Ok((
                Expr::Const(Value::Numeric(num)),
                Some(DataType::Numeric(None)),
            ));
        }
    }
    let f: f64 = n.parse().map_err(|_| {
        Error::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid number \"{n}\""),
        )
    })?;
    Ok((Expr::Const(Value::Float(f)), Some(DataType::Float8)))
}

/// The name PostgreSQL gives an output column computed by `e` (its FigureColname).
pub fn column_name(e: &ast::Expr) -> String {
    figure_name(e)
        .map(|(n, _)| n)
        .unwrap_or_else(|| "?column?".into())
}

/// A name and how strongly it claims the column: a cast names its output after the target
/// type only when its operand has no better name (`a::text` is `a`, `1::int8` is `int8`).
fn figure_name(e: &ast::Expr) -> Option<(String, u8)> {
    use ast::Expr as A;
    let strong = |s: &str| Some((s.to_string(), 2));
    match e {
        A::Identifier(i) => Some((ident(i), 2)),
        A::CompoundIdentifier(parts) => parts.last().map(|i| (ident(i), 2)),
        A::Nested(inner) => figure_name(inner),
        A::Function(f) => name_parts(&f.name)
            .ok()
            .and_then(|p| p.last().cloned())
            .map(|n| (n, 2)),
        A::Cast {
            expr, data_type: t, ..
        } => match figure_name(expr) {
            Some((n, 2)) => Some((n, 2)),
            other => data_type(t)
                .ok()
                .map(|t| (internal_type_name(&t).to_string(), 1))
                .or(other),
        },
        // `true` is the cast 't'::bool in PostgreSQL's grammar.
        A::Value(v) if matches!(v.value, ast::Value::Boolean(_)) => Some(("bool".into(), 1)),
        A::Case { .. } => Some(("case".into(), 1)),
        A::Exists { .. } => strong("exists"),
        A::Substring { .. } => strong("substring"),
        A::Position { .. } => strong("position"),
        A::Trim { .. } => strong("btrim"),
        A::Ceil { .. } => strong("ceil"),
        A::Floor { .. } => strong("floor"),
        _ => None,
    }
}
