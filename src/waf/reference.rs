//! Support references: short tokens matched by tight patterns, never free page text.
//!
//! Every reference that leaves this module has passed [`token`]: 1 to [`MAX_LEN`] bytes of ASCII
//! alphanumerics and `.` `-` `_` `:`, plus at most two trailing `=` (the base64 padding of
//! CloudFront request ids). Page patterns read from the original bytes (ids such as CloudFront's
//! are case-sensitive) at the offsets found in the lowercased copy.

use memchr::memmem;

/// The longest reference kept.
pub(crate) const MAX_LEN: usize = 128;

/// How far past a label the page extractors look for the value (tags and spaces skipped).
const FILLER_LIMIT: usize = 256;

/// How many occurrences of a label are tried before giving up on it.
const TRIES: usize = 4;

/// The shape a reference header's value must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Any [`token`].
    Token,
    /// An Akamai reference: `<digits>.<hex>.<digits>.<hex>`.
    Akamai,
    /// A Cloudflare `cf-ray`: the Ray ID and the data centre, `8f2a1b3c4d5e6f70-FRA`.
    CloudflareRay,
}

/// A reference, and where the edge answered when the reference says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) id: String,
    pub(crate) location: Option<String>,
}

impl Found {
    fn bare(id: String) -> Self {
        Self { id, location: None }
    }
}

/// A reference pattern in the page.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PageRef {
    /// 16 hex digits after `Ray ID:`, `data-ray=`, `cRay:` or `?ray=`.
    CloudflareRay,
    /// `Reference #18.<hex>.<epoch>.<hex>`, numeric entities allowed, or the edgesuite link.
    AkamaiReference,
    /// The digits after `Your support ID is:`.
    F5SupportId,
    /// `<digits>[-<digits>]` after `Incapsula incident ID:`, `incident_id=` or
    /// `The incident ID is:`.
    ImpervaIncident,
    /// The base64url id after `Request ID:` on CloudFront's page.
    CloudFrontRequestId,
    /// The code after Sucuri's `Block ID:`.
    SucuriBlockId,
}

/// A header value as a reference, if it has the shape.
pub(crate) fn from_header(value: &[u8], shape: Shape) -> Option<Found> {
    let value = value.trim_ascii();
    match shape {
        Shape::Token => token(value).map(Found::bare),
        Shape::Akamai => akamai_shape(value)
            .then(|| token(value))
            .flatten()
            .map(Found::bare),
        Shape::CloudflareRay => cloudflare_ray(value),
    }
}

/// A Cloudflare Ray ID, `<16 hex>` then optionally `-<data centre>`: the 16 digits are the
/// reference (what the block page prints and Cloudflare's support searches by), the data centre
/// its location. Anything else is not a Ray ID.
pub(crate) fn cloudflare_ray(value: &[u8]) -> Option<Found> {
    let (id, location) = match memchr::memchr(b'-', value) {
        Some(dash) => (&value[..dash], Some(&value[dash + 1..])),
        None => (value, None),
    };
    let ray = id.len() == 16 && id.iter().all(u8::is_ascii_hexdigit);
    let place = location
        .is_none_or(|l| (1..=8).contains(&l.len()) && l.iter().all(u8::is_ascii_alphanumeric));
    if !(ray && place) {
        return None;
    }
    Some(Found {
        id: token(id)?,
        location: location.and_then(token),
    })
}

/// A reference read from the page. `lower` is the ASCII-lowercased copy of `page`.
pub(crate) fn from_page(kind: PageRef, lower: &[u8], page: &[u8]) -> Option<Found> {
    page_token(kind, lower, page).map(Found::bare)
}

