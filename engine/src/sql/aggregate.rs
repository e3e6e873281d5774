//! Aggregate functions: `count`, `sum`, `min`, `max`, `avg`, `string_agg`, `bool_and`,
//! `bool_or`, each optionally over DISTINCT arguments.
//!
//! Binding lifts every aggregate call out of the SELECT list (and HAVING, ORDER BY) into an
//! [`AggCall`]; execution feeds each group's rows into one [`Accumulator`] per call and
//! appends the results to the group's key values, forming the row that the rewritten
//! expressions then read. Like PostgreSQL, aggregates skip NULL inputs, and all but `count`
//! return NULL over no input.

use std::collections::HashSet;

use protocol::value::{Interval, Numeric};
use protocol::{DataType, Error, Result, Value, sqlstate};

use super::expr::{Expr, as_f64, text_of};
use super::types::{self, Ty};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggFunc {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    StringAgg,
    /// array_agg: an array of the argument's type (text for an unknown literal), NULLs kept.
    ArrayAgg,
    BoolAnd,
    BoolOr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AggCall {
    pub func: AggFunc,
    pub args: Vec<Expr>,
    pub distinct: bool,
    /// `FILTER (WHERE ...)`: only rows for which it holds reach the aggregate.
    pub filter: Option<Expr>,
    /// `agg(x ORDER BY …)`: the rows reach the aggregate in this order (expression,
    /// descending, NULLs first).
    pub order: Vec<(Expr, bool, bool)>,
    /// The type of the aggregate's result.
    pub ty: DataType,
}

pub fn is_aggregate(name: &str) -> bool {
    matches!(
        name,
        "count"
            | "sum"
            | "min"
            | "max"
            | "avg"
            | "string_agg"
            | "array_agg"
            | "bool_and"
            | "bool_or"
            | "every"
    )
}

/// Resolves an aggregate over arguments of the given types; returns the function, its result
/// type and the type each unknown argument should take.
pub fn resolve(name: &str, star: bool, args: &[Ty]) -> Result<(AggFunc, DataType, Vec<Ty>)> {
    let no_such = || {
        let list: Vec<String> = args.iter().map(types::ty_name).collect();
        Error::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!("function {name}({}) does not exist", list.join(", ")),
        )
    };
    if star {
        return if name == "count" {
            Ok((AggFunc::CountStar, DataType::Int8, vec![]))
        } else {
            Err(no_such())
        };
    }
    let first = args.first().copied().flatten();
    let (func, ty, want) = match (name, args.len()) {
        ("count", 1) => (AggFunc::Count, DataType::Int8, vec![None]),
        ("sum", 1) => {
            let t = first.unwrap_or(DataType::Float8);
            // sum(int2/int4) is bigint, sum(bigint) and sum(numeric) numeric, as in PostgreSQL.
            let ty = match t {
                DataType::Int8 | DataType::Numeric(_) => DataType::Numeric(None),
                t if t.is_integer() => DataType::Int8,
                DataType::Float4 => DataType::Float4,
                DataType::Float8 => DataType::Float8,
                DataType::Interval => DataType::Interval,
                _ => return Err(no_such()),
            };
            (AggFunc::Sum, ty, vec![Some(t)])
        }
        ("avg", 1) => {
            // avg of integers and numerics is numeric; of floats, double precision.
            let t = first.unwrap_or(DataType::Float8);
            let ty = match t {
                t if t.is_float() => DataType::Float8,
                t if t.is_numeric() => DataType::Numeric(None),
                DataType::Interval => DataType::Interval,
                _ => return Err(no_such()),
            };
            (AggFunc::Avg, ty, vec![Some(t)])
        }
        ("min" | "max", 1) => {
            let t = first.unwrap_or(DataType::Text);
            let func = if name == "min" {
                AggFunc::Min
            } else {
                AggFunc::Max
            };
            (
                func,
                if matches!(t, DataType::Varchar(_)) {
                    DataType::Text
                } else {
                    t
                },
                vec![Some(t)],
            )
        }
        ("string_agg", 2) => {
            if !first.is_none_or(|t| t.is_text()) {
                return Err(no_such());
            }
            (
                AggFunc::StringAgg,
                DataType::Text,
                vec![Some(DataType::Text), Some(DataType::Text)],
            )
        }
        ("array_agg", 1) => {
            let elem = first.unwrap_or(DataType::Text);
            let Some(e) = protocol::value::array::Elem::of(elem) else {
                return Err(Error::unsupported("array_agg of arrays is not supported"));
            };
            (AggFunc::ArrayAgg, DataType::Array(e), vec![Some(elem)])
        }
        ("bool_and" | "every" | "bool_or", 1) => {
            if !first.is_none_or(|t| t == DataType::Bool) {
                return Err(no_such());
            }
            let func = if name == "bool_or" {
                AggFunc::BoolOr
            } else {
                AggFunc::BoolAnd
            };
            (func, DataType::Bool, vec![Some(DataType::Bool)])
        }
        _ => return Err(no_such()),
    };
    Ok((func, ty, want))
}

