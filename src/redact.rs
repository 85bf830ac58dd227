//! Credentials out of the errors handed back to the caller.
//!
//! reqwest puts the request's URL into its errors, and their `Display` prints it: a key in
//! `?key=` or in `user:pass@` would reach every log that prints the error. The URL stays (it
//! says where the call went); its userinfo goes and its query values are replaced.

use reqwest::{ResponseBuilderExt, Url};

/// What replaces each query value.
const REDACTED: &str = "redacted";

/// Whether `url` carries anything [`url`] would remove.
pub(crate) fn needed(url: &Url) -> bool {
    !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
}

/// The response, its URL redacted: reqwest prints `Response::url` in the errors its body
/// hands back.
pub(crate) fn response(response: reqwest::Response) -> reqwest::Response {
    if !needed(response.url()) {
        return response;
    }
    let (parts, body, mut u) = split(response);
    url(&mut u);
    join(parts, body, u)
}

/// `url` without userinfo and with every query value replaced.
pub(crate) fn url(url: &mut Url) {
    if !url.username().is_empty() {
        let _ = url.set_username("");
    }
    if url.password().is_some() {
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut pairs = url.query_pairs_mut();
        pairs.clear();
        for k in keys {
            pairs.append_pair(&k, REDACTED);
        }
    }
    url.set_fragment(None);
}

/// The error, its URL redacted.
pub(crate) fn error(mut e: reqwest_middleware::Error) -> reqwest_middleware::Error {
    if let Some(u) = e.url_mut() {
        url(u);
    }
    e
}

/// A reqwest error (a body's), its URL redacted.
pub(crate) fn reqwest_error(mut e: reqwest::Error) -> reqwest::Error {
    if let Some(u) = e.url_mut() {
        url(u);
    }
    e
}

/// A response's head, body and URL, apart (to wrap its body).
pub(crate) fn split(
    response: reqwest::Response,
) -> (http::response::Parts, reqwest::Body, reqwest::Url) {
    let url = response.url().clone();
    let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    (parts, body, url)
}

/// A response from its head, a body and its URL.
pub(crate) fn join(
    parts: http::response::Parts,
    body: reqwest::Body,
    url: reqwest::Url,
) -> reqwest::Response {
    // `url` travels in a private extension that only reqwest's builder can set.
    let mut response = http::Response::from_parts(parts, body);
    if let Ok(with_url) = http::Response::builder().url(url).body(()) {
        response
            .extensions_mut()
            .extend(with_url.into_parts().0.extensions);
    }
    reqwest::Response::from(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_goes_and_query_values_are_replaced() {
        let mut u = Url::parse("https://user:sk-SECRET@api.example.com/v1/chat/completions?key=sk-SECRET&api-version=2024#frag").unwrap();
        url(&mut u);
        let s = u.as_str();
        assert!(!s.contains("SECRET"), "{s}");
        assert!(!s.contains("user"), "{s}");
        assert_eq!(
            s,
            "https://api.example.com/v1/chat/completions?key=redacted&api-version=redacted"
        );
    }

    #[test]
    fn a_clean_url_is_left_as_it_is() {
        let mut u = Url::parse("http://127.0.0.1:8080/v1/responses").unwrap();
        url(&mut u);
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/v1/responses");
    }
}
