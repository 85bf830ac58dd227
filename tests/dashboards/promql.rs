//! PromQL against what the crate emits: every series a query selects, every label it matches,
//! groups or joins on, and every literal label value must be one the crate's real metrics have.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};

use crate::emitted::Emitted;
use crate::queries::{has_placeholder, label_values, with_placeholders};

/// The series Prometheus holds from the crate, with their labels and the labels' values.
pub(crate) struct Catalog {
    series: BTreeMap<String, BTreeSet<String>>,
    values: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    pub(crate) fn of(emitted: &Emitted) -> Self {
        Self {
            series: emitted.series(),
            values: emitted.label_values(),
        }
    }

    /// The labels of a series, `None` for a series the crate does not emit.
    pub(crate) fn labels(&self, series: &str) -> Option<&BTreeSet<String>> {
        self.series.get(series)
    }

    /// Checks one PromQL expression (Grafana variables allowed in strings); on success, the
    /// labels its result can carry.
    pub(crate) fn check(&self, query: &str) -> Result<BTreeSet<String>, Vec<String>> {
        let text = with_placeholders(query).map_err(|e| vec![e])?;
        let expr = parser::parse(&text).map_err(|e| vec![format!("does not parse: {e}")])?;
        let mut errors = Vec::new();
        let labels = self.expr(&expr, &mut errors);
        if errors.is_empty() {
            Ok(labels)
        } else {
            Err(errors)
        }
    }

    /// Checks a variable query: `label_values(selector, label)` or `label_values(label)`.
    pub(crate) fn check_variable(&self, query: &str) -> Result<(), Vec<String>> {
        let (selector, label) = label_values(query).map_err(|e| vec![e])?;
        let Some(selector) = selector else {
            return if self.values.contains_key(label) {
                Ok(())
            } else {
                Err(vec![format!(
                    "no series the crate emits has the label `{label}`"
                )])
            };
        };
        let text = with_placeholders(selector).map_err(|e| vec![e])?;
        let Ok(Expr::VectorSelector(vs)) = parser::parse(&text) else {
            return Err(vec![format!(
                "label_values takes a series selector, got `{selector}`"
            )]);
        };
        let mut errors = Vec::new();
        let labels = self.selector(&vs, &mut errors);
        if errors.is_empty() && !labels.contains(label) {
            errors.push(format!("`{selector}` has no label `{label}`"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn expr(&self, expr: &Expr, errors: &mut Vec<String>) -> BTreeSet<String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs, errors),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs, errors),
            Expr::Aggregate(agg) => {
                let inner = self.expr(&agg.expr, errors);
                if let Some(param) = &agg.param {
                    self.expr(param, errors);
                }
                match &agg.modifier {
                    Some(LabelModifier::Include(by)) => {
                        for label in &by.labels {
                            if !inner.contains(label) {
                                errors.push(format!(
                                    "`by ({label})`: no series under this aggregation has `{label}`"
                                ));
                            }
                        }
                        by.labels.iter().cloned().collect()
                    }
                    Some(LabelModifier::Exclude(without)) => {
                        for label in &without.labels {
                            if !inner.contains(label) {
                                errors.push(format!(
                                    "`without ({label})`: no series under this aggregation has `{label}`"
                                ));
                            }
                        }
                        inner
                            .into_iter()
                            .filter(|l| !without.labels.contains(l))
                            .collect()
                    }
                    // A plain sum keeps no label; topk and the like keep them all: this errs on
                    // the side of keeping.
                    None => inner,
                }
            }
            Expr::Binary(bin) => {
                let mut labels = self.expr(&bin.lhs, errors);
                labels.extend(self.expr(&bin.rhs, errors));
                if let Some(modifier) = &bin.modifier {
                    let mut named: Vec<&String> = Vec::new();
                    if let Some(matching) = &modifier.matching {
                        named.extend(&matching.labels().labels);
                    }
                    if let Some(group) = modifier.card.labels() {
                        named.extend(&group.labels);
                    }
                    for label in named {
                        if !labels.contains(label) {
                            errors.push(format!(
                                "vector matching names `{label}`, which neither side has"
                            ));
                        }
                    }
                }
                labels
            }
            Expr::Call(call) => self.call(call, errors),
            Expr::Paren(paren) => self.expr(&paren.expr, errors),
            Expr::Unary(unary) => self.expr(&unary.expr, errors),
            Expr::Subquery(sub) => self.expr(&sub.expr, errors),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => BTreeSet::new(),
            Expr::Extension(_) => {
                errors.push("unexpected extension expression".to_owned());
                BTreeSet::new()
            }
        }
    }

