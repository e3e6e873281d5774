//! Simple-protocol statements that differ only in integer literals share one parse, one
//! description and one route.
//!
//! A client that does not prepare statements sends the same statement again and again with
//! other numbers in it (`SELECT abalance FROM pgbench_accounts WHERE aid = 4711`). Parsing
//! and planning each text anew is most of the router's and the node's work for such a point
//! statement. So the text's integer literals are cut out by a small scanner into its
//! *shape*, and a shape seen before runs as the statement the client would have prepared:
//!
//! ```text
//!  "… WHERE aid = 4711"  ──scan──►  shape "… WHERE aid = $1", literals [4711]
//!        │                              │ learned by the session, schema unchanged since?
//!        │                              ├─ yes ─► run the shape's prepared statement with
//!        │                              │         params [4711] (its remembered route, the
//!        │                              │         node's cached parse and bound plan)
//!        └─ no ─► parse and run the text as before; on the shape's second sighting, learn it
//! ```
//!
//! A shape is used only where the literal and the parameter cannot mean different things.
//! Learning checks that:
//! - the shape's parse with the literals put back *is* the text's parse (so the scanner cut
//!   out exactly the number tokens);
//! - every literal stood as an operand of an operator, in an IN list or BETWEEN, as a
//!   VALUES item or as an UPDATE's assigned value: never where an integer means a column
//!   position (`ORDER BY 1`, `GROUP BY 1`), a type modifier or a function argument, nor in
//!   LIMIT/OFFSET (the router bounds each shard's rows by the number itself, `pushdown::top_n`,
//!   which a parameter would turn into gathering every row);
//! - the statement calls no function (a call may be rewritten before planning);
//! - each parameter's described type is `integer` or `bigint`, so the value means what the
//!   literal (an `integer`) did: PostgreSQL compares and adds an int4 with an int8 the same
//!   way; a `smallint`, `text` or `numeric` context would change the result's type or turn
//!   an error into an answer, and is left to the full path.
//!
//! Only integers that fit `integer` are cut out (larger ones are `bigint` or `numeric`
//! literals in PostgreSQL), with a prefix minus (`v + -5`: the binder folds it into the
//! constant, so the parameter carries `-5`); a text with a `$`, a backslash, a comment or a second statement
//! is not scanned at all. A parenthesised literal counts where its parentheses stand, and a
//! shift's left operand is never cut out (its type would come from the shift count). As a
//! last net, the described result columns must be the ones the text's own run returned.
//!
//! Learning describes the statement at a node; it runs in the background once the answer
//! is sent, so no client waits for it. Shapes are per session and bounded, and one is
//! learned again when a table, view or keyspace changes; its route is the prepared
//! statement's, which follows every change of the cluster map.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::sync::Arc;

use protocol::cluster::ClusterState;
use protocol::{DataType, Value};
use sqlparser::ast::{self, Expr, SetExpr, Statement, Visit};

use crate::frontend::Prepared;

/// Shapes a session remembers; past this many it forgets the ones seen only once, then all.
const MAX_SHAPES: usize = 128;

/// Longer texts, or texts with more literals, are not scanned: what a session keeps stays
/// small (a multi-row INSERT of many literals is not a statement that repeats anyway).
const MAX_TEXT: usize = 2048;
const MAX_LITERALS: usize = 32;

/// A statement's text with its integer literals replaced by `$1`, `$2`, … in text order.
#[derive(Debug, PartialEq)]
pub struct Shape<'a> {
    pub text: String,
    /// The literals cut out, as written (`007` stays `007`).
    literals: Vec<&'a str>,
}

