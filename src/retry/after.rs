//! What the server asks for: `retry-after-ms`, `retry-after` (seconds or an HTTP date) and
//! `x-should-retry`, as the OpenAI SDKs read them.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::evidence::WaitReason;

/// The wait the server asked for, and from which header. `retry-after-ms` wins over
/// `retry-after`; unparseable or negative values are ignored; a date in the past is a zero
/// wait.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use reqwest_llm_guard::retry::{WaitReason, server_wait};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("retry-after", "3".parse().unwrap());
/// headers.insert("retry-after-ms", "250".parse().unwrap());
/// assert_eq!(
///     server_wait(&headers, SystemTime::now()),
///     Some((Duration::from_millis(250), WaitReason::RetryAfterMs))
/// );
/// ```
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<(Duration, WaitReason)> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some((seconds(ms / 1000.0), WaitReason::RetryAfterMs));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (seconds(secs), WaitReason::RetryAfter));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some((
        at.duration_since(now).unwrap_or_default(),
        WaitReason::RetryAfter,
    ))
}

/// A non-negative, finite number of seconds; one too large for a `Duration` is the longest wait
/// there is (it is over any cap).
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// `x-should-retry: true|false`, the server's own verdict (OpenAI sends it).
pub fn should_retry_header(headers: &HeaderMap) -> Option<bool> {
    match headers.get("x-should-retry")?.to_str().ok()?.trim() {
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    type Row<'a> = (&'a [(&'a str, &'a str)], Option<(u64, WaitReason)>);

    #[test]
    fn server_wait_table() {
        let now = httpdate::parse_http_date("Sun, 22 Nov 2026 10:00:00 GMT").unwrap();
        let rows: &[Row<'_>] = &[
            (&[], None),
            (
                &[("retry-after", "2")],
                Some((2000, WaitReason::RetryAfter)),
            ),
            (
                &[("retry-after", " 1.5 ")],
                Some((1500, WaitReason::RetryAfter)),
            ),
            (
                &[("retry-after-ms", "250")],
                Some((250, WaitReason::RetryAfterMs)),
            ),
            (
                &[("retry-after-ms", "250"), ("retry-after", "9")],
                Some((250, WaitReason::RetryAfterMs)),
            ),
            (
                &[("retry-after-ms", "soon"), ("retry-after", "9")],
                Some((9000, WaitReason::RetryAfter)),
            ),
            (
                &[("retry-after", "Sun, 22 Nov 2026 10:00:30 GMT")],
                Some((30_000, WaitReason::RetryAfter)),
            ),
            (
                &[("retry-after", "Sun, 22 Nov 2026 09:00:00 GMT")],
                Some((0, WaitReason::RetryAfter)),
            ),
            (&[("retry-after", "-1")], None),
            (
                &[("retry-after", "1e20")],
                Some((u64::MAX, WaitReason::RetryAfter)),
            ),
            (
                &[("retry-after-ms", "1e300")],
                Some((u64::MAX, WaitReason::RetryAfterMs)),
            ),
            (&[("retry-after", "NaN")], None),
            (&[("retry-after", "tomorrow")], None),
        ];
        for (pairs, want) in rows {
            let got = server_wait(&headers(pairs), now)
                .map(|(d, r)| (u64::try_from(d.as_millis()).unwrap_or(u64::MAX), r));
            assert_eq!(got, *want, "{pairs:?}");
        }
    }

    #[test]
    fn x_should_retry_is_read_case_insensitively() {
        assert_eq!(
            should_retry_header(&headers(&[("x-should-retry", "false")])),
            Some(false)
        );
        assert_eq!(
            should_retry_header(&headers(&[("x-should-retry", "TRUE")])),
            Some(true)
        );
        assert_eq!(
            should_retry_header(&headers(&[("x-should-retry", "maybe")])),
            None
        );
        assert_eq!(should_retry_header(&headers(&[])), None);
    }
}
