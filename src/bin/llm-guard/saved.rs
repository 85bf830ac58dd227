//! A saved response, read back: the output of `curl -i` (status line, headers, blank line,
//! body), or a body alone with its status and headers given on the command line.
//!
//! Nothing here ever repeats a header's value or a line of the input in an error: a saved head
//! carries `Authorization`, `Cookie` and `api-key` values as readily as anything else.

use std::fmt;

use http::header::CONTENT_ENCODING;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One response, as judged: the last head of the input and the body after it.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// How many heads the input held: `curl -i -L` prints one per hop of a redirect chain,
    /// `curl -i` one per interim answer (`100 Continue`, a proxy's `200 Connection
    /// established`). The last one is the response.
    pub(crate) heads: usize,
}

/// Why the input cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// The input does not start with a status line, and no `--status` says it is a body.
    NotAResponse,
    /// A line where a status line belongs is not one (1-based line number).
    StatusLine(usize),
    /// A line of a head is not a header (1-based line number).
    HeaderLine(usize),
    /// The n-th `--header` (1-based) is not `name: value`.
    HeaderFlag(usize),
    /// The body is still compressed with this coding.
    Compressed(&'static str),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAResponse => f.write_str(
                "the input does not start with a status line such as `HTTP/1.1 200 OK` (as \
                 `curl -i` saves a response); for a body alone, give --status (or --stream)",
            ),
            Self::StatusLine(n) => write!(
                f,
                "line {n} is not a status line (`HTTP/<version> <three-digit code> [reason]`)"
            ),
            Self::HeaderLine(n) => write!(
                f,
                "line {n} is not a header (`name: value`, a visible-ASCII name, no control \
                 characters in the value); the head must end with a blank line"
            ),
            Self::HeaderFlag(n) => write!(
                f,
                "--header number {n} is not `name: value` (a visible-ASCII name, no control \
                 characters in the value)"
            ),
            Self::Compressed(coding) => write!(
                f,
                "the body is still {coding}-compressed: save it with `curl --compressed -i`"
            ),
        }
    }
}

/// The input's lines, each without its `\n` or `\r\n`, numbered from 1.
struct Lines<'a> {
    input: &'a [u8],
    pos: usize,
    number: usize,
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            number: 0,
        }
    }

    fn next_line(&mut self) -> Option<&'a [u8]> {
        let rest = self.input.get(self.pos..).filter(|r| !r.is_empty())?;
        let (line, used) = match memchr::memchr(b'\n', rest) {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        self.pos += used;
        self.number += 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// What follows the lines read so far.
    fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }
}

/// The status of a status line: `HTTP/1.1 200 OK`, `HTTP/2 200`, `HTTP/1.0 404 Not Found`.
fn status_line(line: &[u8]) -> Option<StatusCode> {
    let rest = line.trim_ascii().strip_prefix(b"HTTP/")?;
    let space = memchr::memchr(b' ', rest)?;
    let (version, rest) = (&rest[..space], rest[space..].trim_ascii_start());
    if version.is_empty() || !version.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return None;
    }
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
        return None;
    }
    StatusCode::from_bytes(code).ok()
}

/// Whether another head follows: its first line is a status line.
fn another_head(rest: &[u8]) -> bool {
    Lines::new(rest)
        .next_line()
        .is_some_and(|line| status_line(line).is_some())
}

/// A header line's name and value (the value trimmed of surrounding whitespace).
fn header(line: &[u8]) -> Option<(HeaderName, &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    Some((name, line[colon + 1..].trim_ascii()))
}

