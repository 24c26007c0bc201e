//! Writing the wrapped function: the signature, attributes and body are copied through
//! untouched; a few statements that consult the limiter go in front of the body.

use crate::ast::Args;
use crate::valid::{validate, Config, OnLimit, Source};
use fluxrate_core::Algorithm;
use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

pub(crate) fn rate_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    let f: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new_spanned(
                &item,
                "#[rate_limit] can only be used on a function with a body",
            )
            .to_compile_error();
            return quote!(#err #item);
        }
    };
    let args: Args = match syn::parse2(args) {
        Ok(a) => a,
        Err(e) => {
            let err = e.to_compile_error();
            return quote!(#err #f);
        }
    };
    match validate(&args, &f) {
        Ok(config) => expand(&config, f),
        // Still emit the function, so the rest of the crate type-checks.
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#err #f)
        }
    }
}

/// The name of the facade's module for generated code, versioned as this crate is (the two
/// are released together): a macro paired with another version of `fluxrate` fails to compile
/// at once, naming the module, instead of calling an API that changed.
pub(crate) fn private_module() -> String {
    let version = env!("CARGO_PKG_VERSION").replace(['.', '-', '+'], "_");
    format!("__private_{version}")
}

fn algorithm_path(private: &TokenStream, a: Algorithm) -> TokenStream {
    match a {
        Algorithm::TokenBucket => quote!(#private::Algorithm::TokenBucket),
        Algorithm::LeakyBucket => quote!(#private::Algorithm::LeakyBucket),
        Algorithm::FixedWindow => quote!(#private::Algorithm::FixedWindow),
        Algorithm::SlidingWindowCounter => quote!(#private::Algorithm::SlidingWindowCounter),
        Algorithm::SlidingLog => quote!(#private::Algorithm::SlidingLog),
    }
}

fn expand(c: &Config, f: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = f;
    let is_async = sig.asyncness.is_some();
    let keyed = c.key.is_some();
    let krate = &c.krate;
    let module = syn::Ident::new(&private_module(), proc_macro2::Span::call_site());
    let private = quote!(#krate::#module);

    // The limiter: a lazily built static, or the user's.
    let limiter = match &c.source {
        Source::Limiter(expr) => quote!(let __fluxrate_limiter = &(#expr);),
        Source::Quota {
            calls,
            period_ns,
            burst,
            algorithm,
        } => {
            let alg = algorithm_path(&private, *algorithm);
            let burst = match burst {
                Some(b) => quote!(::core::option::Option::Some(#b)),
                None => quote!(::core::option::Option::None),
            };
            let spec = quote!(#private::Spec {
                calls: #calls,
                period_ns: #period_ns,
                burst: #burst,
                algorithm: #alg,
            });
            if keyed {
                quote! {
                    static __FLUXRATE_LIMITER: #private::KeyedSlot =
                        #private::KeyedSlot::new(#spec);
                    let __fluxrate_limiter = __FLUXRATE_LIMITER.get(__fluxrate_key);
                }
            } else {
                quote! {
                    static __FLUXRATE_LIMITER: #private::DirectSlot =
                        #private::DirectSlot::new(#spec);
                    let __fluxrate_limiter = __FLUXRATE_LIMITER.get();
                }
            }
        }
    };
    let key = c.key.as_ref().map(|k| {
        quote! {
            let __fluxrate_key = {
                #[allow(unused_imports)]
                use #private::{ViaRef as _, ViaValue as _};
                (&#private::KeyRef(&(#k))).key()
            };
        }
    });
    let timeout = c
        .timeout_ns
        .map(|t| quote!(::core::time::Duration::from_nanos(#t)));

    let check = match (c.on_limit, keyed) {
        (OnLimit::Error, false) => quote! {
            if let ::core::result::Result::Err(e) = __fluxrate_limiter.check() {
                return ::core::result::Result::Err(::core::convert::From::from(e));
            }
        },
        (OnLimit::Error, true) => quote! {
            if let ::core::result::Result::Err(e) = __fluxrate_limiter.check_key(__fluxrate_key) {
                return ::core::result::Result::Err(::core::convert::From::from(e));
            }
        },
        (OnLimit::None, false) => quote! {
            if !__fluxrate_limiter.allow() {
                return ::core::option::Option::None;
            }
        },
        (OnLimit::None, true) => quote! {
            if !__fluxrate_limiter.allow_key(__fluxrate_key) {
                return ::core::option::Option::None;
            }
        },
        (OnLimit::Wait, keyed) => {
            let call = match (is_async, keyed, &timeout) {
                (false, false, Some(t)) => quote!(__fluxrate_limiter.blocking_acquire(#t)),
                (false, true, Some(t)) => {
                    quote!(__fluxrate_limiter.blocking_acquire_key(__fluxrate_key, #t))
                }
                (false, false, None) => quote!(__fluxrate_limiter.blocking_wait()),
                (false, true, None) => quote!(__fluxrate_limiter.blocking_wait_key(__fluxrate_key)),
                (true, false, Some(t)) => quote!({
                    use #private::{AcquireAsync as _, AcquireKeyAsync as _};
                    __fluxrate_limiter.acquire(#t).await
                }),
                (true, true, Some(t)) => quote!({
                    use #private::{AcquireAsync as _, AcquireKeyAsync as _};
                    __fluxrate_limiter.acquire_key(__fluxrate_key, #t).await
                }),
                (true, false, None) => quote!({
                    use #private::{AcquireAsync as _, AcquireKeyAsync as _};
                    __fluxrate_limiter.wait().await
                }),
                (true, true, None) => quote!({
                    use #private::{AcquireAsync as _, AcquireKeyAsync as _};
                    __fluxrate_limiter.wait_key(__fluxrate_key).await
                }),
            };
            if timeout.is_some() {
                quote! {
                    if let ::core::result::Result::Err(e) = #call {
                        return ::core::result::Result::Err(::core::convert::From::from(e));
                    }
                }
            } else {
                quote! { let _ = #call; }
            }
        }
    };

    let stmts = &block.stmts;
    quote! {
        #(#attrs)*
        #vis #sig {
            {
                #key
                #limiter
                #check
            }
            #(#stmts)*
        }
    }
}
