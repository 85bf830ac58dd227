//! The dashboards and alerts on a real Prometheus holding the crate's real metrics.
//!
//! The metrics of `emitted.rs` (the crate's traffic, named as the collector's `prometheus`
//! exporter names them) are written as OpenMetrics, backfilled with `promtool tsdb
//! create-blocks-from openmetrics`, and served by `prometheus` on a free loopback port. Then
//! every panel query, every variable query and every alert expression of the repository runs
//! through `/api/v1/query` at the data's time, and the test fails on any that returns no series,
//! with the variables at "All", and again with the service picked the way Grafana picks it (from
//! `job`, whose service has a namespace). Every series selector of each must match series on
//! its own too: `or vector(0)` cannot hide a metric the crate does not emit. An alert is run
//! without its threshold as well (the traffic need not make it fire), and with it, to report
//! which would fire.
//!
//! It needs `promtool` and `prometheus` on the PATH (Debian's `prometheus` package), so it is
//! ignored by default; .ci/validate-stack runs it:
//!
//!     cargo test --all-features --test dashboards -- --ignored --exact \
//!         real_prometheus::every_query_returns_series_on_a_real_prometheus
//!
//! Set LLM_GUARD_KEEP_PROMETHEUS_DATA=1 to keep the OpenMetrics file and the TSDB (the path is
//! printed).

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promql_parser::parser::{self, Expr};
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use crate::dashboards::SERVICE_REGEX;
use crate::emitted::{SERVICE_NAME, emitted};
use crate::files::{alerts, dashboards, yaml};
use crate::promql::{selectors, walk};
use crate::queries::{Lang, dashboard_queries, is_interval, label_values, substitute};

/// The window that stands for `$__rate_interval`, `$__interval` and `$__range`: it covers every
/// snapshot of the data (a scrape interval apart).
const WINDOW: &str = "1m";

#[test]
#[ignore = "needs promtool and prometheus on the PATH: .ci/validate-stack runs it"]
fn every_query_returns_series_on_a_real_prometheus() {
    let started = Instant::now();
    let emitted = emitted();
    let traffic_took = started.elapsed();
    let dir = Scratch::new();
    let openmetrics = dir.path.join("metrics.om");
    fs::write(&openmetrics, emitted.openmetrics()).expect("writing the OpenMetrics file");
    let tsdb = dir.path.join("tsdb");
    run(Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&openmetrics)
        .arg(&tsdb));
    let prometheus = Prometheus::start(&dir.path, &tsdb);
    let at = emitted.last_sample_at();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let api = Api {
        base: prometheus.url.clone(),
        at,
        client: reqwest::Client::new(),
    };
    let mut report = Report::default();
    runtime.block_on(async {
        // Grafana's `service` variable: its regex applied to the real `job` (RE2 and JavaScript
        // read this one alike) must give the service's own name, which the trace links use.
        let regex = SERVICE_REGEX.trim_start_matches('/').trim_end_matches('/');
        let services = api
            .label_of(&format!(
                r#"label_replace(group by (job) (llm_guard_calls_total), "service", "$1", "job", "{regex}")"#
            ), "service")
            .await;
        assert_eq!(
            services,
            BTreeSet::from([SERVICE_NAME.to_owned()]),
            "the service variable's regex on job {:?}",
            emitted.job()
        );

        for (file, dashboard) in dashboards() {
            for query in dashboard_queries(&dashboard) {
                let at = format!("{file} {}", query.at);
                match query.lang {
                    Lang::TraceQl => {}
                    Lang::PromQl => {
                        for service in [None, Some(SERVICE_NAME)] {
                            let text = concrete(&query.text, service);
                            api.expect_series(&mut report, &at, &text, true).await;
                        }
                    }
                    Lang::Variable => {
                        let text = concrete(&query.text, None);
                        let (selector, label) = label_values(&text).expect("label_values");
                        let selector = selector.expect("a selector");
                        let values = api
                            .label_of(&format!("group by ({label}) ({selector})"), label)
                            .await;
                        report.count += 1;
                        if values.is_empty() {
                            report.fail(&at, &text, "the variable lists no value");
                        }
                    }
                }
            }
        }

        for alert in alerts() {
            let at = format!("{} {}", alert.file, alert.name);
            let expr = alert.expr.trim().to_owned();
            for unbounded in without_thresholds(&expr) {
                api.expect_series(&mut report, &at, &unbounded, true).await;
            }
            if !api.series(&expr).await.unwrap_or_default().is_empty() {
                report.firing.push(alert.name.clone());
            }
        }

        // Tempo's links from a span to its metrics: `$__tags` from the span's attributes.
        let provisioning = yaml("observability/grafana/provisioning/datasources/datasources.yaml");
        let tags = r#"api_surface="chat_completions", server_address="127.0.0.1""#;
        for query in provisioning
            .get("datasources")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("jsonData")?.get("tracesToMetrics")?.get("queries")?.as_sequence())
            .flatten()
        {
            let text = query.get("query").and_then(Yaml::as_str).expect("query");
            let text = text.replace("$$__tags", tags);
            api.expect_series(&mut report, "datasources.yaml tracesToMetrics", &text, true)
                .await;
        }
    });
    drop(prometheus);
    eprintln!(
        "real Prometheus: {} queries and selectors evaluated in {:?} (traffic {traffic_took:?}); \
         alerts that would fire on this traffic: {:?}",
        report.count,
        started.elapsed(),
        report.firing
    );
    assert!(
        report.failures.is_empty(),
        "{} queries return no series on the crate's metrics:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
}

