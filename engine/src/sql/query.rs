//! Binding queries: SELECT, VALUES, set operations and WITH into a [`QueryPlan`].
//!
//! The SELECT binder works clause by clause in PostgreSQL's logical order: FROM builds the
//! scope, WHERE and GROUP BY bind against it, the SELECT list, HAVING and ORDER BY collect
//! aggregate calls, and if the query aggregates, those expressions are rewritten to read the
//! aggregated row (group keys, then aggregate results). Any remaining reference to an input
//! column is then a column that is neither grouped nor aggregated: 42803, as in PostgreSQL.

use protocol::schema::ResultColumn;
use protocol::{DataType, Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::access;
use super::bind::{Binder, Cte, Scope, ScopeColumn, column_name};
use super::expr::{Expr, SubqueryExpr};
use super::parse::{ident, name_parts, object_name};
use super::plan::{
    Access, Grouping, JoinKind, JoinNode, Node, QueryPlan, SelectNode, SetOp, SortKey, Source,
};
use super::types;

/// One ORDER BY item before it is resolved against a SELECT list.
struct OrderItem<'q> {
    expr: &'q ast::Expr,
    desc: bool,
    nulls_first: bool,
}

fn order_items(order: Option<&ast::OrderBy>) -> Result<Vec<OrderItem<'_>>> {
    let Some(order) = order else {
        return Ok(vec![]);
    };
    let exprs = match &order.kind {
        ast::OrderByKind::Expressions(e) => e,
        ast::OrderByKind::All(_) => {
            return Err(Error::unsupported("ORDER BY ALL is not supported"));
        }
    };
    exprs
        .iter()
        .map(|o| {
            if o.with_fill.is_some() {
                return Err(Error::unsupported(
                    "ORDER BY ... WITH FILL is not supported",
                ));
            }
            let desc = match &o.options.sort {
                None | Some(ast::OrderBySort::Asc) => false,
                Some(ast::OrderBySort::Desc) => true,
                Some(ast::OrderBySort::Using(_)) => {
                    return Err(Error::unsupported("ORDER BY ... USING is not supported"));
                }
            };
            // PostgreSQL sorts NULL as larger than any value: last ascending, first descending.
            let nulls_first = o.options.nulls_first.unwrap_or(desc);
            Ok(OrderItem {
                expr: &o.expr,
                desc,
                nulls_first,
            })
        })
        .collect()
}

/// An ORDER BY item that names an output column by position or name.
fn output_reference(e: &ast::Expr, columns: &[ResultColumn]) -> Result<Option<usize>> {
    match e {
        ast::Expr::Value(v) => {
            if let ast::Value::Number(n, _) = &v.value {
                let pos = n
                    .parse::<usize>()
                    .ok()
                    .filter(|p| *p >= 1 && *p <= columns.len())
                    .ok_or_else(|| {
                        Error::new(
                            sqlstate::INVALID_COLUMN_REFERENCE,
                            format!("ORDER BY position {n} is not in select list"),
                        )
                    })?;
                return Ok(Some(pos - 1));
            }
            Ok(None)
        }
        ast::Expr::Identifier(i) => Ok(columns.iter().position(|c| c.name == ident(i))),
        _ => Ok(None),
    }
}

