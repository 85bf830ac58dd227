//! The dashboards: every query names what the crate emits, every panel filters by what the
//! variables offer, no data source uid is written down, and trace links find the service's spans
//! whatever its namespace.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{self, Expr};
use serde_json::Value as Json;

use crate::emitted::emitted;
use crate::files::dashboards;
use crate::promql::{Catalog, selector_name, selectors};
use crate::queries::{
    Lang, dashboard_queries, explore_panes, placeholder, variables, with_placeholders,
};
use crate::traceql::SpanCatalog;

/// The Grafana dashboard schema version of the pinned Grafana (docker-compose.yml).
const GRAFANA_SCHEMA_VERSION: u64 = 42;

/// The data source variables every panel and link goes through, and their plugin types.
const DATA_SOURCE_VARIABLES: &[(&str, &str)] = &[("prometheus", "prometheus"), ("tempo", "tempo")];

/// Label filters every dashboard offers: the label, and the variable that filters it. A
/// Prometheus selector of a series that has the label must filter it with the variable.
const FILTERS: &[(&str, &str)] = &[
    ("server_address", "server_address"),
    ("gen_ai_provider_name", "provider"),
    ("failover_upstream", "upstream"),
    ("api_surface", "api_surface"),
    ("gen_ai_request_model", "model"),
];

/// How a selector scopes the service: `job` is `service.namespace/service.name`, or
/// `service.name` alone; the `service` variable holds service names.
fn service_matcher() -> String {
    format!("(.+/)?{}", placeholder("service"))
}

