//! Support for the code `#[rate_limit]` generates. Not a public API: names and signatures may
//! change in any release.

pub use crate::Algorithm;
#[cfg(feature = "tokio")]
pub use crate::{AcquireAsync, AcquireKeyAsync};

use crate::{Quota, RateLimiter};
use core::any::Any;
use core::hash::Hash;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A limit validated at compile time by the macro.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Calls per period.
    pub calls: u64,
    /// The period in nanoseconds.
    pub period_ns: u64,
    /// The burst, if given.
    pub burst: Option<u64>,
    /// The algorithm.
    pub algorithm: Algorithm,
}

impl Spec {
    fn quota(&self) -> Quota {
        let q = Quota::new(self.calls, Duration::from_nanos(self.period_ns));
        match self.burst {
            Some(b) => q.with_burst(b),
            None => q,
        }
    }
}

fn invalid(e: crate::ConfigError) -> ! {
    // The macro built this exact limit while compiling; reaching this is a fluxrate bug.
    panic!("#[rate_limit]: a limit checked at compile time failed to build: {e}")
}

/// The lazily built limiter of a function without a key.
#[derive(Debug)]
pub struct DirectSlot {
    spec: Spec,
    cell: OnceLock<RateLimiter>,
}

impl DirectSlot {
    /// A slot for `spec`; nothing is built until the first call.
    pub const fn new(spec: Spec) -> Self {
        Self {
            spec,
            cell: OnceLock::new(),
        }
    }

    /// The limiter, built exactly once even when first calls race.
    #[inline]
    pub fn get(&'static self) -> &'static RateLimiter {
        self.cell.get_or_init(|| {
            RateLimiter::builder(self.spec.quota())
                .algorithm(self.spec.algorithm)
                .build()
                .unwrap_or_else(|e| invalid(e))
        })
    }
}

type AnyLimiter = &'static (dyn Any + Send + Sync);

/// The lazily built keyed limiter of a function. Its key type is known only from the key
/// expression, so the limiter is stored type-erased: one per key type (a generic function whose
/// key type depends on its parameters gets one limiter per key type).
#[derive(Debug)]
pub struct KeyedSlot {
    spec: Spec,
    first: OnceLock<AnyLimiter>,
    others: Mutex<Vec<AnyLimiter>>,
}

impl KeyedSlot {
    /// A slot for `spec`; nothing is built until the first call.
    pub const fn new(spec: Spec) -> Self {
        Self {
            spec,
            first: OnceLock::new(),
            others: Mutex::new(Vec::new()),
        }
    }

    fn build<K: Hash + Eq + Send + Sync + 'static>(&self) -> AnyLimiter {
        let l: RateLimiter<K> = RateLimiter::builder(self.spec.quota())
            .algorithm(self.spec.algorithm)
            .keyed::<K>()
            .build()
            .unwrap_or_else(|e| invalid(e));
        Box::leak(Box::new(l))
    }

    /// The limiter for keys borrowed as `Q` (owned as `Q::Owned`), built exactly once.
    #[inline]
    pub fn get<Q>(&'static self, _key: &Q) -> &'static RateLimiter<Q::Owned>
    where
        Q: ?Sized + ToOwned,
        Q::Owned: Hash + Eq + Send + Sync + 'static,
    {
        let first = *self.first.get_or_init(|| self.build::<Q::Owned>());
        if let Some(l) = first.downcast_ref::<RateLimiter<Q::Owned>>() {
            return l;
        }
        self.other::<Q::Owned>()
    }

    #[cold]
    fn other<K: Hash + Eq + Send + Sync + 'static>(&'static self) -> &'static RateLimiter<K> {
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = others
            .iter()
            .find_map(|l| l.downcast_ref::<RateLimiter<K>>())
        {
            return l;
        }
        let l = self.build::<K>();
        others.push(l);
        l.downcast_ref::<RateLimiter<K>>()
            .expect("just built with this key type")
    }
}

/// A key expression's value, by reference; see [`ViaRef`] and [`ViaValue`].
#[derive(Debug)]
pub struct KeyRef<'a, T: ?Sized>(pub &'a T);

impl<T: ?Sized> Clone for KeyRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for KeyRef<'_, T> {}

/// A key expression that is already a reference (`name: &str`) is used as is: `&str` looks up
/// `String` keys without allocating. Chosen by method resolution before [`ViaValue`].
pub trait ViaRef<'a> {
    /// The borrowed key type.
    type Target: ?Sized;
    /// The key.
    fn key(self) -> &'a Self::Target;
}

impl<'b, T: ?Sized> ViaRef<'b> for &KeyRef<'_, &'b T> {
    type Target = T;
    #[inline]
    #[allow(clippy::explicit_auto_deref)] // auto-deref would give the outer, shorter lifetime
    fn key(self) -> &'b T {
        // The inner reference, with its own lifetime: a temporary `&str` made by the key
        // expression may end, the string it points to lives on.
        *self.0
    }
}

/// Any other key expression (`user.id`) is borrowed.
pub trait ViaValue<'a> {
    /// The borrowed key type.
    type Target: ?Sized;
    /// The key.
    fn key(self) -> &'a Self::Target;
}

impl<'a, T: ?Sized> ViaValue<'a> for KeyRef<'a, T> {
    type Target = T;
    #[inline]
    fn key(self) -> &'a T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    /// The module's name carries the version the macro crate names it by (both are released
    /// together, at the workspace's version): bumping the version means renaming it.
    #[test]
    fn the_module_is_named_by_the_version() {
        let version = env!("CARGO_PKG_VERSION").replace(['.', '-', '+'], "_");
        assert_eq!(
            module_path!(),
            format!("fluxrate::__private_{version}::tests")
        );
    }
}
