//! Translation of kernel expressions and statements to C99.

use kiln_ir::DType;

use super::writer::Writer;
use crate::kernel::{BinOp, Expr, Kernel, ScalarType, Stmt, UnOp, Var};

/// The C type of a scalar type.
pub fn c_type(t: ScalarType) -> &'static str {
    match t {
        DType::F32 => "float",
        DType::I8 => "int8_t",
        DType::U8 | DType::Bool => "uint8_t",
        DType::I16 => "int16_t",
        DType::I32 => "int32_t",
        DType::I64 => "int64_t",
    }
}

/// The suffix of the runtime's typed helpers (`kiln_max_i32`).
fn suffix(t: ScalarType) -> &'static str {
    match t {
        DType::F32 => "f32",
        DType::I8 => "i8",
        DType::U8 | DType::Bool => "u8",
        DType::I16 => "i16",
        DType::I32 => "i32",
        DType::I64 => "i64",
    }
}

/// A C literal for a float constant (shortest representation that reads back exactly).
pub fn float_literal(v: f32) -> String {
    if v.is_nan() {
        "KILN_NANF".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "KILN_INFF" } else { "(-KILN_INFF)" }.to_string()
    } else {
        let s = format!("{v:?}");
        let s = if s.contains(['.', 'e', 'E']) {
            s
        } else {
            format!("{s}.0")
        };
        let s = if s.contains('e') && !s.contains('.') {
            s.replacen('e', ".0e", 1)
        } else {
            s
        };
        format!("{s}f")
    }
}

/// A C literal for an integer constant of type `t`.
pub fn int_literal(v: i64, t: ScalarType) -> String {
    match t {
        DType::I64 if v == i64::MIN => "INT64_MIN".to_string(),
        DType::I64 => format!("INT64_C({v})"),
        DType::I32 if v == i64::from(i32::MIN) => "INT32_MIN".to_string(),
        DType::I32 => v.to_string(),
        _ => format!("(({}){v})", c_type(t)),
    }
}

/// Translates a kernel's expressions, knowing its parameter names and variable types.
pub struct ExprPrinter<'a> {
    pub kernel: &'a Kernel,
}

