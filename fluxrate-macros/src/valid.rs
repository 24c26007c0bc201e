//! Checking the arguments and the function: every misuse becomes a `syn::Error` spanned on the
//! token that caused it. The limit itself is checked by building it with `fluxrate-core`, so
//! that a limit accepted here can never fail to build at run time.

use crate::ast::{Arg, Args};
use fluxrate_core::{Algorithm, Quota, RateLimiter};
use proc_macro2::Span;
use std::time::Duration;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, ItemFn, Lit, ReturnType, Type, UnOp};

const OPTIONS: [&str; 8] = [
    "calls",
    "period",
    "algorithm",
    "burst",
    "key",
    "on_limit",
    "timeout",
    "limiter",
];

const ON_LIMIT: [&str; 3] = ["error", "wait", "none"];

const ALGORITHMS: [&str; 6] = [
    "token_bucket",
    "leaky_bucket",
    "fixed_window",
    "sliding_window",
    "sliding_window_counter",
    "sliding_log",
];

/// What happens when the limit is reached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLimit {
    /// Return `Err(From::from(RateLimited))`.
    Error,
    /// Block (or await) until admitted; with a timeout, `Err(From::from(TimeoutExceeded))`.
    Wait,
    /// Return `None`.
    None,
}

/// Where the limiter comes from.
pub(crate) enum Source {
    /// Built by the macro from a validated quota.
    Quota {
        calls: u64,
        period_ns: u64,
        burst: Option<u64>,
        algorithm: Algorithm,
    },
    /// A limiter the user declared (`limiter = API_LIMIT`).
    Limiter(Expr),
}

/// A validated attribute.
pub(crate) struct Config {
    pub(crate) source: Source,
    pub(crate) key: Option<Expr>,
    pub(crate) on_limit: OnLimit,
    pub(crate) timeout_ns: Option<u64>,
}

/// Collects errors so that one compile shows them all.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
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

fn suggest(word: &str, options: &[&str]) -> String {
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

fn list(options: &[&str]) -> String {
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
fn int(name: &str, e: &Expr, errors: &mut Errors) -> Option<u64> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => lit_u64(name, i, errors),
        _ => reject(name, e, "an integer literal", errors),
    }
}