impl<'a> Shape<'a> {
    /// The shape of `sql`, or `None` if it has no integer literal or holds something the
    /// scanner does not follow (see the module docs).
    pub fn of(sql: &'a str) -> Option<Shape<'a>> {
        if sql.len() > MAX_TEXT {
            return None;
        }
        let bytes = sql.as_bytes();
        let mut text = String::with_capacity(sql.len() + 8);
        let mut literals = Vec::new();
        let mut copied = 0; // bytes of `sql` before this are in `text`
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'\'' | b'"' => i = quoted_end(bytes, i)?,
                b'$' | b'\\' => return None,
                b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
                b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
                b';' => {
                    if !bytes[i + 1..].iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    i += 1;
                }
                b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i = number_end(bytes, i + 1);
                }
                b'0'..=b'9' => {
                    let end = number_end(bytes, i);
                    let plain = bytes[i..end].iter().all(u8::is_ascii_digit)
                        && !bytes.get(end).is_some_and(|&c| is_ident_byte(c));
                    let start = if is_sign(bytes, i) { i - 1 } else { i };
                    let literal = &sql[start..end];
                    if plain && literal.parse::<i32>().is_ok() {
                        if literals.len() == MAX_LITERALS {
                            return None;
                        }
                        text.push_str(&sql[copied..start]);
                        literals.push(literal);
                        // Writing to a String cannot fail.
                        let _ = write!(text, "${}", literals.len());
                        copied = end;
                    }
                    i = end;
                }
                c if is_ident_byte(c) => {
                    while i < bytes.len() && is_ident_byte(bytes[i]) {
                        if bytes[i] == b'$' {
                            return None;
                        }
                        i += 1;
                    }
                }
                _ => i += 1,
            }
        }
        if literals.is_empty() {
            return None;
        }
        text.push_str(&sql[copied..]);
        Some(Shape { text, literals })
    }

    /// How many literals were cut out.
    pub fn literals(&self) -> usize {
        self.literals.len()
    }

    /// The parameters for a shape whose parameters have `types` (all `integer` or `bigint`,
    /// see [`Shape::learn`]).
    pub fn params(&self, types: &[DataType]) -> Option<Vec<Value>> {
        if types.len() != self.literals.len() {
            return None;
        }
        self.literals
            .iter()
            .map(|l| l.parse::<i32>().ok().map(|i| Value::Int(i64::from(i))))
            .collect()
    }

    /// The shape's statement if it may stand for `original` (the text's own parse) whatever
    /// the literals: see the module docs. Types are checked by [`types_allowed`] once the
    /// statement is described.
    pub fn learn(&self, original: &Statement) -> Option<Statement> {
        if !matches!(
            original,
            Statement::Query(_)
                | Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
        ) {
            return None;
        }
        let mut parsed = engine::sql::parse(&self.text).ok()?;
        if parsed.len() != 1 {
            return None;
        }
        let shaped = parsed.pop()?;
        if crate::dispatch::calls_functions(&shaped) {
            return None;
        }
        let mut restored = shaped.clone();
        let _ = ast::visit_expressions_mut(&mut restored, |e| {
            if let Some(n) = placeholder(e)
                && let Some(literal) = self.literals.get(n.wrapping_sub(1))
            {
                let number = |n: &str| Expr::value(ast::Value::Number(n.to_string(), false));
                *e = match literal.strip_prefix('-') {
                    Some(digits) => Expr::UnaryOp {
                        op: ast::UnaryOperator::Minus,
                        expr: Box::new(number(digits)),
                    },
                    None => number(literal),
                };
            }
            ControlFlow::<()>::Continue(())
        });
        if &restored != original {
            return None;
        }
        (operand_placeholders(&shaped) == self.literals.len()).then_some(shaped)
    }
}

/// True if every parameter of a learned shape may carry its literal's value unchanged.
pub fn types_allowed(types: &[DataType], literals: usize) -> bool {
    types.len() == literals
        && types
            .iter()
            .all(|t| matches!(t, DataType::Int4 | DataType::Int8))
}

/// What a session knows of one shape.
enum Known {
    /// Seen once: a shape is learned on its second sighting, so one-off statements pay only
    /// for the scan.
    Seen,
    /// Being learned (in the background, see `Frontend::learn_shape`).
    Learning,
    /// Learned against the cluster map `state`: `None` if it may not be used.
    Learned {
        state: Arc<ClusterState>,
        shape: Option<Arc<Learned>>,
    },
}

/// A shape that may be used: the statement it runs as, and its parameters' types.
pub struct Learned {
    pub prepared: Prepared,
    pub types: Vec<DataType>,
}