impl ExprPrinter<'_> {
    pub fn var_name(&self, v: Var) -> String {
        format!("v{}", v.0)
    }

    /// The scalar type of an expression.
    pub fn type_of(&self, e: &Expr) -> ScalarType {
        match e {
            Expr::Int(_) => DType::I32,
            Expr::Const(_, t) | Expr::Cast(t, _) => *t,
            Expr::Var(v) => self
                .kernel
                .vars
                .get(v.0 as usize)
                .copied()
                .unwrap_or(DType::I32),
            Expr::Load { param, .. } => self
                .kernel
                .params
                .get(*param)
                .map_or(DType::F32, |p| p.dtype),
            Expr::Unary(UnOp::Not, _) => DType::Bool,
            Expr::Unary(_, a) => self.type_of(a),
            Expr::Binary(op, a, _) => match op {
                BinOp::Lt
                | BinOp::Le
                | BinOp::Gt
                | BinOp::Ge
                | BinOp::Eq
                | BinOp::Ne
                | BinOp::And
                | BinOp::Or => DType::Bool,
                _ => self.type_of(a),
            },
            Expr::Select(_, a, _) => self.type_of(a),
            Expr::Requantize { .. } => DType::I32,
        }
    }

    pub fn expr(&self, e: &Expr) -> String {
        match e {
            Expr::Int(v) => int_literal(*v, DType::I32),
            Expr::Const(v, DType::F32) => float_literal(*v as f32),
            Expr::Const(v, DType::Bool) => if *v != 0.0 { "1" } else { "0" }.to_string(),
            Expr::Const(v, t) => int_literal(*v as i64, *t),
            Expr::Var(v) => self.var_name(*v),
            Expr::Load { param, index } => {
                let name = self
                    .kernel
                    .params
                    .get(*param)
                    .map_or("?", |p| p.name.as_str());
                format!("{name}[{}]", self.expr(index))
            }
            Expr::Unary(op, a) => self.unary(*op, a),
            Expr::Binary(op, a, b) => self.binary(*op, a, b),
            Expr::Select(c, a, b) => {
                format!("({} ? {} : {})", self.expr(c), self.expr(a), self.expr(b))
            }
            Expr::Cast(t, a) => format!("(({}){})", c_type(*t), self.expr(a)),
            Expr::Requantize {
                value,
                multiplier,
                shift,
                rounding,
            } => format!(
                "{}({}, {}, {})",
                match rounding {
                    kiln_ir::fixed_point::Rounding::TfLite => "kiln_requantize",
                    kiln_ir::fixed_point::Rounding::HalfEven => "kiln_requantize_half_even",
                },
                self.expr(value),
                self.expr(multiplier),
                self.expr(shift)
            ),
        }
    }

    fn unary(&self, op: UnOp, a: &Expr) -> String {
        let t = self.type_of(a);
        let x = self.expr(a);
        let math = |f: &str| format!("{f}({x})");
        match op {
            UnOp::Neg => format!("(-{x})"),
            UnOp::Not => format!("(!{x})"),
            UnOp::Abs => format!("kiln_abs_{}({x})", suffix(t)),
            UnOp::Exp => math("KILN_EXPF"),
            UnOp::Log => math("KILN_LOGF"),
            UnOp::Sqrt => math("KILN_SQRTF"),
            UnOp::Tanh => math("KILN_TANHF"),
            UnOp::Erf => math("KILN_ERFF"),
            UnOp::Floor => math("KILN_FLOORF"),
            UnOp::Ceil => math("KILN_CEILF"),
            UnOp::RoundEven => math("KILN_RINTF"),
        }
    }

    fn binary(&self, op: BinOp, a: &Expr, b: &Expr) -> String {
        let t = self.type_of(a);
        let (x, y) = (self.expr(a), self.expr(b));
        let infix = |o: &str| format!("({x} {o} {y})");
        let helper = |f: &str| format!("kiln_{f}_{}({x}, {y})", suffix(t));
        let positive_const = matches!(b, Expr::Int(v) if *v > 0);
        match op {
            BinOp::Add => infix("+"),
            BinOp::Sub => infix("-"),
            BinOp::Mul => infix("*"),
            BinOp::Div if t == DType::F32 || positive_const => infix("/"),
            BinOp::Div => helper("div"),
            BinOp::Rem if positive_const => infix("%"),
            BinOp::Rem => helper("rem"),
            BinOp::Max => helper("max"),
            BinOp::Min => helper("min"),
            BinOp::Pow if t == DType::F32 => format!("KILN_POWF({x}, {y})"),
            BinOp::Pow => format!(
                "(({})kiln_pow_i64((int64_t)({x}), (int64_t)({y})))",
                c_type(t)
            ),
            BinOp::Lt => infix("<"),
            BinOp::Le => infix("<="),
            BinOp::Gt => infix(">"),
            BinOp::Ge => infix(">="),
            BinOp::Eq => infix("=="),
            BinOp::Ne => infix("!="),
            BinOp::And => infix("&&"),
            BinOp::Or => infix("||"),
        }
    }

    pub fn stmts(&self, w: &mut Writer, body: &[Stmt]) {
        for s in body {
            self.stmt(w, s);
        }
    }

    fn stmt(&self, w: &mut Writer, s: &Stmt) {
        match s {
            Stmt::For {
                var, extent, body, ..
            } => {
                let v = self.var_name(*var);
                w.block(
                    format!("for (int32_t {v} = 0; {v} < {extent}; ++{v})"),
                    "",
                    |w| self.stmts(w, body),
                );
            }
            Stmt::Let { var, ty, init } => {
                w.line(format!(
                    "{} {} = {};",
                    c_type(*ty),
                    self.var_name(*var),
                    self.expr(init)
                ));
            }
            Stmt::Assign { var, value } => {
                w.line(format!("{} = {};", self.var_name(*var), self.expr(value)))
            }
            Stmt::Store {
                param,
                index,
                value,
            } => {
                let p = &self.kernel.params[*param];
                let value = if self.type_of(value) == p.dtype {
                    self.expr(value)
                } else {
                    format!("({}){}", c_type(p.dtype), self.expr(value))
                };
                w.line(format!("{}[{}] = {};", p.name, self.expr(index), value));
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                w.line(format!("if ({}) {{", self.expr(cond)));
                w.indent();
                self.stmts(w, then);
                w.dedent();
                if otherwise.is_empty() {
                    w.line("}");
                } else {
                    w.line("} else {");
                    w.indent();
                    self.stmts(w, otherwise);
                    w.dedent();
                    w.line("}");
                }
            }
        }
    }
}