/// A row of an ordered aggregate: its sort key values and its arguments.
type OrderedRow = (Vec<Value>, Vec<Value>);

/// An ordered aggregate's sort directions (descending, NULLs first) and waiting rows.
type Ordered = (Vec<(bool, bool)>, Vec<OrderedRow>);

/// The running state of one aggregate over one group.
#[derive(Clone)]
pub struct Accumulator {
    /// ORDER BY inside the call: rows wait here (sort keys, arguments) until `finish`.
    ordered: Option<Ordered>,
    func: AggFunc,
    ty: DataType,
    seen: Option<HashSet<Vec<Value>>>,
    count: i64,
    int_sum: i64,
    /// Exact sums for numeric results: integers in `wide_sum`, numerics in `num_sum`.
    wide_sum: i128,
    num_sum: Numeric,
    interval_sum: Interval,
    float_sum: f64,
    best: Option<Value>,
    text: Option<String>,
    /// array_agg's elements so far.
    items: Vec<Value>,
    flag: Option<bool>,
}

impl Accumulator {
    pub fn new(call: &AggCall) -> Self {
        Accumulator {
            ordered: (!call.order.is_empty()).then(|| {
                (
                    call.order.iter().map(|(_, d, n)| (*d, *n)).collect(),
                    Vec::new(),
                )
            }),
            func: call.func,
            ty: call.ty,
            seen: call.distinct.then(HashSet::new),
            count: 0,
            int_sum: 0,
            wide_sum: 0,
            num_sum: Numeric::from_i64(0),
            interval_sum: Interval::default(),
            float_sum: 0.0,
            best: None,
            text: None,
            items: Vec::new(),
            flag: None,
        }
    }

    /// Adds one row of an ordered aggregate: its sort key values and arguments.
    pub fn add_ordered(&mut self, keys: Vec<Value>, args: Vec<Value>) -> Result<()> {
        match &mut self.ordered {
            Some((_, rows)) => {
                rows.push((keys, args));
                Ok(())
            }
            None => self.add(args),
        }
    }

