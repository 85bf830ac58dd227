//! docker-compose.yml and the provisioning files hold together: pinned images, the collector's
//! exporter scraped by Prometheus, the collector's memory bounded, health probed where an image
//! can probe it, Grafana loading `dashboards/` with data sources that exist and link to each
//! other through what the crate emits.

use std::collections::BTreeMap;

use serde_norway::Value as Yaml;

use crate::emitted::emitted;
use crate::files::{repo, yaml};
use crate::promql::Catalog;
use crate::queries::placeholder;
use crate::traceql::SpanCatalog;

/// The data source uids the provisioning creates; the cross-links between them use them.
const PROMETHEUS_UID: &str = "prometheus";
const TEMPO_UID: &str = "tempo";

pub(crate) fn compose() -> Yaml {
    yaml("docker-compose.yml")
}

pub(crate) fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

pub(crate) fn strings(value: Option<&Yaml>) -> Vec<String> {
    value
        .and_then(Yaml::as_sequence)
        .map(|seq| {
            seq.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `(host, container)` pairs of a service's bind mounts and volumes (short syntax).
fn volumes(service: &Yaml) -> Vec<(String, String)> {
    strings(service.get("volumes"))
        .into_iter()
        .map(|v| {
            let mut parts = v.splitn(3, ':');
            let host = parts.next().unwrap_or_default().to_owned();
            let container = parts.next().unwrap_or_default().to_owned();
            (host, container)
        })
        .collect()
}

/// The service's environment, from either the map or the list form.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match service.get("environment") {
        Some(Yaml::Mapping(map)) => {
            for (k, v) in map {
                let value = match v {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => String::new(),
                };
                env.insert(k.as_str().unwrap_or_default().to_owned(), value);
            }
        }
        Some(Yaml::Sequence(seq)) => {
            for item in seq.iter().filter_map(Yaml::as_str) {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        _ => {}
    }
    env
}

/// The container path a host file or directory of the repository is mounted at.
pub(crate) fn mounted_at(service: &Yaml, host: &str) -> Option<String> {
    let host = host.trim_start_matches("./").trim_end_matches('/');
    volumes(service)
        .into_iter()
        .find(|(h, _)| h.trim_start_matches("./").trim_end_matches('/') == host)
        .map(|(_, c)| c)
}

fn port_of(endpoint: &str) -> u16 {
    let port = endpoint
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    port.parse()
        .unwrap_or_else(|_| panic!("no port in `{endpoint}`"))
}

/// `true` for tags like `0.160.0`, `v3.14.0`, `1.95.0-bookworm`: a version with at least a minor
/// number, not `latest`.
fn is_version_tag(tag: &str) -> bool {
    let version = tag.strip_prefix('v').unwrap_or(tag);
    let mut parts = version.split(['.', '-']);
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    !major.is_empty()
        && major.chars().all(|c| c.is_ascii_digit())
        && !minor.is_empty()
        && minor.chars().all(|c| c.is_ascii_digit())
}

fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment.split_once(':').map(|(_, tag)| tag)
}

#[test]
fn every_image_is_pinned_to_a_version_tag() {
    let compose = compose();
    let services = compose
        .get("services")
        .and_then(Yaml::as_mapping)
        .expect("services");
    assert!(!services.is_empty());
    for (name, service) in services {
        let name = name.as_str().unwrap_or("?");
        let image = service
            .get("image")
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("service `{name}` has no image"));
        assert!(
            !image.contains('$'),
            "service `{name}`: image `{image}` depends on a variable"
        );
        let tag = image_tag(image)
            .unwrap_or_else(|| panic!("service `{name}`: image `{image}` has no tag"));
        assert!(
            tag != "latest" && is_version_tag(tag),
            "service `{name}`: image `{image}` is not pinned to a version tag"
        );
    }
}

/// The collector refuses data before it runs out of memory, in every pipeline, and first: a
/// processor before it would hold the data it cannot refuse.
#[test]
fn the_collector_limits_its_memory_first_in_every_pipeline() {
    let collector = yaml("observability/otel-collector.yaml");
    let limiter = collector
        .get("processors")
        .and_then(|p| p.get("memory_limiter"))
        .expect("a memory_limiter processor");
    assert!(
        limiter.get("limit_mib").is_some() || limiter.get("limit_percentage").is_some(),
        "memory_limiter needs a limit"
    );
    assert!(limiter.get("check_interval").is_some());
    let pipelines = collector
        .get("service")
        .and_then(|s| s.get("pipelines"))
        .and_then(Yaml::as_mapping)
        .expect("pipelines");
    assert!(!pipelines.is_empty());
    for (name, pipeline) in pipelines {
        assert_eq!(
            strings(pipeline.get("processors"))
                .first()
                .map(String::as_str),
            Some("memory_limiter"),
            "pipeline {name:?}: memory_limiter first"
        );
    }
}

/// Tempo, Prometheus and Grafana serve a readiness endpoint and have a wget to probe it with;
/// Grafana waits for both of its data sources. The collector's image has neither shell nor HTTP
/// client: nothing can probe its health_check extension from inside.
#[test]
fn services_with_a_health_endpoint_are_probed() {
    let compose = compose();
    for (name, port, path) in [
        ("tempo", 3200, "/ready"),
        ("prometheus", 9090, "/-/ready"),
        ("grafana", 3000, "/api/health"),
    ] {
        let test = strings(
            service(&compose, name)
                .get("healthcheck")
                .and_then(|h| h.get("test")),
        );
        assert_eq!(
            test.first().map(String::as_str),
            Some("CMD"),
            "{name}: exec form"
        );
        assert!(
            test.iter()
                .any(|a| a == &format!("http://localhost:{port}{path}")),
            "{name}: probes {path} on {port}: {test:?}"
        );
    }
    let grafana = service(&compose, "grafana");
    for dependency in ["prometheus", "tempo"] {
        assert_eq!(
            grafana
                .get("depends_on")
                .and_then(|d| d.get(dependency))
                .and_then(|d| d.get("condition"))
                .and_then(Yaml::as_str),
            Some("service_healthy"),
            "grafana waits for {dependency} to be ready"
        );
    }
    assert!(
        service(&compose, "otel-collector")
            .get("healthcheck")
            .is_none(),
        "the collector's image cannot run a healthcheck"
    );
}

#[test]
fn the_collectors_prometheus_exporter_is_scraped() {
    let compose = compose();
    let collector = yaml("observability/otel-collector.yaml");
    let exporter = collector
        .get("exporters")
        .and_then(|e| e.get("prometheus"))
        .expect("the collector has a `prometheus` exporter");
    // The series names of the dashboards and alerts, and of tests/dashboards' rendering, hold
    // only with this naming.
    assert_eq!(
        exporter.get("translation_strategy").and_then(Yaml::as_str),
        Some("UnderscoreEscapingWithSuffixes"),
        "the exporter's naming must stay explicit: dots -> underscores, unit and _total suffixes"
    );
    assert!(
        exporter
            .get("resource_to_telemetry_conversion")
            .and_then(|r| r.get("enabled"))
            .and_then(Yaml::as_bool)
            != Some(true),
        "resource attributes as labels would add labels the dashboards do not expect"
    );
    let port = port_of(
        exporter
            .get("endpoint")
            .and_then(Yaml::as_str)
            .expect("exporter endpoint"),
    );
    let pipeline = collector
        .get("service")
        .and_then(|s| s.get("pipelines"))
        .and_then(|p| p.get("metrics"))
        .expect("a metrics pipeline");
    assert!(
        strings(pipeline.get("exporters")).contains(&"prometheus".to_owned()),
        "the metrics pipeline must export to `prometheus`"
    );

    // The compose service that runs this configuration, and the Prometheus that scrapes it.
    let services = compose
        .get("services")
        .and_then(Yaml::as_mapping)
        .expect("services");
    let collector_service = services
        .iter()
        .find(|(_, s)| mounted_at(s, "observability/otel-collector.yaml").is_some())
        .and_then(|(n, _)| n.as_str())
        .expect("a service mounts observability/otel-collector.yaml");
    let prometheus_service = service(&compose, "prometheus");
    let config_path = mounted_at(prometheus_service, "observability/prometheus.yml")
        .expect("prometheus mounts observability/prometheus.yml");
    assert!(
        strings(prometheus_service.get("command"))
            .contains(&format!("--config.file={config_path}")),
        "prometheus must be started with --config.file={config_path}"
    );

    let prometheus = yaml("observability/prometheus.yml");
    let target = format!("{collector_service}:{port}");
    let jobs = prometheus
        .get("scrape_configs")
        .and_then(Yaml::as_sequence)
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|job| {
            job.get("static_configs")
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
                .any(|sc| strings(sc.get("targets")).contains(&target))
        })
        .unwrap_or_else(|| panic!("no scrape job targets {target}"));
    assert_eq!(
        job.get("honor_labels").and_then(Yaml::as_bool),
        Some(true),
        "the scrape job must keep the exporter's job/instance labels (honor_labels: true)"
    );
}

