//! EXPLAIN: the bound plan as an indented tree, one node per line, the way PostgreSQL prints
//! its plans (without costs: Tessera has no cost model, it chooses access paths by rule).
//!
//! ```text
//! Limit
//!   ->  Sort (key 1 desc)
//!         ->  Hash Join (inner; 1 key)
//!               ->  Index Scan using t_v_idx on t (v = …)
//!               ->  Seq Scan on u
//! ```

use protocol::schema::TableSchema;

use super::Plan;
use super::dml::{InsertPlan, InsertSource};
use super::expr::Expr;
use super::plan::{Access, JoinKind, Node, QueryPlan, SelectNode, SetOp, Source};

struct Tree {
    lines: Vec<String>,
}

impl Tree {
    fn node(&mut self, depth: usize, text: impl Into<String>) {
        let text = text.into();
        if depth == 0 {
            self.lines.push(text);
        } else {
            let pad = " ".repeat(6 * (depth - 1) + 2);
            self.lines.push(format!("{pad}->  {text}"));
        }
    }

    fn detail(&mut self, depth: usize, text: impl Into<String>) {
        let pad = " ".repeat(if depth == 0 { 2 } else { 6 * depth });
        self.lines.push(format!("{pad}{}", text.into()));
    }
}

/// The plan of a bound statement, as EXPLAIN's lines.
pub fn lines(plan: &Plan) -> Vec<String> {
    let mut t = Tree { lines: Vec::new() };
    match plan {
        Plan::Query(q) => query(&mut t, q, 0),
        Plan::Insert(p) => insert(&mut t, p),
        Plan::Update(p) => {
            t.node(0, format!("Update on {}", p.schema.name));
            scan(&mut t, &p.schema, &p.access, p.filter.as_ref(), 1);
        }
        Plan::Delete(p) => {
            t.node(0, format!("Delete on {}", p.schema.name));
            scan(&mut t, &p.schema, &p.access, p.filter.as_ref(), 1);
        }
        Plan::Ddl => t.node(0, "Utility Statement"),
    }
    t.lines
}

fn insert(t: &mut Tree, p: &InsertPlan) {
    t.node(0, format!("Insert on {}", p.schema.name));
    if let Some(oc) = &p.on_conflict {
        let action = match oc.action {
            super::upsert::Action::Nothing => "NOTHING",
            super::upsert::Action::Update { .. } => "UPDATE",
        };
        t.detail(0, format!("Conflict Resolution: {action}"));
    }
    match &p.source {
        InsertSource::Values(rows) => t.node(1, format!("Values Scan ({} rows)", rows.len())),
        InsertSource::Query(q) => query(t, q, 1),
    }
}

fn query(t: &mut Tree, q: &QueryPlan, depth: usize) {
    let mut depth = depth;
    if q.limit.is_some() || q.offset.is_some() {
        t.node(depth, "Limit");
        depth += 1;
    }
    if !q.order.is_empty() {
        let keys: Vec<String> = q
            .order
            .iter()
            .map(|k| {
                format!(
                    "{}{}",
                    column_label(q, k.column),
                    if k.desc { " DESC" } else { "" }
                )
            })
            .collect();
        t.node(depth, "Sort");
        t.detail(depth, format!("Sort Key: {}", keys.join(", ")));
        depth += 1;
    }
    if q.distinct {
        t.node(depth, "HashAggregate (DISTINCT)");
        depth += 1;
    }
    match &q.body {
        Node::Select(s) => select(t, s, depth),
        Node::Values(rows) => t.node(depth, format!("Values Scan ({} rows)", rows.len())),
        Node::SetOp {
            op,
            all,
            left,
            right,
        } => {
            let name = match op {
                SetOp::Union => "Append (UNION",
                SetOp::Intersect => "SetOp (INTERSECT",
                SetOp::Except => "SetOp (EXCEPT",
            };
            t.node(depth, format!("{name}{})", if *all { " ALL" } else { "" }));
            query(t, left, depth + 1);
            query(t, right, depth + 1);
        }
    }
}

