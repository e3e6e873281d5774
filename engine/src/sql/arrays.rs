//! Arrays in queries: `ARRAY[…]`, `a[i]`, `x op ANY/ALL (array)`, the array functions, and
//! the set-returning functions `unnest`, `generate_subscripts` and `generate_series` as
//! SELECT items.
//!
//! Every array operation binds to one expression node, `Expr::Array { op, args }`, so the
//! rest of the executor walks and rewrites it like a function call. A set-returning function
//! is only evaluated by the SELECT's projection (`expand`): one input row gives as many output
//! rows as its longest set, shorter sets padded with NULL, as PostgreSQL 10+ does.
//!
//! ```text
//!   SELECT id, unnest(a), generate_subscripts(a, 1) FROM t   -- t: (1, {x,y})
//!   → (1, x, 1), (1, y, 2)
//! ```

use std::cmp::Ordering;

use protocol::value::array::Elem;
use protocol::{DataType, Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::bind::Binder;
use super::expr::{CmpOp, Env, Expr};
use super::types::{self, Ty};

/// What an `Expr::Array` node computes from its arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArrayOp {
    /// `ARRAY[a, b, …]`: the arguments are the elements.
    Construct,
    /// `array[index]`: NULL when out of range. `lower` is the first subscript (1, or 0 for
    /// the catalogs' vector types).
    Subscript {
        lower: i64,
    },
    /// `x op ANY (array)` (`all` false) or `x op ALL (array)`: arguments `[x, array]`.
    Quantified {
        op: CmpOp,
        all: bool,
    },
    /// `array_length(a, dim)`: the length (NULL when empty).
    Length,
    /// `array_lower(a, dim)` / `array_upper(a, dim)`: the first / last subscript (NULL when
    /// empty); `lower` is the type's first subscript.
    Lower {
        lower: i64,
    },
    Upper {
        lower: i64,
    },
    /// `cardinality(a)`: the number of elements.
    Cardinality,
    /// `array_to_string(a, sep [, null_text])`, elements printed as their type prints them.
    ToString {
        elem: Elem,
    },
    /// `array_position(a, x)`: the first subscript holding `x`, or NULL.
    Position {
        lower: i64,
    },
    /// `array_append(a, x)` and `a || x`.
    Append,
    /// `array_prepend(x, a)` and `x || a`: arguments `[x, a]`.
    Prepend,
    /// `array_cat(a, b)` and `a || b`.
    Cat,
    /// `string_to_array(text, sep [, null_text])`.
    StringToArray,
    /// `unnest(a)`: each element (set-returning).
    Unnest,
    /// `generate_subscripts(a, dim)`: each subscript from `lower` (set-returning).
    Subscripts {
        lower: i64,
    },
    /// `generate_series(start, stop [, step])` over integers (set-returning).
    Series,
}

impl ArrayOp {
    pub fn is_set_returning(self) -> bool {
        matches!(
            self,
            ArrayOp::Unnest | ArrayOp::Subscripts { .. } | ArrayOp::Series
        )
    }

    fn name(self) -> &'static str {
        match self {
            ArrayOp::Unnest => "unnest",
            ArrayOp::Subscripts { .. } => "generate_subscripts",
            ArrayOp::Series => "generate_series",
            _ => "array operation",
        }
    }
}

fn not_an_array(what: &str, t: &Ty) -> Error {
    Error::new(
        sqlstate::DATATYPE_MISMATCH,
        format!("{what} requires an array, not type {}", types::ty_name(t)),
    )
}

/// The element type of an array expression's type.
fn element_of(t: &Ty, what: &str) -> Result<DataType> {
    match t {
        Some(DataType::Array(e) | DataType::Vector(e)) => Ok(e.scalar()),
        other => Err(not_an_array(what, other)),
    }
}

/// The first subscript of arrays of type `t`.
fn lower_bound(t: DataType) -> i64 {
    match t {
        DataType::Vector(_) => 0,
        _ => 1,
    }
}

