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
//!        │                              │ known to the session, same cluster map version?
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
//!   position (`ORDER BY 1`, `GROUP BY 1`), a type modifier or a function argument;
//! - the statement calls no function (a call may be rewritten before planning);
//! - each parameter's described type is `integer` or `bigint`, so the value means what the
//!   literal (an `integer`) did: PostgreSQL compares and adds an int4 with an int8 the same
//!   way; a `smallint`, `text` or `numeric` context would change the result's type or turn
//!   an error into an answer, and is left to the full path.
//!
//! Only integers that fit `integer` are cut out (larger ones are `bigint` or `numeric`
//! literals in PostgreSQL); a text with a `$`, a backslash, a comment or a second statement
//! is not scanned at all. Shapes are per session, bounded, and forgotten when the cluster
//! map's version changes (DDL, a move, a failover), as the routes of prepared statements are.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use protocol::{DataType, Value};
use sqlparser::ast::{self, Expr, SetExpr, Statement, Visit};

use crate::frontend::Prepared;

/// Shapes a session remembers; past this many it forgets them all and starts again.
const MAX_SHAPES: usize = 256;

/// Longer texts are not scanned: what a session keeps stays small.
const MAX_TEXT: usize = 4096;

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
                    let literal = &sql[i..end];
                    if plain && literal.parse::<i32>().is_ok() {
                        text.push_str(&sql[copied..i]);
                        literals.push(literal);
                        text.push('$');
                        text.push_str(&literals.len().to_string());
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
                *e = Expr::value(ast::Value::Number((*literal).to_string(), false));
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
    /// Learned under the cluster map `version`: `None` if it may not be used.
    Learned {
        version: u64,
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
    /// The prepared statement that runs `shape` under cluster map `version`, if it is known.
    pub fn usable(&self, shape: &str, version: u64) -> Option<Arc<Learned>> {
        match self.0.get(shape)? {
            Known::Learned {
                version: v,
                shape: Some(s),
            } if *v == version => Some(s.clone()),
            _ => None,
        }
    }

    /// True if `shape`, just run the long way under `version`, should be learned now; else
    /// notes the sighting.
    pub fn should_learn(&mut self, shape: &str, version: u64) -> bool {
        match self.0.get(shape) {
            Some(Known::Seen) => true,
            Some(Known::Learned { version: v, .. }) => *v != version,
            None => {
                self.insert(shape.to_string(), Known::Seen);
                false
            }
        }
    }

    /// Records what learning `shape` under `version` found.
    pub fn learned(&mut self, text: String, version: u64, shape: Option<Learned>) {
        let shape = shape.map(Arc::new);
        self.insert(text, Known::Learned { version, shape });
    }

    fn insert(&mut self, shape: String, known: Known) {
        if self.0.len() >= MAX_SHAPES && !self.0.contains_key(&shape) {
            self.0.clear();
        }
        self.0.insert(shape, known);
    }
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

/// Placeholders that stand where a literal and a parameter mean the same: operands of
/// operators, IN-list and BETWEEN items, VALUES items and UPDATE's assigned values.
fn operand_placeholders(stmt: &Statement) -> usize {
    struct Counter(usize);
    impl ast::Visitor for Counter {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let is = |e: &Expr| usize::from(placeholder(e).is_some());
            self.0 += match e {
                Expr::BinaryOp { left, right, .. } => is(left) + is(right),
                Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => is(expr),
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
                        .filter(|e| placeholder(e).is_some())
                        .count();
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
            if let Statement::Update(update) = s {
                for a in &update.assignments {
                    self.0 += usize::from(placeholder(&a.value).is_some());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut counter = Counter(0);
    let _ = stmt.visit(&mut counter);
    counter.0
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
    fn parameters_carry_the_literals() {
        let shape = Shape::of("SELECT x FROM a WHERE k = 007 AND j = 2147483647").unwrap();
        assert_eq!(
            shape.params(&[DataType::Int4, DataType::Int8]),
            Some(vec![Value::Int(7), Value::Int(2147483647)])
        );
        assert_eq!(shape.params(&[DataType::Int4]), None);
        assert!(types_allowed(&[DataType::Int4, DataType::Int8], 2));
        assert!(!types_allowed(&[DataType::Int4, DataType::Int2], 2));
        assert!(!types_allowed(&[DataType::Text], 1));
        assert!(!types_allowed(&[DataType::Int4], 2));
    }
}