fn column_label(q: &QueryPlan, column: usize) -> String {
    match q.columns.get(column) {
        Some(c) => c.name.clone(),
        None => format!("${}", column + 1),
    }
}

fn select(t: &mut Tree, s: &SelectNode, depth: usize) {
    let mut depth = depth;
    if !s.windows.is_empty() {
        t.node(
            depth,
            format!("WindowAgg ({} window call(s))", s.windows.len()),
        );
        depth += 1;
    }
    if let Some(g) = &s.grouping {
        let kind = if g.keys.is_empty() {
            "Aggregate"
        } else {
            "HashAggregate"
        };
        t.node(depth, kind);
        if !g.keys.is_empty() {
            t.detail(depth, format!("Group Key: {} expression(s)", g.keys.len()));
        }
        if s.having.is_some() {
            t.detail(depth, "Filter: HAVING");
        }
        depth += 1;
    }
    match &s.source {
        Source::Scan { schema, access } => scan(t, schema, access, s.filter.as_ref(), depth),
        other => {
            source(t, other, depth, s.filter.is_some());
        }
    }
}

fn source(t: &mut Tree, src: &Source, depth: usize, filtered: bool) {
    let filter = |t: &mut Tree| {
        if filtered {
            t.detail(depth, "Filter: WHERE");
        }
    };
    match src {
        Source::Unit => {
            t.node(depth, "Result");
            filter(t);
        }
        Source::Scan { schema, access } => scan(t, schema, access, None, depth),
        Source::Subquery(q) => {
            t.node(depth, "Subquery Scan");
            filter(t);
            query(t, q, depth + 1);
        }
        Source::Join(j) => {
            let kind = match j.kind {
                JoinKind::Inner => "Inner",
                JoinKind::Left => "Left",
                JoinKind::Right => "Right",
                JoinKind::Full => "Full",
            };
            if j.equi.is_empty() {
                t.node(depth, format!("Nested Loop ({kind})"));
            } else {
                t.node(
                    depth,
                    format!("Hash Join ({kind}; {} key(s))", j.equi.len()),
                );
            }
            if j.on.is_some() {
                t.detail(depth, "Join Filter: ON");
            }
            filter(t);
            source(t, &j.left, depth + 1, false);
            source(t, &j.right, depth + 1, false);
        }
        Source::Recursive(r) => {
            t.node(depth, "Recursive Union");
            filter(t);
            query(t, &r.base, depth + 1);
            query(t, &r.step, depth + 1);
        }
        Source::WorkingTable { .. } => {
            t.node(depth, "WorkTable Scan");
            filter(t);
        }
    }
}

fn scan(t: &mut Tree, schema: &TableSchema, access: &Access, filter: Option<&Expr>, depth: usize) {
    let name = &schema.name;
    match access {
        Access::Full => t.node(depth, format!("Seq Scan on {name}")),
        Access::Key(_) => t.node(
            depth,
            format!(
                "Index Scan using {} on {name} (key =)",
                schema.primary_key_name()
            ),
        ),
        Access::Prefix(k) => t.node(
            depth,
            format!(
                "Index Scan using {} on {name} ({} leading key column(s) =)",
                schema.primary_key_name(),
                k.len()
            ),
        ),
        Access::Range { .. } => t.node(
            depth,
            format!(
                "Index Scan using {} on {name} (key range)",
                schema.primary_key_name()
            ),
        ),
        Access::Index {
            name: index,
            eq,
            lower,
            upper,
        } => {
            let mut cond = Vec::new();
            if !eq.is_empty() {
                cond.push(format!("{} column(s) =", eq.len()));
            }
            if lower.is_some() || upper.is_some() {
                cond.push("range".to_string());
            }
            t.node(
                depth,
                format!("Index Scan using {index} on {name} ({})", cond.join(", ")),
            );
        }
    }
    if filter.is_some() {
        t.detail(depth, "Filter: WHERE");
    }
}