fn array_type(elem: DataType) -> Result<DataType> {
    Elem::of(elem)
        .map(DataType::Array)
        .ok_or_else(|| Error::unsupported("arrays of arrays are not supported"))
}

impl Binder<'_> {
    /// `ARRAY[a, b, …]`: the elements' common type (text if all are unknown).
    pub(super) fn array_constructor(&mut self, a: &ast::Array) -> Result<(Expr, Ty)> {
        let mut bound = Vec::with_capacity(a.elem.len());
        for e in &a.elem {
            bound.push(self.expr(e)?);
        }
        let tys: Vec<Ty> = bound.iter().map(|(_, t)| *t).collect();
        let elem = types::common_type(&tys, "ARRAY")?.unwrap_or(DataType::Text);
        let ty = array_type(elem)?;
        let args = bound
            .into_iter()
            .map(|(e, t)| self.unify(e, t, elem))
            .collect::<Result<_>>()?;
        let node = Expr::Array {
            op: ArrayOp::Construct,
            args,
        };
        Ok((node, Some(ty)))
    }

    /// An array an argument of unknown type must be (a parameter, a `'{…}'` literal).
    fn bind_array(
        &mut self,
        e: &ast::Expr,
        elem: Option<DataType>,
        what: &str,
    ) -> Result<(Expr, DataType)> {
        let (x, t) = self.expr(e)?;
        match t {
            Some(t @ (DataType::Array(_) | DataType::Vector(_))) => Ok((x, t)),
            None => {
                let ty = array_type(elem.unwrap_or(DataType::Text))?;
                Ok((self.coerce(x, None, ty)?, ty))
            }
            other => Err(not_an_array(what, &other)),
        }
    }

    /// `root[i]` (one subscript; slices and field access are refused).
    pub(super) fn subscript(
        &mut self,
        root: &ast::Expr,
        chain: &[ast::AccessExpr],
    ) -> Result<(Expr, Ty)> {
        // `t.col[i]` parses as `t` with the access chain `.col`, `[i]`.
        let mut parts = match root {
            ast::Expr::Identifier(i) => vec![i.clone()],
            ast::Expr::CompoundIdentifier(p) => p.clone(),
            _ => vec![],
        };
        let mut chain = chain;
        while !parts.is_empty()
            && let [ast::AccessExpr::Dot(ast::Expr::Identifier(col)), rest @ ..] = chain
        {
            parts.push(col.clone());
            chain = rest;
        }
        let dotted;
        let root = if parts.len() > 1 {
            dotted = ast::Expr::CompoundIdentifier(parts);
            &dotted
        } else {
            root
        };
        let [ast::AccessExpr::Subscript(ast::Subscript::Index { index })] = chain else {
            return Err(Error::unsupported(format!(
                "{root}{} is not supported: only one array subscript is",
                chain.iter().map(|c| c.to_string()).collect::<String>()
            )));
        };
        let (array, ty) = self.bind_array(root, None, "subscript")?;
        let elem = element_of(&Some(ty), "subscript")?;
        let (i, it) = self.expr(index)?;
        let i = match it {
            None => self.coerce(i, None, DataType::Int4)?,
            Some(t) if t.is_integer() => i,
            Some(t) => {
                return Err(Error::new(
                    sqlstate::DATATYPE_MISMATCH,
                    format!("array subscript must have type integer, not {}", t.name()),
                ));
            }
        };
        let node = Expr::Array {
            op: ArrayOp::Subscript {
                lower: lower_bound(ty),
            },
            args: vec![array, i],
        };
        Ok((node, Some(elem)))
    }

    /// `x op ANY (array)` / `x op ALL (array)` where the array is a value, not a list.
    pub(super) fn quantified_array(
        &mut self,
        left: &ast::Expr,
        op: &ast::BinaryOperator,
        right: &ast::Expr,
        any: bool,
    ) -> Result<(Expr, Ty)> {
        let Some(cmp) = CmpOp::of(op) else {
            return Err(Error::unsupported(format!(
                "{op} {} (array) is not supported",
                if any { "ANY" } else { "ALL" }
            )));
        };
        let (x, xt) = self.expr(left)?;
        let (array, at) = self.bind_array(right, xt, "op ANY/ALL (array)")?;
        let elem = element_of(&Some(at), "op ANY/ALL (array)")?;
        if let Some(t) = xt.filter(|t| !types::comparable(*t, elem)) {
            return Err(types::operator_error(
                &op.to_string(),
                &Some(t),
                &Some(elem),
            ));
        }
        let x = self.coerce(x, xt, types::comparison_type(elem))?;
        let node = Expr::Array {
            op: ArrayOp::Quantified { op: cmp, all: !any },
            args: vec![x, array],
        };
        Ok((node, Some(DataType::Bool)))
    }

    /// `a || b` where at least one side is an array: concatenation of two arrays, or an
    /// element appended or prepended.
    pub(super) fn array_concat(
        &mut self,
        (l, lt): (Expr, Ty),
        (r, rt): (Expr, Ty),
    ) -> Result<(Expr, Ty)> {
        let mismatch = || types::operator_error("||", &lt, &rt);
        // The type both sides convert to (an unknown side takes the other's).
        let common = |a: DataType, b: Ty| match b {
            None => Ok(a),
            Some(b) => types::common_type(&[Some(a), Some(b)], "||")
                .map_err(|_| mismatch())
                .map(|t| t.unwrap_or(a)),
        };
        let (op, ty, args) = match (lt, rt) {
            (Some(a @ DataType::Array(_)), Some(b @ DataType::Array(_))) => {
                let ty = common(a, Some(b))?;
                let l = self.unify(l, lt, ty)?;
                let r = self.unify(r, rt, ty)?;
                (ArrayOp::Cat, ty, vec![l, r])
            }
            (Some(a @ DataType::Array(_)), _) => {
                let elem = element_of(&lt, "||")?;
                common(elem, rt)?;
                let r = self.unify(r, rt, elem)?;
                (ArrayOp::Append, a, vec![l, r])
            }
            (_, Some(b @ DataType::Array(_))) => {
                let elem = element_of(&rt, "||")?;
                common(elem, lt)?;
                let l = self.unify(l, lt, elem)?;
                (ArrayOp::Prepend, b, vec![l, r])
            }
            _ => return Err(mismatch()),
        };
        Ok((Expr::Array { op, args }, Some(ty)))
    }

    /// The array functions and set-returning functions by name; `None` for other names.
    pub(super) fn array_function(
        &mut self,
        name: &str,
        args: &[ast::Expr],
    ) -> Result<Option<(Expr, Ty)>> {
        let wrong_args = || {
            Error::new(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "function {name} with {} argument(s) does not exist",
                    args.len()
                ),
            )
        };
        let (op, ty, bound) = match (name, args) {
            ("array_length" | "array_upper" | "array_lower", [a, d]) => {
                let (a, at) = self.bind_array(a, None, name)?;
                let d = self.int_arg(d)?;
                let lower = lower_bound(at);
                let op = match name {
                    "array_lower" => ArrayOp::Lower { lower },
                    "array_upper" => ArrayOp::Upper { lower },
                    _ => ArrayOp::Length,
                };
                (op, DataType::Int4, vec![a, d])
            }
            ("cardinality", [a]) => {
                let (a, _) = self.bind_array(a, None, name)?;
                (ArrayOp::Cardinality, DataType::Int4, vec![a])
            }
            ("array_to_string", [a, rest @ ..]) if (1..=2).contains(&rest.len()) => {
                let (a, at) = self.bind_array(a, None, name)?;
                let elem = Elem::of(element_of(&Some(at), name)?).unwrap_or(Elem::Text);
                let mut bound = vec![a];
                for r in rest {
                    bound.push(self.text_arg(r)?);
                }
                (ArrayOp::ToString { elem }, DataType::Text, bound)
            }
            ("string_to_array", [s, rest @ ..]) if (1..=2).contains(&rest.len()) => {
                let mut bound = vec![self.text_arg(s)?];
                for r in rest {
                    bound.push(self.text_arg(r)?);
                }
                (ArrayOp::StringToArray, DataType::Array(Elem::Text), bound)
            }
            ("array_position" | "array_append", [a, x]) => {
                let (xe, xt) = self.expr(x)?;
                let (a, at) = self.bind_array(a, xt, name)?;
                let elem = element_of(&Some(at), name)?;
                let xe = self.unify(xe, xt, elem)?;
                if name == "array_position" {
                    let lower = lower_bound(at);
                    (ArrayOp::Position { lower }, DataType::Int4, vec![a, xe])
                } else {
                    (ArrayOp::Append, at, vec![a, xe])
                }
            }
            ("array_cat", [a, b]) => {
                let (a, at) = self.bind_array(a, None, name)?;
                let (b, bt) = self.bind_array(b, Some(element_of(&Some(at), name)?), name)?;
                if at != bt {
                    return Err(types::operator_error("||", &Some(at), &Some(bt)));
                }
                (ArrayOp::Cat, at, vec![a, b])
            }
            ("unnest", [a]) => {
                let (a, at) = self.bind_array(a, None, name)?;
                (ArrayOp::Unnest, element_of(&Some(at), name)?, vec![a])
            }
            ("generate_subscripts", [a, d]) => {
                let (a, at) = self.bind_array(a, None, name)?;
                let d = self.int_arg(d)?;
                let lower = lower_bound(at);
                (ArrayOp::Subscripts { lower }, DataType::Int4, vec![a, d])
            }
            ("generate_series", [start, stop, step @ ..]) if step.len() <= 1 => {
                let mut bound = Vec::new();
                let mut wide = false;
                for e in [start, stop].into_iter().chain(step) {
                    let (x, t) = self.expr(e)?;
                    match t {
                        None => bound.push(self.coerce(x, None, DataType::Int4)?),
                        Some(t) if t.is_integer() => {
                            wide |= t == DataType::Int8;
                            bound.push(x);
                        }
                        Some(t) => {
                            return Err(Error::new(
                                sqlstate::UNDEFINED_FUNCTION,
                                format!(
                                    "function generate_series({}) does not exist (only integer series are supported)",
                                    t.name()
                                ),
                            ));
                        }
                    }
                }
                let ty = if wide { DataType::Int8 } else { DataType::Int4 };
                (ArrayOp::Series, ty, bound)
            }
            (
                "array_length"
                | "array_upper"
                | "array_lower"
                | "cardinality"
                | "array_to_string"
                | "string_to_array"
                | "array_position"
                | "array_append"
                | "array_cat"
                | "unnest"
                | "generate_subscripts"
                | "generate_series",
                _,
            ) => return Err(wrong_args()),
            _ => return Ok(None),
        };
        Ok(Some((Expr::Array { op, args: bound }, Some(ty))))
    }

    fn int_arg(&mut self, e: &ast::Expr) -> Result<Expr> {
        let (x, t) = self.expr(e)?;
        match t {
            None => self.coerce(x, None, DataType::Int4),
            Some(t) if t.is_integer() => Ok(x),
            Some(t) => Err(Error::new(
                sqlstate::UNDEFINED_FUNCTION,
                format!("an integer argument was expected, not type {}", t.name()),
            )),
        }
    }

    fn text_arg(&mut self, e: &ast::Expr) -> Result<Expr> {
        let (x, t) = self.expr(e)?;
        self.unify(x, t, DataType::Text)
    }
}

fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    v.to_pg_text(&DataType::Text)
}

/// Evaluates a scalar array operation.
pub fn eval(op: ArrayOp, args: &[Expr], env: &Env) -> Result<Value> {
    if op.is_set_returning() {
        return Err(Error::unsupported(format!(
            "set-returning function {} is only supported as a whole SELECT item",
            op.name()
        )));
    }
    let mut values = args
        .iter()
        .map(|a| a.eval(env))
        .collect::<Result<Vec<_>>>()?;
    let mut arg = |i: usize| std::mem::replace(&mut values[i], Value::Null);
    Ok(match op {
        ArrayOp::Construct => Value::Array((0..args.len()).map(arg).collect()),
        ArrayOp::Subscript { lower } => {
            let (Some(items), Some(i)) = (items(arg(0)), int(&arg(1))) else {
                return Ok(Value::Null);
            };
            i.checked_sub(lower)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| items.into_iter().nth(i))
                .unwrap_or(Value::Null)
        }
        ArrayOp::Quantified { op, all } => {
            let x = arg(0);
            let Some(items) = items(arg(1)) else {
                return Ok(Value::Null);
            };
            super::expr::quantified(&x, op, all, items.iter())
        }
        ArrayOp::Length | ArrayOp::Lower { .. } | ArrayOp::Upper { .. } => {
            let (Some(items), Some(dim)) = (items(arg(0)), int(&arg(1))) else {
                return Ok(Value::Null);
            };
            if dim != 1 || items.is_empty() {
                return Ok(Value::Null);
            }
            let len = items.len() as i64;
            Value::Int(match op {
                ArrayOp::Lower { lower } => lower,
                ArrayOp::Upper { lower } => lower + len - 1,
                _ => len,
            })
        }
        ArrayOp::Cardinality => match items(arg(0)) {
            Some(items) => Value::Int(items.len() as i64),
            None => Value::Null,
        },
        ArrayOp::ToString { elem } => {
            let (Some(items), Some(sep)) = (items(arg(0)), text(&arg(1))) else {
                return Ok(Value::Null);
            };
            let null_text = args.get(2).and_then(|_| text(&arg(2)));
            let parts: Vec<String> = items
                .iter()
                .filter_map(|v| v.to_pg_text(&elem.scalar()).or_else(|| null_text.clone()))
                .collect();
            Value::Text(parts.join(&sep))
        }
        ArrayOp::StringToArray => {
            let Some(s) = text(&arg(0)) else {
                return Ok(Value::Null);
            };
            let null_text = args.get(2).and_then(|_| text(&arg(2)));
            let separator = text(&arg(1));
            // Reserve the elements' memory before building them (a NULL separator makes one
            // element per character).
            let count = match &separator {
                None => s.chars().count(),
                Some(sep) if sep.is_empty() => 1,
                Some(sep) => s.matches(sep.as_str()).count() + 1,
            };
            env.ctx.reserve(count.saturating_mul(40))?;
            let parts: Vec<String> = match separator {
                None => s.chars().map(String::from).collect(),
                Some(_) if s.is_empty() => vec![],
                Some(sep) if sep.is_empty() => vec![s],
                Some(sep) => s.split(sep.as_str()).map(String::from).collect(),
            };
            Value::Array(
                parts
                    .into_iter()
                    .map(|p| {
                        if null_text.as_deref() == Some(p.as_str()) {
                            Value::Null
                        } else {
                            Value::Text(p)
                        }
                    })
                    .collect(),
            )
        }
        ArrayOp::Position { lower } => {
            let x = arg(1);
            let Some(items) = items(arg(0)) else {
                return Ok(Value::Null);
            };
            // IS NOT DISTINCT FROM: a NULL finds a NULL element.
            items
                .iter()
                .position(|v| {
                    (v.is_null() && x.is_null()) || v.sql_cmp(&x) == Some(Ordering::Equal)
                })
                .map(|p| Value::Int(p as i64 + lower))
                .unwrap_or(Value::Null)
        }
        ArrayOp::Append => {
            let x = arg(1);
            let mut items = items(arg(0)).unwrap_or_default();
            items.push(x);
            Value::Array(items)
        }
        ArrayOp::Prepend => {
            let mut list = vec![arg(0)];
            list.extend(items(arg(1)).unwrap_or_default());
            Value::Array(list)
        }
        ArrayOp::Cat => match (arg(0), arg(1)) {
            (Value::Null, b) => b,
            (a, Value::Null) => a,
            (a, b) => {
                let mut a = items(a).unwrap_or_default();
                a.extend(items(b).unwrap_or_default());
                Value::Array(a)
            }
        },
        ArrayOp::Unnest | ArrayOp::Subscripts { .. } | ArrayOp::Series => Value::Null,
    })
}