fn page_token(kind: PageRef, lower: &[u8], page: &[u8]) -> Option<String> {
    match kind {
        PageRef::CloudflareRay => first(
            lower,
            &["ray id:", "data-ray=", "cray:", "?ray=", "&ray="],
            |at| {
                let mut i = skip_filler(page, at);
                if matches!(page.get(i), Some(b'"' | b'\'')) {
                    i += 1;
                }
                fixed_hex(page, i, 16)
            },
        ),
        PageRef::AkamaiReference => first(
            lower,
            &[
                "reference #",
                "reference&#32;&#35;",
                "errors.edgesuite.net/",
                "errors&#46;edgesuite&#46;net&#47;",
            ],
            |at| {
                let value = read_decoded(page, at, |b| b.is_ascii_hexdigit() || b == b'.');
                let value = value.strip_suffix(b".").unwrap_or(&value);
                akamai_shape(value).then(|| token(value)).flatten()
            },
        ),
        PageRef::F5SupportId => first(lower, &["support id is:", "support id:"], |at| {
            let i = skip_filler(page, at);
            let digits = run(page, i, |b| b.is_ascii_digit());
            ((4..=32).contains(&digits.len()) && boundary(page, i + digits.len()))
                .then(|| token(digits))
                .flatten()
        }),
        PageRef::ImpervaIncident => first(
            lower,
            &["incident id:", "incident_id=", "incident id is:"],
            |at| {
                let i = skip_filler(page, at);
                let head = run(page, i, |b| b.is_ascii_digit());
                if !(1..=32).contains(&head.len()) {
                    return None;
                }
                let mut end = i + head.len();
                if page.get(end) == Some(&b'-') {
                    let tail = run(page, end + 1, |b| b.is_ascii_digit());
                    if (1..=32).contains(&tail.len()) {
                        end += 1 + tail.len();
                    }
                }
                boundary(page, end).then(|| token(&page[i..end])).flatten()
            },
        ),
        PageRef::CloudFrontRequestId => first(lower, &["request id:"], |at| {
            let i = skip_filler(page, at);
            let id = run(page, i, |b| {
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
            });
            let pad = run(page, i + id.len(), |b| b == b'=').len().min(2);
            let end = i + id.len() + pad;
            ((16..=MAX_LEN).contains(&id.len()) && boundary(page, end))
                .then(|| token(&page[i..end]))
                .flatten()
        }),
        PageRef::SucuriBlockId => first(lower, &["block id:"], |at| {
            let i = skip_filler(page, at);
            let id = run(page, i, |b| b.is_ascii_alphanumeric());
            ((2..=32).contains(&id.len()) && boundary(page, i + id.len()))
                .then(|| token(id))
                .flatten()
        }),
    }
}

/// The value as a reference, if it is a token: 1 to [`MAX_LEN`] bytes of ASCII alphanumerics and
/// `.-_:`, then at most two `=`.
pub(crate) fn token(value: &[u8]) -> Option<String> {
    let body_len = value.iter().position(|&b| b == b'=').unwrap_or(value.len());
    let (body, pad) = value.split_at(body_len);
    let ok = !body.is_empty()
        && value.len() <= MAX_LEN
        && pad.len() <= 2
        && pad.iter().all(|&b| b == b'=')
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    ok.then(|| String::from_utf8_lossy(value).into_owned())
}

/// `<1-3 digits>.<1-16 hex>.<1-12 digits>.<1-16 hex>`.
fn akamai_shape(value: &[u8]) -> bool {
    let mut parts = value.split(|&b| b == b'.');
    let mut part = |max: usize, ok: fn(&u8) -> bool| {
        parts
            .next()
            .is_some_and(|p| (1..=max).contains(&p.len()) && p.iter().all(ok))
    };
    part(3, u8::is_ascii_digit)
        && part(16, u8::is_ascii_hexdigit)
        && part(12, u8::is_ascii_digit)
        && part(16, u8::is_ascii_hexdigit)
        && parts.next().is_none()
}

/// The first value `read` finds after an occurrence of one of the labels, labels in order.
fn first(lower: &[u8], labels: &[&str], read: impl Fn(usize) -> Option<String>) -> Option<String> {
    labels.iter().find_map(|label| {
        memmem::find_iter(lower, label.as_bytes())
            .take(TRIES)
            .find_map(|at| read(at + label.len()))
    })
}

/// Skips spaces, `&nbsp;`/`&#32;` and whole tags (`Ray ID: <strong class="…">`), within
/// [`FILLER_LIMIT`] bytes.
fn skip_filler(page: &[u8], mut i: usize) -> usize {
    let limit = page.len().min(i.saturating_add(FILLER_LIMIT));
    while i < limit {
        let rest = &page[i..limit];
        match rest[0] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'<' => match memchr::memchr(b'>', rest) {
                Some(end) => i += end + 1,
                None => break,
            },
            b'&' if rest.len() >= 6 && rest[..6].eq_ignore_ascii_case(b"&nbsp;") => i += 6,
            b'&' if rest.starts_with(b"&#32;") => i += 5,
            _ => break,
        }
    }
    i
}

/// The longest run of bytes from `i` that pass `ok`, capped just past [`MAX_LEN`] (so an
/// over-long run fails the length checks instead of being cut to size).
fn run(page: &[u8], i: usize, ok: impl Fn(u8) -> bool) -> &[u8] {
    let rest = page.get(i..).unwrap_or_default();
    let len = rest
        .iter()
        .take(MAX_LEN + 1)
        .take_while(|&&b| ok(b))
        .count();
    &rest[..len]
}

/// Exactly `n` hex digits at `i`, not followed by another alphanumeric.
fn fixed_hex(page: &[u8], i: usize, n: usize) -> Option<String> {
    let hex = run(page, i, |b| b.is_ascii_hexdigit());
    (hex.len() == n && boundary(page, i + n))
        .then(|| token(hex))
        .flatten()
}

