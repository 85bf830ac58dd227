//! The alert rules: the ones the project promises exist, name only what the crate emits, are
//! loaded by the stack's Prometheus, say what they found, and each has a `promtool` unit test
//! where it fires and one where it stays quiet (.ci/validate-stack runs them).

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::Value as Yaml;

use crate::emitted::emitted;
use crate::files::{RULE_TESTS, RULES, alerts, files, name, yaml, yaml_at};
use crate::promql::Catalog;
use crate::stack::{compose, mounted_at, service};

/// What each alert is about: error rate, p95 latency, time to first chunk, WAF wall burst, retry
/// budget exhausted, fallback share, breaker open.
const PROMISED: &[&str] = &[
    "LlmGuardErrorRateHigh",
    "LlmGuardLatencyP95High",
    "LlmGuardTimeToFirstChunkHigh",
    "LlmGuardWafWallBurst",
    "LlmGuardRetryBudgetExhausted",
    "LlmGuardFallbackShareHigh",
    "LlmGuardBreakerOpen",
];

#[test]
fn the_promised_alerts_exist_once_each() {
    let mut names = BTreeMap::new();
    for alert in alerts() {
        assert!(
            names
                .insert(alert.name.clone(), alert.file.clone())
                .is_none(),
            "{} is defined twice",
            alert.name
        );
    }
    for promised in PROMISED {
        assert!(names.contains_key(*promised), "no alert {promised}");
    }
}

#[test]
fn every_alert_expression_names_only_what_the_crate_emits_and_keeps_the_service() {
    let catalog = Catalog::of(emitted());
    let mut failures = Vec::new();
    for alert in alerts() {
        match catalog.check(&alert.expr) {
            Ok(labels) => {
                // Per service: the alert's labels say whose it is.
                if !labels.contains("job") {
                    failures.push(format!("{}: its series lose `job`", alert.name));
                }
            }
            Err(errors) => failures.push(format!("{}: {}", alert.name, errors.join("; "))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_alert_says_how_bad_what_it_found_and_where_to_look() {
    for alert in alerts() {
        let labels = alert.rule.get("labels").expect("labels");
        let severity = labels.get("severity").and_then(Yaml::as_str);
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{}: severity {severity:?}",
            alert.name
        );
        let annotations = alert.rule.get("annotations").expect("annotations");
        for key in ["summary", "description", "dashboard"] {
            assert!(
                annotations
                    .get(key)
                    .and_then(Yaml::as_str)
                    .is_some_and(|s| !s.is_empty()),
                "{}: no {key}",
                alert.name
            );
        }
        assert!(
            annotations["summary"]
                .as_str()
                .unwrap()
                .contains("{{ $labels.job }}"),
            "{}: the summary names the service",
            alert.name
        );
    }
}

/// Every alert has a unit test case where it fires and one where it does not.
#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let rule_files: BTreeSet<String> = files(RULES, "yml").iter().map(|p| name(p)).collect();
    for path in files(RULE_TESTS, "yml") {
        let doc = yaml_at(&path);
        let tested: BTreeSet<String> = doc
            .get("rule_files")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .map(|f| f.trim_start_matches("../").to_owned())
            .collect();
        assert!(
            tested.is_subset(&rule_files) && !tested.is_empty(),
            "{}: rule_files {tested:?} are not the rule files of {RULES}",
            path.display()
        );
        for case in doc
            .get("tests")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .flat_map(|t| {
                t.get("alert_rule_test")
                    .and_then(Yaml::as_sequence)
                    .into_iter()
                    .flatten()
            })
        {
            let name = case
                .get("alertname")
                .and_then(Yaml::as_str)
                .expect("alertname");
            let fires = case
                .get("exp_alerts")
                .and_then(Yaml::as_sequence)
                .is_some_and(|a| !a.is_empty());
            if fires { &mut firing } else { &mut quiet }.insert(name.to_owned());
        }
    }
    for alert in alerts() {
        assert!(
            firing.contains(&alert.name),
            "{}: no test where it fires",
            alert.name
        );
        assert!(
            quiet.contains(&alert.name),
            "{}: no test where it stays quiet",
            alert.name
        );
    }
}

/// The stack's Prometheus loads every rule file: its configuration's `rule_files` reach them
/// where docker-compose.yml mounts the folder.
#[test]
fn the_stacks_prometheus_loads_every_rule_file() {
    let compose = compose();
    let prometheus = service(&compose, "prometheus");
    let config = mounted_at(prometheus, "observability/prometheus.yml").expect("config mounted");
    let config_dir = config
        .rsplit_once('/')
        .map(|(d, _)| d)
        .expect("a directory");
    let rules_dir = mounted_at(prometheus, RULES).expect("prometheus mounts the rules folder");
    let patterns: Vec<String> = yaml("observability/prometheus.yml")
        .get("rule_files")
        .and_then(Yaml::as_sequence)
        .expect("rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .map(|p| {
            if p.starts_with('/') {
                p.to_owned()
            } else {
                format!("{config_dir}/{p}")
            }
        })
        .collect();
    for file in files(RULES, "yml") {
        let in_container = format!("{rules_dir}/{}", name(&file));
        assert!(
            patterns.iter().any(|p| glob_matches(p, &in_container)),
            "{in_container} matches none of rule_files {patterns:?}"
        );
    }
    // The unit tests sit in a subfolder, out of the rules' glob.
    assert!(
        !patterns
            .iter()
            .any(|p| glob_matches(p, &format!("{rules_dir}/tests/x.yml"))),
        "rule_files must not load the unit tests"
    );
}

/// `*` within one path segment, as Prometheus' rule_files globs.
fn glob_matches(pattern: &str, path: &str) -> bool {
    let (p_dir, p_file) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    if p_dir != dir {
        return false;
    }
    match p_file.split_once('*') {
        Some((prefix, suffix)) => {
            file.len() >= prefix.len() + suffix.len()
                && file.starts_with(prefix)
                && file.ends_with(suffix)
        }
        None => p_file == file,
    }
}

#[test]
fn rule_globs_match_one_segment() {
    assert!(glob_matches(
        "/etc/prometheus/rules/*.yml",
        "/etc/prometheus/rules/a.yml"
    ));
    assert!(!glob_matches(
        "/etc/prometheus/rules/*.yml",
        "/etc/prometheus/rules/tests/a.yml"
    ));
    assert!(!glob_matches(
        "/etc/prometheus/rules/*.yml",
        "/etc/prometheus/rules/a.yaml"
    ));
}