impl Binder<'_> {
    pub fn query(&mut self, q: &ast::Query) -> Result<QueryPlan> {
        if q.for_clause.is_some() || q.settings.is_some() || q.format_clause.is_some() {
            return Err(Error::unsupported("query clause is not supported"));
        }
        if !q.pipe_operators.is_empty() {
            return Err(Error::unsupported("pipe operators are not supported"));
        }
        let cte_depth = self.ctes.len();
        let result = self.query_inner(q);
        self.ctes.truncate(cte_depth);
        result
    }

    fn query_inner(&mut self, q: &ast::Query) -> Result<QueryPlan> {
        if let Some(with) = &q.with {
            for (i, cte) in with.cte_tables.iter().enumerate() {
                let name = ident(&cte.alias.name);
                if with.cte_tables[..i]
                    .iter()
                    .any(|c| ident(&c.alias.name) == name)
                {
                    return Err(Error::new(
                        "42712",
                        format!("WITH query name \"{name}\" specified more than once"),
                    ));
                }
                let recursive = with.recursive && super::recursive::references(&cte.query, &name);
                self.ctes.push(Cte {
                    name,
                    query: (*cte.query).clone(),
                    columns: cte.alias.columns.iter().map(|c| ident(&c.name)).collect(),
                    recursive,
                    working: None,
                    scope_uids: self.scope_uids(),
                });
            }
        }
        let order = order_items(q.order_by.as_ref())?;
        let mut plan = match q.body.as_ref() {
            ast::SetExpr::Select(s) => self.select(s, &order)?,
            other => {
                let mut plan = self.set_expr(other)?;
                for item in &order {
                    let column = output_reference(item.expr, &plan.columns)?.ok_or_else(|| {
                        Error::unsupported(format!(
                            "ORDER BY {} must name an output column of a UNION, INTERSECT, EXCEPT or VALUES",
                            item.expr
                        ))
                    })?;
                    plan.order.push(SortKey {
                        column,
                        desc: item.desc,
                        nulls_first: item.nulls_first,
                    });
                }
                plan
            }
        };
        let fetch_limit = match &q.fetch {
            None => None,
            Some(f) if f.percent => {
                return Err(Error::unsupported("FETCH … PERCENT is not supported"));
            }
            Some(f) => {
                if f.with_ties && q.order_by.is_none() {
                    return Err(Error::new(
                        "42P20",
                        "WITH TIES cannot be specified without ORDER BY clause",
                    ));
                }
                plan.with_ties = f.with_ties;
                // FETCH FIRST ROW ONLY means one row.
                Some(
                    f.quantity
                        .clone()
                        .unwrap_or(ast::Expr::value(ast::Value::Number("1".into(), false))),
                )
            }
        };
        let (limit, offset) = match &q.limit_clause {
            None => (fetch_limit.as_ref(), None),
            Some(ast::LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if !limit_by.is_empty() {
                    return Err(Error::unsupported("LIMIT BY is not supported"));
                }
                (
                    limit.as_ref().or(fetch_limit.as_ref()),
                    offset.as_ref().map(|o| &o.value),
                )
            }
            Some(ast::LimitClause::OffsetCommaLimit { .. }) => {
                return Err(Error::syntax("LIMIT #,# syntax is not supported"));
            }
        };
        let from = match q.body.as_ref() {
            ast::SetExpr::Select(_) => self.last_select_scope.take(),
            _ => None,
        };
        // `LIMIT ALL` parses as a NULL limit, which means no limit.
        plan.limit = limit
            .map(|e| self.count_expr(e, "LIMIT", from.as_ref()))
            .transpose()?;
        plan.offset = offset
            .map(|e| self.count_expr(e, "OFFSET", from.as_ref()))
            .transpose()?;
        Ok(plan)
    }

    /// Binds a LIMIT or OFFSET argument; `from` is the FROM scope of the query it limits.
    fn count_expr(&mut self, e: &ast::Expr, clause: &str, from: Option<&Scope>) -> Result<Expr> {
        let saved = std::mem::take(&mut self.scopes);
        let bound = self.expr(e);
        // A column of the query's own FROM items is a variable, which PostgreSQL rejects with
        // its own message rather than "column does not exist".
        let bound = match (bound, from) {
            (Err(err), Some(scope)) if err.code == sqlstate::UNDEFINED_COLUMN => {
                self.scopes = vec![scope.clone()];
                let with_from = self.expr(e);
                self.scopes.clear();
                match with_from {
                    Ok(_) => Err(Error::new(
                        sqlstate::INVALID_COLUMN_REFERENCE,
                        format!("argument of {clause} must not contain variables"),
                    )),
                    Err(_) => Err(err),
                }
            }
            (bound, _) => bound,
        };
        self.scopes = saved;
        let (expr, ty) = bound?;
        match ty {
            None => self.coerce(expr, None, DataType::Int8),
            Some(t) if t.is_integer() => Ok(expr),
            Some(t) => Err(Error::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "argument of {clause} must be type bigint, not type {}",
                    t.name()
                ),
            )),
        }
    }

    pub(super) fn set_expr(&mut self, body: &ast::SetExpr) -> Result<QueryPlan> {
        match body {
            ast::SetExpr::Select(s) => self.select(s, &[]),
            ast::SetExpr::Query(q) => self.query(q),
            ast::SetExpr::Values(v) => self.values(v),
            ast::SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let op = match op {
                    ast::SetOperator::Union => SetOp::Union,
                    ast::SetOperator::Intersect => SetOp::Intersect,
                    ast::SetOperator::Except | ast::SetOperator::Minus => SetOp::Except,
                };
                let all = match set_quantifier {
                    ast::SetQuantifier::All => true,
                    ast::SetQuantifier::Distinct | ast::SetQuantifier::None => false,
                    other => return Err(Error::unsupported(format!("{other} is not supported"))),
                };
                let left = self.set_expr(left)?;
                let right = self.set_expr(right)?;
                let name = match op {
                    SetOp::Union => "UNION",
                    SetOp::Intersect => "INTERSECT",
                    SetOp::Except => "EXCEPT",
                };
                if left.columns.len() != right.columns.len() {
                    return Err(Error::syntax(format!(
                        "each {name} query must have the same number of columns"
                    )));
                }
                let mut columns = Vec::with_capacity(left.columns.len());
                for (i, (l, r)) in left.columns.iter().zip(&right.columns).enumerate() {
                    // An untyped NULL takes the other branch's type (`SELECT NULL UNION
                    // SELECT 1` is integer), as PostgreSQL resolves unknown literals.
                    let ty = if null_column(&left, i) {
                        r.data_type
                    } else if null_column(&right, i) {
                        l.data_type
                    } else {
                        types::common_type(&[Some(l.data_type), Some(r.data_type)], name)?
                            .unwrap_or(DataType::Text)
                    };
                    columns.push(ResultColumn {
                        name: l.name.clone(),
                        data_type: ty,
                    });
                }
                Ok(plan_of(
                    Node::SetOp {
                        op,
                        all,
                        left: Box::new(left),
                        right: Box::new(right),
                    },
                    columns,
                ))
            }
            other => Err(Error::unsupported(format!(
                "query body is not supported: {other}"
            ))),
        }
    }

    fn values(&mut self, v: &ast::Values) -> Result<QueryPlan> {
        let saved = std::mem::take(&mut self.scopes);
        let result = self.values_rows(v);
        self.scopes = saved;
        let (rows, columns) = result?;
        Ok(plan_of(Node::Values(rows), columns))
    }

    /// The rows of a VALUES list; each column takes the common type of its entries.
    fn values_rows(&mut self, v: &ast::Values) -> Result<(Vec<Vec<Expr>>, Vec<ResultColumn>)> {
        let width = v.rows.first().map(|r| r.content.len()).unwrap_or(0);
        let mut bound = Vec::with_capacity(v.rows.len());
        for row in &v.rows {
            if row.content.len() != width {
                return Err(Error::syntax("VALUES lists must all be the same length"));
            }
            bound.push(
                row.content
                    .iter()
                    .map(|e| self.expr(e))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let mut columns = Vec::with_capacity(width);
        for c in 0..width {
            let tys: Vec<_> = bound.iter().map(|r| r[c].1).collect();
            let ty = types::common_type(&tys, "VALUES")?.unwrap_or(DataType::Text);
            columns.push(ResultColumn {
                name: format!("column{}", c + 1),
                data_type: ty,
            });
        }
        let mut rows = Vec::with_capacity(bound.len());
        for row in bound {
            let mut out = Vec::with_capacity(width);
            for ((e, t), col) in row.into_iter().zip(&columns) {
                out.push(match t {
                    Some(t) if t != col.data_type && !(t.is_text() && col.data_type.is_text()) => {
                        Expr::Cast {
                            expr: e.boxed(),
                            from: Some(t),
                            to: col.data_type,
                        }
                    }
                    _ => self.coerce(e, t, col.data_type)?,
                });
            }
            rows.push(out);
        }
        Ok((rows, columns))
    }

    fn select(&mut self, s: &ast::Select, order: &[OrderItem]) -> Result<QueryPlan> {
        if s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || s.qualify.is_some()
            || s.exclude.is_some()
        {
            return Err(Error::unsupported("SELECT clause is not supported"));
        }
        let distinct = match &s.distinct {
            None | Some(ast::Distinct::All) => false,
            Some(ast::Distinct::Distinct) => true,
            // DISTINCT ON is bound with the ORDER BY (`select_in_scope`).
            Some(ast::Distinct::On(_)) => false,
        };
        let (source, scope) = self.from(&s.from)?;
        self.push_scope(scope);
        let saved_windows = self.windows.take();
        let saved_named = std::mem::take(&mut self.named_windows);
        let result = self
            .define_windows(&s.named_window)
            .and_then(|()| self.select_in_scope(s, source, order, distinct));
        self.windows = saved_windows;
        self.named_windows = saved_named;
        self.last_select_scope = self.scopes.pop();
        result
    }

    fn select_in_scope(
        &mut self,
        s: &ast::Select,
        mut source: Source,
        order: &[OrderItem],
        distinct: bool,
    ) -> Result<QueryPlan> {
        let saved_aggs = self.aggregates.take();
        let saved_clause = self.no_aggregates_in;

        self.no_aggregates_in = "WHERE";
        let filter = s
            .selection
            .as_ref()
            .map(|w| self.condition(w, "WHERE"))
            .transpose()?;
        if let (Source::Scan { schema, access }, Some(f)) = (&mut source, &filter) {
            *access = access::choose(schema, f);
        }
        let filter = access::push_into_joins(&mut source, filter);

        // The SELECT list first, without aggregates allowed yet, only to learn output names
        // and expressions that GROUP BY may refer to by position or alias.
        let items = self.select_items(&s.projection)?;

        self.no_aggregates_in = "GROUP BY";
        let group_asts: Vec<ast::Expr> = match &s.group_by {
            ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
                exprs.clone()
            }
            _ => {
                return Err(Error::unsupported(
                    "GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are not supported",
                ));
            }
        };
        let mut keys = Vec::with_capacity(group_asts.len());
        for g in &group_asts {
            keys.push(self.group_key(g, &items)?);
        }

        self.aggregates = Some(Vec::new());
        self.windows = Some(Vec::new());
        let mut projection = Vec::with_capacity(items.len());
        let mut columns = Vec::with_capacity(items.len());
        for item in &items {
            let (e, ty) = match &item.ast {
                Some(a) => self.output_expr(a)?,
                None => (item.expr.clone(), item.ty),
            };
            projection.push(e);
            columns.push(ResultColumn {
                name: item.name.clone(),
                data_type: ty,
            });
        }
        let windows_so_far = self.windows.take();
        let saved_for_having = std::mem::replace(&mut self.no_aggregates_in, "HAVING");
        let having = s
            .having
            .as_ref()
            .map(|h| self.condition(h, "HAVING"))
            .transpose();
        self.no_aggregates_in = saved_for_having;
        self.windows = windows_so_far;
        let having = having?;

        let mut sort = Vec::with_capacity(order.len());
        let mut hidden = Vec::new();
        for item in order {
            let column = match output_reference(item.expr, &columns)? {
                Some(c) => c,
                None => {
                    let (e, _) = self.expr(item.expr)?;
                    match projection.iter().position(|p| *p == e) {
                        Some(c) => c,
                        None => {
                            hidden.push(e);
                            columns.len() + hidden.len() - 1
                        }
                    }
                }
            };
            sort.push(SortKey {
                column,
                desc: item.desc,
                nulls_first: item.nulls_first,
            });
        }
        // DISTINCT ON (…): the first row of each group of equal values, in ORDER BY order.
        let mut distinct_on = Vec::new();
        if let Some(ast::Distinct::On(exprs)) = &s.distinct {
            for e in exprs {
                let column = match output_reference(e, &columns)? {
                    Some(c) => c,
                    None => {
                        let (b, _) = self.expr(e)?;
                        match projection.iter().chain(hidden.iter()).position(|p| *p == b) {
                            Some(c) => c,
                            None => {
                                hidden.push(b);
                                columns.len() + hidden.len() - 1
                            }
                        }
                    }
                };
                distinct_on.push(column);
            }
            let leading = sort.len().min(distinct_on.len());
            if sort[..leading]
                .iter()
                .any(|k| !distinct_on.contains(&k.column))
            {
                return Err(Error::new(
                    sqlstate::INVALID_COLUMN_REFERENCE,
                    "SELECT DISTINCT ON expressions must match initial ORDER BY expressions",
                ));
            }
        }
        let aggregates = self.aggregates.take().unwrap_or_default();
        let windows = self.windows.take().unwrap_or_default();
        self.aggregates = saved_aggs;
        self.no_aggregates_in = saved_clause;

        if distinct && !hidden.is_empty() {
            return Err(Error::new(
                sqlstate::INVALID_COLUMN_REFERENCE,
                "for SELECT DISTINCT, ORDER BY expressions must appear in select list",
            ));
        }
        let hidden_count = hidden.len();
        projection.extend(hidden);

        // A table's other columns depend on its primary key: with the key grouped they may
        // be read ungrouped, as PostgreSQL allows. Grouping by them too changes nothing.
        if !keys.is_empty() {
            let scope = self.scopes.last().cloned().unwrap_or_default();
            let position = |table: &str, name: &str| {
                scope
                    .columns
                    .iter()
                    .position(|c| c.table.as_deref() == Some(table) && c.name == name)
            };
            let mut extra = Vec::new();
            for (i, c) in scope.columns.iter().enumerate() {
                let (Some(rel), Some(table)) = (&c.relation, &c.table) else {
                    continue;
                };
                let column = Expr::Column { depth: 0, index: i };
                if keys.contains(&column) {
                    continue;
                }
                let Some(schema) = self.txn.schema(rel)? else {
                    continue;
                };
                let key_grouped = schema.rowid().is_none()
                    && !schema.primary_key.is_empty()
                    && schema.primary_key.iter().all(|&k| {
                        position(table, &schema.columns[k].name)
                            .is_some_and(|p| keys.contains(&Expr::Column { depth: 0, index: p }))
                    });
                if key_grouped {
                    extra.push(column);
                }
            }
            keys.extend(extra);
        }
        let grouped = !keys.is_empty() || !aggregates.is_empty() || having.is_some();
        let width = if grouped {
            keys.len() + aggregates.len()
        } else {
            source.width()
        };
        let (projection, having, windows, grouping) = if grouped {
            let scope = self.scopes.last().cloned().unwrap_or_default();
            let rewrite = |e: Expr| regroup(e, &keys, &scope);
            let projection = projection
                .into_iter()
                .map(rewrite)
                .collect::<Result<Vec<_>>>()?;
            let having = having.map(rewrite).transpose()?;
            let windows = windows
                .into_iter()
                .map(|w| w.map_exprs(&mut |e| regroup(e, &keys, &scope)))
                .collect::<Result<Vec<_>>>()?;
            (
                projection,
                having,
                windows,
                Some(Grouping { keys, aggregates }),
            )
        } else {
            (projection, having, windows, None)
        };
        // Window values are appended to the row after its `width` columns.
        let projection = projection
            .into_iter()
            .map(|e| place_windows(e, width))
            .collect::<Result<Vec<_>>>()?;
        let body = Node::Select(Box::new(SelectNode {
            source,
            filter,
            grouping,
            having,
            windows,
            projection,
        }));
        Ok(QueryPlan {
            body,
            columns,
            distinct,
            order: sort,
            distinct_on,
            hidden: hidden_count,
            limit: None,
            offset: None,
            with_ties: false,
        })
    }

    /// A GROUP BY item: an input expression, or an output column by position or alias.
    fn group_key(&mut self, g: &ast::Expr, items: &[SelectItem]) -> Result<Expr> {
        if let ast::Expr::Value(v) = g
            && let ast::Value::Number(n, _) = &v.value
        {
            let item = n
                .parse::<usize>()
                .ok()
                .and_then(|p| p.checked_sub(1))
                .and_then(|p| items.get(p));
            return match item {
                Some(SelectItem { ast: Some(a), .. }) => Ok(self.expr(a)?.0),
                Some(item) => Ok(item.expr.clone()),
                None => Err(Error::new(
                    sqlstate::INVALID_COLUMN_REFERENCE,
                    format!("GROUP BY position {n} is not in select list"),
                )),
            };
        }
        match self.expr(g) {
            Ok((e, _)) => Ok(e),
            Err(err) if err.code == sqlstate::UNDEFINED_COLUMN => {
                if let ast::Expr::Identifier(i) = g
                    && let Some(SelectItem { ast: Some(a), .. }) =
                        items.iter().find(|it| it.name == ident(i))
                {
                    return Ok(self.expr(a)?.0);
                }
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    /// Expands the SELECT list: `*` and `t.*` into columns, expressions with their output
    /// names. Expressions stay unbound (`ast`) until the caller binds them with aggregates
    /// allowed, after GROUP BY has had the chance to refer to them.
    fn select_items(&mut self, projection: &[ast::SelectItem]) -> Result<Vec<SelectItem>> {
        let scope = self.scopes.last().cloned().unwrap_or_default();
        let mut items = Vec::new();
        let star_columns = |table: Option<&str>| -> Vec<SelectItem> {
            scope
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.system)
                .filter(|(_, c)| match table {
                    None => !c.hidden,
                    Some(t) => c.table.as_deref() == Some(t),
                })
                .map(|(index, c)| SelectItem {
                    ast: None,
                    expr: Expr::Column { depth: 0, index },
                    ty: c.ty,
                    name: c.name.clone(),
                })
                .collect()
        };
        for item in projection {
            match item {
                ast::SelectItem::UnnamedExpr(e) => {
                    let name = match e {
                        ast::Expr::Subquery(q) => self
                            .subquery(q)?
                            .plan
                            .columns
                            .first()
                            .map(|c| c.name.clone())
                            .unwrap_or_default(),
                        e => column_name(e),
                    };
                    items.push(SelectItem {
                        ast: Some(e.clone()),
                        expr: Expr::Const(Value::Null),
                        ty: DataType::Text,
                        name,
                    });
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    items.push(SelectItem {
                        ast: Some(expr.clone()),
                        expr: Expr::Const(Value::Null),
                        ty: DataType::Text,
                        name: ident(alias),
                    });
                }
                ast::SelectItem::Wildcard(opts) => {
                    if has_options(opts) {
                        return Err(Error::unsupported("SELECT * with options is not supported"));
                    }
                    if scope.columns.is_empty() {
                        return Err(Error::syntax(
                            "SELECT * with no tables specified is not valid",
                        ));
                    }
                    items.extend(star_columns(None));
                }
                ast::SelectItem::QualifiedWildcard(kind, opts) => {
                    if has_options(opts) {
                        return Err(Error::unsupported(
                            "SELECT t.* with options is not supported",
                        ));
                    }
                    let ast::SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
                        return Err(Error::unsupported("expression.* is not supported"));
                    };
                    let parts = name_parts(name)?;
                    let table = parts.last().cloned().unwrap_or_default();
                    let cols = star_columns(Some(&table));
                    if cols.is_empty() {
                        return Err(Error::new(
                            sqlstate::UNDEFINED_TABLE,
                            format!("missing FROM-clause entry for table \"{table}\""),
                        ));
                    }
                    items.extend(cols);
                }
                ast::SelectItem::ExprWithAliases { .. } => {
                    return Err(Error::unsupported("multiple aliases are not supported"));
                }
            }
        }
        Ok(items)
    }

    /// Binds the FROM clause: its row source and the scope its columns form.
    fn from(&mut self, from: &[ast::TableWithJoins]) -> Result<(Source, Scope)> {
        // Each FROM item needs its own name (`FROM t, t` must alias one of them).
        let mut names: Vec<String> = Vec::new();
        for twj in from {
            for factor in
                std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation))
            {
                let name = match factor {
                    ast::TableFactor::Table { alias: Some(a), .. }
                    | ast::TableFactor::Derived { alias: Some(a), .. } => Some(ident(&a.name)),
                    ast::TableFactor::Table {
                        name, alias: None, ..
                    } => name_parts(name)?.last().cloned(),
                    _ => None,
                };
                if let Some(n) = name {
                    if names.contains(&n) {
                        return Err(Error::new(
                            "42712",
                            format!("table name \"{n}\" specified more than once"),
                        ));
                    }
                    names.push(n);
                }
            }
        }
        let mut acc: Option<(Source, Scope)> = None;
        for twj in from {
            let (mut source, mut scope) = self.table_factor(&twj.relation)?;
            for join in &twj.joins {
                let (right, right_scope) = self.table_factor(&join.relation)?;
                (source, scope) =
                    self.join(source, scope, right, right_scope, &join.join_operator)?;
            }
            acc = Some(match acc {
                None => (source, scope),
                Some((left, mut left_scope)) => {
                    left_scope.columns.extend(scope.columns);
                    let node = JoinNode {
                        left,
                        right: source,
                        kind: JoinKind::Inner,
                        equi: vec![],
                        on: None,
                    };
                    (Source::Join(Box::new(node)), left_scope)
                }
            });
        }
        Ok(acc.unwrap_or((Source::Unit, Scope::default())))
    }

    fn table_factor(&mut self, factor: &ast::TableFactor) -> Result<(Source, Scope)> {
        match factor {
            ast::TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                partitions,
                sample,
                ..
            } => {
                if args.is_some()
                    || !with_hints.is_empty()
                    || version.is_some()
                    || !partitions.is_empty()
                    || sample.is_some()
                {
                    return Err(Error::unsupported(format!(
                        "table reference {factor} is not supported"
                    )));
                }
                let parts = name_parts(name)?;
                if let [single] = parts.as_slice()
                    && let Some(pos) = self.ctes.iter().rposition(|c| &c.name == single)
                {
                    return self.cte_reference(pos, alias.as_ref());
                }
                let table = object_name(name)?;
                let schema = self
                    .txn
                    .schema(&table)?
                    .ok_or_else(|| Error::undefined_table(&table))?;
                let qualifier = alias
                    .as_ref()
                    .map(|a| ident(&a.name))
                    .unwrap_or_else(|| table.clone());
                let mut scope = Scope::of_table(&schema, &qualifier);
                if let Some(a) = alias {
                    rename_columns(&mut scope, a)?;
                }
                Ok((
                    Source::Scan {
                        schema,
                        access: Access::Full,
                    },
                    scope,
                ))
            }
            ast::TableFactor::Derived {
                lateral,
                subquery,
                alias,
                sample,
            } => {
                if *lateral || sample.is_some() {
                    return Err(Error::unsupported("LATERAL subqueries are not supported"));
                }
                if alias.is_none() {
                    return Err(Error::syntax("subquery in FROM must have an alias"));
                }
                // A FROM subquery cannot see its sibling FROM items, only enclosing queries.
                let plan = self.query(subquery)?;
                let qualifier = alias.as_ref().map(|a| ident(&a.name));
                let mut scope = scope_of_plan(&plan, qualifier);
                if let Some(a) = alias {
                    rename_columns(&mut scope, a)?;
                }
                Ok((Source::Subquery(Box::new(plan)), scope))
            }
            ast::TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    return Err(Error::unsupported(
                        "aliases on parenthesized joins are not supported",
                    ));
                }
                self.from(std::slice::from_ref(table_with_joins))
            }
            other => Err(Error::unsupported(format!(
                "table reference {other} is not supported"
            ))),
        }
    }

    fn cte_reference(
        &mut self,
        pos: usize,
        alias: Option<&ast::TableAlias>,
    ) -> Result<(Source, Scope)> {
        if let Some(Some((id, columns))) = self.ctes.get(pos).map(|c| c.working.clone()) {
            let name = self.ctes[pos].name.clone();
            let plan = plan_of(Node::Values(vec![]), columns);
            let qualifier = alias.map(|a| ident(&a.name)).unwrap_or(name);
            let mut scope = scope_of_plan(&plan, Some(qualifier));
            if let Some(a) = alias {
                rename_columns(&mut scope, a)?;
            }
            let width = plan.columns.len();
            return Ok((Source::WorkingTable { id, width }, scope));
        }
        // A CTE sees only the CTEs defined before it; bind it anew at each reference.
        let hidden = self.ctes.split_off(pos);
        let (name, query, columns, recursive, around) = match hidden.first() {
            Some(c) => (
                c.name.clone(),
                c.query.clone(),
                c.columns.clone(),
                c.recursive,
                c.scope_uids.clone(),
            ),
            None => return Err(Error::internal("CTE vanished")),
        };
        // The enclosing levels the CTE may see: those around its WITH, when exactly they
        // surround the reference; otherwise none (its outer rows would not line up).
        let visible = if !around.is_empty() && self.scope_uids() == around {
            self.scopes.clone()
        } else {
            Vec::new()
        };
        if recursive {
            let saved_scopes = std::mem::replace(&mut self.scopes, visible);
            let bound = self.bind_recursive(&name, &query, &columns);
            self.scopes = saved_scopes;
            self.ctes.extend(hidden);
            let r = bound?;
            let plan = plan_of(Node::Values(vec![]), r.columns.clone());
            let qualifier = alias.map(|a| ident(&a.name)).unwrap_or(name);
            let mut scope = scope_of_plan(&plan, Some(qualifier));
            if let Some(a) = alias {
                rename_columns(&mut scope, a)?;
            }
            return Ok((Source::Recursive(Box::new(r)), scope));
        }
        let saved_scopes = std::mem::replace(&mut self.scopes, visible);
        let plan = self.query(&query);
        self.scopes = saved_scopes;
        self.ctes.extend(hidden);
        let mut plan = plan?;
        if columns.len() > plan.columns.len() {
            return Err(Error::syntax(format!(
                "WITH query \"{name}\" has {} columns available but {} columns specified",
                plan.columns.len(),
                columns.len()
            )));
        }
        for (c, n) in plan.columns.iter_mut().zip(columns) {
            c.name = n;
        }
        let qualifier = alias.map(|a| ident(&a.name)).unwrap_or(name);
        let mut scope = scope_of_plan(&plan, Some(qualifier));
        if let Some(a) = alias {
            rename_columns(&mut scope, a)?;
        }
        Ok((Source::Subquery(Box::new(plan)), scope))
    }

    fn join(
        &mut self,
        left: Source,
        left_scope: Scope,
        right: Source,
        right_scope: Scope,
        op: &ast::JoinOperator,
    ) -> Result<(Source, Scope)> {
        use ast::JoinOperator as J;
        let (kind, constraint) = match op {
            J::Join(c) | J::Inner(c) => (JoinKind::Inner, Some(c)),
            J::Left(c) | J::LeftOuter(c) => (JoinKind::Left, Some(c)),
            J::Right(c) | J::RightOuter(c) => (JoinKind::Right, Some(c)),
            J::FullOuter(c) => (JoinKind::Full, Some(c)),
            J::CrossJoin(_) => (JoinKind::Inner, None),
            other => {
                return Err(Error::unsupported(format!(
                    "join {other:?} is not supported"
                )));
            }
        };
        let left_width = left_scope.columns.len();
        let mut scope = left_scope;
        scope.columns.extend(right_scope.columns);
        let mut conditions = Vec::new();
        // USING columns of a RIGHT or FULL join: (name, left position, right position, type).
        let mut merged: Vec<(String, usize, usize, DataType)> = Vec::new();
        let using: Vec<String> = match constraint {
            Some(ast::JoinConstraint::Using(names)) => names
                .iter()
                .map(|n| name_parts(n).map(|p| p.last().cloned().unwrap_or_default()))
                .collect::<Result<_>>()?,
            Some(ast::JoinConstraint::Natural) => {
                let (l, r) = scope.columns.split_at(left_width);
                l.iter()
                    .filter(|c| !c.hidden && !c.system && r.iter().any(|rc| rc.name == c.name))
                    .map(|c| c.name.clone())
                    .collect()
            }
            _ => vec![],
        };
        for name in &using {
            let find = |range: std::ops::Range<usize>| -> Result<usize> {
                let side = if range.start == 0 { "left" } else { "right" };
                let hits: Vec<usize> = range
                    .filter(|i| !scope.columns[*i].hidden && scope.columns[*i].name == *name)
                    .collect();
                match hits.as_slice() {
                    [i] => Ok(*i),
                    [] => Err(Error::new(
                        sqlstate::UNDEFINED_COLUMN,
                        format!(
                            "column \"{name}\" specified in USING clause does not exist in {side} table"
                        ),
                    )),
                    _ => Err(Error::new(
                        sqlstate::AMBIGUOUS_COLUMN,
                        format!("common column name \"{name}\" appears more than once"),
                    )),
                }
            };
            let l = find(0..left_width)?;
            let r = find(left_width..scope.columns.len())?;
            let (lt, rt) = (scope.columns[l].ty, scope.columns[r].ty);
            if !types::comparable(lt, rt) {
                return Err(types::operator_error("=", &Some(lt), &Some(rt)));
            }
            // After USING, the bare name means the left column; the right one stays
            // reachable only by its qualified name.
            scope.columns[r].hidden = true;
            if matches!(kind, JoinKind::Right | JoinKind::Full) {
                let ty = types::common_type(&[Some(lt), Some(rt)], "JOIN/USING")?.unwrap_or(lt);
                merged.push((name.clone(), l, r, ty));
            }
            conditions.push(Expr::Compare {
                op: super::expr::CmpOp::Eq,
                left: Expr::Column { depth: 0, index: l }.boxed(),
                right: Expr::Column { depth: 0, index: r }.boxed(),
            });
        }
        if let Some(ast::JoinConstraint::On(e)) = constraint {
            self.push_scope(scope);
            let saved = std::mem::replace(&mut self.no_aggregates_in, "JOIN conditions");
            let saved_aggs = self.aggregates.take();
            let cond = self.condition(e, "JOIN/ON");
            self.no_aggregates_in = saved;
            self.aggregates = saved_aggs;
            scope = self.scopes.pop().unwrap_or_default();
            conditions.push(cond?);
        }
        let (equi, rest) = access::split_equi_join(conditions, left_width);
        let on = rest
            .into_iter()
            .reduce(|a, b| Expr::And(a.boxed(), b.boxed()));
        let join = Source::Join(Box::new(JoinNode {
            left,
            right,
            kind,
            equi,
            on,
        }));
        if merged.is_empty() {
            return Ok((join, scope));
        }
        // RIGHT/FULL JOIN … USING: the merged column is the right value (RIGHT) or
        // COALESCE(left, right) (FULL), and comes first, as in PostgreSQL; the two copies
        // stay reachable by their qualified names.
        let width = scope.columns.len();
        let mut projection = Vec::with_capacity(merged.len() + width);
        let mut columns = Vec::with_capacity(merged.len() + width);
        let mut new_scope = Scope::default();
        for (name, l, r, ty) in &merged {
            let (le, re) = (
                Expr::Column {
                    depth: 0,
                    index: *l,
                },
                Expr::Column {
                    depth: 0,
                    index: *r,
                },
            );
            projection.push(match kind {
                JoinKind::Right => re,
                _ => Expr::Coalesce(vec![le, re]),
            });
            columns.push(ResultColumn {
                name: name.clone(),
                data_type: *ty,
            });
            new_scope.columns.push(ScopeColumn {
                table: None,
                relation: None,
                name: name.clone(),
                ty: *ty,
                hidden: false,
                system: false,
            });
        }
        for (i, mut c) in scope.columns.into_iter().enumerate() {
            projection.push(Expr::Column { depth: 0, index: i });
            columns.push(ResultColumn {
                name: c.name.clone(),
                data_type: c.ty,
            });
            if merged.iter().any(|(_, l, _, _)| *l == i) {
                c.hidden = true;
            }
            new_scope.columns.push(c);
        }
        let plan = plan_of(
            Node::Select(Box::new(SelectNode {
                source: join,
                filter: None,
                grouping: None,
                having: None,
                windows: Vec::new(),
                projection,
            })),
            columns,
        );
        Ok((Source::Subquery(Box::new(plan)), new_scope))
    }
}