/// Reads `curl -i` output: one or more heads, then the body of the last one. LF and CRLF line
/// ends are both read; a head that runs to the end of the input has an empty body.
pub(crate) fn parse_raw(input: &[u8]) -> Result<Saved, Unusable> {
    let mut lines = Lines::new(input.strip_prefix(BOM).unwrap_or(input));
    let mut heads = 0;
    let (status, headers) = loop {
        let first = loop {
            match lines.next_line() {
                // Blank lines a copy from a terminal left before the head.
                Some(line) if heads == 0 && line.trim_ascii().is_empty() => {}
                Some(line) => break line,
                None => return Err(Unusable::NotAResponse),
            }
        };
        let status = match status_line(first) {
            Some(status) => status,
            None if heads == 0 && !first.trim_ascii().starts_with(b"HTTP/") => {
                return Err(Unusable::NotAResponse);
            }
            None => return Err(Unusable::StatusLine(lines.number)),
        };
        // Each header with the number of the line it ends on, to name a bad value's line.
        let mut fields: Vec<(HeaderName, Vec<u8>, usize)> = Vec::new();
        while let Some(line) = lines.next_line() {
            if line.is_empty() {
                break;
            }
            // An obsolete folded line continues the header before it.
            if let (Some(b' ' | b'\t'), Some((_, value, at))) = (line.first(), fields.last_mut()) {
                value.push(b' ');
                value.extend_from_slice(line.trim_ascii());
                *at = lines.number;
            } else {
                let (name, value) = header(line).ok_or(Unusable::HeaderLine(lines.number))?;
                fields.push((name, value.to_vec(), lines.number));
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value, at) in fields {
            let value = HeaderValue::from_bytes(&value).map_err(|_| Unusable::HeaderLine(at))?;
            headers.append(name, value);
        }
        heads += 1;
        if !another_head(lines.rest()) {
            break (status, headers);
        }
    };
    let body = lines.rest().to_vec();
    still_compressed(&headers, &body)?;
    Ok(Saved {
        status,
        headers,
        body,
        heads,
    })
}

/// Reads a body given alone, with its status and `--header 'name: value'` flags.
pub(crate) fn from_body(
    status: StatusCode,
    header_flags: &[String],
    body: Vec<u8>,
) -> Result<Saved, Unusable> {
    let mut headers = HeaderMap::new();
    for (i, flag) in header_flags.iter().enumerate() {
        let (name, value) = header(flag.as_bytes()).ok_or(Unusable::HeaderFlag(i + 1))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| Unusable::HeaderFlag(i + 1))?;
        headers.append(name, value);
    }
    still_compressed(&headers, &body)?;
    Ok(Saved {
        status,
        headers,
        body,
        heads: 0,
    })
}

