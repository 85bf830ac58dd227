//! The failover middleware: the call moves to the next eligible upstream only on `fallback`.

use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::route::{Route, Step};
use super::state::Shared;
use crate::evidence::{ApiSurface, DecisionTable};
use crate::extensions::CallScope;

/// The failover middleware over an ordered list of upstreams. See the
/// [module docs](super).
///
/// Build it with [`Failover::new`] (the defaults) or [`Failover::builder`]; its clones, and
/// the [`FailoverHandle`](super::FailoverHandle) of [`Failover::handle`], share one state:
/// breakers, promotions, affinity.
#[derive(Clone)]
pub struct Failover {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field(
                "upstreams",
                &self
                    .shared
                    .entries
                    .iter()
                    .map(|e| (&e.upstream, e.breaker.state()))
                    .collect::<Vec<_>>(),
            )
            .field("max_hops", &self.shared.settings.max_hops)
            .field("commit", &self.shared.settings.commit)
            .finish()
    }
}

#[async_trait::async_trait]
impl Middleware for Failover {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let surface = extensions
            .get::<ApiSurface>()
            .copied()
            .unwrap_or_else(|| ApiSurface::of_request(&req));
        if surface == ApiSurface::Other {
            return next.run(req, extensions).await;
        }
        // The call's start, deadline, budget and policy: a layer above set them, else this one
        // does, with its own.
        let (scope, owner) = CallScope::get_or_start(extensions, || {
            (
                self.shared.settings.bounds.clone(),
                Arc::new(DecisionTable::default()),
            )
        });
        let result = self.route(req, extensions, next, surface, &scope).await;
        if owner {
            extensions.remove::<CallScope>();
        }
        result
    }
}

impl Failover {
    /// The hop loop: pick an upstream, hop to it, decide; stop, or move on.
    async fn route(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        surface: ApiSurface,
        scope: &CallScope,
    ) -> reqwest_middleware::Result<Response> {
        self.register_metrics();
        let mut route = Route::new(&self.shared, &req, surface, scope)?;
        // Something is eligible and nothing was tried: there is always a first pick.
        let mut pick = route.pick();
        while let Some(picked) = pick.take() {
            let Some(attempt) = route.request_for(&req, &picked)? else {
                // Passed over (its key cannot be had): no request, no hop.
                pick = route.pick();
                continue;
            };
            let index = picked.index;
            match route
                .hop(&req, attempt, picked, extensions, next.clone())
                .await
            {
                Step::Stop(answer) => return route.finish(answer),
                Step::MoveOn(answer, reason, next_pick) => {
                    route.leave(answer, index, reason);
                    pick = Some(next_pick);
                }
            }
        }
        route.nothing_left()
    }

    /// The breaker metrics, registered at the first call (on the global meter unless one was
    /// set).
    fn register_metrics(&self) {
        self.shared.registered.get_or_init(|| {
            let meter = self.shared.settings.meter.clone().unwrap_or_else(|| {
                opentelemetry::global::meter_with_scope(crate::evidence::metric::scope())
            });
            super::metrics::register(&meter, &self.shared);
        });
    }
}
