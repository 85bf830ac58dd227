//! Every query the stack runs, found where Grafana keeps it, and Grafana's variables in it.

use serde_json::Value as Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    PromQl,
    TraceQl,
    /// A Prometheus template-variable query (`label_values(...)`).
    Variable,
}

/// A query and where it was found.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) at: String,
    pub(crate) lang: Lang,
    pub(crate) text: String,
}

/// Every query of a dashboard: Prometheus `expr`s and TraceQL `query`s of the panels' targets,
/// the TraceQL queries behind the data links to Explore, and the Prometheus variable queries.
/// Every entry of a `targets` array must be one of the first two, and every data link must lead
/// to Explore, so that no query slips past unchecked.
pub(crate) fn dashboard_queries(dashboard: &Json) -> Vec<Query> {
    let mut out = Vec::new();
    collect(dashboard, "", &mut out);
    for variable in variables(dashboard) {
        let name = variable["name"].as_str().unwrap_or("?");
        if variable["type"] != "query" {
            continue;
        }
        let text = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable `{name}`: no query"));
        out.push(Query {
            at: format!("templating.{name}"),
            lang: Lang::Variable,
            text: text.to_owned(),
        });
        if let Some(definition) = variable["definition"].as_str() {
            assert_eq!(
                definition, text,
                "variable `{name}`: its definition is not its query"
            );
        }
    }
    out
}

pub(crate) fn variables(dashboard: &Json) -> &[Json] {
    dashboard
        .pointer("/templating/list")
        .and_then(Json::as_array)
        .map_or(&[], Vec::as_slice)
}

fn collect(value: &Json, path: &str, out: &mut Vec<Query>) {
    match value {
        Json::Object(map) => {
            if let Some(Json::Array(targets)) = map.get("targets") {
                for (i, target) in targets.iter().enumerate() {
                    let at = format!("{path}.targets[{i}]");
                    if let Some(expr) = target["expr"].as_str() {
                        out.push(Query {
                            at,
                            lang: Lang::PromQl,
                            text: expr.to_owned(),
                        });
                    } else if target["queryType"] == "traceql" {
                        let text = target["query"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{at}: a TraceQL target without query"));
                        out.push(Query {
                            at,
                            lang: Lang::TraceQl,
                            text: text.to_owned(),
                        });
                    } else {
                        panic!("{at}: neither a PromQL expr nor a TraceQL query: {target}");
                    }
                }
            }
            if let Some(Json::Array(links)) = map.get("links")
                && path.ends_with(".defaults")
            {
                for (i, link) in links.iter().enumerate() {
                    let at = format!("{path}.links[{i}]");
                    let url = link["url"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{at}: a data link without url"));
                    for (lang, text) in
                        explore_queries(url).unwrap_or_else(|e| panic!("{at}: {e}: {url}"))
                    {
                        out.push(Query {
                            at: at.clone(),
                            lang,
                            text,
                        });
                    }
                }
            }
            for (key, child) in map {
                if key != "templating" && key != "targets" {
                    collect(child, &format!("{path}.{key}"), out);
                }
            }
        }
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The queries of an Explore link (`/explore?...&panes=<JSON>`), with Grafana's `${...}`
/// variables left in place.
pub(crate) fn explore_queries(url: &str) -> Result<Vec<(Lang, String)>, String> {
    let panes = explore_panes(url)?;
    let mut out = Vec::new();
    for pane in panes.as_object().ok_or("panes is not an object")?.values() {
        for query in pane["queries"].as_array().ok_or("a pane without queries")? {
            if query["queryType"] == "traceql" {
                let text = query["query"]
                    .as_str()
                    .ok_or("a TraceQL query without text")?;
                out.push((Lang::TraceQl, text.to_owned()));
            } else if let Some(expr) = query["expr"].as_str() {
                out.push((Lang::PromQl, expr.to_owned()));
            } else {
                return Err(format!("a query of no known kind: {query}"));
            }
        }
    }
    if out.is_empty() {
        return Err("a link to Explore without a query".to_owned());
    }
    Ok(out)
}

/// The `panes` JSON of an Explore link.
pub(crate) fn explore_panes(url: &str) -> Result<Json, String> {
    let query = url
        .strip_prefix("/explore?")
        .ok_or("not a link to Explore (/explore?...)")?;
    let panes = query
        .split('&')
        .find_map(|p| p.strip_prefix("panes="))
        .ok_or("no panes= parameter")?;
    serde_json::from_str(&percent_decode(panes)?).map_err(|e| format!("panes is not JSON: {e}"))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("a cut escape at {i}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape %{hex}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// A Grafana variable in a query: `$name`, `${name}` or `${name:format}`.
pub(crate) struct Variable<'a> {
    pub(crate) name: &'a str,
    pub(crate) format: Option<&'a str>,
    /// Inside a string literal of the query.
    pub(crate) in_string: bool,
}

/// Grafana's interval variables.
pub(crate) fn is_interval(name: &str) -> bool {
    name.starts_with("__rate_interval")
        || name.starts_with("__interval")
        || name.starts_with("__range")
}

/// Replaces every Grafana variable of `query` by what `value` says.
pub(crate) fn substitute(
    query: &str,
    value: impl Fn(&Variable<'_>) -> Result<String, String>,
) -> Result<String, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len());
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == '\\' && i + 1 < chars.len() {
                out.push(c);
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            quote = Some(c);
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        let (inner, next): (String, usize) = if chars.get(i + 1) == Some(&'{') {
            let close = chars[i + 2..]
                .iter()
                .position(|&ch| ch == '}')
                .ok_or_else(|| format!("unclosed `${{` in `{query}`"))?;
            (chars[i + 2..i + 2 + close].iter().collect(), i + 3 + close)
        } else {
            let len = chars[i + 1..]
                .iter()
                .take_while(|ch| ch.is_ascii_alphanumeric() || **ch == '_')
                .count();
            (chars[i + 1..=i + len].iter().collect(), i + 1 + len)
        };
        if inner.is_empty() {
            out.push('$');
            i += 1;
            continue;
        }
        let (name, format) = match inner.split_once(':') {
            Some((name, format)) => (name, Some(format)),
            None => (inner.as_str(), None),
        };
        out.push_str(&value(&Variable {
            name,
            format,
            in_string: quote.is_some(),
        })?);
        i = next;
    }
    Ok(out)
}

/// Stands for a dashboard variable in a string, so that the checks know where each one is.
pub(crate) fn placeholder(name: &str) -> String {
    format!("__grafana_{}__", name.replace('.', "_"))
}

pub(crate) fn has_placeholder(text: &str) -> bool {
    text.contains("__grafana_")
}

/// For the static checks: interval variables become a window, any other variable a placeholder
/// that must sit inside a string literal (in a metric or label name it would escape the checks).
pub(crate) fn with_placeholders(query: &str) -> Result<String, String> {
    substitute(query, |v| {
        if is_interval(v.name) {
            Ok(if v.name.ends_with("_ms") || v.name.ends_with("_s") {
                "300".to_owned()
            } else {
                "5m".to_owned()
            })
        } else if v.in_string {
            Ok(placeholder(v.name))
        } else {
            Err(format!(
                "template variable `${}` outside a string literal",
                v.name
            ))
        }
    })
}

/// `label_values(selector, label)` (or `label_values(label)`): the selector and the label.
pub(crate) fn label_values(query: &str) -> Result<(Option<&str>, &str), String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("`{query}`: only label_values(...) variable queries are used"))?;
    // The label is after the last comma outside braces and quotes.
    let mut depth = 0i32;
    let mut in_string = false;
    let mut split = None;
    for (i, c) in inner.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '{' | '(' if !in_string => depth += 1,
            '}' | ')' if !in_string => depth -= 1,
            ',' if !in_string && depth == 0 => split = Some(i),
            _ => {}
        }
    }
    Ok(match split {
        Some(i) => (Some(inner[..i].trim()), inner[i + 1..].trim()),
        None => (None, inner.trim()),
    })
}

