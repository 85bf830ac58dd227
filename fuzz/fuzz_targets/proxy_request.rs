//! The `proxy` command's request mapping over arbitrary methods, paths, queries and headers.
//!
//! Oracles beyond "no panic": a request that is served keeps its surface (the URL sent on
//! classifies as the path did, on the placeholder origin, with the surface's own path in it for
//! the failover layer to keep) and its query; a refused one is one the failover layer would
//! not route. Headers: nothing hop-by-hop (by the list or named in `Connection`), no `Host`,
//! `Content-Length` or `Accept-Encoding` goes upstream; nothing hop-by-hop, no
//! `Content-Length` and no `x-llm-guard-*` comes back; every other header passes with all its
//! values, in order.
//!
//! Input: method byte, path token count, path tokens, query flag and tokens, then headers as
//! name byte, value length, value.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::evidence::ApiSurface;

#[allow(dead_code, unreachable_pub)]
#[path = "../../src/bin/llm-guard/forward.rs"]
mod forward;

const METHODS: &[&str] = &[
    "POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "post",
];

/// Path pieces: the surfaces' own, and what URL parsers rewrite.
const TOKENS: &[&str] = &[
    "/",
    "v1",
    "chat",
    "completions",
    "responses",
    "/chat/completions",
    "/responses",
    "/responses/",
    "resp_1",
    "cancel",
    "input_items",
    "..",
    ".",
    "%2e",
    "%2E%2e",
    "\\",
    "//",
    "?",
    "#",
    "%00",
    " ",
    "%2F",
    ";",
    "@",
    ":",
    "openai",
    "é",
    "\t",
    "%",
    "{id}",
];

const NAMES: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "host",
    "content-length",
    "accept-encoding",
    "expect",
    "authorization",
    "content-type",
    "x-request-id",
    "x-llm-guard-upstream",
    "x-llm-guard-hops",
    "api-key",
    "x-private",
    "openai-organization",
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn text(&mut self) -> String {
        let count = usize::from(self.byte() % 16);
        let mut out = String::new();
        for _ in 0..count {
            let b = self.byte();
            match TOKENS.get(usize::from(b)) {
                Some(t) => out.push_str(t),
                None => out.push(char::from(b)),
            }
        }
        out
    }
}

fn dropped_upstream(name: &HeaderName, incoming: &HeaderMap) -> bool {
    const ALWAYS: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    ];
    ALWAYS.contains(&name.as_str())
        || incoming
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

fn check(out: &HeaderMap, incoming: &HeaderMap, dropped: impl Fn(&HeaderName) -> bool) {
    for name in incoming.keys() {
        let sent: Vec<&HeaderValue> = out.get_all(name).iter().collect();
        if dropped(name) {
            assert!(sent.is_empty(), "{name} passed");
        } else {
            let all: Vec<&HeaderValue> = incoming.get_all(name).iter().collect();
            assert_eq!(sent, all, "{name} changed");
        }
    }
    assert!(out.keys().all(|k| incoming.contains_key(k)));
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let m = input.byte();
    let method = match METHODS.get(usize::from(m % 10)) {
        Some(name) => Method::from_bytes(name.as_bytes()).unwrap_or(Method::POST),
        None => {
            let raw = input.text();
            Method::from_bytes(raw.as_bytes()).unwrap_or(Method::GET)
        }
    };
    let path = input.text();
    let query = (input.byte() % 2 == 1).then(|| input.text());
    let mut headers = HeaderMap::new();
    let count = input.byte() % 12;
    for _ in 0..count {
        let n = input.byte();
        let len = usize::from(input.byte() % 48);
        let value = input.bytes(len).to_vec();
        let name = match NAMES.get(usize::from(n)) {
            Some(name) => HeaderName::from_static(name),
            None => match HeaderName::from_bytes(&value) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        // Connection values list other headers' names.
        let value = if name == "connection" && value.first().is_some_and(|b| b % 2 == 0) {
            let listed: Vec<&str> = value
                .iter()
                .map(|b| NAMES[usize::from(*b) % NAMES.len()])
                .collect();
            listed.join(", ").into_bytes()
        } else {
            value
        };
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.append(name, value);
        }
    }

    match forward::route(&method, &path, query.as_deref()) {
        Some(route) => {
            assert_ne!(route.surface, ApiSurface::Other);
            assert_eq!(ApiSurface::classify(&method, &path), route.surface);
            assert_eq!(
                ApiSurface::classify(&method, route.url.path()),
                route.surface
            );
            assert_eq!(route.url.host_str(), Some("proxy.invalid"));
            assert_eq!(route.url.scheme(), "http");
            let own = match route.surface {
                ApiSurface::Responses => "/responses",
                _ => "/chat/completions",
            };
            assert!(route.url.path().contains(own), "{}", route.url);
            assert_eq!(route.url.query().is_some(), query.is_some());
        }
        None => {
            // Refused: anything the layer would route must have been rewritten by the parser.
            let plain = path.starts_with('/')
                && !path.contains(['?', '#', '\\', '%', '\t', '\n', '\r'])
                && !path.split('/').any(|s| s == "." || s == "..")
                && !path.bytes().any(|b| b < 0x20 || b >= 0x7f || b == b' ')
                && query.as_deref().is_none_or(|q| !q.contains('#'));
            if plain {
                assert_eq!(
                    ApiSurface::classify(&method, &path),
                    ApiSurface::Other,
                    "{method} {path} refused"
                );
            }
        }
    }

    let up = forward::request_headers(&headers);
    check(&up, &headers, |n| {
        dropped_upstream(n, &headers)
            || ["host", "content-length", "accept-encoding", "expect"].contains(&n.as_str())
    });
    let down = forward::response_headers(&headers);
    check(&down, &headers, |n| {
        dropped_upstream(n, &headers)
            || n == "content-length"
            || n.as_str().starts_with("x-llm-guard-")
    });
});