#[test]
fn grafana_provisioning_loads_the_dashboards_folder() {
    let compose = compose();
    let grafana = service(&compose, "grafana");
    let provisioning = yaml("observability/grafana/provisioning/dashboards/dashboards.yaml");
    let providers = provisioning
        .get("providers")
        .and_then(Yaml::as_sequence)
        .expect("providers");
    assert!(!providers.is_empty());
    let dashboards_mount = mounted_at(grafana, "dashboards").expect("grafana mounts ./dashboards");
    for provider in providers {
        assert_eq!(provider.get("type").and_then(Yaml::as_str), Some("file"));
        let path = provider
            .get("options")
            .and_then(|o| o.get("path"))
            .and_then(Yaml::as_str)
            .expect("provider options.path");
        assert_eq!(
            path.trim_end_matches('/'),
            dashboards_mount.trim_end_matches('/'),
            "the dashboard provider must read the folder where ./dashboards is mounted"
        );
    }
    for (dir, target) in [
        (
            "observability/grafana/provisioning/dashboards",
            "/etc/grafana/provisioning/dashboards",
        ),
        (
            "observability/grafana/provisioning/datasources",
            "/etc/grafana/provisioning/datasources",
        ),
    ] {
        assert_eq!(
            mounted_at(grafana, dir).as_deref(),
            Some(target),
            "grafana must mount {dir} at {target}"
        );
    }
    let env = environment(grafana);
    assert_eq!(
        env.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str),
        Some("true")
    );
    assert!(
        strings(grafana.get("ports"))
            .iter()
            .any(|p| p.ends_with(":3000")),
        "grafana must publish port 3000"
    );
    if let Some(home) = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        let file = home
            .strip_prefix(&format!("{}/", dashboards_mount.trim_end_matches('/')))
            .expect("the home dashboard is one of ours");
        assert!(
            repo().join("dashboards").join(file).is_file(),
            "home dashboard {file} missing"
        );
    }
}