/// Whether a projection has a set-returning item.
pub fn has_set_function(projection: &[Expr]) -> bool {
    projection
        .iter()
        .any(|e| matches!(e, Expr::Array { op, .. } if op.is_set_returning()))
}

/// The values of a set-returning call for one input row.
fn set_values(op: ArrayOp, args: &[Expr], env: &Env) -> Result<Vec<Value>> {
    let values = args
        .iter()
        .map(|a| a.eval(env))
        .collect::<Result<Vec<_>>>()?;
    Ok(match (op, values.as_slice()) {
        (ArrayOp::Unnest, [Value::Array(items)]) => items.clone(),
        (ArrayOp::Subscripts { lower }, [Value::Array(items), Value::Int(1)]) => (lower
            ..lower + items.len() as i64)
            .map(Value::Int)
            .collect(),
        (ArrayOp::Series, [Value::Int(start), Value::Int(stop), step @ ..]) => {
            let step = match step {
                [] => 1,
                [Value::Int(s)] => *s,
                _ => return Ok(vec![]),
            };
            if step == 0 {
                return Err(Error::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "step size cannot equal zero",
                ));
            }
            let count = if (step > 0 && start > stop) || (step < 0 && start < stop) {
                0
            } else {
                (i128::from(*stop) - i128::from(*start)) / i128::from(step) + 1
            };
            // Reserve the series' memory before building it: a huge range is a 53200, not
            // an allocation failure.
            env.ctx.reserve(
                usize::try_from(count)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(32),
            )?;
            let mut out = Vec::with_capacity(count as usize);
            let mut v = i128::from(*start);
            for _ in 0..count {
                out.push(Value::Int(v as i64));
                v += i128::from(step);
            }
            out
        }
        _ => vec![],
    })
}

