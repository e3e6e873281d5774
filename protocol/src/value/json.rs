//! `json` and `jsonb`.
//!
//! A `json` value is its input text, kept verbatim once validated; a `jsonb` value is the
//! normalised text PostgreSQL prints: object keys sorted by length, then bytes (duplicate keys:
//! the last one wins), `{"a": 1, "b": [1, 2]}` spacing, numbers in numeric's output form.
//! Both are parsed on demand by the operators (`->`, `->>`, `#>`, `#>>`, `@>`).
//!
//! The parser is our own rather than serde_json's: numbers must stay exact (serde_json keeps
//! them exact only with its `arbitrary_precision` feature, which changes `serde_json::Value`
//! for every crate in the build), and `json`'s operators return sub-values verbatim, which
//! needs each value's span in the input.

use std::cmp::Ordering;

use super::numeric::Numeric;
use crate::error::{Error, Result, sqlstate};

/// A parsed JSON value with the byte span it came from.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    /// The number as written.
    Number(String),
    String(String),
    Array(Vec<Node>),
    /// Members in input order, duplicates included.
    Object(Vec<(String, Node)>),
}

/// PostgreSQL's primary message for any malformed JSON (the detail it adds is not kept).
fn syntax(_detail: &str) -> Error {
    Error::new(
        sqlstate::INVALID_TEXT_REPRESENTATION,
        "invalid input syntax for type json",
    )
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node> {
        if depth > 6400 {
            return Err(Error::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                "stack depth limit exceeded",
            ));
        }
        self.ws();
        let start = self.i;
        let kind = match self.s.get(self.i) {
            None => return Err(syntax("The input string ended unexpectedly.")),
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        if self.s.get(self.i) != Some(&b'"') {
                            return Err(syntax("expected string"));
                        }
                        let key = self.string()?;
                        self.ws();
                        if self.s.get(self.i) != Some(&b':') {
                            return Err(syntax("expected :"));
                        }
                        self.i += 1;
                        let v = self.value(depth + 1)?;
                        members.push((key, v));
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(syntax("expected , or }")),
                        }
                    }
                }
                Kind::Object(members)
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(syntax("expected , or ]")),
                        }
                    }
                }
                Kind::Array(items)
            }
            Some(b'"') => Kind::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => Kind::Number(self.number()?),
            Some(_) => {
                let rest = &self.text[self.i..];
                let word_len = rest
                    .find(|c: char| !c.is_ascii_alphanumeric())
                    .unwrap_or(rest.len());
                let word = &rest[..word_len];
                let k = match word {
                    "true" => Kind::Bool(true),
                    "false" => Kind::Bool(false),
                    "null" => Kind::Null,
                    _ => return Err(syntax("invalid token")),
                };
                self.i += word_len;
                k
            }
        };
        Ok(Node {
            kind,
            start,
            end: self.i,
        })
    }

    fn number(&mut self) -> Result<String> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - s
        };
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        let n = digits(self);
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return Err(syntax("invalid number"));
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(syntax("invalid number"));
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(syntax("invalid number"));
            }
        }
        if self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return Err(syntax("invalid number"));
        }
        Ok(self.text[start..self.i].to_string())
    }

    fn hex4(&mut self) -> Result<u32> {
        let h = self
            .text
            .get(self.i..self.i + 4)
            .ok_or_else(|| syntax("bad \\u escape"))?;
        let v = u32::from_str_radix(h, 16).map_err(|_| syntax("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let rest = &self.text[self.i..];
            let stop = rest
                .find(|c: char| c == '"' || c == '\\' || (c as u32) < 0x20)
                .ok_or_else(|| syntax("unterminated string"))?;
            out.push_str(&rest[..stop]);
            self.i += stop;
            match self.s[self.i] {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = *self.s.get(self.i).ok_or_else(|| syntax("bad escape"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) {
                                if self.text.get(self.i..self.i + 2) != Some("\\u") {
                                    return Err(syntax("bad surrogate"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(syntax("bad surrogate"));
                                }
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            }
                            if cp == 0 {
                                return Err(Error::new(
                                    "22P05",
                                    "unsupported Unicode escape sequence",
                                ));
                            }
                            out.push(char::from_u32(cp).ok_or_else(|| syntax("bad escape"))?);
                        }
                        _ => return Err(syntax("bad escape")),
                    }
                }
                _ => return Err(syntax("control character in string")),
            }
        }
    }
}

