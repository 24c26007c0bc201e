//! Parsing the attribute's arguments: an optional leading rate string, then `name = value`
//! (`crate = path` too, though `crate` is a keyword).

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Token};

/// One argument of `#[rate_limit(...)]`.
pub(crate) enum Arg {
    /// A bare rate string: `"100/minute"`.
    Rate(LitStr),
    /// `name = value`.
    Named { name: Ident, value: Expr },
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            return Ok(Arg::Rate(input.parse()?));
        }
        if input.peek(Token![crate]) {
            // `crate = path`: `crate` is a keyword, not an identifier.
            let kw: Token![crate] = input.parse()?;
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            let name = Ident::new("crate", kw.span);
            return Ok(Arg::Named { name, value });
        }
        let name: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let value: Expr = input.parse()?;
        Ok(Arg::Named { name, value })
    }
}

/// All arguments, in order.
pub(crate) struct Args {
    pub(crate) args: Vec<Arg>,
    pub(crate) span: Span,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let span = input.span();
        let args = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        Ok(Args {
            args: args.into_iter().collect(),
            span,
        })
    }
}
