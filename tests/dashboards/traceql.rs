//! TraceQL against what the crate records: every span, event and resource attribute a query
//! names, and every literal value it compares one with, must be on the spans of the crate's real
//! traffic.

use crate::emitted::{Attributes, Emitted};
use crate::queries::{has_placeholder, with_placeholders};

/// One attribute reference in a TraceQL query, with the string it is compared to, if any.
#[derive(Debug)]
struct AttributeRef {
    scope: String,
    name: String,
    comparison: Option<(String, String)>,
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads a double-quoted or backtick string starting at `start` (the quote); returns its content
/// and the index after it.
fn read_string(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && quote == '"' && i + 1 < chars.len() {
            value.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == quote {
            return Ok((value, i + 1));
        }
        value.push(c);
        i += 1;
    }
    Err("unterminated string".to_owned())
}

/// Finds the attributes a TraceQL query names: `span.x`, `resource.x`, other scopes, and
/// unscoped `.x`. Intrinsics (`name`, `duration`, `status`, `kind`, `span:…`, `trace:…`) are not
/// attributes and are skipped, as are string literals.
fn traceql_attributes(query: &str) -> Result<Vec<AttributeRef>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let read_name = |from: usize| -> Result<(String, usize), String> {
        if chars.get(from) == Some(&'"') {
            return read_string(&chars, from);
        }
        let len = chars[from..]
            .iter()
            .take_while(|c| is_ident_char(**c) || **c == '.' || **c == '-')
            .count();
        let name: String = chars[from..from + len].iter().collect();
        let name = name.trim_end_matches('.').to_owned();
        if name.is_empty() {
            Err(format!("empty attribute name at {from}"))
        } else {
            Ok((name, from + len))
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        let at_boundary = prev.is_none_or(|p| !is_ident_char(p) && p != '.');
        if c == '"' || c == '`' {
            let (_, next) = read_string(&chars, i)?;
            i = next;
            continue;
        }
        let start_of_ref;
        let scope;
        if c.is_ascii_alphabetic() && at_boundary {
            let len = chars[i..]
                .iter()
                .take_while(|ch| is_ident_char(**ch))
                .count();
            let word: String = chars[i..i + len].iter().collect();
            if chars.get(i + len) != Some(&'.') {
                i += len;
                continue;
            }
            scope = word;
            start_of_ref = i + len + 1;
        } else if c == '.'
            && prev.is_none_or(|p| !(is_ident_char(p) || p == ')' || p == ']' || p == '"'))
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_' || *n == '"')
        {
            scope = String::new();
            start_of_ref = i + 1;
        } else {
            i += 1;
            continue;
        }
        let (name, mut next) = read_name(start_of_ref)?;
        // An optional comparison with a string literal right after the attribute.
        let mut j = next;
        while chars.get(j).is_some_and(|ch| ch.is_whitespace()) {
            j += 1;
        }
        let op: String = ["!=", "=~", "!~", "="]
            .iter()
            .find(|op| {
                let op_chars: Vec<char> = op.chars().collect();
                chars.get(j..j + op_chars.len()) == Some(&op_chars[..])
            })
            .map(|op| (*op).to_owned())
            .unwrap_or_default();
        let mut comparison = None;
        if !op.is_empty() {
            let mut k = j + op.len();
            while chars.get(k).is_some_and(|ch| ch.is_whitespace()) {
                k += 1;
            }
            if chars.get(k) == Some(&'"') {
                let (value, after) = read_string(&chars, k)?;
                comparison = Some((op, value));
                next = after;
            }
        }
        found.push(AttributeRef {
            scope,
            name,
            comparison,
        });
        i = next;
    }
    Ok(found)
}

/// The attributes of the crate's spans, their events and their resource.
pub(crate) struct SpanCatalog<'a> {
    span: &'a Attributes,
    event: &'a Attributes,
    resource: Attributes,
}