#[test]
fn variables_are_found_with_their_format_and_place() {
    let found = std::cell::RefCell::new(Vec::new());
    let out = substitute(
        r#"sum(rate(x{job=~"(.+/)?$service", a="${api_surface:pipe}"}[$__rate_interval]))"#,
        |v| {
            found
                .borrow_mut()
                .push((v.name.to_owned(), v.format.map(str::to_owned), v.in_string));
            Ok(format!("<{}>", v.name))
        },
    )
    .unwrap();
    assert_eq!(
        out,
        r#"sum(rate(x{job=~"(.+/)?<service>", a="<api_surface>"}[<__rate_interval>]))"#
    );
    assert_eq!(
        found.into_inner(),
        [
            ("service".to_owned(), None, true),
            ("api_surface".to_owned(), Some("pipe".to_owned()), true),
            ("__rate_interval".to_owned(), None, false),
        ]
    );
}

#[test]
fn a_variable_outside_a_string_is_refused() {
    assert!(with_placeholders("rate($metric[5m])").is_err());
    assert_eq!(
        with_placeholders(r#"rate(x{a="$b"}[$__range])"#).unwrap(),
        r#"rate(x{a="__grafana_b__"}[5m])"#
    );
}

#[test]
fn explore_links_are_read_back_with_their_variables() {
    let url = "/explore?schemaVersion=1&panes=%7B%22t%22%3A%7B%22datasource%22%3A%22${tempo}%22%2C%22queries%22%3A%5B%7B%22queryType%22%3A%22traceql%22%2C%22query%22%3A%22%7B%20span.a%20%3D%20%5C%22${__field.labels.a}%5C%22%20%7D%22%7D%5D%7D%7D";
    assert_eq!(
        explore_queries(url).unwrap(),
        [(
            Lang::TraceQl,
            r#"{ span.a = "${__field.labels.a}" }"#.to_owned()
        )]
    );
    assert!(explore_queries("/d/other-dashboard").is_err());
}

#[test]
fn label_values_splits_selector_and_label() {
    assert_eq!(
        label_values(r#"label_values(m{a=~"x,y"}, b)"#).unwrap(),
        (Some(r#"m{a=~"x,y"}"#), "b")
    );
    assert_eq!(label_values("label_values(job)").unwrap(), (None, "job"));
    assert!(label_values("query_result(up)").is_err());
}