    fn call(&self, call: &parser::Call, errors: &mut Vec<String>) -> BTreeSet<String> {
        let args: Vec<&Expr> = call.args.args.iter().map(AsRef::as_ref).collect();
        let arg_labels: Vec<BTreeSet<String>> = args.iter().map(|a| self.expr(a, errors)).collect();
        let string_arg = |i: usize| match args.get(i) {
            Some(Expr::StringLiteral(s)) => Some(s.val.clone()),
            _ => None,
        };
        match call.func.name {
            "histogram_quantile" => {
                let inner = arg_labels.get(1).cloned().unwrap_or_default();
                if !inner.contains("le") {
                    errors.push(
                        "histogram_quantile over an expression that dropped `le` (aggregate `by (le, ...)`)"
                            .to_owned(),
                    );
                }
                inner.into_iter().filter(|l| l != "le").collect()
            }
            "label_replace" | "label_join" => {
                let mut labels = arg_labels.first().cloned().unwrap_or_default();
                let sources: Vec<String> = if call.func.name == "label_replace" {
                    string_arg(3).into_iter().collect()
                } else {
                    (3..args.len()).filter_map(string_arg).collect()
                };
                for source in sources {
                    if !source.is_empty() && !labels.contains(&source) {
                        errors.push(format!(
                            "{} reads the label `{source}`, which the series do not have",
                            call.func.name
                        ));
                    }
                }
                if let Some(dst) = string_arg(1) {
                    labels.insert(dst);
                }
                labels
            }
            _ => arg_labels.into_iter().flatten().collect(),
        }
    }