/// A SELECT list entry before aggregates are bound.
struct SelectItem {
    /// The expression to bind, or `None` for a column that `*` expanded to `expr`.
    ast: Option<ast::Expr>,
    expr: Expr,
    ty: DataType,
    name: String,
}

fn has_options(o: &ast::WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_some()
        || o.opt_exclude.is_some()
        || o.opt_except.is_some()
        || o.opt_replace.is_some()
        || o.opt_rename.is_some()
}

fn plan_of(body: Node, columns: Vec<ResultColumn>) -> QueryPlan {
    QueryPlan {
        body,
        columns,
        distinct: false,
        order: vec![],
        hidden: 0,
        limit: None,
        offset: None,
        with_ties: false,
        distinct_on: Vec::new(),
    }
}

fn scope_of_plan(plan: &QueryPlan, qualifier: Option<String>) -> Scope {
    Scope {
        columns: plan
            .columns
            .iter()
            .map(|c| ScopeColumn {
                table: qualifier.clone(),
                relation: None,
                name: c.name.clone(),
                ty: c.data_type,
                hidden: false,
                system: false,
            })
            .collect(),
        uid: 0,
    }
}

/// Applies `AS alias (a, b, ...)` column names.
fn rename_columns(scope: &mut Scope, alias: &ast::TableAlias) -> Result<()> {
    if alias.columns.len() > scope.columns.len() {
        return Err(Error::syntax(format!(
            "table \"{}\" has {} columns available but {} columns specified",
            ident(&alias.name),
            scope.columns.len(),
            alias.columns.len()
        )));
    }
    for (c, a) in scope.columns.iter_mut().zip(&alias.columns) {
        c.name = ident(&a.name);
    }
    Ok(())
}

