//! Request-lint and cross-check findings: span events, a check attribute and a metric.

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, KeyValue};

use super::Shared;
use crate::evidence::attr;
use crate::lint::Finding;

/// Which check found them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    /// The request lint, before the request is sent.
    Request,
    /// The request/response cross-checks, on a 2xx that kept its contract.
    Response,
}

impl Phase {
    /// The check attribute, its count attribute, the event name, and the metric's phase label.
    fn names(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Phase::Request => (
                attr::REQUEST_CHECK,
                attr::REQUEST_CHECK_WARNINGS,
                attr::EVENT_REQUEST_CHECK,
                "request",
            ),
            Phase::Response => (
                attr::RESPONSE_CHECK,
                attr::RESPONSE_CHECK_WARNINGS,
                attr::EVENT_RESPONSE_CHECK,
                "response",
            ),
        }
    }
}

/// Records `findings` on the span in `cx` and in the lint metric.
pub(super) fn record(shared: &Shared, cx: &Context, findings: &[Finding], phase: Phase) {
    let (check, warnings, event, phase_name) = phase.names();
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        check,
        if findings.is_empty() { "pass" } else { "warn" },
    ));
    span.set_attribute(KeyValue::new(
        warnings,
        i64::try_from(findings.len()).unwrap_or(i64::MAX),
    ));
    for f in findings {
        let kv = [
            KeyValue::new(attr::LINT_RULE, f.rule.as_str()),
            KeyValue::new(attr::LINT_FAMILY, f.family.as_str()),
        ];
        span.add_event(event, kv.to_vec());
        let mut labels = kv.to_vec();
        labels.push(KeyValue::new(attr::LINT_PHASE, phase_name));
        shared.instruments().lint.add(1, &labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_off_the_reserved_namespaces() {
        for phase in [Phase::Request, Phase::Response] {
            let (_, _, event, _) = phase.names();
            assert!(event.starts_with("llm_guard."), "{event}");
        }
    }
}