impl<'a> SpanCatalog<'a> {
    pub(crate) fn of(emitted: &'a Emitted) -> Self {
        Self {
            span: &emitted.span_attributes,
            event: &emitted.event_attributes,
            resource: emitted
                .resource
                .iter()
                .map(|(k, v)| (k.clone(), [v.clone()].into()))
                .collect(),
        }
    }

    /// Checks every attribute a TraceQL query (Grafana variables allowed in strings) names.
    pub(crate) fn check(&self, query: &str) -> Result<(), Vec<String>> {
        let query = with_placeholders(query).map_err(|e| vec![e])?;
        if !query.trim_start().starts_with('{') {
            return Err(vec![format!(
                "`{query}` is not a TraceQL span-set query (it must start with `{{`)"
            )]);
        }
        let mut errors = Vec::new();
        for attribute in traceql_attributes(&query).map_err(|e| vec![e])? {
            let name = attribute.name.as_str();
            let values = match attribute.scope.as_str() {
                "span" => self.span.get(name),
                "event" => self.event.get(name),
                "resource" => self.resource.get(name),
                "" => self.span.get(name).or_else(|| self.resource.get(name)),
                other => {
                    errors.push(format!(
                        "`{other}.{name}`: the crate records no {other}-scoped attributes"
                    ));
                    continue;
                }
            };
            let Some(values) = values else {
                errors.push(format!(
                    "`{}.{name}` is not an attribute the crate records",
                    attribute.scope
                ));
                continue;
            };
            if let Some((op, value)) = &attribute.comparison {
                check_value(name, values, value, op.contains('~'), &mut errors);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A literal or a plain alternation must be among the values the attribute took.
fn check_value(
    name: &str,
    seen: &std::collections::BTreeSet<String>,
    value: &str,
    regex: bool,
    errors: &mut Vec<String>,
) {
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
    for alternative in alternatives {
        if !seen.contains(alternative) {
            errors.push(format!(
                "`{name}` never has the value `{alternative}` (it had: {})",
                seen.iter().take(12).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
}

#[test]
fn the_checker_accepts_what_the_crate_records() {
    let emitted = crate::emitted::emitted();
    let catalog = SpanCatalog::of(emitted);
    for query in [
        r#"{ resource.service.name =~ "${service:pipe}" && span.fallback_decision = "fallback" } | select(span.waf.reference)"#,
        r#"{ .api_surface = "responses" && span.retry_count > 0 && duration > 1.5s && kind = client }"#,
        r#"{ span.contract.violation =~ "html_body|not_json" && span.http.request.resend_count >= 1 }"#,
        r#"{ event.lint.rule = "max_tokens_deprecated" && span.gen_ai.response.finish_reasons = "length" }"#,
    ] {
        assert_eq!(catalog.check(query), Ok(()), "{query}");
    }
}

#[test]
fn the_checker_rejects_an_unknown_attribute_or_value() {
    let emitted = crate::emitted::emitted();
    let catalog = SpanCatalog::of(emitted);
    assert!(catalog.check(r#"{ span.fallback = "hold" }"#).is_err());
    assert!(catalog.check(r#"{ resource.k8s.pod.name = "x" }"#).is_err());
    // The Prometheus spelling is not the attribute's.
    assert!(catalog.check(r#"{ .waf_vendor = "cloudflare" }"#).is_err());
    assert!(
        catalog
            .check(r#"{ span.fallback_decision = "fallbak" }"#)
            .is_err()
    );
    // A span attribute is not an event's.
    assert!(
        catalog
            .check(r#"{ event.fallback_decision = "hold" }"#)
            .is_err()
    );
    assert!(catalog.check(r#"{ link.x = "y" }"#).is_err());
    // Attribute-like text inside strings is not an attribute.
    assert_eq!(
        catalog.check(r#"{ span.waf.reference =~ "span.nope" }"#),
        Ok(())
    );
}