/// Parses JSON text (PostgreSQL's grammar: RFC 8259, any value at top level).
pub fn parse(text: &str) -> Result<Node> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(syntax("trailing garbage"));
    }
    Ok(v)
}

/// Escapes a string as PostgreSQL's `escape_json` does, quotes included.
pub fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A jsonb number in numeric's output form (`1e2` → `100`); text beyond numeric's range
/// here is kept as written.
fn jsonb_number(n: &str) -> String {
    Numeric::parse(n)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| n.to_string())
}

/// Turns a parsed value into jsonb's form: duplicate keys dropped (last wins), keys sorted.
pub fn to_jsonb(node: Node) -> Node {
    let kind = match node.kind {
        Kind::Object(members) => {
            let mut out: Vec<(String, Node)> = Vec::with_capacity(members.len());
            for (k, v) in members {
                let v = to_jsonb(v);
                if let Some(slot) = out.iter_mut().find(|(ok, _)| *ok == k) {
                    slot.1 = v;
                } else {
                    out.push((k, v));
                }
            }
            out.sort_by(|a, b| key_order(&a.0, &b.0));
            Kind::Object(out)
        }
        Kind::Array(items) => Kind::Array(items.into_iter().map(to_jsonb).collect()),
        Kind::Number(n) => Kind::Number(jsonb_number(&n)),
        k => k,
    };
    Node { kind, ..node }
}

fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Prints a value in jsonb's output form.
pub fn write(node: &Node, out: &mut String) {
    match &node.kind {
        Kind::Null => out.push_str("null"),
        Kind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Kind::Number(n) => out.push_str(n),
        Kind::String(s) => quote(s, out),
        Kind::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(v, out);
            }
            out.push(']');
        }
        Kind::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                quote(k, out);
                out.push_str(": ");
                write(v, out);
            }
            out.push('}');
        }
    }
}

/// `jsonb` input: the normalised text.
pub fn normalize_jsonb(text: &str) -> Result<String> {
    let mut out = String::new();
    write(&to_jsonb(parse(text)?), &mut out);
    Ok(out)
}

/// `json` input: validated, kept verbatim.
pub fn validate_json(text: &str) -> Result<String> {
    parse(text)?;
    Ok(text.to_string())
}

/// The text of a sub-value: verbatim for `json`, normalised for `jsonb`.
pub fn node_text(text: &str, node: &Node, jsonb: bool) -> String {
    if jsonb {
        let mut out = String::new();
        write(node, &mut out);
        out
    } else {
        text[node.start..node.end].to_string()
    }
}

/// `->` by key (objects) or index (arrays; negative counts from the end).
pub fn get<'n>(node: &'n Node, key: &PathStep) -> Option<&'n Node> {
    match (&node.kind, key) {
        (Kind::Object(members), PathStep::Key(k)) => {
            members.iter().rev().find(|(mk, _)| mk == k).map(|(_, v)| v)
        }
        (Kind::Object(members), PathStep::Index(i)) => {
            let k = i.to_string();
            members
                .iter()
                .rev()
                .find(|(mk, _)| *mk == k)
                .map(|(_, v)| v)
        }
        (Kind::Array(items), PathStep::Index(i)) => {
            let idx = if *i < 0 { items.len() as i64 + i } else { *i };
            usize::try_from(idx).ok().and_then(|i| items.get(i))
        }
        (Kind::Array(items), PathStep::Key(k)) => {
            // In a path (`#>`), array steps are written as text.
            let i: i64 = k.trim().parse().ok()?;
            let idx = if i < 0 { items.len() as i64 + i } else { i };
            usize::try_from(idx).ok().and_then(|i| items.get(i))
        }
        _ => None,
    }
}