    fn selector(&self, vs: &VectorSelector, errors: &mut Vec<String>) -> BTreeSet<String> {
        let Some(name) = selector_name(vs) else {
            errors.push("a selector without a literal metric name".to_owned());
            return BTreeSet::new();
        };
        let Some(labels) = self.series.get(&name) else {
            errors.push(format!(
                "`{name}` is not a series the crate emits (it emits: {})",
                self.series.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            return BTreeSet::new();
        };
        for matcher in vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
        {
            if matcher.name == "__name__" {
                continue;
            }
            if !labels.contains(&matcher.name) {
                errors.push(format!(
                    "`{name}` has no label `{}` (its labels: {})",
                    matcher.name,
                    labels.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
                continue;
            }
            let op = matcher.op.to_string();
            self.value(&matcher.name, &matcher.value, op.contains('~'), errors);
        }
        labels.clone()
    }

    /// A literal, or a plain alternation (`a|b`), must be among the values the label took.
    /// Other regexes, empty values (absent label) and variables are not checked.
    fn value(&self, label: &str, value: &str, regex: bool, errors: &mut Vec<String>) {
        if value.is_empty() || has_placeholder(value) {
            return;
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let alternatives: Vec<&str> = if regex {
            if !value.chars().all(|c| plain(c) || c == '|') {
                return;
            }
            value.split('|').collect()
        } else {
            vec![value]
        };
        let seen = self.values.get(label);
        for alternative in alternatives {
            if !seen.is_some_and(|s| s.contains(alternative)) {
                errors.push(format!(
                    "`{label}` never has the value `{alternative}` (it had: {})",
                    seen.map(|s| s.iter().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ));
            }
        }
    }
}

pub(crate) fn selector_name(vs: &VectorSelector) -> Option<String> {
    vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op.to_string() == "=")
            .map(|m| m.value.clone())
    })
}

/// Every vector selector of an expression (matrix selectors' included).
pub(crate) fn selectors(expr: &Expr) -> Vec<&VectorSelector> {
    let mut out = Vec::new();
    walk(expr, &mut |e| match e {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        _ => {}
    });
    out
}

/// Visits an expression and every expression under it.
pub(crate) fn walk<'a>(expr: &'a Expr, visit: &mut impl FnMut(&'a Expr)) {
    visit(expr);
    match expr {
        Expr::Aggregate(agg) => {
            walk(&agg.expr, visit);
            if let Some(param) = &agg.param {
                walk(param, visit);
            }
        }
        Expr::Binary(bin) => {
            walk(&bin.lhs, visit);
            walk(&bin.rhs, visit);
        }
        Expr::Call(call) => call.args.args.iter().for_each(|a| walk(a, visit)),
        Expr::Paren(paren) => walk(&paren.expr, visit),
        Expr::Unary(unary) => walk(&unary.expr, visit),
        Expr::Subquery(sub) => walk(&sub.expr, visit),
        Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The checker itself
// ---------------------------------------------------------------------------------------------

fn catalog() -> Catalog {
    Catalog::of(crate::emitted::emitted())
}

#[test]
fn the_checker_accepts_what_the_crate_emits() {
    let catalog = catalog();
    for query in [
        r#"sum by (api_surface, fallback_decision) (rate(llm_guard_calls_total{job=~"(.+/)?$service", api_surface=~"${api_surface:regex}"}[$__rate_interval]))"#,
        "histogram_quantile(0.95, sum by (le, api_surface) (rate(gen_ai_client_operation_duration_seconds_bucket[5m])))",
        r#"sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{gen_ai_token_type="input"}[5m]))"#,
        r#"sum(rate(llm_guard_retries_exhausted_total{retry_stop_reason=~"attempts_exhausted|budget_exhausted"}[5m])) / on () group_left sum(rate(llm_guard_calls_total[5m]))"#,
        r#"max by (failover_upstream) (llm_guard_breaker_state{breaker_state="open"})"#,
    ] {
        assert!(
            catalog.check(query).is_ok(),
            "{query}: {:?}",
            catalog.check(query)
        );
    }
    assert_eq!(
        catalog.check_variable(r#"label_values(llm_guard_calls_total{job=~"$job"}, api_surface)"#),
        Ok(())
    );
}

#[test]
fn the_checker_rejects_an_unknown_metric() {
    let catalog = catalog();
    let errors = catalog
        .check("sum(rate(llm_guard_call_total[5m]))")
        .unwrap_err();
    assert!(
        errors[0].contains("`llm_guard_call_total` is not a series"),
        "{errors:?}"
    );
    // The OpenTelemetry name is not what Prometheus sees, nor is a histogram without a suffix.
    assert!(
        catalog
            .check("rate(gen_ai_client_operation_duration_bucket[5m])")
            .is_err()
    );
    assert!(
        catalog
            .check("gen_ai_client_operation_duration_seconds")
            .is_err()
    );
    assert!(
        catalog
            .check_variable("label_values(llm_guard_requests_total, job)")
            .is_err()
    );
    // A metric name hidden in a variable cannot be checked, so it is refused.
    assert!(catalog.check("rate($metric[5m])").is_err());
}

#[test]
fn the_checker_rejects_an_unknown_label_or_value() {
    let catalog = catalog();
    assert!(
        catalog
            .check(r#"llm_guard_calls_total{fallback="hold"}"#)
            .is_err()
    );
    let errors = catalog
        .check("sum by (decision) (rate(llm_guard_calls_total[5m]))")
        .unwrap_err();
    assert!(errors[0].contains("decision"), "{errors:?}");
    assert!(
        catalog
            .check("sum without (surface) (rate(llm_guard_calls_total[5m]))")
            .is_err()
    );
    // A real label, but not on this metric: token usage has no waf_vendor.
    assert!(
        catalog
            .check(r#"rate(gen_ai_client_token_usage_sum{waf_vendor="cloudflare"}[5m])"#)
            .is_err()
    );
    // A value the series never take: `retry` is a span value, not a finished call's.
    assert!(
        catalog
            .check(r#"llm_guard_calls_total{fallback_decision="retry"}"#)
            .is_err()
    );
    assert!(
        catalog
            .check(r#"llm_guard_calls_total{status_class=~"2xx|6xx"}"#)
            .is_err()
    );
    // A quantile over buckets that lost `le`.
    assert!(catalog
        .check("histogram_quantile(0.9, sum by (api_surface) (rate(gen_ai_client_operation_duration_seconds_bucket[5m])))")
        .is_err());
    assert!(
        catalog
            .check_variable("label_values(llm_guard_calls_total, gen_ai_token_type)")
            .is_err()
    );
}
