//! The `proxy` command's configuration parser over arbitrary text.
//!
//! Oracles beyond "no panic": a configuration that is accepted has as many upstreams as the
//! document's `upstreams` array (at least one), parses the same again, has header-safe
//! distinct names and listens on loopback unless the document allows otherwise; a refused one
//! is one line that names where, and never repeats a string value from the document (marked
//! values: those holding `~`, `^` or `|`, which no message of the parser contains).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub)]
#[path = "../../src/bin/llm-guard/config.rs"]
mod config;

/// The string values of `value` (not its keys), except upstream names.
fn strings<'a>(value: &'a toml::Value, key: &str, out: &mut Vec<&'a str>) {
    match value {
        toml::Value::String(s) if key != "name" => out.push(s),
        toml::Value::Array(items) => items.iter().for_each(|v| strings(v, key, out)),
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| strings(v, k, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let doc = toml::from_str::<toml::Table>(text).ok();
    match config::parse(text) {
        Ok(c) => {
            let doc = doc.expect("an accepted configuration is TOML");
            let n = doc
                .get("upstreams")
                .and_then(toml::Value::as_array)
                .map_or(0, Vec::len);
            assert!(n > 0);
            assert_eq!(c.upstreams.len(), n, "upstream count");
            let again = config::parse(text).expect("the same text is accepted again");
            assert_eq!(again.upstreams.len(), n);
            assert_eq!(again.listen, c.listen);
            for (i, u) in c.upstreams.iter().enumerate() {
                assert!(http::HeaderValue::from_str(&u.name).is_ok());
                assert_eq!(u.upstream.name(), u.name);
                assert!(c.upstreams[..i].iter().all(|v| v.name != u.name));
            }
            if !c.listen.ip().is_loopback() {
                assert_eq!(
                    doc.get("allow_non_loopback"),
                    Some(&toml::Value::Boolean(true))
                );
            }
            assert!(c.retry.max_retries <= config::MAX_RETRIES);
            assert!(c.failover.max_hops <= config::MAX_HOPS);
            assert!(c.retry.deadline <= config::MAX_DURATION);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!e.at.is_empty());
            assert!(!message.contains('\n'), "{message}");
            if let Some(doc) = doc {
                let doc = toml::Value::Table(doc);
                let mut values = Vec::new();
                strings(&doc, "", &mut values);
                for v in values {
                    if v.len() >= 4 && v.contains(['~', '^', '|']) {
                        assert!(!message.contains(v), "{message} repeats {v:?}");
                    }
                }
            }
        }
    }
});
