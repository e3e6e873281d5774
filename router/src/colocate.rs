//! Co-located joins: sharded tables of one keyspace joined on their shard keys.
//!
//! ```text
//!  SELECT … FROM orders o JOIN items i ON i.order_id = o.id      (both sharded by order id)
//!     o.id = i.order_id  ⇒  equal keys  ⇒  equal hashes  ⇒  the same shard
//!  each shard joins its own rows; the router concatenates (or combines count/sum/min/max)
//! ```
//! A keyspace splits the same hash space into the same ranges for all of its tables, so rows
//! whose shard keys are equal live on the same shard. If every joined table is tied to the
//! others by shard-key equalities, every row of the join is made on one shard, and the union
//! of the shards' joins is the whole join. That holds for outer joins too, when the outer
//! join's own ON clause carries the equality: a row without a partner on its shard has none
//! anywhere. Reference tables (full copies) may take part as in `plan_with_reference`.

use std::collections::BTreeMap;

use protocol::DataType;
use protocol::cluster::{Distribution, TableInfo};
use sqlparser::ast::{
    self, BinaryOperator, Expr, JoinConstraint, JoinOperator, SetExpr, TableFactor,
};

use crate::names::{ident, table_name};
use crate::plan::split_and;

/// A table occurrence in FROM: the name it is referred to by, and its table.
struct Occurrence<'a> {
    label: String,
    info: &'a TableInfo,
}

/// Whether every row of the query's FROM clause is formed on one shard: all sharded tables
/// (at least two occurrences) are linked by equalities of their shard keys, outer joins carry
/// their link in their own ON clause, and reference tables appear only where a row of them
/// cannot be repeated per shard (inner joins, or the non-preserved side of an outer join).
pub fn rows_form_on_one_shard(stmt: &ast::Statement, tables: &[&TableInfo]) -> bool {
    let ast::Statement::Query(q) = stmt else {
        return false;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return false;
    };
    let by_name: BTreeMap<&str, &TableInfo> = tables
        .iter()
        .map(|t| (t.schema.name.as_str(), *t))
        .collect();
    let occurrence = |f: &TableFactor| -> Option<Occurrence<'_>> {
        let TableFactor::Table { name, alias, .. } = f else {
            return None;
        };
        let table = table_name(name);
        let info = *by_name.get(table.as_str())?;
        let label = alias
            .as_ref()
            .map(|a| ident(&a.name))
            .unwrap_or_else(|| table.rsplit('.').next().unwrap_or(&table).to_string());
        Some(Occurrence { label, info })
    };
    let mut occurrences: Vec<Occurrence<'_>> = Vec::new();
    // Union-find over occurrences of sharded tables.
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut i = i;
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut inner_conditions: Vec<&Expr> = Vec::new();
    if let Some(w) = &s.selection {
        inner_conditions.push(w);
    }
    let link = |occurrences: &[Occurrence<'_>], parent: &mut Vec<usize>, cond: &Expr| {
        for (a, b) in key_equalities(occurrences, cond) {
            let (ra, rb) = (find(parent, a), find(parent, b));
            parent[ra] = rb;
        }
    };
    let mut outer_checks: Vec<(usize, &Expr)> = Vec::new();
    for item in &s.from {
        let Some(base) = occurrence(&item.relation) else {
            return false;
        };
        let base_sharded = base.info.distribution == Distribution::Sharded;
        occurrences.push(base);
        parent.push(parent.len());
        let mut has_sharded = base_sharded;
        for join in &item.joins {
            let Some(next) = occurrence(&join.relation) else {
                return false;
            };
            let sharded = next.info.distribution == Distribution::Sharded;
            let index = occurrences.len();
            occurrences.push(next);
            parent.push(index);
            let (outer, constraint) = match &join.join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => {
                    (None, c)
                }
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (Some("left"), c),
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (Some("right"), c),
                JoinOperator::FullOuter(c) => (Some("full"), c),
                _ => return false,
            };
            let on = match constraint {
                JoinConstraint::On(e) => Some(e),
                JoinConstraint::None => None,
                // USING/NATURAL pick columns by name; they are gathered instead.
                _ => return false,
            };
            match (outer, sharded) {
                (None, _) => {
                    if let Some(e) = on {
                        inner_conditions.push(e);
                    }
                }
                // A reference table on the preserved side would repeat per shard.
                (Some("left"), false) if has_sharded => {}
                (Some(_), false) => return false,
                (Some(kind), true) => {
                    let Some(e) = on else { return false };
                    if kind != "left" && !has_sharded {
                        return false;
                    }
                    outer_checks.push((index, e));
                }
            }
            has_sharded |= sharded;
        }
    }
    let sharded: Vec<usize> = (0..occurrences.len())
        .filter(|&i| occurrences[i].info.distribution == Distribution::Sharded)
        .collect();
    if sharded.len() < 2 {
        return false;
    }
    let keyspace = &occurrences[sharded[0]].info.keyspace;
    if sharded.iter().any(|&i| {
        occurrences[i].info.keyspace != *keyspace || occurrences[i].info.shard_key.len() != 1
    }) || occurrences.iter().any(|o| o.info.keyspace != *keyspace)
    {
        return false;
    }
    // An outer join's own ON must tie its table to one joined before it.
    for (index, on) in &outer_checks {
        if !key_equalities(&occurrences, on)
            .iter()
            .any(|&(a, b)| (a == *index && b < *index) || (b == *index && a < *index))
        {
            return false;
        }
    }
    for (_, on) in &outer_checks {
        link(&occurrences, &mut parent, on);
    }
    for cond in inner_conditions {
        link(&occurrences, &mut parent, cond);
    }
    let root = find(&mut parent, sharded[0]);
    sharded.iter().all(|&i| find(&mut parent, i) == root)
}

