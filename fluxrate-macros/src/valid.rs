//! Checking the arguments and the function: every misuse becomes a `syn::Error` spanned on the
//! token that caused it. The limit itself is checked by `fluxrate-core`'s
//! `Algorithm::validate`, the check its builder runs, so that a limit accepted here can never
//! fail to build at run time (and checking it allocates nothing, however large).

use crate::ast::{Arg, Args};
use fluxrate_core::{Algorithm, Quota};
use proc_macro2::Span;
use std::time::Duration;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ItemFn, Lit, ReturnType};

mod values;

use values::{duration, int, list, return_kind, string, suggest, Errors};

const OPTIONS: [&str; 9] = [
    "calls",
    "period",
    "algorithm",
    "burst",
    "key",
    "on_limit",
    "timeout",
    "limiter",
    "crate",
];

const ON_LIMIT: [&str; 3] = ["error", "wait", "none"];

/// The algorithm names, from the core's one list (what its parser accepts).
const ALGORITHMS: [&str; Algorithm::NAMES.len()] = {
    let mut names = [""; Algorithm::NAMES.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Algorithm::NAMES[i].0;
        i += 1;
    }
    names
};

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
    /// The path of the `fluxrate` crate (`::fluxrate` unless `crate = path` says otherwise).
    pub(crate) krate: syn::Path,
    pub(crate) source: Source,
    pub(crate) key: Option<Expr>,
    pub(crate) on_limit: OnLimit,
    pub(crate) timeout_ns: Option<u64>,
}

/// The named options of an attribute, each once, in order.
struct Named<'a> {
    rate: Option<&'a syn::LitStr>,
    options: Vec<(String, Span, &'a Expr)>,
}

impl<'a> Named<'a> {
    /// Sort the arguments: the rate string (first, once) and known options (once each).
    fn collect(args: &'a Args, errors: &mut Errors) -> Self {
        let mut rate = None;
        let mut options: Vec<(String, Span, &Expr)> = Vec::new();
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
                    } else if options.iter().any(|(s, _, _)| *s == n) {
                        errors.push(name.span(), format!("duplicate option `{n}`"));
                    } else {
                        options.push((n, name.span(), value));
                    }
                }
            }
        }
        Self { rate, options }
    }

    fn get(&self, k: &str) -> Option<(Span, &'a Expr)> {
        self.options
            .iter()
            .find(|(n, _, _)| n == k)
            .map(|(_, s, v)| (*s, *v))
    }
}