/// A correlated subquery of an aggregating SELECT, reading the grouped row.
fn regroup_subquery(s: SubqueryExpr, keys: &[Expr], scope: &Scope) -> Result<SubqueryExpr> {
    let mut plan = *s.plan;
    let to_grouped = |index: usize| -> Result<usize> {
        match regroup(Expr::Column { depth: 0, index }, keys, scope) {
            Ok(Expr::Column { depth: 0, index }) => Ok(index),
            Ok(_) => Err(Error::internal("a grouped column did not map to a column")),
            Err(e) if e.code == sqlstate::GROUPING_ERROR => {
                let shown = scope
                    .columns
                    .get(index)
                    .map(|c| match &c.table {
                        Some(t) => format!("{t}.{}", c.name),
                        None => c.name.clone(),
                    })
                    .unwrap_or_default();
                Err(Error::new(
                    sqlstate::GROUPING_ERROR,
                    format!("subquery uses ungrouped column \"{shown}\" from outer query"),
                ))
            }
            Err(e) => Err(e),
        }
    };
    super::outer_refs::remap_plan(&mut plan, 1, &to_grouped)?;
    Ok(SubqueryExpr::new(plan, true))
}

/// True if every row of column `i` of a plan is a NULL literal.
fn null_column(plan: &QueryPlan, i: usize) -> bool {
    match &plan.body {
        Node::Select(s) => {
            s.grouping.is_none() && s.projection.get(i).is_some_and(Expr::is_null_constant)
        }
        Node::Values(rows) => rows
            .iter()
            .all(|r| r.get(i).is_some_and(Expr::is_null_constant)),
        Node::SetOp { left, right, .. } => null_column(left, i) && null_column(right, i),
    }
}