/// True when the byte at `i` (if any) does not continue a token.
fn boundary(page: &[u8], i: usize) -> bool {
    page.get(i)
        .is_none_or(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=')))
}

/// Bytes from `i` that pass `ok`, decoding numeric character references (`&#46;`, `&#x2e;`) on
/// the way; stops at the first byte or reference that does not pass, or past [`MAX_LEN`].
fn read_decoded(page: &[u8], mut i: usize, ok: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() <= MAX_LEN {
        let Some(&b) = page.get(i) else { break };
        let (byte, width) = if b == b'&' {
            match numeric_ref(&page[i..]) {
                Some(decoded) => decoded,
                None => break,
            }
        } else {
            (b, 1)
        };
        if !ok(byte) {
            break;
        }
        out.push(byte);
        i += width;
    }
    out
}

/// `&#NN;` or `&#xHH;` at the start of `s`, when it stands for an ASCII byte: the byte and the
/// reference's width.
fn numeric_ref(s: &[u8]) -> Option<(u8, usize)> {
    let rest = s.strip_prefix(b"&#")?;
    let (hex, digits) = match rest.first()? {
        b'x' | b'X' => (true, &rest[1..]),
        _ => (false, rest),
    };
    let end = digits.iter().take(6).position(|&b| b == b';')?;
    let text = std::str::from_utf8(&digits[..end]).ok()?;
    let value = u32::from_str_radix(text, if hex { 16 } else { 10 }).ok()?;
    let byte = u8::try_from(value).ok().filter(u8::is_ascii)?;
    Some((byte, 2 + usize::from(hex) + end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(kind: PageRef, text: &str) -> Option<String> {
        let lower = text.to_ascii_lowercase();
        from_page(kind, lower.as_bytes(), text.as_bytes()).map(|found| found.id)
    }

    fn header(value: &str, shape: Shape) -> Option<(String, Option<String>)> {
        from_header(value.as_bytes(), shape).map(|found| (found.id, found.location))
    }

    #[test]
    fn cf_ray_is_the_ray_id_and_its_data_centre() {
        let ray = |id: &str, at: Option<&str>| Some((id.to_owned(), at.map(str::to_owned)));
        assert_eq!(
            header(" 8f2a1b3c4d5e6f70-FRA ", Shape::CloudflareRay),
            ray("8f2a1b3c4d5e6f70", Some("FRA"))
        );
        assert_eq!(
            header("8f2a1b3c4d5e6f70", Shape::CloudflareRay),
            ray("8f2a1b3c4d5e6f70", None)
        );
        // A recorded header with the next response's status line glued on, a short or long
        // id, a bad data centre: not a Ray ID.
        for bad in [
            "891a90b5893b1ba7-MAD  HTTP/2 403",
            "8f2a1b3c4d5e6f7-FRA",
            "8f2a1b3c4d5e6f7000-FRA",
            "8f2a1b3c4d5e6f7g-FRA",
            "8f2a1b3c4d5e6f70-",
            "8f2a1b3c4d5e6f70-FRA-1",
            "8f2a1b3c4d5e6f70-ABCDEFGHI",
            "not a ray <b>",
        ] {
            assert_eq!(header(bad, Shape::CloudflareRay), None, "{bad}");
        }
    }

    #[test]
    fn token_accepts_ids_and_refuses_free_text() {
        assert_eq!(
            token(b"8f1c2d3e4a5b6c7d-FRA").as_deref(),
            Some("8f1c2d3e4a5b6c7d-FRA")
        );
        assert_eq!(token(b"abcDEF_12-x==").as_deref(), Some("abcDEF_12-x=="));
        assert_eq!(
            token(b"fra1::iad1::x7k2p").as_deref(),
            Some("fra1::iad1::x7k2p")
        );
        for bad in [
            &b""[..],
            b"has space",
            b"<script>",
            b"a=b",
            b"abc===",
            b"=",
            b"caf\xc3\xa9",
            b"a/b",
        ] {
            assert_eq!(token(bad), None, "{bad:?}");
        }
        assert!(token(&[b'a'; MAX_LEN]).is_some());
        assert_eq!(token(&[b'a'; MAX_LEN + 1]), None);
    }

    #[test]
    fn cloudflare_ray_in_each_page_form() {
        let ray = Some("6a78c4578ea0435d".to_owned());
        for text in [
            "<span>Cloudflare Ray ID: <strong class=\"font-semibold\">6a78c4578ea0435d</strong></span>",
            "Ray ID:&nbsp;6a78c4578ea0435d",
            "<div data-ray=\"6a78c4578ea0435d\"></div>",
            "window._cf_chl_opt={cRay: '6a78c4578ea0435d',cHash: 'x'}",
            "cRay: \"6a78c4578ea0435d\",",
            "src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/managed/v1?ray=6a78c4578ea0435d\"",
        ] {
            assert_eq!(page(PageRef::CloudflareRay, text), ray, "{text}");
        }
        // Too short, too long, or not hex: no reference.
        for text in [
            "Ray ID: 6a78c4578ea043",
            "Ray ID: 6a78c4578ea0435d00",
            "Ray ID: 6a78c4578ea0435z",
            "Ray ID: see below",
        ] {
            assert_eq!(page(PageRef::CloudflareRay, text), None, "{text}");
        }
    }

    #[test]
    fn akamai_reference_plain_and_entity_encoded() {
        let want = Some("18.2d351ab8.1557333295.a4e16ab".to_owned());
        assert_eq!(
            page(
                PageRef::AkamaiReference,
                "<P>\nReference #18.2d351ab8.1557333295.a4e16ab\n</BODY>"
            ),
            want
        );
        assert_eq!(
            page(
                PageRef::AkamaiReference,
                "Reference&#32;&#35;18&#46;2d351ab8&#46;1557333295&#46;a4e16ab\n<P>"
            ),
            want
        );
        assert_eq!(
            page(
                PageRef::AkamaiReference,
                "https&#58;&#47;&#47;errors&#46;edgesuite&#46;net&#47;18&#46;2d351ab8&#46;1557333295&#46;a4e16ab</P>"
            ),
            want
        );
        assert_eq!(
            page(PageRef::AkamaiReference, "Reference #18.2d351ab8."),
            None
        );
        assert_eq!(
            header(" 18.2d351ab8.1557333295.a4e16ab ", Shape::Akamai).map(|(id, _)| id),
            want
        );
        assert_eq!(header("not-akamai", Shape::Akamai), None);
    }

    #[test]
    fn f5_imperva_cloudfront_sucuri_references() {
        assert_eq!(
            page(
                PageRef::F5SupportId,
                "Please consult with your administrator.<br><br>Your support ID is: 14896772512134623445<br><br>"
            )
            .as_deref(),
            Some("14896772512134623445")
        );
        assert_eq!(
            page(PageRef::F5SupportId, "Your support ID is: <b>12345678</b>").as_deref(),
            Some("12345678")
        );
        assert_eq!(
            page(PageRef::F5SupportId, "Your support ID is: pending"),
            None
        );
        assert_eq!(
            page(
                PageRef::ImpervaIncident,
                "Request unsuccessful. Incapsula incident ID: 877000140132418447-258394577463148676</iframe>"
            )
            .as_deref(),
            Some("877000140132418447-258394577463148676")
        );
        assert_eq!(
            page(
                PageRef::ImpervaIncident,
                "src=\"/_Incapsula_Resource?CWUDNSAI=9&incident_id=1234000120034567-123456789012345678&edet=15\""
            )
            .as_deref(),
            Some("1234000120034567-123456789012345678")
        );
        assert_eq!(
            page(PageRef::ImpervaIncident, "The incident ID is: N/A"),
            None
        );
        assert_eq!(
            page(
                PageRef::CloudFrontRequestId,
                "Generated by cloudfront (CloudFront)\nRequest ID: j3yb1rFcQJ7qTh-b1wXfBrXT3K1pRxz6HZvn1vPGUHHy7-8kj8ZwdA==\n</PRE>"
            )
            .as_deref(),
            Some("j3yb1rFcQJ7qTh-b1wXfBrXT3K1pRxz6HZvn1vPGUHHy7-8kj8ZwdA==")
        );
        assert_eq!(
            page(
                PageRef::SucuriBlockId,
                "<tr><td>Block ID:</td><td><span>BNP005</span></td></tr>"
            )
            .as_deref(),
            Some("BNP005")
        );
    }

    #[test]
    fn over_long_values_are_refused_not_cut() {
        let long = format!("Request ID: {}", "A".repeat(MAX_LEN + 10));
        assert_eq!(page(PageRef::CloudFrontRequestId, &long), None);
        let digits = format!("Your support ID is: {}", "1".repeat(40));
        assert_eq!(page(PageRef::F5SupportId, &digits), None);
    }

    #[test]
    fn numeric_references_decode_ascii_only() {
        assert_eq!(numeric_ref(b"&#46;x"), Some((b'.', 5)));
        assert_eq!(numeric_ref(b"&#x2E;"), Some((b'.', 6)));
        assert_eq!(numeric_ref(b"&#233;"), None);
        assert_eq!(numeric_ref(b"&#46"), None);
        assert_eq!(numeric_ref(b"&amp;"), None);
    }
}
