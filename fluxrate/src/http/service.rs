//! [`RateLimit`], the tower service: decides each request, answers refusals, holds shaped
//! requests for their place in the queue, adds the fields to the inner service's responses.

use super::decide::{Refusal, Taken, Verdict};
use super::decision::Decision;
use super::headers::{ceil_secs, header_value, problem_json, Fields, Item};
use super::key::{RequestInfo, RequestKey};
use super::layer::Config;
use crate::all_or_nothing::poll_once;
use ::http::header::{CONTENT_TYPE, RETRY_AFTER};
use ::http::{HeaderValue, Request, Response};
use core::future::Future;
use core::pin::{pin, Pin};
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

/// A boxed response future.
type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`RateLimit`].
    ///
    /// For an admitted request that waits for nothing (the usual case), the inner service's
    /// future `F` itself, unboxed, with the fields and the [`Decision`] to add to its
    /// response; otherwise (a refusal, a shaped request waiting for its place, a decision in
    /// Redis) a boxed future. `F` defaults to that boxed future, so that
    /// `ResponseFuture<R, E>` names a type too.
    pub struct ResponseFuture<R, E, F = BoxFuture<R, E>> {
        #[pin]
        state: State<R, E, F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<R, E, F> {
        Inner {
            #[pin]
            fut: F,
            finish: Option<Finish>,
        },
        Boxed {
            fut: BoxFuture<R, E>,
        },
    }
}

impl<R, E, F> ResponseFuture<R, E, F> {
    /// The inner service's future; `finish` is added to its response.
    fn inner(fut: F, finish: Option<Finish>) -> Self {
        Self {
            state: State::Inner { fut, finish },
        }
    }

    fn boxed(fut: impl Future<Output = Result<R, E>> + Send + 'static) -> Self {
        Self {
            state: State::Boxed { fut: Box::pin(fut) },
        }
    }
}

impl<ResBody, E, F> Future for ResponseFuture<Response<ResBody>, E, F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { fut, finish } => {
                let mut resp = core::task::ready!(fut.poll(cx))?;
                if let Some(finish) = finish.take() {
                    finish.apply(&mut resp);
                }
                Poll::Ready(Ok(resp))
            }
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

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
    /// The fields for a request decided as `v` says.
    fn fields(&self, v: &Verdict) -> Fields {
        // The items are the limits decided, in order from the first (the check stops at the
        // first refusal): the last one's value lists them all.
        let policy = v.items.last().map(|&(i, _)| &self.policy_fields[i]);
        let items = v.items.iter().map(|&(i, current)| Item {
            sf_name: &self.limits[i].sf_name,
            capacity: &self.limits[i].capacity_value,
            current,
        });
        Fields::new(policy, items, self.legacy_headers)
    }

    /// The response for a refused request, or `None` to call the inner service.
    fn refusal<ResBody: From<String>>(&self, v: &mut Verdict) -> Option<Response<ResBody>> {
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
        self.fields(v).write(h);
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

    /// The [`Decision`] for `v` (its list of limits moves into it).
    fn decision(&self, v: &mut Verdict) -> Decision {
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
            limits: core::mem::take(&mut v.limits),
        }
    }

    /// What to add to the inner service's response: the fields and the [`Decision`].
    fn finish(&self, mut v: Verdict) -> Finish {
        Finish {
            fields: self.fields(&v),
            decision: self.decision(&mut v),
        }
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
        let finish = self.finish(v);
        let mut resp = inner.call(req).await?;
        finish.apply(&mut resp);
        Ok(resp)
    }
}

/// What the layer adds to the inner service's response, computed when the request is decided
/// (so that the response future needs no configuration).
struct Finish {
    fields: Fields,
    decision: Decision,
}

impl Finish {
    fn apply<ResBody>(self, resp: &mut Response<ResBody>) {
        self.fields.write(resp.headers_mut());
        resp.extensions_mut().insert(self.decision);
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
    type Future = ResponseFuture<Response<ResBody>, S::Error, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let info = RequestInfo::of(&req);
        let config = &self.config;
        if config.exempt.as_ref().is_some_and(|f| f(&info)) {
            return ResponseFuture::inner(self.inner.call(req), None);
        }
        let n = config.cost(&info);
        #[cfg(feature = "redis")]
        if config.limits.iter().any(|l| l.is_redis()) {
            let keys = config.keys(&info);
            return self.call_remote(req, keys, n);
        }
        // Every limit is in process: the decision completes on its first poll, on the stack.
        let decided = poll_once(pin!(config.decide(|i| config.key(i, &info), n)));
        let Poll::Ready(v) = decided else {
            unreachable!("an in-process limit decided with an await point");
        };
        self.respond(v, req)
    }
}

impl<S> RateLimit<S> {
    /// The response future for a request decided as `v` says.
    fn respond<B, ResBody>(
        &mut self,
        mut v: Verdict,
        req: Request<B>,
    ) -> ResponseFuture<Response<ResBody>, S::Error, S::Future>
    where
        S: tower_service::Service<Request<B>, Response = Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: 'static,
        B: Send + 'static,
        ResBody: From<String> + Send + 'static,
    {
        let config = &self.config;
        if let Some(resp) = config.refusal(&mut v) {
            return ResponseFuture::boxed(async move { Ok(resp) });
        }
        if !v.delay.is_zero() && !config.dry_run {
            let clone = self.inner.clone();
            let inner = core::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(config.clone().after_delay(v, inner, req));
        }
        let finish = config.finish(v);
        ResponseFuture::inner(self.inner.call(req), Some(finish))
    }

    /// A request for a layer with a Redis limit: decided in a future polled once here; if a
    /// limit decides in Redis, the rest runs in the response future, on the service that was
    /// made ready, leaving a clone in its place (the usual tower pattern).
    #[cfg(feature = "redis")]
    fn call_remote<B, ResBody>(
        &mut self,
        req: Request<B>,
        keys: Vec<RequestKey>,
        n: u64,
    ) -> ResponseFuture<Response<ResBody>, S::Error, S::Future>
    where
        S: tower_service::Service<Request<B>, Response = Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: 'static,
        B: Send + 'static,
        ResBody: From<String> + Send + 'static,
    {
        let config = self.config.clone();
        let mut decided = Box::pin(async move {
            let v = config.decide(|i| keys[i].clone(), n).await;
            (config, v)
        });
        let Poll::Ready((_, v)) = poll_once(decided.as_mut()) else {
            let clone = self.inner.clone();
            let inner = core::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(async move {
                let (config, mut v) = decided.await;
                if let Some(resp) = config.refusal(&mut v) {
                    return Ok(resp);
                }
                config.after_delay(v, inner, req).await
            });
        };
        self.respond(v, req)
    }
}
