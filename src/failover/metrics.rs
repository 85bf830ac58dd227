//! The breakers' state and transitions as metrics, read when the metrics are collected.

use std::sync::{Arc, Weak};

use opentelemetry::metrics::Meter;
use opentelemetry::{KeyValue, StringValue};

use super::breaker::BreakerState;
use super::layer::Shared;
use crate::evidence::attr;
use crate::telemetry::metric;

/// Registers the breaker instruments on `meter`. They hold the layer weakly: a dropped layer
/// reports nothing.
pub(super) fn register(meter: &Meter, shared: &Arc<Shared>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    meter
        .u64_observable_gauge(metric::BREAKER_STATE)
        .with_unit("{breaker}")
        .with_description("Each upstream's circuit breaker state: 1 for the current one.")
        .with_callback(move |observer| {
            let Some(shared) = weak.upgrade() else { return };
            for (name, breaker) in shared.breakers() {
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
            }
        })
        .build();
    let weak: Weak<Shared> = Arc::downgrade(shared);
    meter
        .u64_observable_counter(metric::BREAKER_TRANSITIONS)
        .with_unit("{transition}")
        .with_description("Circuit breaker state changes per upstream.")
        .with_callback(move |observer| {
            let Some(shared) = weak.upgrade() else { return };
            for (name, breaker) in shared.breakers() {
                observer.observe(
                    breaker.transitions(),
                    &[KeyValue::new(
                        attr::FAILOVER_UPSTREAM,
                        StringValue::from(name.clone()),
                    )],
                );
            }
        })
        .build();
}