/// `curl -i` without `--compressed` saves the body as it came over the wire: checking those
/// bytes would report `not_json` for a body that may be perfectly fine.
fn still_compressed(headers: &HeaderMap, body: &[u8]) -> Result<(), Unusable> {
    if body.starts_with(&[0x1f, 0x8b]) {
        return Err(Unusable::Compressed("gzip"));
    }
    if body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(Unusable::Compressed("zstd"));
    }
    // Brotli has no magic number: a `br` body that is not text is still compressed.
    let brotli = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"br"));
    if brotli && std::str::from_utf8(body).is_err() {
        return Err(Unusable::Compressed("br"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(input: &str) -> Result<Saved, Unusable> {
        parse_raw(input.as_bytes())
    }

    #[test]
    fn status_lines_of_every_version() {
        for (line, code) in [
            ("HTTP/1.1 200 OK", Some(200)),
            ("HTTP/2 200", Some(200)),
            ("HTTP/2 403 ", Some(403)),
            ("HTTP/1.0 404 Not Found", Some(404)),
            ("HTTP/3 429", Some(429)),
            ("HTTP/1.1 503 Service Unavailable\r", Some(503)),
            ("HTTP/1.1  200 OK", Some(200)),
            ("HTTP/1.1 2000 OK", None),
            ("HTTP/1.1 20 OK", None),
            ("HTTP/1.1 abc", None),
            ("HTTP/ 200", None),
            ("HTTP/1.1", None),
            ("HTTPS/1.1 200", None),
            ("http/1.1 200", None),
            ("{\"id\":1}", None),
        ] {
            assert_eq!(
                status_line(line.as_bytes()).map(|s| s.as_u16()),
                code,
                "{line:?}"
            );
        }
    }

    #[test]
    fn crlf_and_lf_heads_give_the_same_response() {
        let lf = "HTTP/1.1 200 OK\ncontent-type: application/json\nx-request-id: r1\n\n{\"a\":1}\n";
        let crlf = lf.replace('\n', "\r\n");
        for input in [lf.to_owned(), crlf] {
            let s = raw(&input).unwrap();
            assert_eq!(s.status, StatusCode::OK);
            assert_eq!(s.headers["content-type"], "application/json");
            assert_eq!(s.headers["x-request-id"], "r1");
            assert_eq!(s.heads, 1);
            // The body is the bytes after the blank line, line ends and all.
            assert!(s.body.starts_with(b"{\"a\":1}"), "{:?}", s.body);
        }
    }

    #[test]
    fn the_last_head_of_a_chain_is_judged() {
        let chain = "HTTP/1.1 301 Moved Permanently\r\nlocation: https://x/v1\r\n\r\n\
                     HTTP/1.1 100 Continue\r\n\r\n\
                     HTTP/2 403\r\ncf-ray: 8f1c2d3e4a5b6c7d-FRA\r\n\r\n<html>blocked</html>";
        let s = raw(chain).unwrap();
        assert_eq!(s.status, StatusCode::FORBIDDEN);
        assert_eq!(s.heads, 3);
        assert!(s.headers.get("location").is_none());
        assert_eq!(s.body, b"<html>blocked</html>");
    }

    #[test]
    fn repeated_and_folded_headers_are_kept() {
        let s = raw("\u{feff}\nHTTP/1.1 403 Forbidden\ncf-ray: a-CDG\ncf-ray: b-MAD\nx-long: one\n\ttwo\n\n").unwrap();
        let rays: Vec<_> = s.headers.get_all("cf-ray").iter().collect();
        assert_eq!(rays, ["a-CDG", "b-MAD"]);
        assert_eq!(s.headers["x-long"], "one two");
        assert!(s.body.is_empty());
        // A head running to the end of the input: an empty body.
        let s = raw("HTTP/1.1 204 No Content\r\nserver: x").unwrap();
        assert_eq!(s.status, StatusCode::NO_CONTENT);
        assert!(s.body.is_empty());
    }

    #[test]
    fn unusable_input_names_the_line_and_never_its_text() {
        for (input, want) in [
            ("", Unusable::NotAResponse),
            ("\n\n", Unusable::NotAResponse),
            ("{\"error\":{}}", Unusable::NotAResponse),
            ("HTTP/1.1 OK\n\n", Unusable::StatusLine(1)),
            (
                "HTTP/1.1 401 Unauthorized\nauthorization Bearer sk-secret\n\n",
                Unusable::HeaderLine(2),
            ),
            (
                "HTTP/1.1 200 OK\ncookie: a\u{1}b\n\n",
                Unusable::HeaderLine(2),
            ),
        ] {
            let got = raw(input).unwrap_err();
            assert_eq!(got, want, "{input:?}");
            let message = got.to_string();
            assert!(!message.contains("sk-secret"), "{message}");
        }
        // After a head, what is not a status line is the body, however it starts.
        let s = raw("HTTP/1.1 200 OK\n\nHTTP/1.1 2000 OK\n").unwrap();
        assert_eq!((s.heads, &s.body[..]), (1, &b"HTTP/1.1 2000 OK\n"[..]));
    }

    #[test]
    fn a_body_given_alone_takes_its_headers_from_the_flags() {
        let flags = [
            "content-type: application/json".to_owned(),
            "cf-ray:x".to_owned(),
        ];
        let s = from_body(StatusCode::BAD_REQUEST, &flags, b"{}".to_vec()).unwrap();
        assert_eq!(s.headers["content-type"], "application/json");
        assert_eq!(s.headers["cf-ray"], "x");
        assert_eq!(s.heads, 0);
        let bad = ["ok: 1".to_owned(), "api-key sk-secret".to_owned()];
        let e = from_body(StatusCode::OK, &bad, Vec::new()).unwrap_err();
        assert_eq!(e, Unusable::HeaderFlag(2));
        assert!(!e.to_string().contains("sk-secret"));
    }

    #[test]
    fn a_compressed_body_is_refused() {
        let mut gz = b"HTTP/2 200\r\ncontent-encoding: gzip\r\n\r\n".to_vec();
        gz.extend_from_slice(&[0x1f, 0x8b, 8, 0]);
        assert_eq!(parse_raw(&gz).unwrap_err(), Unusable::Compressed("gzip"));
        let br = [("content-encoding: br").to_owned()];
        assert_eq!(
            from_body(StatusCode::OK, &br, vec![0xce, 0xff, 0x01]).unwrap_err(),
            Unusable::Compressed("br")
        );
        // `curl --compressed -i` keeps the header and decodes the body.
        assert!(from_body(StatusCode::OK, &br, b"{}".to_vec()).is_ok());
    }
}
