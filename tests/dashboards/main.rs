//! The observability stack against what the crate really emits.
//!
//! The crate's metrics and spans come from real traffic through `Guard` (`emitted`), its
//! metrics named as the OpenTelemetry Collector's `prometheus` exporter names them. Against
//! them: every PromQL and TraceQL query of the dashboards, their variables, the alert rules and
//! the data source provisioning must parse and name only series, labels, label values and
//! attributes the crate emits (`promql`, `traceql`, `dashboards`, `alerts`, `stack`); and, on a
//! real Prometheus loaded with those metrics, every one of them must return series
//! (`real_prometheus`, ignored by default: .ci/validate-stack runs it). No list of the crate's
//! metrics or attributes is kept here by hand.
//!
//! The traffic needs the crate's mock gateway: `cargo test --all-features --test dashboards`.
#![cfg(feature = "mock")]

mod alerts;
mod dashboards;
mod emitted;
mod files;
mod promql;
mod queries;
mod real_prometheus;
mod stack;
mod traceql;