/// `crate = path` (or a string holding the path): where the generated code finds `fluxrate`,
/// for a crate that renames it or re-exports it.
fn krate(named: &Named<'_>, errors: &mut Errors) -> syn::Path {
    let default = || syn::parse_quote!(::fluxrate);
    let Some((_, e)) = named.get("crate") else {
        return default();
    };
    let path = match e {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => Some(p.path.clone()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => s.parse::<syn::Path>().ok(),
        _ => None,
    };
    path.unwrap_or_else(|| {
        errors.push(
            e.span(),
            "`crate` must be a path to the fluxrate crate, such as `crate = my_deps::fluxrate`",
        );
        default()
    })
}

/// Where the limit comes from: an existing limiter, or a rate string or `calls` + `period`
/// (with `algorithm` and `burst`), checked as the limiter's builder will check it.
fn source(args: &Args, named: &Named<'_>, errors: &mut Errors) -> Option<Source> {
    let rate = named.rate;
    if let Some((_, expr)) = named.get("limiter") {
        for other in ["calls", "period", "algorithm", "burst"] {
            if let Some((s, _)) = named.get(other) {
                errors.push(
                    s,
                    format!("`{other}` cannot be combined with `limiter`: the limiter has its own"),
                );
            }
        }
        if let Some(r) = rate {
            errors.push(r.span(), "a rate string cannot be combined with `limiter`");
        }
        return Some(Source::Limiter(expr.clone()));
    }
    let quota = match rate {
        Some(r) => {
            if named.get("calls").is_some() || named.get("period").is_some() {
                errors.push(
                    r.span(),
                    "give either a rate string or `calls` and `period`, not both",
                );
            }
            match r.value().parse::<Quota>() {
                Ok(q) => Some((q.calls(), q.period().as_nanos() as u64)),
                Err(e) => {
                    errors.push(r.span(), e);
                    None
                }
            }
        }
        None => calls_and_period(args, named, errors),
    };
    let algorithm = algorithm(named, errors);
    let burst = named
        .get("burst")
        .and_then(|(_, e)| int("burst", e, errors));
    let ((calls, period_ns), algorithm) = (quota?, algorithm?);
    let mut q = Quota::new(calls, Duration::from_nanos(period_ns));
    if let Some(b) = burst {
        q = q.with_burst(b);
    }
    // The check the builder makes at run time, without building (or allocating) anything.
    if let Err(e) = algorithm.validate(&q) {
        let span = named
            .get("burst")
            .map(|(s, _)| s)
            .or(rate.map(|r| r.span()))
            .unwrap_or(args.span);
        errors.push(span, format!("invalid limit: {e}"));
        return None;
    }
    Some(Source::Quota {
        calls,
        period_ns,
        burst,
        algorithm,
    })
}

/// `calls = N, period = SECONDS`: both present, positive, and the period in 64-bit ns.
fn calls_and_period(args: &Args, named: &Named<'_>, errors: &mut Errors) -> Option<(u64, u64)> {
    let calls = named.get("calls");
    let period = named.get("period");
    let how = "write `calls = N, period = SECONDS` or a rate string such as \"100/minute\"";
    if calls.is_none() {
        errors.push(args.span, format!("missing `calls`: {how}"));
    }
    if period.is_none() {
        errors.push(args.span, format!("missing `period`: {how}"));
    }
    let ((_, c_expr), (_, p)) = (calls?, period?);
    let c = int("calls", c_expr, errors);
    let pd = duration("period", p, errors);
    if c == Some(0) {
        errors.push(c_expr.span(), "`calls` must be at least 1");
    }
    if pd == Some(Duration::ZERO) {
        errors.push(p.span(), "`period` must be longer than zero");
    }
    match u64::try_from(pd?.as_nanos()) {
        Ok(ns) if c? > 0 && ns > 0 => Some((c?, ns)),
        Ok(_) => None,
        Err(_) => {
            errors.push(p.span(), "`period` does not fit in 64-bit nanoseconds");
            None
        }
    }
}

/// `algorithm = "name"`, one of the core's names (the token bucket when absent).
fn algorithm(named: &Named<'_>, errors: &mut Errors) -> Option<Algorithm> {
    let Some((_, e)) = named.get("algorithm") else {
        return Some(Algorithm::TokenBucket);
    };
    let (name, span) = string("algorithm", e, errors)?;
    match name.parse::<Algorithm>() {
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
    }
}

/// `on_limit` (`"error"` by default) and `timeout` (with `"wait"` only).
fn on_limit(named: &Named<'_>, errors: &mut Errors) -> (OnLimit, Option<u64>) {
    let on_limit = match named
        .get("on_limit")
        .and_then(|(_, e)| string("on_limit", e, errors))
    {
        None => OnLimit::Error,
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
    };
    let timeout_ns = named.get("timeout").and_then(|(span, e)| {
        if on_limit != OnLimit::Wait {
            errors.push(span, "`timeout` only applies to `on_limit = \"wait\"`");
        }
        duration("timeout", e, errors).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    (on_limit, timeout_ns)
}

/// The function must be able to carry the outcome: its return type, and `async` + `"wait"`
/// only with the `tokio` feature.
fn check_function(f: &ItemFn, on_limit: OnLimit, timeout_ns: Option<u64>, errors: &mut Errors) {
    if let Some(c) = &f.sig.constness {
        errors.push(c.span, "#[rate_limit] cannot be used on a `const fn`");
    }
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
}

/// Check the attribute and the function it is on; every error at once.
pub(crate) fn validate(args: &Args, f: &ItemFn) -> syn::Result<Config> {
    let mut errors = Errors::default();
    let named = Named::collect(args, &mut errors);
    let krate = krate(&named, &mut errors);
    let source = source(args, &named, &mut errors);
    let (on_limit, timeout_ns) = on_limit(&named, &mut errors);
    check_function(f, on_limit, timeout_ns, &mut errors);
    match (errors.0, source) {
        (Some(e), _) => Err(e),
        (None, Some(source)) => Ok(Config {
            krate,
            source,
            key: named.get("key").map(|(_, e)| e.clone()),
            on_limit,
            timeout_ns,
        }),
        // Every path that yields no source reports why.
        (None, None) => Err(syn::Error::new(args.span, "#[rate_limit]: no limit given")),
    }
}