pub enum PathStep {
    Key(String),
    Index(i64),
}

/// The `->>` text of a value: strings unquoted, JSON null as SQL NULL.
pub fn as_text(text: &str, node: &Node, jsonb: bool) -> Option<String> {
    match &node.kind {
        Kind::Null => None,
        Kind::String(s) => Some(s.clone()),
        _ => Some(node_text(text, node, jsonb)),
    }
}

/// Parses a text[] literal such as `{a,b,1}` into path steps.
pub fn parse_path(s: &str) -> Result<Vec<PathStep>> {
    let t = s.trim();
    let body = t
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| {
            Error::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("malformed array literal: \"{s}\""),
            )
        })?;
    if body.trim().is_empty() {
        return Ok(vec![]);
    }
    Ok(body
        .split(',')
        .map(|p| PathStep::Key(p.trim().trim_matches('"').to_string()))
        .collect())
}

pub fn type_of(node: &Node) -> &'static str {
    match node.kind {
        Kind::Null => "null",
        Kind::Bool(_) => "boolean",
        Kind::Number(_) => "number",
        Kind::String(_) => "string",
        Kind::Array(_) => "array",
        Kind::Object(_) => "object",
    }
}

fn rank(k: &Kind) -> u8 {
    match k {
        Kind::Null => 0,
        Kind::String(_) => 1,
        Kind::Number(_) => 2,
        Kind::Bool(_) => 3,
        Kind::Array(_) => 4,
        Kind::Object(_) => 5,
    }
}