/// A session's shapes.
#[derive(Default)]
pub struct ShapeCache(HashMap<String, Known>);

impl ShapeCache {
    /// The prepared statement that runs `shape` under the cluster map `state`, if it is
    /// known. A newer map that changed no table, view or keyspace keeps the shape (most
    /// versions are sequence allocations, job steps, heartbeats of placement); one that did
    /// sends it back to be learned again.
    pub fn usable(&mut self, shape: &str, state: &Arc<ClusterState>) -> Option<Arc<Learned>> {
        let known = self.0.get_mut(shape)?;
        let Known::Learned { state: at, shape } = known else {
            return None;
        };
        if at.version != state.version {
            if !same_schema(at, state) {
                *known = Known::Seen;
                return None;
            }
            *at = state.clone();
        }
        shape.clone()
    }

    /// True if `shape`, just run the long way, should be learned now (it is then marked as
    /// being learned); else notes the sighting.
    pub fn should_learn(&mut self, shape: &str) -> bool {
        match self.0.get_mut(shape) {
            Some(known @ Known::Seen) => {
                *known = Known::Learning;
                true
            }
            Some(_) => false,
            None => {
                self.insert(shape.to_string(), Known::Seen);
                false
            }
        }
    }

    /// Records what learning `shape` against `state` found.
    pub fn learned(&mut self, text: String, state: Arc<ClusterState>, shape: Option<Learned>) {
        let shape = shape.map(Arc::new);
        self.insert(text, Known::Learned { state, shape });
    }

    fn insert(&mut self, shape: String, known: Known) {
        if self.0.len() >= MAX_SHAPES && !self.0.contains_key(&shape) {
            // One-off statements go first, so they do not push out the shapes in use.
            self.0.retain(|_, k| !matches!(k, Known::Seen));
            if self.0.len() >= MAX_SHAPES {
                self.0.clear();
            }
        }
        self.0.insert(shape, known);
    }
}

/// True if what a shape's meaning depends on is the same in both maps.
fn same_schema(a: &ClusterState, b: &ClusterState) -> bool {
    a.tables == b.tables && a.views == b.views && a.keyspaces == b.keyspaces
}

/// The number `n` of a `$n` placeholder expression.
fn placeholder(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => p.strip_prefix('$')?.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// True for a placeholder, parenthesised or not: the parentheses' own position decides.
fn operand_placeholder(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => operand_placeholder(inner),
        e => placeholder(e).is_some(),
    }
}