/// Projects one input row through a projection with set-returning items: as many rows as the
/// longest set (none if every set is empty), shorter sets and NULL arrays giving NULL.
pub fn expand(projection: &[Expr], env: &Env, out: &mut Vec<Vec<Value>>) -> Result<()> {
    let mut sets: Vec<Option<Vec<Value>>> = Vec::with_capacity(projection.len());
    let mut scalars: Vec<Value> = Vec::with_capacity(projection.len());
    let mut rows = 0;
    for e in projection {
        match e {
            Expr::Array { op, args } if op.is_set_returning() => {
                let values = set_values(*op, args, env)?;
                rows = rows.max(values.len());
                sets.push(Some(values));
                scalars.push(Value::Null);
            }
            e => {
                sets.push(None);
                scalars.push(e.eval(env)?);
            }
        }
    }
    // The copies of the other columns count against the statement's memory, like any rows.
    env.ctx
        .reserve(super::expr::row_bytes(&scalars).saturating_mul(rows))?;
    for i in 0..rows {
        out.push(
            sets.iter()
                .zip(&scalars)
                .map(|(set, scalar)| match set {
                    Some(values) => values.get(i).cloned().unwrap_or(Value::Null),
                    None => scalar.clone(),
                })
                .collect(),
        );
    }
    Ok(())
}
