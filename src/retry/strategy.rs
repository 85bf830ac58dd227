//! Whether an attempt's result is worth retrying: reqwest-retry's `RetryableStrategy`.

use reqwest_middleware::Error;
use reqwest_retry::{Retryable, RetryableStrategy, default_on_request_failure};

/// The default: retry 429 only. Every other status, and every transport error, stands.
///
/// A 429 that is really a WAF challenge is not retried either way: the [`Retry`](super::Retry)
/// layer refuses walls and 403s whatever the strategy says. The server has the last word on
/// the rest, as in the OpenAI SDKs: `x-should-retry: true` retries a status this strategy calls
/// fatal, `x-should-retry: false` stops one it would retry.
#[derive(Debug, Clone, Copy, Default)]
pub struct On429;

impl RetryableStrategy for On429 {
    fn handle(&self, res: &Result<reqwest::Response, Error>) -> Option<Retryable> {
        match res {
            Ok(r) if r.status() == http::StatusCode::TOO_MANY_REQUESTS => {
                Some(Retryable::Transient)
            }
            Ok(r) if r.status().is_success() => None,
            Ok(_) | Err(_) => Some(Retryable::Fatal),
        }
    }
}

/// The OpenAI SDKs' set: 408, 409, 429, every 5xx, and transport errors (timeouts, refused
/// or reset connections).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiSdk;

impl RetryableStrategy for OpenAiSdk {
    fn handle(&self, res: &Result<reqwest::Response, Error>) -> Option<Retryable> {
        match res {
            Ok(r) => {
                let s = r.status();
                if s.is_success() {
                    None
                } else if matches!(s.as_u16(), 408 | 409 | 429) || s.is_server_error() {
                    Some(Retryable::Transient)
                } else {
                    Some(Retryable::Fatal)
                }
            }
            Err(e) => default_on_request_failure(e),
        }
    }
}

/// A reqwest-retry `RetryableStrategy` that never retries a WAF or bot wall nor a 403 (an
/// edge's own rate limit is retried, as a 429 is), and asks `S` (default: reqwest-retry's `DefaultRetryableStrategy`) about everything else.
///
/// For a service that keeps reqwest-retry's `RetryTransientMiddleware`: give it this strategy
/// and walls are refused there too. Walls recognised from the body (a Cloudflare challenge
/// page on a 429) are seen when the [`Inspect`](crate::inspect::Inspect) layer runs inside the
/// retry middleware; without it, only block headers (`cf-mitigated: challenge`, …) are.
///
/// ```
/// use reqwest_llm_guard::retry::RefuseWalls;
/// use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
///
/// let retry = RetryTransientMiddleware::new_with_policy_and_strategy(
///     ExponentialBackoff::builder().build_with_max_retries(3),
///     RefuseWalls::default(),
/// );
/// # let _ = retry;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RefuseWalls<S = reqwest_retry::DefaultRetryableStrategy>(pub S);

impl Default for RefuseWalls {
    fn default() -> Self {
        Self(reqwest_retry::DefaultRetryableStrategy)
    }
}

impl<S> RefuseWalls<S> {
    /// Walls and 403s refused, the rest decided by `strategy`.
    pub fn new(strategy: S) -> Self {
        Self(strategy)
    }
}

impl<S: RetryableStrategy> RetryableStrategy for RefuseWalls<S> {
    fn handle(&self, res: &Result<reqwest::Response, Error>) -> Option<Retryable> {
        if let Ok(r) = res {
            match super::wall_of(r) {
                Some(w) if w.kind == crate::evidence::WafKind::RateLimit => {
                    return Some(Retryable::Transient);
                }
                Some(_) => return Some(Retryable::Fatal),
                None if r.status() == http::StatusCode::FORBIDDEN => {
                    return Some(Retryable::Fatal);
                }
                None => {}
            }
        }
        self.0.handle(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)] // the strategies take a `Result`
    fn response(status: u16, headers: &[(&str, &str)]) -> Result<reqwest::Response, Error> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(reqwest::Response::from(b.body(Vec::<u8>::new()).unwrap()))
    }

    /// Status by status: what each strategy says (`-` nothing to retry, `T` transient, `F` fatal).
    #[test]
    fn strategies_status_by_status() {
        let rows: &[(u16, &str, &str, &str)] = &[
            // status, On429, OpenAiSdk, RefuseWalls<Default>
            (200, "-", "-", "-"),
            (400, "F", "F", "F"),
            (403, "F", "F", "F"),
            (404, "F", "F", "F"),
            (408, "F", "T", "T"),
            (409, "F", "T", "F"),
            (429, "T", "T", "T"),
            (500, "F", "T", "T"),
            (503, "F", "T", "T"),
        ];
        let show = |r: Option<Retryable>| match r {
            None => "-",
            Some(Retryable::Transient) => "T",
            Some(Retryable::Fatal) => "F",
        };
        for &(status, on429, sdk, refuse) in rows {
            let res = response(status, &[]);
            assert_eq!(show(On429.handle(&res)), on429, "On429 {status}");
            assert_eq!(show(OpenAiSdk.handle(&res)), sdk, "OpenAiSdk {status}");
            assert_eq!(
                show(RefuseWalls::default().handle(&res)),
                refuse,
                "RefuseWalls {status}"
            );
        }
    }

    #[test]
    fn refuse_walls_refuses_a_challenge_on_429() {
        let challenge = response(
            429,
            &[("cf-mitigated", "challenge"), ("server", "cloudflare")],
        );
        assert!(matches!(
            RefuseWalls::default().handle(&challenge),
            Some(Retryable::Fatal)
        ));
        assert!(matches!(
            RefuseWalls::new(On429).handle(&response(429, &[])),
            Some(Retryable::Transient)
        ));
    }
}
