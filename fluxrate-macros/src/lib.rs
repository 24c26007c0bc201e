//! Procedural macros of `fluxrate`: the `#[rate_limit]` attribute.
//!
//! Use it through the `fluxrate` crate (`fluxrate::rate_limit`), whose documentation describes
//! it in full. This crate only forwards to its three stages: `ast` parses the attribute,
//! `valid` checks it (every error spanned on the offending token), `expand` writes the
//! wrapped function, which calls `fluxrate` only through its hidden module
//! `__private_<version>` (at `::fluxrate`, or the path given by `crate = path`).

mod ast;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Rate-limit a function. See `fluxrate::rate_limit` for the documentation.
#[proc_macro_attribute]
pub fn rate_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::rate_limit(args.into(), item.into()).into()
}