#[derive(Default)]
struct Report {
    count: usize,
    failures: Vec<String>,
    firing: Vec<String>,
}

impl Report {
    fn fail(&mut self, at: &str, query: &str, why: &str) {
        self.failures.push(format!("{at}: {why}\n    {query}"));
    }
}

/// A dashboard query with its variables set: all at "All" (`.*`), or `service` picked.
fn concrete(query: &str, service: Option<&str>) -> String {
    substitute(query, |v| {
        Ok(if is_interval(v.name) {
            if v.name.ends_with("_ms") {
                "60000".to_owned()
            } else if v.name.ends_with("_s") {
                "60".to_owned()
            } else {
                WINDOW.to_owned()
            }
        } else if v.name == "service"
            && let Some(service) = service
        {
            service.to_owned()
        } else {
            ".*".to_owned()
        })
    })
    .expect("variables")
}

/// The expression with each comparison against a number dropped (`x > 0.05` becomes `x`): what
/// an alert measures, whether or not the traffic crosses its threshold. Comparisons joined by
/// `and` or `unless` give one expression each.
fn without_thresholds(expr: &str) -> Vec<String> {
    let parsed = parser::parse(expr).unwrap_or_else(|e| panic!("`{expr}`: {e}"));
    let mut out = Vec::new();
    walk(&parsed, &mut |e| {
        if let Expr::Binary(bin) = e
            && bin.op.is_comparison_operator()
            && !bin.return_bool()
        {
            match (bin.lhs.as_ref(), bin.rhs.as_ref()) {
                (Expr::NumberLiteral(_), other) | (other, Expr::NumberLiteral(_)) => {
                    out.push(other.to_string());
                }
                _ => {}
            }
        }
    });
    if out.is_empty() {
        out.push(expr.to_owned());
    }
    out
}

struct Api {
    base: String,
    at: i64,
    client: reqwest::Client,
}

impl Api {
    /// The series of an instant query at the data's time.
    async fn series(&self, query: &str) -> Result<Vec<Json>, String> {
        let url = format!(
            "{}/api/v1/query?query={}&time={}",
            self.base,
            url_encode(query),
            self.at
        );
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Json = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match body["data"]["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            // A scalar or a string is one value.
            _ => Ok(vec![body["data"]["result"].clone()]),
        }
    }

    /// The values a label takes in a query's result.
    async fn label_of(&self, query: &str, label: &str) -> BTreeSet<String> {
        self.series(query)
            .await
            .unwrap_or_else(|e| panic!("`{query}`: {e}"))
            .iter()
            .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
            .collect()
    }

    /// The query returns series, and so does each of its series selectors.
    async fn expect_series(&self, report: &mut Report, at: &str, query: &str, selectors_too: bool) {
        report.count += 1;
        match self.series(query).await {
            Ok(series) if series.is_empty() => report.fail(at, query, "no series"),
            Ok(_) => {}
            Err(e) => report.fail(at, query, &e),
        }
        if !selectors_too {
            return;
        }
        let Ok(parsed) = parser::parse(query) else {
            report.fail(at, query, "does not parse");
            return;
        };
        let mut seen = BTreeSet::new();
        for selector in selectors(&parsed) {
            let text = selector.to_string();
            if seen.insert(text.clone()) {
                report.count += 1;
                match self.series(&text).await {
                    Ok(series) if series.is_empty() => {
                        report.fail(at, &text, "this selector of it matches no series");
                    }
                    Ok(_) => {}
                    Err(e) => report.fail(at, &text, &e),
                }
            }
        }
    }
}

/// Percent-encodes all but the unreserved characters.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e} (is it on the PATH?)"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Prometheus serving the backfilled TSDB on a free loopback port; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, tsdb: &Path) -> Self {
        // No scrape: the data is all backfilled.
        let config = dir.join("prometheus.yml");
        fs::write(&config, "global:\n  evaluation_interval: 15s\n").expect("writing the config");
        let log = fs::File::create(dir.join("prometheus.log")).expect("the log file");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            // Retention counts back from the newest block: the backfilled one is the only one.
            .arg("--storage.tsdb.retention.time=3650d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus: {e} (is it on the PATH?)"));
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready(dir);
        server
    }

    fn wait_ready(&mut self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = format!("{}/-/ready", self.url);
        loop {
            if let Some(status) = self.child.try_wait().expect("prometheus' status") {
                panic!(
                    "prometheus exited ({status}):\n{}",
                    fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(self.url.trim_start_matches("http://")).is_ok()
                && ready_now(&ready)
            {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `GET /-/ready` answers 200, read with a blocking socket (no runtime needed).
fn ready_now(url: &str) -> bool {
    use std::io::{Read, Write};
    let address = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port");
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /-/ready HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory, removed when dropped unless LLM_GUARD_KEEP_PROMETHEUS_DATA is set.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "llm-guard-prometheus-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path).expect("a scratch directory");
        Self { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("LLM_GUARD_KEEP_PROMETHEUS_DATA").is_some() {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[test]
fn thresholds_are_dropped_from_alert_expressions() {
    assert_eq!(
        without_thresholds("sum(rate(x[5m])) > 0.05"),
        ["sum(rate(x[5m]))"]
    );
    assert_eq!(without_thresholds("a > 1 and b < 2"), ["a", "b"]);
    assert_eq!(without_thresholds("a > bool 1"), ["a > bool 1"]);
    assert_eq!(without_thresholds("a / b"), ["a / b"]);
}
