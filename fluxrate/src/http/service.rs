//! [`RateLimit`], the tower service: decides each request, answers refusals, adds the fields
//! to the inner service's responses.

use super::decide::{Decision, Verdict};
use super::headers::{ceil_secs, header_value, write_headers};
use super::key::RequestInfo;
use super::layer::Config;
use ::http::header::RETRY_AFTER;
use ::http::{Request, Response};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::fmt;
use std::sync::Arc;

/// The middleware service; built by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    pub(super) inner: S,
    pub(super) config: Arc<Config>,
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

impl Config {
    /// The response for a refused request, or `None` to call the inner service.
    fn refusal<ResBody: From<String>>(&self, v: &Verdict) -> Option<Response<ResBody>> {
        let refused = v.refused.as_ref()?;
        if self.dry_run {
            return None;
        }
        let mut resp = Response::new(ResBody::from(self.body.clone()));
        *resp.status_mut() = refused.status.unwrap_or(self.status);
        let h = resp.headers_mut();
        write_headers(h, &v.numbers, self.legacy_headers);
        h.insert(
            RETRY_AFTER,
            header_value(ceil_secs(refused.retry).max(1).to_string()),
        );
        resp.extensions_mut().insert(self.decision(v));
        Some(resp)
    }

    fn decision(&self, v: &Verdict) -> Decision {
        Decision {
            admitted: v.refused.is_none(),
            refused_by: v.refused.as_ref().map(|r| r.name.clone()),
            dry_run: self.dry_run,
        }
    }

    /// Add the headers and the [`Decision`] to the inner service's response.
    fn finish<ResBody>(&self, v: &Verdict, resp: &mut Response<ResBody>) {
        write_headers(resp.headers_mut(), &v.numbers, self.legacy_headers);
        resp.extensions_mut().insert(self.decision(v));
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
        #[cfg(feature = "redis")]
        if config.remote {
            // Decide asynchronously, then call the service that was made ready, leaving a
            // clone in its place (the usual tower pattern).
            let clone = self.inner.clone();
            let mut inner = core::mem::replace(&mut self.inner, clone);
            return Box::pin(async move {
                let v = config.decide_async(keys, n).await;
                if let Some(resp) = config.refusal(&v) {
                    return Ok(resp);
                }
                let mut resp = inner.call(req).await?;
                config.finish(&v, &mut resp);
                Ok(resp)
            });
        }
        let v = config.decide(keys, n);
        if let Some(resp) = config.refusal(&v) {
            return Box::pin(async move { Ok(resp) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            config.finish(&v, &mut resp);
            Ok(resp)
        })
    }
}