#[test]
fn every_dashboard_query_names_only_what_the_crate_emits() {
    let emitted = emitted();
    let metrics = Catalog::of(emitted);
    let spans = SpanCatalog::of(emitted);
    let mut failures = Vec::new();
    let mut counts = BTreeMap::new();
    for (file, dashboard) in dashboards() {
        let queries = dashboard_queries(&dashboard);
        for query in &queries {
            let result = match query.lang {
                Lang::PromQl => metrics.check(&query.text).map(drop),
                Lang::TraceQl => spans.check(&query.text),
                Lang::Variable => metrics.check_variable(&query.text),
            };
            if let Err(errors) = result {
                failures.push(format!(
                    "{file} {}\n    query: {}\n    - {}",
                    query.at,
                    query.text,
                    errors.join("\n    - ")
                ));
            }
        }
        let count = |lang| queries.iter().filter(|q| q.lang == lang).count();
        assert!(count(Lang::PromQl) > 0, "{file}: no PromQL");
        assert!(
            count(Lang::TraceQl) > 0,
            "{file}: no TraceQL (panels must link to traces)"
        );
        counts.insert(
            file,
            (
                count(Lang::PromQl),
                count(Lang::TraceQl),
                count(Lang::Variable),
            ),
        );
    }
    assert!(
        failures.is_empty(),
        "{} dashboard queries name what the crate does not emit:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("checked (PromQL, TraceQL, variable) queries per dashboard: {counts:?}");
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for (file, dashboard) in dashboards() {
        let uid = dashboard["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_owned()), "{file}: duplicate uid {uid}");
        assert!(
            dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: no title"
        );
        assert_eq!(
            dashboard["schemaVersion"].as_u64(),
            Some(GRAFANA_SCHEMA_VERSION),
            "{file}: schemaVersion"
        );
        assert!(
            dashboard["id"].is_null(),
            "{file}: an id ties it to one Grafana"
        );
        let mut ids = BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            let id = panel["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{file}: duplicate panel id {id}");
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: panel {id} has no title");
            if panel["type"] != "row" {
                assert!(
                    panel["description"].as_str().is_some_and(|d| d.len() > 20),
                    "{file}: panel `{title}` needs a description saying what it means on call"
                );
                assert!(
                    panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{file}: panel `{title}` has no query"
                );
            }
        }
    }
}

/// Imported into a Grafana whose data sources have other uids, a dashboard must still work: it
/// names none, every panel, target and link goes through the data source variables.
#[test]
fn no_data_source_uid_is_written_down() {
    for (file, dashboard) in dashboards() {
        let variables = variables(&dashboard);
        for (name, kind) in DATA_SOURCE_VARIABLES {
            let variable = variables
                .iter()
                .find(|v| v["name"] == *name)
                .unwrap_or_else(|| panic!("{file}: no `{name}` data source variable"));
            assert_eq!(variable["type"], "datasource", "{file}: `{name}`");
            assert_eq!(
                variable["query"], *kind,
                "{file}: `{name}` lists {kind} data sources"
            );
        }
        let mut refs = Vec::new();
        data_source_refs(&dashboard, "", &mut refs);
        assert!(!refs.is_empty());
        for (at, kind, uid) in refs {
            let expected = match kind.as_str() {
                "grafana" => "-- Grafana --".to_owned(),
                other => format!("${{{other}}}"),
            };
            assert_eq!(uid, expected, "{file} {at}: a {kind} data source by uid");
        }
        let text = dashboard.to_string();
        assert!(
            !text.contains("datasourceUid"),
            "{file}: an internal link names its data source's uid; link to /explore with ${{tempo}}"
        );
        let links = links(&dashboard);
        assert!(!links.is_empty(), "{file}: no link to traces");
        for url in links {
            let panes = explore_panes(&url).unwrap_or_else(|e| panic!("{file}: {e}: {url}"));
            for pane in panes.as_object().into_iter().flat_map(|p| p.values()) {
                assert_eq!(pane["datasource"], "${tempo}", "{file}: {pane}");
                for query in pane["queries"].as_array().into_iter().flatten() {
                    assert_eq!(query["datasource"]["uid"], "${tempo}", "{file}: {query}");
                }
            }
        }
    }
}

fn data_source_refs(value: &Json, path: &str, out: &mut Vec<(String, String, String)>) {
    match value {
        Json::Object(map) => {
            if let Some(Json::Object(ds)) = map.get("datasource") {
                let kind = ds.get("type").and_then(Json::as_str).unwrap_or("?");
                let uid = ds.get("uid").and_then(Json::as_str).unwrap_or("?");
                out.push((path.to_owned(), kind.to_owned(), uid.to_owned()));
            }
            for (key, child) in map {
                if key != "templating" {
                    data_source_refs(child, &format!("{path}.{key}"), out);
                }
            }
        }
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                data_source_refs(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn links(dashboard: &Json) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["fieldConfig"]["defaults"]["links"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|l| l["url"].as_str().map(str::to_owned))
        .collect()
}

/// Every dashboard offers the service, endpoint, provider, upstream and surface filters, and
/// every Prometheus selector applies each one whose label its series carry.
#[test]
fn every_panel_applies_every_filter_its_series_allow() {
    let catalog = Catalog::of(emitted());
    for (file, dashboard) in dashboards() {
        let offered: BTreeSet<&str> = variables(&dashboard)
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for required in [
            "service",
            "server_address",
            "provider",
            "upstream",
            "api_surface",
        ] {
            assert!(
                offered.contains(required),
                "{file}: no `{required}` variable"
            );
        }
        let mut missing = Vec::new();
        for query in dashboard_queries(&dashboard) {
            if query.lang != Lang::PromQl {
                continue;
            }
            let text = with_placeholders(&query.text).expect("placeholders");
            let expr = parser::parse(&text).expect("parses");
            for vs in selectors(&expr) {
                let name = selector_name(vs).expect("a metric name");
                let labels = catalog.labels(&name).expect("an emitted series");
                let matches = |label: &str, value: &str| {
                    vs.matchers
                        .matchers
                        .iter()
                        .any(|m| m.name == label && m.op.to_string() == "=~" && m.value == value)
                };
                if !matches("job", &service_matcher()) {
                    missing.push(format!(
                        "{file} {}: {name} is not scoped by $service",
                        query.at
                    ));
                }
                for (label, variable) in FILTERS {
                    if labels.contains(*label)
                        && offered.contains(variable)
                        && !matches(label, &placeholder(variable))
                    {
                        missing.push(format!(
                            "{file} {}: {name} not filtered by ${variable}",
                            query.at
                        ));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}

/// `job` is `service.namespace/service.name`: the `service` variable takes the service name out
/// of it (its regex; the real-Prometheus test applies it to the real `job`), Prometheus queries
/// match `job` with or without a namespace, and trace queries match `resource.service.name`.
#[test]
fn trace_links_use_the_service_name_not_the_job() {
    for (file, dashboard) in dashboards() {
        let service = variables(&dashboard)
            .iter()
            .find(|v| v["name"] == "service")
            .unwrap_or_else(|| panic!("{file}: no service variable"));
        assert_eq!(
            service["query"]["query"],
            "label_values(llm_guard_calls_total, job)"
        );
        assert_eq!(service["regex"], SERVICE_REGEX, "{file}");
        assert_eq!(service["allValue"], ".*", "{file}");
        assert!(
            !variables(&dashboard).iter().any(|v| v["name"] == "job"),
            "{file}: a `job` variable would be compared with service.name"
        );
        for query in dashboard_queries(&dashboard) {
            if query.lang == Lang::TraceQl {
                assert!(
                    query
                        .text
                        .contains(r#"resource.service.name =~ "${service:pipe}""#),
                    "{file} {}: not scoped to the service's spans: {}",
                    query.at,
                    query.text
                );
            }
        }
    }
}

/// The `service` variable's regex: what follows `namespace/` in `job`, or all of it.
pub(crate) const SERVICE_REGEX: &str = "/^(?:[^/]+/)?(.+)$/";

/// The alerts and the dashboards say the same thing: each dashboard an alert points at exists.
#[test]
fn alerts_point_at_dashboards_that_exist() {
    let uids: BTreeSet<String> = dashboards()
        .iter()
        .filter_map(|(_, d)| d["uid"].as_str().map(str::to_owned))
        .collect();
    for alert in crate::files::alerts() {
        let dashboard = alert
            .rule
            .get("annotations")
            .and_then(|a| a.get("dashboard"))
            .and_then(serde_norway::Value::as_str)
            .unwrap_or_else(|| panic!("{}: no dashboard annotation", alert.name));
        let uid = dashboard.strip_prefix("/d/").expect("/d/<uid>");
        assert!(uids.contains(uid), "{}: no dashboard {uid}", alert.name);
    }
}

#[test]
fn prometheus_panels_expressions_are_not_trivially_empty() {
    // `or vector(0)` keeps a stat at 0 instead of "No data"; it must not be all there is.
    for (file, dashboard) in dashboards() {
        for query in dashboard_queries(&dashboard) {
            if query.lang == Lang::PromQl {
                let text = with_placeholders(&query.text).unwrap();
                let expr = parser::parse(&text).unwrap();
                assert!(
                    !matches!(expr, Expr::NumberLiteral(_)) && !selectors(&expr).is_empty(),
                    "{file} {}: selects no series",
                    query.at
                );
            }
        }
    }
}
