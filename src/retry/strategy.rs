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
