//! Reading the attribute's values (integers, durations, strings, the return type) and the
//! error messages' helpers: errors collected so that one compile shows them all, "did you mean"
//! suggestions.

use fluxrate_core::Quota;
use proc_macro2::Span;
use std::time::Duration;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, ItemFn, Lit, ReturnType, Type, UnOp};

/// Collects errors so that one compile shows them all.
#[derive(Default)]
pub(super) struct Errors(pub(super) Option<syn::Error>);

impl Errors {
    pub(super) fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
        let e = syn::Error::new(span, msg);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(super) fn suggest(word: &str, options: &[&str]) -> String {
    let best = options
        .iter()
        .map(|o| (distance(word, o), *o))
        .min()
        .filter(|(d, o)| *d <= o.len() / 2 + 1);
    match best {
        Some((_, o)) => format!("; did you mean `{o}`?"),
        None => String::new(),
    }
}

pub(super) fn list(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An integer literal as a u64.
fn lit_u64(name: &str, i: &syn::LitInt, errors: &mut Errors) -> Option<u64> {
    match i.base10_parse::<u64>() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(i.span(), format!("`{name}` does not fit in a u64"));
            None
        }
    }
}

/// Any other expression: a negative number, or not what `name` takes (`expected`).
fn reject<T>(name: &str, e: &Expr, expected: &str, errors: &mut Errors) -> Option<T> {
    let msg = match e {
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => format!("`{name}` must not be negative"),
        _ => format!("`{name}` must be {expected}"),
    };
    errors.push(e.span(), msg);
    None
}

/// A non-negative integer literal.
pub(super) fn int(name: &str, e: &Expr, errors: &mut Errors) -> Option<u64> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => lit_u64(name, i, errors),
        _ => reject(name, e, "an integer literal", errors),
    }
}

/// A duration: integer or float seconds, or a string such as `"500ms"`.
pub(super) fn duration(name: &str, e: &Expr, errors: &mut Errors) -> Option<Duration> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => lit_u64(name, i, errors).map(Duration::from_secs),
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => {
            let v: f64 = match f.base10_parse() {
                Ok(v) => v,
                Err(e) => {
                    errors.push(f.span(), e);
                    return None;
                }
            };
            match Duration::try_from_secs_f64(v) {
                Ok(d) => Some(d),
                Err(_) => {
                    errors.push(
                        f.span(),
                        format!("`{name}` is not a valid number of seconds"),
                    );
                    None
                }
            }
        }
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => match format!("1/{}", s.value()).parse::<Quota>() {
            Ok(q) => Some(q.period()),
            Err(_) => {
                errors.push(
                    s.span(),
                    format!(
                        "invalid duration {:?} for `{name}`: expected an amount and a unit such as \"500ms\", \"2s\", \"1 minute\"",
                        s.value()
                    ),
                );
                None
            }
        },
        _ => reject(
            name,
            e,
            "a number of seconds or a duration string such as \"500ms\"",
            errors,
        ),
    }
}

pub(super) fn string(name: &str, e: &Expr, errors: &mut Errors) -> Option<(String, Span)> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some((s.value(), s.span())),
        _ => {
            errors.push(e.span(), format!("`{name}` must be a string literal"));
            None
        }
    }
}

/// The last path segment of a return type, if it is a plain path (`Result<..>`, `io::Result`).
pub(super) fn return_kind(f: &ItemFn) -> Option<String> {
    match &f.sig.output {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        },
        ReturnType::Default => None,
    }
}