/// Pairs of sharded occurrences whose shard keys `cond` equates (top-level AND conjuncts of
/// `x.key = y.key`, with hash-compatible key types).
fn key_equalities(occurrences: &[Occurrence<'_>], cond: &Expr) -> Vec<(usize, usize)> {
    let mut conjuncts = Vec::new();
    split_and(cond, &mut conjuncts);
    let key_of = |e: &Expr| -> Option<usize> {
        let Expr::CompoundIdentifier(parts) = e else {
            return None;
        };
        let [label, column] = parts.as_slice() else {
            return None;
        };
        let (label, column) = (ident(label), ident(column));
        let mut found = occurrences
            .iter()
            .enumerate()
            .filter(|(_, o)| o.label == label);
        let (i, o) = found.next()?;
        if found.next().is_some() || o.info.distribution != Distribution::Sharded {
            return None;
        }
        let &[key] = o.info.shard_key.as_slice() else {
            return None;
        };
        (o.info.schema.columns.get(key)?.name == column).then_some(i)
    };
    conjuncts
        .into_iter()
        .filter_map(|c| match c {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let (a, b) = (key_of(left)?, key_of(right)?);
                let ta = key_type(occurrences[a].info)?;
                let tb = key_type(occurrences[b].info)?;
                (a != b && same_hash(ta, tb)).then_some((a, b))
            }
            _ => None,
        })
        .collect()
}

fn key_type(t: &TableInfo) -> Option<DataType> {
    Some(t.schema.columns.get(*t.shard_key.first()?)?.data_type)
}

/// Whether equal values of these two types always hash alike (so land on one shard).
fn same_hash(a: DataType, b: DataType) -> bool {
    use DataType::*;
    let int = |t| matches!(t, Int2 | Int4 | Int8);
    a == b || (int(a) && int(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::cluster::TableInfo;

    fn table(name: &str, key: &str, cols: &[(&str, &str)], dist: Distribution) -> TableInfo {
        let defs: Vec<String> = cols.iter().map(|(c, t)| format!("{c} {t}")).collect();
        let sql = format!(
            "CREATE TABLE {name} ({}, PRIMARY KEY ({key}))",
            defs.join(", ")
        );
        let stmt = engine::sql::parse(&sql).unwrap().remove(0);
        let schema = engine::sql::schema_from_create(&stmt).unwrap();
        let k = schema.column_index(key).unwrap();
        TableInfo {
            schema,
            keyspace: "default".into(),
            distribution: dist,
            shard_key: if dist == Distribution::Sharded {
                vec![k]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn joins_on_shard_keys_are_colocated_and_others_are_not() {
        let o = table(
            "o",
            "id",
            &[("id", "int"), ("cust", "int")],
            Distribution::Sharded,
        );
        let i = table(
            "i",
            "oid",
            &[("oid", "bigint"), ("n", "int")],
            Distribution::Sharded,
        );
        let c = table(
            "c",
            "id",
            &[("id", "text"), ("x", "int")],
            Distribution::Sharded,
        );
        let r = table(
            "r",
            "k",
            &[("k", "int"), ("v", "text")],
            Distribution::Reference,
        );
        let all = [&o, &i, &c, &r];
        let check = |sql: &str| {
            let stmt = engine::sql::parse(sql).unwrap().remove(0);
            rows_form_on_one_shard(&stmt, &all)
        };
        assert!(check("SELECT * FROM o JOIN i ON i.oid = o.id"));
        assert!(check(
            "SELECT * FROM o a, i b WHERE b.oid = a.id AND b.n > 1"
        ));
        assert!(check(
            "SELECT * FROM o LEFT JOIN i ON o.id = i.oid AND i.n > 2"
        ));
        assert!(check("SELECT * FROM o FULL JOIN i ON o.id = i.oid"));
        assert!(check(
            "SELECT * FROM o JOIN i ON i.oid = o.id JOIN r ON r.k = i.n"
        ));
        assert!(check("SELECT * FROM o a JOIN o b ON a.id = b.id"));
        // Not on the shard keys, types that hash differently, or not linked.
        assert!(!check("SELECT * FROM o JOIN i ON i.n = o.id"));
        assert!(!check("SELECT * FROM o JOIN c ON c.id = o.id::text"));
        assert!(!check("SELECT * FROM o JOIN i ON i.oid = o.cust"));
        assert!(!check("SELECT * FROM o, i"));
        assert!(!check(
            "SELECT * FROM o LEFT JOIN i ON true WHERE o.id = i.oid"
        ));
        // A reference table on the preserved side of an outer join.
        assert!(!check(
            "SELECT * FROM r LEFT JOIN o ON o.id = r.k JOIN i ON i.oid = o.id"
        ));
        // One sharded table is not a co-located join (plan_with_reference handles it).
        assert!(!check("SELECT * FROM o JOIN r ON r.k = o.cust"));
    }
}
