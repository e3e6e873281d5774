//! Binding window function calls: `f(args) OVER (PARTITION BY … ORDER BY … frame)` and the
//! WINDOW clause, with PostgreSQL's rules for where windows may appear, how named windows
//! combine, and which frames are valid. Execution is in `window.rs`.

use protocol::{DataType, Error, Result, sqlstate};
use sqlparser::ast;

use super::aggregate::{self, AggCall};
use super::bind::Binder;
use super::expr::Expr;
use super::parse::ident;
use super::types::{self, Ty};
use super::window::{Frame, FrameBound, FrameUnits, WindowCall, WindowFunc, WindowOrder};

fn windowing_error(message: impl Into<String>) -> Error {
    Error::new("42P20", message)
}

impl Binder<'_> {
    /// Binds `name(args) OVER …` into a window call of the SELECT being bound.
    pub(super) fn window_call(
        &mut self,
        name: &str,
        over: &ast::WindowType,
        star: bool,
        distinct: bool,
        filter: Option<&ast::Expr>,
        args: &[ast::Expr],
    ) -> Result<(Expr, Ty)> {
        let Some(collected) = self.windows.take() else {
            return Err(match self.no_aggregates_in {
                "aggregate" => Error::new(
                    sqlstate::GROUPING_ERROR,
                    "aggregate function calls cannot contain window function calls",
                ),
                "window call" => windowing_error("window function calls cannot be nested"),
                clause => windowing_error(format!("window functions are not allowed in {clause}")),
            });
        };
        let func = WindowFunc::by_name(name);
        if func.is_none() && !aggregate::is_aggregate(name) {
            self.windows = Some(collected);
            return Err(Error::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!(
                    "OVER specified, but {name} is not a window function nor an aggregate function"
                ),
            ));
        }
        if distinct {
            self.windows = Some(collected);
            return Err(Error::unsupported(
                "DISTINCT is not implemented for window functions",
            ));
        }
        let spec = match self.window_spec(over) {
            Ok(s) => s,
            Err(e) => {
                self.windows = Some(collected);
                return Err(e);
            }
        };
        let bound = self.window_parts(name, func, star, filter, args, &spec);
        self.windows = Some(collected);
        let mut call = bound?;
        if call.frame.units == FrameUnits::Groups && call.order.is_empty() {
            return Err(windowing_error("GROUPS mode requires an ORDER BY clause"));
        }
        let offset_bound =
            |b: &FrameBound| matches!(b, FrameBound::Preceding(_) | FrameBound::Following(_));
        if call.frame.units == FrameUnits::Range
            && (offset_bound(&call.frame.start) || offset_bound(&call.frame.end))
            && call.order.len() != 1
        {
            return Err(windowing_error(
                "RANGE with offset PRECEDING/FOLLOWING requires exactly one ORDER BY column",
            ));
        }
        if call.order.is_empty() && call.frame == Frame::default_frame() {
            // Without ORDER BY every row is a peer: the default frame is the partition.
            call.frame.end = FrameBound::UnboundedFollowing;
            call.frame.start = FrameBound::UnboundedPreceding;
        }
        let ty = call.ty;
        let windows = self.windows.get_or_insert_with(Vec::new);
        windows.push(call);
        Ok((Expr::Window(windows.len() - 1), Some(ty)))
    }

    /// The window specification an OVER clause means, named windows resolved.
    fn window_spec(&self, over: &ast::WindowType) -> Result<ast::WindowSpec> {
        match over {
            ast::WindowType::NamedWindow(n) => self.named_window(&ident(n)),
            ast::WindowType::WindowSpec(spec) => self.refine(spec),
        }
    }

    fn named_window(&self, name: &str) -> Result<ast::WindowSpec> {
        self.named_windows
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                Error::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("window \"{name}\" does not exist"),
                )
            })
    }

    /// `(base ORDER BY … frame)`: a window that starts from a named one.
    fn refine(&self, spec: &ast::WindowSpec) -> Result<ast::WindowSpec> {
        let Some(base_name) = &spec.window_name else {
            return Ok(spec.clone());
        };
        let base_name = ident(base_name);
        let base = self.named_window(&base_name)?;
        if !spec.partition_by.is_empty() {
            return Err(windowing_error(format!(
                "cannot override PARTITION BY clause of window \"{base_name}\""
            )));
        }
        if !spec.order_by.is_empty() && !base.order_by.is_empty() {
            return Err(windowing_error(format!(
                "cannot override ORDER BY clause of window \"{base_name}\""
            )));
        }
        if base.window_frame.is_some() {
            return Err(windowing_error(format!(
                "cannot copy window \"{base_name}\" because it has a frame clause"
            )));
        }
        Ok(ast::WindowSpec {
            window_name: None,
            partition_by: base.partition_by,
            order_by: if spec.order_by.is_empty() {
                base.order_by
            } else {
                spec.order_by.clone()
            },
            window_frame: spec.window_frame.clone(),
        })
    }

    /// Records the WINDOW clause of a SELECT (each may build on the ones before it).
    pub(super) fn define_windows(&mut self, defs: &[ast::NamedWindowDefinition]) -> Result<()> {
        self.named_windows.clear();
        for ast::NamedWindowDefinition(name, expr) in defs {
            let name = ident(name);
            if self.named_windows.iter().any(|(n, _)| *n == name) {
                return Err(windowing_error(format!(
                    "window \"{name}\" is already defined"
                )));
            }
            let spec = match expr {
                ast::NamedWindowExpr::WindowSpec(spec) => self.refine(spec)?,
                ast::NamedWindowExpr::NamedWindow(other) => self.named_window(&ident(other))?,
            };
            self.named_windows.push((name, spec));
        }
        Ok(())
    }

    /// Binds the function, its arguments, partition, order and frame.
    fn window_parts(
        &mut self,
        name: &str,
        func: Option<WindowFunc>,
        star: bool,
        filter: Option<&ast::Expr>,
        args: &[ast::Expr],
        spec: &ast::WindowSpec,
    ) -> Result<WindowCall> {
        let saved_clause = std::mem::replace(&mut self.no_aggregates_in, "window call");
        let bound: Result<Vec<(Expr, Ty)>> = args.iter().map(|a| self.expr(a)).collect();
        self.no_aggregates_in = "window definitions";
        let definition = self.window_definition(spec);
        self.no_aggregates_in = saved_clause;
        let bound = bound?;
        let (partition, order, frame) = definition?;
        let (func, args, aggregate, ty) = match func {
            Some(f) => {
                if star || filter.is_some() {
                    return Err(Error::syntax(format!(
                        "{} is not valid for window function {name}",
                        if star { "*" } else { "FILTER" }
                    )));
                }
                let (args, ty) = self.window_function_args(name, f, bound)?;
                (f, args, None, ty)
            }
            None => {
                let saved = std::mem::replace(&mut self.no_aggregates_in, "window call");
                let filter = filter.map(|f| self.condition(f, "FILTER")).transpose();
                self.no_aggregates_in = saved;
                let filter = filter?;
                let tys: Vec<Ty> = bound.iter().map(|(_, t)| *t).collect();
                let (agg, ty, want) = aggregate::resolve(name, star, &tys)?;
                let mut exprs = Vec::with_capacity(bound.len());
                for ((e, t), w) in bound
                    .into_iter()
                    .zip(want.iter().chain(std::iter::repeat(&None)))
                {
                    exprs.push(self.coerce(e, t, w.unwrap_or(DataType::Text))?);
                }
                let call = AggCall {
                    func: agg,
                    args: exprs,
                    distinct: false,
                    filter,
                    order: Vec::new(),
                    ty,
                };
                (WindowFunc::Aggregate, Vec::new(), Some(call), ty)
            }
        };
        Ok(WindowCall {
            func,
            args,
            aggregate,
            partition,
            order,
            frame,
            ty,
        })
    }

    /// PARTITION BY, ORDER BY and the frame of a window.
    fn window_definition(
        &mut self,
        spec: &ast::WindowSpec,
    ) -> Result<(Vec<Expr>, Vec<WindowOrder>, Frame)> {
        let mut partition = Vec::with_capacity(spec.partition_by.len());
        for p in &spec.partition_by {
            partition.push(self.expr(p)?.0);
        }
        let mut order = Vec::with_capacity(spec.order_by.len());
        for o in &spec.order_by {
            let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
            order.push(WindowOrder {
                expr: self.expr(&o.expr)?.0,
                desc,
                // PostgreSQL: NULLS LAST ascending, NULLS FIRST descending, unless stated.
                nulls_first: o.options.nulls_first.unwrap_or(desc),
            });
        }
        let frame = match &spec.window_frame {
            None => Frame::default_frame(),
            Some(f) => {
                let units = match f.units {
                    ast::WindowFrameUnits::Rows => FrameUnits::Rows,
                    ast::WindowFrameUnits::Range => FrameUnits::Range,
                    ast::WindowFrameUnits::Groups => FrameUnits::Groups,
                };
                let start = self.frame_bound(&f.start_bound, units)?;
                let end = match &f.end_bound {
                    Some(b) => self.frame_bound(b, units)?,
                    None => FrameBound::CurrentRow,
                };
                check_frame(&start, &end)?;
                Frame { units, start, end }
            }
        };
        Ok((partition, order, frame))
    }

    fn frame_bound(&mut self, b: &ast::WindowFrameBound, units: FrameUnits) -> Result<FrameBound> {
        let offset = |binder: &mut Self, e: &ast::Expr| -> Result<Expr> {
            let (e, t) = binder.expr(e)?;
            match units {
                FrameUnits::Range => Ok(e),
                _ => binder.coerce(e, t, DataType::Int8),
            }
        };
        Ok(match b {
            ast::WindowFrameBound::CurrentRow => FrameBound::CurrentRow,
            ast::WindowFrameBound::Preceding(None) => FrameBound::UnboundedPreceding,
            ast::WindowFrameBound::Following(None) => FrameBound::UnboundedFollowing,
            ast::WindowFrameBound::Preceding(Some(e)) => FrameBound::Preceding(offset(self, e)?),
            ast::WindowFrameBound::Following(Some(e)) => FrameBound::Following(offset(self, e)?),
        })
    }

    /// Checks and types the arguments of a window function proper.
    fn window_function_args(
        &mut self,
        name: &str,
        func: WindowFunc,
        bound: Vec<(Expr, Ty)>,
    ) -> Result<(Vec<Expr>, DataType)> {
        let tys: Vec<Ty> = bound.iter().map(|(_, t)| *t).collect();
        let no_such = || {
            let list: Vec<String> = tys.iter().map(types::ty_name).collect();
            Error::new(
                sqlstate::UNDEFINED_FUNCTION,
                format!("function {name}({}) does not exist", list.join(", ")),
            )
        };
        let n = bound.len();
        let int_arg = |b: &mut Self, (e, t): (Expr, Ty)| -> Result<Expr> {
            match t {
                None => b.coerce(e, t, DataType::Int4),
                Some(t) if t.is_integer() => b.coerce(e, Some(t), DataType::Int8),
                Some(_) => Err(no_such()),
            }
        };
        let mut bound = bound.into_iter();
        match func {
            WindowFunc::RowNumber | WindowFunc::Rank | WindowFunc::DenseRank if n == 0 => {
                Ok((vec![], DataType::Int8))
            }
            WindowFunc::PercentRank | WindowFunc::CumeDist if n == 0 => {
                Ok((vec![], DataType::Float8))
            }
            WindowFunc::Ntile if n == 1 => {
                let a = bound.next().ok_or_else(no_such)?;
                Ok((vec![int_arg(self, a)?], DataType::Int4))
            }
            WindowFunc::Lag | WindowFunc::Lead if (1..=3).contains(&n) => {
                let (x, xt) = bound.next().ok_or_else(no_such)?;
                let mut out = Vec::with_capacity(n);
                let offset = bound.next();
                let default = bound.next();
                let ty = match (&default, xt) {
                    (Some((_, Some(dt))), Some(x)) if *dt != x => {
                        if dt.is_numeric() && x.is_numeric() {
                            types::common_type(&[Some(x), Some(*dt)], "lag")?.unwrap_or(x)
                        } else {
                            return Err(no_such());
                        }
                    }
                    (_, Some(x)) => x,
                    (Some((_, Some(dt))), None) => *dt,
                    _ => DataType::Text,
                };
                // unify: an integer argument with a numeric default becomes numeric values.
                out.push(self.unify(x, xt, ty)?);
                if let Some(o) = offset {
                    out.push(int_arg(self, o)?);
                }
                if let Some((d, dt)) = default {
                    if offset_missing(&out) {
                        return Err(no_such());
                    }
                    out.push(self.unify(d, dt, ty)?);
                }
                Ok((out, ty))
            }
            WindowFunc::FirstValue | WindowFunc::LastValue if n == 1 => {
                let (x, xt) = bound.next().ok_or_else(no_such)?;
                let ty = xt.unwrap_or(DataType::Text);
                Ok((vec![self.coerce(x, xt, ty)?], ty))
            }
            WindowFunc::NthValue if n == 2 => {
                let (x, xt) = bound.next().ok_or_else(no_such)?;
                let ty = xt.unwrap_or(DataType::Text);
                let x = self.coerce(x, xt, ty)?;
                let k = int_arg(self, bound.next().ok_or_else(no_such)?)?;
                Ok((vec![x, k], ty))
            }
            _ => Err(no_such()),
        }
    }
}

fn offset_missing(args: &[Expr]) -> bool {
    args.len() < 2
}

/// PostgreSQL's checks of a frame's bounds.
fn check_frame(start: &FrameBound, end: &FrameBound) -> Result<()> {
    match (start, end) {
        (FrameBound::UnboundedFollowing, _) => {
            Err(windowing_error("frame start cannot be UNBOUNDED FOLLOWING"))
        }
        (_, FrameBound::UnboundedPreceding) => {
            Err(windowing_error("frame end cannot be UNBOUNDED PRECEDING"))
        }
        (FrameBound::CurrentRow, FrameBound::Preceding(_)) => Err(windowing_error(
            "frame starting from current row cannot have preceding rows",
        )),
        (FrameBound::Following(_), FrameBound::Preceding(_) | FrameBound::CurrentRow) => Err(
            windowing_error("frame starting from following row cannot have preceding rows"),
        ),
        _ => Ok(()),
    }
}