/// jsonb ordering: object > array > boolean > number > string > null; containers with more
/// members are greater; then member by member (keys in storage order, then values).
pub fn compare(a: &Node, b: &Node) -> Ordering {
    match (&a.kind, &b.kind) {
        (Kind::Null, Kind::Null) => Ordering::Equal,
        (Kind::Bool(x), Kind::Bool(y)) => x.cmp(y),
        (Kind::Number(x), Kind::Number(y)) => match (Numeric::parse(x), Numeric::parse(y)) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x
                .parse::<f64>()
                .unwrap_or(0.0)
                .total_cmp(&y.parse::<f64>().unwrap_or(0.0)),
        },
        (Kind::String(x), Kind::String(y)) => x.cmp(y),
        (Kind::Array(x), Kind::Array(y)) => x.len().cmp(&y.len()).then_with(|| {
            x.iter()
                .zip(y)
                .map(|(p, q)| compare(p, q))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        (Kind::Object(x), Kind::Object(y)) => x.len().cmp(&y.len()).then_with(|| {
            for ((kx, _), (ky, _)) in x.iter().zip(y) {
                let o = key_order(kx, ky);
                if o.is_ne() {
                    return o;
                }
            }
            x.iter()
                .zip(y)
                .map(|((_, p), (_, q))| compare(p, q))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        (x, y) => rank(x).cmp(&rank(y)),
    }
}

/// Compares two stored jsonb texts.
pub fn compare_text(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (Ok(x), Ok(y)) => compare(&x, &y),
        _ => a.cmp(b),
    }
}

/// A canonical text for hashing: equal jsonb values (by `compare`) give equal text.
pub fn canonical(text: &str) -> String {
    fn canon(n: &Node) -> Node {
        let kind = match &n.kind {
            Kind::Number(x) => Kind::Number(
                Numeric::parse(x)
                    .ok()
                    .and_then(|v| v.normalized())
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| x.clone()),
            ),
            Kind::Array(items) => Kind::Array(items.iter().map(canon).collect()),
            Kind::Object(m) => Kind::Object(m.iter().map(|(k, v)| (k.clone(), canon(v))).collect()),
            k => k.clone(),
        };
        Node { kind, ..*n }
    }
    match parse(text) {
        Ok(n) => {
            let mut out = String::new();
            write(&canon(&n), &mut out);
            out
        }
        Err(_) => text.to_string(),
    }
}

/// jsonb `@>`: does `a` contain `b`?
pub fn contains(a: &Node, b: &Node, top: bool) -> bool {
    match (&a.kind, &b.kind) {
        (Kind::Object(x), Kind::Object(y)) => y.iter().all(|(k, v)| {
            x.iter()
                .rev()
                .find(|(xk, _)| xk == k)
                .is_some_and(|(_, xv)| contains(xv, v, false))
        }),
        (Kind::Array(x), Kind::Array(y)) => y.iter().all(|v| {
            x.iter().any(|xv| match (&xv.kind, &v.kind) {
                (Kind::Array(_) | Kind::Object(_), _) | (_, Kind::Array(_) | Kind::Object(_)) => {
                    contains(xv, v, false)
                }
                _ => compare(xv, v).is_eq(),
            })
        }),
        // A top-level array contains a scalar that is one of its elements.
        (Kind::Array(x), Kind::Null | Kind::Bool(_) | Kind::Number(_) | Kind::String(_)) if top => {
            x.iter().any(|xv| compare(xv, b).is_eq())
        }
        (Kind::Array(_) | Kind::Object(_), _) | (_, Kind::Array(_) | Kind::Object(_)) => false,
        _ => compare(a, b).is_eq(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonb_normalises_like_postgres() {
        assert_eq!(
            normalize_jsonb(r#"{"b": 1, "a": 2, "a": 3}"#).unwrap(),
            r#"{"a": 3, "b": 1}"#
        );
        assert_eq!(
            normalize_jsonb(r#"{"aa":1,"b":[1,2.50,1e2],"c":{}}"#).unwrap(),
            r#"{"b": [1, 2.50, 100], "c": {}, "aa": 1}"#
        );
        assert_eq!(normalize_jsonb(r#" "x\u00e9\n" "#).unwrap(), r#""xé\n""#);
        assert!(normalize_jsonb(r#"{"a": }"#).is_err());
        assert!(normalize_jsonb("01").is_err());
        assert!(normalize_jsonb("[1,]").is_err());
        assert_eq!(normalize_jsonb("[]").unwrap(), "[]");
    }

    #[test]
    fn json_keeps_text_and_operators_work() {
        let text = r#"{"a": {"b":  "x"}, "c": [1, 2, 3]}"#;
        assert_eq!(validate_json(text).unwrap(), text);
        let n = parse(text).unwrap();
        let a = get(&n, &PathStep::Key("a".into())).unwrap();
        assert_eq!(node_text(text, a, false), r#"{"b":  "x"}"#);
        let b = get(a, &PathStep::Key("b".into())).unwrap();
        assert_eq!(as_text(text, b, false).as_deref(), Some("x"));
        let c = get(&n, &PathStep::Key("c".into())).unwrap();
        let last = get(c, &PathStep::Index(-1)).unwrap();
        assert_eq!(node_text(text, last, true), "3");
    }

    #[test]
    fn containment_and_order() {
        let p = |s: &str| parse(s).unwrap();
        assert!(contains(
            &p(r#"{"a": 1, "b": [1, 2]}"#),
            &p(r#"{"b": [2]}"#),
            true
        ));
        assert!(!contains(&p(r#"{"a": 1}"#), &p(r#"{"a": 2}"#), true));
        assert!(contains(&p("[1, 2]"), &p("1"), true));
        assert_eq!(compare_text("1.0", "1"), Ordering::Equal);
        assert_eq!(compare_text("{}", "[]"), Ordering::Greater);
        assert_eq!(canonical("[1.0]"), canonical("[1]"));
    }
}