/// A duration: integer or float seconds, or a string such as `"500ms"`.
fn duration(name: &str, e: &Expr, errors: &mut Errors) -> Option<Duration> {
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

fn string(name: &str, e: &Expr, errors: &mut Errors) -> Option<(String, Span)> {
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
fn return_kind(f: &ItemFn) -> Option<String> {
    match &f.sig.output {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        },
        ReturnType::Default => None,
    }
}

/// Check the attribute and the function it is on.
pub(crate) fn validate(args: &Args, f: &ItemFn) -> syn::Result<Config> {
    let mut errors = Errors::default();
    let mut rate: Option<&syn::LitStr> = None;
    let mut seen: Vec<(String, Span)> = Vec::new();
    let mut named: Vec<(String, Span, &Expr)> = Vec::new();
    for (i, arg) in args.args.iter().enumerate() {
        match arg {
            Arg::Rate(s) => {
                if i != 0 || rate.is_some() {
                    errors.push(s.span(), "the rate string must come first, and only once");
                } else {
                    rate = Some(s);
                }
            }
            Arg::Named { name, value } => {
                let n = name.to_string();
                if !OPTIONS.contains(&n.as_str()) {
                    errors.push(
                        name.span(),
                        format!(
                            "unknown option `{n}`, expected one of {}{}",
                            list(&OPTIONS),
                            suggest(&n, &OPTIONS)
                        ),
                    );
                    continue;
                }
                if seen.iter().any(|(s, _)| *s == n) {
                    errors.push(name.span(), format!("duplicate option `{n}`"));
                    continue;
                }
                seen.push((n.clone(), name.span()));
                named.push((n, name.span(), value));
            }
        }
    }
    let get = |k: &str| {
        named
            .iter()
            .find(|(n, _, _)| n == k)
            .map(|(_, s, v)| (*s, *v))
    };

    if let Some(c) = &f.sig.constness {
        errors.push(c.span, "#[rate_limit] cannot be used on a `const fn`");
    }

    // Where the limit comes from: a rate string, calls + period, or an existing limiter.
    let limiter = get("limiter");
    let source = if let Some((span, expr)) = limiter {
        for other in ["calls", "period", "algorithm", "burst"] {
            if let Some((s, _)) = get(other) {
                errors.push(
                    s,
                    format!("`{other}` cannot be combined with `limiter`: the limiter has its own"),
                );
            }
        }
        if let Some(r) = rate {
            errors.push(r.span(), "a rate string cannot be combined with `limiter`");
        }
        let _ = span;
        Some(Source::Limiter(expr.clone()))
    } else {
        let mut quota: Option<(u64, u64)> = None;
        if let Some(r) = rate {
            if get("calls").is_some() || get("period").is_some() {
                errors.push(
                    r.span(),
                    "give either a rate string or `calls` and `period`, not both",
                );
            }
            match r.value().parse::<Quota>() {
                Ok(q) => quota = Some((q.calls(), q.period().as_nanos() as u64)),
                Err(e) => errors.push(r.span(), e),
            }
        } else {
            let calls = get("calls");
            let period = get("period");
            if calls.is_none() {
                errors.push(args.span, "missing `calls`: write `calls = N, period = SECONDS` or a rate string such as \"100/minute\"");
            }
            if period.is_none() {
                errors.push(args.span, "missing `period`: write `calls = N, period = SECONDS` or a rate string such as \"100/minute\"");
            }
            if let (Some((_, c)), Some((_, p))) = (calls, period) {
                let c = int("calls", c, &mut errors);
                let pd = duration("period", p, &mut errors);
                if c == Some(0) {
                    errors.push(calls.unwrap().1.span(), "`calls` must be at least 1");
                }
                if pd == Some(Duration::ZERO) {
                    errors.push(p.span(), "`period` must be longer than zero");
                }
                if let (Some(c), Some(pd)) = (c, pd) {
                    match u64::try_from(pd.as_nanos()) {
                        Ok(ns) if c > 0 && ns > 0 => quota = Some((c, ns)),
                        Ok(_) => {}
                        Err(_) => {
                            errors.push(p.span(), "`period` does not fit in 64-bit nanoseconds")
                        }
                    }
                }
            }
        }
        let algorithm = match get("algorithm") {
            Some((_, e)) => match string("algorithm", e, &mut errors) {
                Some((name, span)) => match name.parse::<Algorithm>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        errors.push(
                            span,
                            format!(
                                "unknown algorithm {name:?}, expected one of {}{}",
                                list(&ALGORITHMS),
                                suggest(&name, &ALGORITHMS)
                            ),
                        );
                        None
                    }
                },
                None => None,
            },
            None => Some(Algorithm::TokenBucket),
        };
        let burst = get("burst").and_then(|(_, e)| int("burst", e, &mut errors));
        match (quota, algorithm) {
            (Some((calls, period_ns)), Some(algorithm)) => {
                // Build it now with the same code that will build it at run time.
                let mut q = Quota::new(calls, Duration::from_nanos(period_ns));
                if let Some(b) = burst {
                    q = q.with_burst(b);
                }
                match RateLimiter::builder(q).algorithm(algorithm).build() {
                    Ok(_) => Some(Source::Quota {
                        calls,
                        period_ns,
                        burst,
                        algorithm,
                    }),
                    Err(e) => {
                        let span = get("burst")
                            .map(|(s, _)| s)
                            .or(rate.map(|r| r.span()))
                            .unwrap_or(args.span);
                        errors.push(span, format!("invalid limit: {e}"));
                        None
                    }
                }
            }
            _ => None,
        }
    };

    let on_limit = match get("on_limit") {
        Some((_, e)) => match string("on_limit", e, &mut errors) {
            Some((v, span)) => match v.as_str() {
                "error" => OnLimit::Error,
                "wait" => OnLimit::Wait,
                "none" => OnLimit::None,
                other => {
                    errors.push(
                        span,
                        format!(
                            "unknown on_limit {other:?}, expected one of {}{}",
                            list(&ON_LIMIT),
                            suggest(other, &ON_LIMIT)
                        ),
                    );
                    OnLimit::Error
                }
            },
            None => OnLimit::Error,
        },
        None => OnLimit::Error,
    };
    let timeout_ns = get("timeout").and_then(|(span, e)| {
        if on_limit != OnLimit::Wait {
            errors.push(span, "`timeout` only applies to `on_limit = \"wait\"`");
        }
        duration("timeout", e, &mut errors).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });

    // The return type must be able to carry the outcome.
    let ret = return_kind(f);
    let ret_span = match &f.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => f.sig.ident.span(),
    };
    let needs_result =
        on_limit == OnLimit::Error || (on_limit == OnLimit::Wait && timeout_ns.is_some());
    if needs_result && ret.as_deref() != Some("Result") {
        let why = if on_limit == OnLimit::Error {
            "`on_limit = \"error\"` (the default) needs the function to return `Result<T, E>` with `E: From<fluxrate::RateLimited>`; or use `on_limit = \"none\"` with `Option<T>`, or `on_limit = \"wait\"`"
        } else {
            "`on_limit = \"wait\"` with a `timeout` needs the function to return `Result<T, E>` with `E: From<fluxrate::TimeoutExceeded>`"
        };
        errors.push(ret_span, why);
    }
    if on_limit == OnLimit::None && ret.as_deref() != Some("Option") {
        errors.push(
            ret_span,
            "`on_limit = \"none\"` needs the function to return `Option<T>`",
        );
    }
    if on_limit == OnLimit::Wait && f.sig.asyncness.is_some() && !cfg!(feature = "tokio") {
        errors.push(
            f.sig.asyncness.span(),
            "`on_limit = \"wait\"` in an async fn needs the `tokio` feature of fluxrate (it awaits on tokio's timer instead of blocking the executor)",
        );
    }

    match errors.0 {
        Some(e) => Err(e),
        None => Ok(Config {
            source: source.expect("no errors means a source"),
            key: get("key").map(|(_, e)| e.clone()),
            on_limit,
            timeout_ns,
        }),
    }
}