/// Rewrites window placeholders into the columns their values are appended as.
fn place_windows(e: Expr, width: usize) -> Result<Expr> {
    match e {
        Expr::Window(i) => Ok(Expr::Column {
            depth: 0,
            index: width + i,
        }),
        other => other.map_children(&mut |c| place_windows(c, width)),
    }
}

/// Rewrites an expression of an aggregating SELECT to read the aggregated row: a group key
/// becomes its key column, an aggregate its result column.
fn regroup(e: Expr, keys: &[Expr], scope: &Scope) -> Result<Expr> {
    if let Some(k) = keys.iter().position(|k| *k == e) {
        return Ok(Expr::Column { depth: 0, index: k });
    }
    match e {
        Expr::Aggregate(i) => Ok(Expr::Column {
            depth: 0,
            index: keys.len() + i,
        }),
        Expr::Column { depth: 0, index } => {
            let (table, name) = scope
                .columns
                .get(index)
                .map(|c| (c.table.clone(), c.name.clone()))
                .unwrap_or((None, "?".into()));
            let shown = match table {
                Some(t) => format!("{t}.{name}"),
                None => name,
            };
            Err(Error::new(
                sqlstate::GROUPING_ERROR,
                format!(
                    "column \"{shown}\" must appear in the GROUP BY clause or be used in an aggregate function"
                ),
            ))
        }
        // A correlated subquery runs once per group: its references to this SELECT's rows
        // must name grouped columns, and read them from the grouped row.
        Expr::Subquery(s) if s.correlated => Ok(Expr::Subquery(regroup_subquery(s, keys, scope)?)),
        Expr::Exists { subquery, negated } if subquery.correlated => Ok(Expr::Exists {
            subquery: regroup_subquery(subquery, keys, scope)?,
            negated,
        }),
        Expr::InSubquery {
            expr,
            subquery,
            negated,
        } if subquery.correlated => Ok(Expr::InSubquery {
            expr: Box::new(regroup(*expr, keys, scope)?),
            subquery: regroup_subquery(subquery, keys, scope)?,
            negated,
        }),
        Expr::Quantified {
            expr,
            op,
            subquery,
            all,
        } if subquery.correlated => Ok(Expr::Quantified {
            expr: Box::new(regroup(*expr, keys, scope)?),
            op,
            subquery: regroup_subquery(subquery, keys, scope)?,
            all,
        }),
        other => other.map_children(&mut |c| regroup(c, keys, scope)),
    }
}

impl Binder<'_> {
    /// Binds a RETURNING list over the rows of the scope on top of the stack.
    pub fn returning(
        &mut self,
        items: Option<&Vec<ast::SelectItem>>,
    ) -> Result<super::plan::Projection> {
        let Some(items) = items else {
            return Ok(Default::default());
        };
        let expanded = self.select_items(items)?;
        let saved_aggs = self.aggregates.take();
        let saved_clause = std::mem::replace(&mut self.no_aggregates_in, "RETURNING");
        let mut out = super::plan::Projection::default();
        let mut result = Ok(());
        for item in expanded {
            let bound = match &item.ast {
                Some(a) => self.output_expr(a),
                None => Ok((item.expr.clone(), item.ty)),
            };
            match bound {
                Ok((e, ty)) => {
                    out.exprs.push(e);
                    out.columns.push(ResultColumn {
                        name: item.name,
                        data_type: ty,
                    });
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.aggregates = saved_aggs;
        self.no_aggregates_in = saved_clause;
        result.map(|_| out)
    }
}
