//! Where a call span hangs in the caller's trace, and how the trace travels with each attempt.

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, global};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The parent for a new call span: the caller's `tracing` span if it carries an OpenTelemetry
/// context, else the current OpenTelemetry context.
pub(super) fn parent_context() -> Context {
    let from_tracing = tracing::Span::current().context();
    if from_tracing.span().span_context().is_valid() {
        from_tracing
    } else {
        Context::current()
    }
}

/// Writes propagation headers, skipping any the propagator makes that are not valid headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Injects `cx` into the request's headers through the global propagator.
pub(super) fn inject(cx: &Context, request: &mut reqwest::Request) {
    global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(request.headers_mut()));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::Injector as _;

    #[test]
    fn invalid_header_names_and_values_are_skipped() {
        let mut headers = http::HeaderMap::new();
        let mut injector = HeaderInjector(&mut headers);
        injector.set(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        injector.set("bad header", "x".into());
        injector.set("baggage", "a=\nb".into());
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("traceparent"));
    }
}
