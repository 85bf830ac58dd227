//! What the `proxy` command forwards: which requests it serves and where they go, and which
//! headers pass in each direction.
//!
//! Pure on purpose: no sockets, no environment, nothing but `http`, `reqwest`'s URL type and
//! this crate's library, so the fuzz target `proxy_request` includes this file as it is.

use http::Method;
use http::header::{self, HeaderMap, HeaderName};
use reqwest::Url;
use reqwest_llm_guard::evidence::ApiSurface;

/// The placeholder origin requests are sent to: the failover layer rewrites every URL to an
/// upstream's base URL, keeping only the surface's own path and the query. `.invalid` never
/// resolves (RFC 2606), so a request that somehow skipped the layer goes nowhere.
pub(crate) const PLACEHOLDER: &str = "http://proxy.invalid";

/// The response headers the proxy sets itself (an upstream's own are dropped).
pub(crate) const UPSTREAM_HEADER: &str = "x-llm-guard-upstream";
/// Moves to another upstream the call made.
pub(crate) const HOPS_HEADER: &str = "x-llm-guard-hops";
/// The call's `fallback_decision` when its headers arrived.
pub(crate) const DECISION_HEADER: &str = "x-llm-guard-decision";

/// A request the proxy serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// Its API surface (never `Other`).
    pub(crate) surface: ApiSurface,
    /// Where it is sent: the placeholder origin, the caller's path and query.
    pub(crate) url: Url,
}

/// Where a request for `path` (and `query`) goes, or `None` when the proxy does not serve it:
/// any path the failover layer routes (`POST …/chat/completions`, `POST …/responses`,
/// `GET …/responses/{id}` and the other forms of [`ApiSurface::classify`], after any prefix).
///
/// The URL keeps the surface: a path the URL parser would rewrite into another surface (dot
/// segments, backslashes) or out of one is refused rather than sent somewhere else.
pub(crate) fn route(method: &Method, path: &str, query: Option<&str>) -> Option<Route> {
    if !path.starts_with('/') || path.contains(['?', '#']) || query.is_some_and(|q| q.contains('#'))
    {
        return None;
    }
    let surface = ApiSurface::classify(method, path);
    if surface == ApiSurface::Other {
        return None;
    }
    let text = match query {
        Some(q) => format!("{PLACEHOLDER}{path}?{q}"),
        None => format!("{PLACEHOLDER}{path}"),
    };
    let url = Url::parse(&text).ok()?;
    let kept = url.host_str() == Some("proxy.invalid")
        && url.port().is_none()
        && ApiSurface::classify(method, url.path()) == surface
        && url.path().contains(surface_path(surface));
    kept.then_some(Route { surface, url })
}

/// The part of the path the failover layer keeps (it looks for its last occurrence).
fn surface_path(surface: ApiSurface) -> &'static str {
    match surface {
        ApiSurface::Responses => "/responses",
        _ => "/chat/completions",
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, and the old `keep-alive`, `proxy-connection`): they
/// describe one connection, never the message, so they never cross the proxy.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Hop-by-hop headers without a constant in `http`.
const HOP_BY_HOP_NAMES: &[&str] = &["keep-alive", "proxy-connection"];

/// Whether `name` is hop-by-hop, by the list or because the `Connection` header names it.
pub(crate) fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(name)
        || HOP_BY_HOP_NAMES.contains(&name.as_str())
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The caller's headers that go upstream: all but the hop-by-hop ones and
///
/// - `host`: the upstream's own is set from its URL;
/// - `content-length`: set from the buffered body (the failover layer may rewrite `model`);
/// - `accept-encoding`: the guard reads every answer to check it, so it asks for plain bodies
///   (the leg to the caller is loopback); a compressed answer would fail its checks;
/// - `expect`: the proxy has read the whole body already.
///
/// `authorization` passes: the failover layer replaces it with an upstream's own key, and
/// leaves the caller's only for upstreams with no key configured.
pub(crate) fn request_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let dropped = is_hop_by_hop(name, incoming)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::ACCEPT_ENCODING
            || name == header::EXPECT;
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The upstream's headers that go back to the caller: all but the hop-by-hop ones,
/// `content-length` (the server sets it again when the body's length is known, and streams go
/// chunked) and the proxy's own `x-llm-guard-*`, which only the proxy sets.
pub(crate) fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len() + 3);
    for (name, value) in upstream {
        let dropped = is_hop_by_hop(name, upstream)
            || name == header::CONTENT_LENGTH
            || name.as_str().starts_with("x-llm-guard-");
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn served_paths() {
        let post = Method::POST;
        let get = Method::GET;
        for (m, p, q, s) in [
            (
                &post,
                "/v1/chat/completions",
                None,
                Some(ApiSurface::ChatCompletions),
            ),
            (
                &post,
                "/openai/v1/chat/completions",
                Some("a=1"),
                Some(ApiSurface::ChatCompletions),
            ),
            (&post, "/v1/responses", None, Some(ApiSurface::Responses)),
            (
                &get,
                "/v1/responses/resp_1",
                None,
                Some(ApiSurface::Responses),
            ),
            (&get, "/v1/chat/completions", None, None),
            (&post, "/v1/embeddings", None, None),
            (&post, "/v1/chat/completions/..", None, None),
            (&post, "/v1/chat/completions/%2e%2E", None, None),
            (&post, "v1/chat/completions", None, None),
        ] {
            assert_eq!(route(m, p, q).map(|r| r.surface), s, "{m} {p}");
        }
        let r = route(&post, "/x/v1/chat/completions", Some("api-version=1")).unwrap();
        assert_eq!(
            r.url.as_str(),
            "http://proxy.invalid/x/v1/chat/completions?api-version=1"
        );
    }

    #[test]
    fn hop_by_hop_and_host_never_pass() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "example"),
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("accept-encoding", "gzip"),
            ("authorization", "Bearer caller"),
            ("x-request-id", "r"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = request_headers(&h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["authorization", "x-request-id"]);
        h.append("x-llm-guard-upstream", HeaderValue::from_static("spoof"));
        let back = response_headers(&h);
        assert!(back.get("x-llm-guard-upstream").is_none());
        assert!(back.get("content-length").is_none());
        assert!(back.get("x-private").is_none());
        assert!(back.get("accept-encoding").is_some());
    }
}