#[test]
fn data_sources_exist_and_link_traces_and_metrics() {
    let provisioning = yaml("observability/grafana/provisioning/datasources/datasources.yaml");
    let sources = provisioning
        .get("datasources")
        .and_then(Yaml::as_sequence)
        .expect("datasources");
    let by_uid: BTreeMap<&str, &Yaml> = sources
        .iter()
        .map(|s| (s.get("uid").and_then(Yaml::as_str).expect("uid"), s))
        .collect();
    let prometheus = by_uid
        .get(PROMETHEUS_UID)
        .expect("a `prometheus` data source");
    let tempo = by_uid.get(TEMPO_UID).expect("a `tempo` data source");
    assert_eq!(
        prometheus.get("type").and_then(Yaml::as_str),
        Some("prometheus")
    );
    assert_eq!(tempo.get("type").and_then(Yaml::as_str), Some("tempo"));
    // The dashboards pick theirs with variables (tests/dashboards/dashboards.rs); the default
    // Prometheus is what their `prometheus` variable starts on.
    assert_eq!(
        prometheus.get("isDefault").and_then(Yaml::as_bool),
        Some(true)
    );

    // Exemplars on Prometheus series open the trace in Tempo.
    let exemplar_targets: Vec<&str> = prometheus
        .get("jsonData")
        .and_then(|j| j.get("exemplarTraceIdDestinations"))
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("datasourceUid").and_then(Yaml::as_str))
        .collect();
    assert_eq!(exemplar_targets, [TEMPO_UID]);

    // Tempo -> Prometheus: the tag mapping and the queries name only what the crate emits.
    let emitted = emitted();
    let metrics = Catalog::of(emitted);
    let spans = SpanCatalog::of(emitted);
    let traces_to_metrics = tempo
        .get("jsonData")
        .and_then(|j| j.get("tracesToMetrics"))
        .expect("tempo jsonData.tracesToMetrics");
    assert_eq!(
        traces_to_metrics
            .get("datasourceUid")
            .and_then(Yaml::as_str),
        Some(PROMETHEUS_UID)
    );
    let mut tags = Vec::new();
    for tag in traces_to_metrics
        .get("tags")
        .and_then(Yaml::as_sequence)
        .expect("tracesToMetrics.tags")
    {
        let key = tag.get("key").and_then(Yaml::as_str).expect("tag key");
        assert_eq!(
            spans.check(&format!("{{ .{key} != nil }}")),
            Ok(()),
            "tracesToMetrics tag `{key}` is not an attribute the crate records"
        );
        // Grafana matches the label exactly: service.name is not `job` (service.namespace).
        assert_ne!(
            key, "service.name",
            "`job` is not service.name when there is a namespace"
        );
        let label = tag.get("value").and_then(Yaml::as_str).unwrap_or(key);
        // Grafana fills `$__tags` with `label="value"` pairs from the mapped tags.
        tags.push(format!("{label}=\"{}\"", placeholder(key)));
    }
    let queries = traces_to_metrics
        .get("queries")
        .and_then(Yaml::as_sequence)
        .expect("tracesToMetrics.queries");
    assert!(!queries.is_empty());
    for query in queries {
        // `$$` is the provisioning file's escape for `$`.
        let text = query.get("query").and_then(Yaml::as_str).expect("query");
        let expanded = text.replace("$$__tags", &tags.join(", "));
        if let Err(errors) = metrics.check(&expanded) {
            panic!(
                "tracesToMetrics query `{text}`:\n  - {}",
                errors.join("\n  - ")
            );
        }
    }
}

