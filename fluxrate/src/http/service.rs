//! [`RateLimit`], the tower service: decides each request, answers refusals, holds shaped
//! requests for their place in the queue, adds the fields to the inner service's responses.

use super::decide::{Refusal, Taken, Verdict};
use super::decision::Decision;
use super::headers::{ceil_secs, header_value, problem_json, write_headers, Item};
use super::key::{RequestInfo, RequestKey};
use super::layer::Config;
use crate::all_or_nothing::poll_once;
use ::http::header::{CONTENT_TYPE, RETRY_AFTER};
use ::http::{HeaderValue, Request, Response};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::fmt;
use std::sync::Arc;

/// The middleware service; built by [`RateLimitLayer`](super::RateLimitLayer).
///
/// Unlike `tower::limit::RateLimit` (same name, other semantics), it never applies
/// backpressure: `poll_ready` is the inner service's, and a request over a limit is answered
/// at once (429, or the layer's other statuses) with the draft-11 fields, per key.
#[derive(Clone)]
pub struct RateLimit<S> {
    pub(super) inner: S,
    pub(super) config: Arc<Config>,
}

impl<S> RateLimit<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the limits.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The response future of [`RateLimit`].
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// What a request took, given back when this is dropped still holding it: a shaped request's
/// future dropped while it waits, or a decision dropped half-way.
pub(super) struct GiveBack {
    config: Arc<Config>,
    taken: Vec<(usize, RequestKey, Taken)>,
}

impl GiveBack {
    pub(super) fn new(config: Arc<Config>, taken: Vec<(usize, RequestKey, Taken)>) -> Self {
        Self { config, taken }
    }
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        // In-process limits give back at once; Redis limits in a task on the current runtime
        // (none: they stay counted, never over-admitting).
        let mut remote = Vec::new();
        for (i, key, t) in core::mem::take(&mut self.taken) {
            if self.config.give_back_local(i, &key, &t).is_none() {
                remote.push((i, key, t));
            }
        }
        #[cfg(feature = "redis")]
        if let (false, Ok(rt)) = (remote.is_empty(), tokio::runtime::Handle::try_current()) {
            let config = self.config.clone();
            rt.spawn(async move {
                for (i, key, t) in &remote {
                    config.give_back(*i, key, t).await;
                }
            });
        }
    }
}