/// Placeholders that stand where a literal and a parameter mean the same: operands of
/// operators, IN-list and BETWEEN items, VALUES items and UPDATE's assigned values.
fn operand_placeholders(stmt: &Statement) -> usize {
    struct Counter(usize);
    impl ast::Visitor for Counter {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let is = |e: &Expr| usize::from(operand_placeholder(e));
            self.0 += match e {
                // A shift's result has its left operand's type, which an `integer` literal
                // fixes but a parameter takes from the shift count.
                Expr::BinaryOp {
                    op:
                        ast::BinaryOperator::PGBitwiseShiftLeft
                        | ast::BinaryOperator::PGBitwiseShiftRight,
                    right,
                    ..
                } => is(right),
                Expr::BinaryOp { left, right, .. } => is(left) + is(right),
                Expr::UnaryOp { expr, .. } => is(expr),
                Expr::In {
                    expr,
                    target: ast::InTarget::List(list),
                    ..
                } => is(expr) + list.iter().map(is).sum::<usize>(),
                Expr::Between {
                    expr, low, high, ..
                } => is(expr) + is(low) + is(high),
                _ => 0,
            };
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &ast::Query) -> ControlFlow<()> {
            if let SetExpr::Values(values) = q.body.as_ref() {
                for row in &values.rows {
                    self.0 += row
                        .content
                        .iter()
                        .filter(|e| operand_placeholder(e))
                        .count();
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
            if let Statement::Update(update) = s {
                for a in &update.assignments {
                    self.0 += usize::from(operand_placeholder(&a.value));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut counter = Counter(0);
    let _ = stmt.visit(&mut counter);
    counter.0
}

/// True if the digits at `i` follow a prefix minus: a `-` right before them, itself after an
/// operator, an opening parenthesis or a comma (`abalance + -5`, `IN (-1, -2)`), never after
/// an operand (`x -5` subtracts). The shape's parse check catches any other reading.
fn is_sign(bytes: &[u8], i: usize) -> bool {
    if i == 0 || bytes[i - 1] != b'-' {
        return false;
    }
    let before = bytes[..i - 1]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace());
    matches!(
        before,
        Some(b'=' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/' | b'%' | b'(' | b',')
    )
}

/// Bytes that continue an identifier or keyword (`$` too, which the scanner refuses).
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The end of the quoted string or identifier opening at `start` (a doubled quote is part
/// of it); `None` if it never closes or holds a backslash (an `E''` string's escape).
fn quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = bytes[start];
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => return None,
            &b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            &b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The end of the numeric token whose digits start at `start`: digits, a fraction, an
/// exponent.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let digits = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    if bytes.get(i) == Some(&b'.') {
        i = digits(i + 1);
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            i = digits(j);
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shape's text and literals.
    type Scanned = (&'static str, &'static [&'static str]);

    /// (text, its shape and literals, or None if it is not scanned).
    const SCANS: &[(&str, Option<Scanned>)] = &[
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
            Some((
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
                &["4711"],
            )),
        ),
        (
            "select * from t1 where a=007 and b in (1,2)",
            Some((
                "select * from t1 where a=$1 and b in ($2,$3)",
                &["007", "1", "2"],
            )),
        ),
        // Numbers that are not plain integers, or too big for `integer`, stay in the text.
        (
            "SELECT 1.5, .5, 1e5, 2e-3, 3000000000, x FROM t WHERE k = 2",
            Some((
                "SELECT 1.5, .5, 1e5, 2e-3, 3000000000, x FROM t WHERE k = $1",
                &["2"],
            )),
        ),
        // Digits inside strings and quoted identifiers are not literals.
        (
            "SELECT 'a''1', \"c\"\"2\" FROM t WHERE k = 3",
            Some(("SELECT 'a''1', \"c\"\"2\" FROM t WHERE k = $1", &["3"])),
        ),
        ("SELECT x FROM t", None),
        ("SELECT $1", None),
        ("SELECT $$1$$", None),
        ("SELECT E'\\x' , 1", None),
        ("SELECT 1 -- one", None),
        ("SELECT /* c */ 1", None),
        ("SELECT 1; SELECT 2", None),
        ("SELECT 'unclosed 1", None),
        ("SELECT 1abc", None),
        // A prefix minus belongs to the literal; a subtraction's does not.
        (
            "UPDATE a SET v = v + -1234, w = x -5 WHERE k IN (-1, - 2) AND j = -2147483648",
            Some((
                "UPDATE a SET v = v + $1, w = x -$2 WHERE k IN ($3, - $4) AND j = $5",
                &["-1234", "5", "-1", "2", "-2147483648"],
            )),
        ),
    ];

    #[test]
    fn scans_integer_literals() {
        for (sql, want) in SCANS {
            let got = Shape::of(sql);
            let want = want.map(|(text, literals)| Shape {
                text: text.to_string(),
                literals: literals.to_vec(),
            });
            assert_eq!(got, want, "{sql}");
        }
    }

    /// (text, whether its shape may stand for it).
    const LEARNS: &[(&str, bool)] = &[
        ("SELECT abalance FROM a WHERE aid = 4711", true),
        (
            "SELECT x + 1 FROM a WHERE k BETWEEN 1 AND 9 OR k IN (3, -4)",
            true,
        ),
        ("UPDATE a SET v = v + 5, w = 6 WHERE k = 7", true),
        ("INSERT INTO a VALUES (1, 2), (3, 4)", true),
        ("DELETE FROM a WHERE k = (2)", true),
        ("SELECT k << 2 FROM a WHERE k = 1", true),
        ("UPDATE a SET v = v + -5 WHERE k = -1", true),
        ("SELECT x FROM a WHERE k = -2 ^ 2", false),
        ("SELECT 1 << k FROM a WHERE k = 2", false),
        ("SELECT k FROM a WHERE k = 1 LIMIT (5)", false),
        ("SELECT x FROM a WHERE k = 1 ORDER BY 1", false),
        ("SELECT x, count(*) FROM a WHERE k > 1 GROUP BY 1", false),
        ("SELECT x FROM a WHERE k = 1 LIMIT 1", false),
        ("SELECT 1", false),
        ("SELECT abs(k) FROM a WHERE k = 1", false),
        ("SELECT CAST(k AS varchar(10)) FROM a WHERE k = 1", false),
        (
            "INSERT INTO a VALUES (1) ON CONFLICT (k) DO UPDATE SET v = 2",
            false,
        ),
        ("SET statement_timeout = 5", false),
    ];

    #[test]
    fn learns_only_where_a_parameter_means_the_literal() {
        for (sql, want) in LEARNS {
            let shape = Shape::of(sql).expect(sql);
            let original = engine::sql::parse(sql).expect(sql).remove(0);
            assert_eq!(shape.learn(&original).is_some(), *want, "{sql}");
        }
    }

    #[test]
    fn a_shape_is_learned_on_its_second_sighting_and_kept_while_the_schema_holds() {
        let mut cache = ShapeCache::default();
        let text = "SELECT v FROM a WHERE k = $1";
        let state = Arc::new(ClusterState::default());
        assert!(!cache.should_learn(text), "first sighting");
        assert!(cache.usable(text, &state).is_none());
        assert!(cache.should_learn(text), "second sighting");
        assert!(!cache.should_learn(text), "already being learned");
        let learned = Learned {
            prepared: Prepared::new(text, None, None),
            types: vec![DataType::Int4],
        };
        cache.learned(text.to_string(), state.clone(), Some(learned));
        assert!(cache.usable(text, &state).is_some());

        // A newer map that changed no table keeps it.
        let mut newer = (*state).clone();
        newer.version += 1;
        let newer = Arc::new(newer);
        assert!(cache.usable(text, &newer).is_some());

        // A new view (or a changed table) sends it back to be learned on the next sighting.
        let mut changed = (*newer).clone();
        changed.version += 1;
        changed.views.insert(
            "a".into(),
            protocol::cluster::ViewInfo {
                name: "a".into(),
                query: "SELECT 1 AS v, 2 AS k".into(),
                columns: Vec::new(),
                depends_on: Vec::new(),
            },
        );
        let changed = Arc::new(changed);
        assert!(cache.usable(text, &changed).is_none());
        assert!(cache.should_learn(text));
    }

    #[test]
    fn one_off_statements_do_not_push_out_learned_shapes() {
        let mut cache = ShapeCache::default();
        let state = Arc::new(ClusterState::default());
        let kept = "SELECT v FROM a WHERE k = $1";
        cache.learned(kept.into(), state.clone(), None);
        for i in 0..MAX_SHAPES * 2 {
            cache.should_learn(&format!("SELECT {i} FROM a WHERE k = $1"));
        }
        assert!(cache.0.len() <= MAX_SHAPES);
        assert!(matches!(cache.0.get(kept), Some(Known::Learned { .. })));
    }

    #[test]
    fn parameters_carry_the_literals() {
        let shape = Shape::of("SELECT x FROM a WHERE k = 007 AND j = 2147483647").unwrap();
        assert_eq!(
            shape.params(&[DataType::Int4, DataType::Int8]),
            Some(vec![Value::Int(7), Value::Int(2147483647)])
        );
        let lowest = Shape::of("SELECT x FROM a WHERE k = -2147483648").unwrap();
        assert_eq!(
            lowest.params(&[DataType::Int4]),
            Some(vec![Value::Int(-2147483648)])
        );
        assert_eq!(shape.params(&[DataType::Int4]), None);
        assert!(types_allowed(&[DataType::Int4, DataType::Int8], 2));
        assert!(!types_allowed(&[DataType::Int4, DataType::Int2], 2));
        assert!(!types_allowed(&[DataType::Text], 1));
        assert!(!types_allowed(&[DataType::Int4], 2));
    }
}