#[test]
fn the_traffic_service_runs_the_demo_against_the_collector() {
    let compose = compose();
    let traffic = service(&compose, "traffic");
    // PID 1 is an init process: stopping the stack stops cargo and the demo at once.
    assert_eq!(traffic.get("init").and_then(Yaml::as_bool), Some(true));
    let command = strings(traffic.get("command"));
    for arg in ["run", "--release", "--example", "demo", "--loop"] {
        assert!(
            command.iter().any(|a| a == arg),
            "traffic command lacks `{arg}`: {command:?}"
        );
    }
    let env = environment(traffic);
    let collector = yaml("observability/otel-collector.yaml");
    let http = collector
        .get("receivers")
        .and_then(|r| r.get("otlp"))
        .and_then(|o| o.get("protocols"))
        .and_then(|p| p.get("http"))
        .and_then(|h| h.get("endpoint"))
        .and_then(Yaml::as_str)
        .expect("collector OTLP HTTP receiver endpoint");
    assert_eq!(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str),
        Some(format!("http://otel-collector:{}", port_of(http)).as_str())
    );
    assert_eq!(
        env.get("OTEL_EXPORTER_OTLP_PROTOCOL").map(String::as_str),
        Some("http/protobuf")
    );
    assert_eq!(
        env.get("OTEL_SERVICE_NAME").map(String::as_str),
        Some("llm-guard-demo")
    );
    assert!(
        volumes(traffic)
            .iter()
            .any(|(h, c)| (h == "." || h == "./") && c == "/src"),
        "traffic must mount the repository"
    );
}

#[test]
fn image_tags_are_read_correctly() {
    assert_eq!(image_tag("grafana/grafana:13.2.0"), Some("13.2.0"));
    assert_eq!(image_tag("localhost:5000/tempo"), None);
    assert_eq!(
        image_tag("rust:1.95.0-bookworm@sha256:abc"),
        Some("1.95.0-bookworm")
    );
    assert!(is_version_tag("v3.14.0") && is_version_tag("1.95.0-bookworm"));
    assert!(!is_version_tag("latest") && !is_version_tag("bookworm") && !is_version_tag("3"));
}
