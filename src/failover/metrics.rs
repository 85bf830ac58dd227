//! The breakers' state and transitions as metrics, read when the metrics are collected.

use std::sync::{Arc, Weak};

use opentelemetry::metrics::Meter;
use opentelemetry::{KeyValue, StringValue};

use super::breaker::{Breaker, BreakerState};
use crate::evidence::attr;
use crate::evidence::metric;

/// What holds the breakers: each upstream's name and breaker.
pub(super) trait Breakers: Send + Sync + 'static {
    fn each(&self, f: &mut dyn FnMut(&Arc<str>, &Breaker));
}

/// Registers the breaker instruments on `meter`. They hold the layer weakly: a dropped layer
/// reports nothing.
pub(super) fn register<B: Breakers>(meter: &Meter, shared: &Arc<B>) {
    let weak: Weak<B> = Arc::downgrade(shared);
    meter
        .u64_observable_gauge(metric::BREAKER_STATE)
        .with_unit("{breaker}")
        .with_description("Each upstream's circuit breaker state: 1 for the current one.")
        .with_callback(move |observer| {
            let Some(shared) = weak.upgrade() else { return };
            shared.each(&mut |name, breaker| {
                let now = breaker.state();
                for state in BreakerState::ALL {
                    observer.observe(
                        u64::from(*state == now),
                        &[
                            KeyValue::new(attr::FAILOVER_UPSTREAM, StringValue::from(name.clone())),
                            KeyValue::new(attr::BREAKER_STATE, state.as_str()),
                        ],
                    );
                }
            });
        })
        .build();
    let weak: Weak<B> = Arc::downgrade(shared);
    meter
        .u64_observable_counter(metric::BREAKER_TRANSITIONS)
        .with_unit("{transition}")
        .with_description("Circuit breaker state changes per upstream.")
        .with_callback(move |observer| {
            let Some(shared) = weak.upgrade() else { return };
            shared.each(&mut |name, breaker| {
                observer.observe(
                    breaker.transitions(),
                    &[KeyValue::new(
                        attr::FAILOVER_UPSTREAM,
                        StringValue::from(name.clone()),
                    )],
                );
            });
        })
        .build();
}