    /// Adds one row's argument values.
    pub fn add(&mut self, args: Vec<Value>) -> Result<()> {
        if self.func == AggFunc::CountStar {
            self.count += 1;
            return Ok(());
        }
        let Some(v) = args.first() else { return Ok(()) };
        if self.func == AggFunc::ArrayAgg {
            // Unlike the other aggregates, array_agg keeps NULLs.
            if let Some(seen) = &mut self.seen
                && !seen.insert(args.clone())
            {
                return Ok(());
            }
            self.count += 1;
            self.items.push(v.clone());
            return Ok(());
        }
        if v.is_null() {
            return Ok(());
        }
        if let Some(seen) = &mut self.seen
            && !seen.insert(args.clone())
        {
            return Ok(());
        }
        self.count += 1;
        match self.func {
            AggFunc::CountStar | AggFunc::Count | AggFunc::ArrayAgg => {}
            AggFunc::Sum if self.ty == DataType::Int8 => {
                if let Value::Int(i) = v {
                    self.int_sum = self.int_sum.checked_add(*i).ok_or_else(|| {
                        Error::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
                    })?;
                }
            }
            AggFunc::Sum | AggFunc::Avg if self.ty == DataType::Interval => {
                if let Value::Interval(i) = v {
                    self.interval_sum = self.interval_sum.add(*i)?;
                }
            }
            AggFunc::Sum | AggFunc::Avg if matches!(self.ty, DataType::Numeric(_)) => match v {
                Value::Int(i) => {
                    self.wide_sum = self.wide_sum.checked_add(*i as i128).ok_or_else(|| {
                        Error::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "numeric out of range")
                    })?
                }
                Value::Numeric(n) => self.num_sum = self.num_sum.add(*n)?,
                _ => {}
            },
            AggFunc::Sum | AggFunc::Avg => self.float_sum += as_f64(v).unwrap_or(0.0),
            AggFunc::Min | AggFunc::Max => {
                let replace = match &self.best {
                    None => true,
                    Some(b) => {
                        let ord = v.total_cmp(b);
                        if self.func == AggFunc::Min {
                            ord.is_lt()
                        } else {
                            ord.is_gt()
                        }
                    }
                };
                if replace {
                    self.best = Some(v.clone());
                }
            }
            AggFunc::StringAgg => {
                let sep = args
                    .get(1)
                    .filter(|s| !s.is_null())
                    .map(text_of)
                    .unwrap_or_default();
                match &mut self.text {
                    None => self.text = Some(text_of(v)),
                    Some(t) => {
                        t.push_str(&sep);
                        t.push_str(&text_of(v));
                    }
                }
            }
            AggFunc::BoolAnd | AggFunc::BoolOr => {
                let b = matches!(v, Value::Bool(true));
                self.flag = Some(match self.flag {
                    None => b,
                    Some(f) if self.func == AggFunc::BoolAnd => f && b,
                    Some(f) => f || b,
                });
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Value> {
        if let Some((dirs, mut rows)) = self.ordered.take() {
            rows.sort_by(|(a, _), (b, _)| {
                for ((x, y), (desc, nulls_first)) in a.iter().zip(b).zip(&dirs) {
                    let o = super::exec::compare_for_sort(x, y, *desc, *nulls_first);
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                }
                std::cmp::Ordering::Equal
            });
            for (_, args) in rows {
                self.add(args)?;
            }
        }
        Ok(match self.func {
            AggFunc::CountStar | AggFunc::Count => Value::Int(self.count),
            _ if self.count == 0 => Value::Null,
            AggFunc::Sum if self.ty == DataType::Int8 => Value::Int(self.int_sum),
            AggFunc::Sum | AggFunc::Avg if self.ty == DataType::Interval => {
                if self.func == AggFunc::Sum {
                    Value::Interval(self.interval_sum)
                } else {
                    Value::Interval(self.interval_sum.mul(1.0 / self.count as f64)?)
                }
            }
            AggFunc::Sum | AggFunc::Avg if matches!(self.ty, DataType::Numeric(_)) => {
                let total = Numeric::from_i128(self.wide_sum)?.add(self.num_sum)?;
                Value::Numeric(if self.func == AggFunc::Sum {
                    total
                } else {
                    total.div(Numeric::from_i64(self.count))?
                })
            }
            AggFunc::Sum => types::check_float(self.float_sum, true, &self.ty)?,
            AggFunc::Avg => Value::Float(self.float_sum / self.count as f64),
            AggFunc::Min | AggFunc::Max => self.best.unwrap_or(Value::Null),
            AggFunc::StringAgg => self.text.map(Value::Text).unwrap_or(Value::Null),
            AggFunc::ArrayAgg if self.count == 0 => Value::Null,
            AggFunc::ArrayAgg => Value::Array(self.items),
            AggFunc::BoolAnd | AggFunc::BoolOr => self.flag.map(Value::Bool).unwrap_or(Value::Null),
        })
    }
}