impl Config {
    fn items(&self, v: &Verdict) -> Vec<Item<'_>> {
        v.items
            .iter()
            .map(|&(i, current)| Item {
                name: &self.limits[i].name,
                policy: self.limits[i].policy,
                capacity: self.limits[i].capacity,
                current,
            })
            .collect()
    }

    fn write(&self, h: &mut ::http::HeaderMap, v: &Verdict) {
        write_headers(h, &self.items(v), self.unit.as_deref(), self.legacy_headers);
    }

    /// The response for a refused request, or `None` to call the inner service.
    fn refusal<ResBody: From<String>>(&self, v: &Verdict) -> Option<Response<ResBody>> {
        let refused = v.refused.as_ref()?;
        if self.dry_run {
            return None;
        }
        let name = &*self.limits[refused.index].name;
        // The refusing limit's effective window: Retry-After never points earlier.
        let window = v
            .items
            .last()
            .and_then(|(_, c)| c.and_then(|c| c.t))
            .unwrap_or_default();
        let (status, retry, body) = match refused.why {
            Refusal::Limited { retry } => {
                let body = self.problem_details.then(|| {
                    let detail = format!("the quota of limit {name:?} is used up");
                    problem_json(
                        "quota-exceeded",
                        "Request cannot be satisfied as assigned quota has been exceeded",
                        self.status.as_u16(),
                        &detail,
                        name,
                    )
                });
                (self.status, Some(retry.max(window)), body)
            }
            #[cfg(feature = "redis")]
            Refusal::Unavailable { retry } => {
                let status = ::http::StatusCode::SERVICE_UNAVAILABLE;
                let body = self.problem_details.then(|| {
                    let detail = format!("limit {name:?} cannot be decided now");
                    problem_json(
                        "temporary-reduced-capacity",
                        "Request cannot be satisfied due to temporarily reduced capacity",
                        status.as_u16(),
                        &detail,
                        name,
                    )
                });
                (status, Some(retry), body)
            }
            Refusal::Never {
                requested,
                capacity,
            } => {
                let detail = format!(
                    "this request costs {requested}, more than limit {name:?} can ever admit \
                     ({capacity}): it can never pass"
                );
                let status = self.never_status;
                let title = status.canonical_reason().unwrap_or("Request refused");
                let body = if self.problem_details {
                    problem_json("about:blank", title, status.as_u16(), &detail, name)
                } else {
                    format!("{detail}\n")
                };
                (status, None, Some(body))
            }
        };
        let problem = body.is_some() && self.problem_details;
        let mut resp = Response::new(ResBody::from(body.unwrap_or_else(|| self.body.clone())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        self.write(h, v);
        if let Some(retry) = retry {
            h.insert(
                RETRY_AFTER,
                header_value(ceil_secs(retry).max(1).to_string()),
            );
        }
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if problem {
                "application/problem+json"
            } else {
                "text/plain; charset=utf-8"
            }),
        );
        resp.extensions_mut().insert(self.decision(v));
        Some(resp)
    }

    fn decision(&self, v: &Verdict) -> Decision {
        Decision {
            admitted: v.refused.is_none(),
            refused_by: v
                .refused
                .as_ref()
                .map(|r| self.limits[r.index].name.clone()),
            never: matches!(
                v.refused,
                Some(super::decide::Refused {
                    why: Refusal::Never { .. },
                    ..
                })
            ),
            dry_run: self.dry_run,
            delay: v.delay,
            limits: v.limits.clone(),
        }
    }

    /// Add the headers and the [`Decision`] to the inner service's response.
    fn finish<ResBody>(&self, v: &Verdict, resp: &mut Response<ResBody>) {
        self.write(resp.headers_mut(), v);
        resp.extensions_mut().insert(self.decision(v));
    }

    /// Wait for a shaped request's place in the queue (giving it back if dropped meanwhile),
    /// then call the inner service.
    async fn after_delay<S, B, ResBody>(
        self: Arc<Self>,
        mut v: Verdict,
        mut inner: S,
        req: Request<B>,
    ) -> Result<Response<ResBody>, S::Error>
    where
        S: tower_service::Service<Request<B>, Response = Response<ResBody>>,
    {
        if !v.delay.is_zero() && !self.dry_run {
            let mut guard = GiveBack::new(self.clone(), core::mem::take(&mut v.taken));
            tokio::time::sleep(v.delay).await;
            guard.taken.clear();
            let delay = v.delay;
            v.aged(&self, delay);
        }
        let mut resp = inner.call(req).await?;
        self.finish(&v, &mut resp);
        Ok(resp)
    }
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for RateLimit<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let info = RequestInfo::of(&req);
        let config = self.config.clone();
        if config.exempt.as_ref().is_some_and(|f| f(&info)) {
            return Box::pin(self.inner.call(req));
        }
        let (keys, n) = (config.keys(&info), config.cost(&info));
        let mut decided = Box::pin(config.clone().decide(keys, n));
        let Poll::Ready(v) = poll_once(decided.as_mut()) else {
            // A limit decides in Redis: the rest runs in the response future, on the service
            // that was made ready, leaving a clone in its place (the usual tower pattern).
            let clone = self.inner.clone();
            let inner = core::mem::replace(&mut self.inner, clone);
            return Box::pin(async move {
                let v = decided.await;
                if let Some(resp) = config.refusal(&v) {
                    return Ok(resp);
                }
                config.after_delay(v, inner, req).await
            });
        };
        if let Some(resp) = config.refusal(&v) {
            return Box::pin(async move { Ok(resp) });
        }
        if !v.delay.is_zero() && !config.dry_run {
            let clone = self.inner.clone();
            let inner = core::mem::replace(&mut self.inner, clone);
            return Box::pin(config.after_delay(v, inner, req));
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            config.finish(&v, &mut resp);
            Ok(resp)
        })
    }
}
