//! Whether a body starts like server-sent events, from its first bytes however they are split:
//! the inspect layer reads a mislabelled stream as a stream, and so does `llm-guard check`.

use super::BOM;

/// The fields a server-sent event line can start with, and a comment's colon.
const SSE_FIELDS: [&[u8]; 5] = [b"data:", b"event:", b"id:", b"retry:", b":"];

/// Tells, from a body's first bytes however they are split, whether it starts like server-sent
/// events: an optional UTF-8 BOM, optional ASCII whitespace, then a field name or a comment.
///
/// It looks at each byte once and keeps at most the few bytes of a field name: a body of
/// whitespace sent one byte at a time must cost what it costs in one piece (joining the pieces
/// again on each new one made 100,000 one-byte chunks quadratic).
#[derive(Debug)]
pub(crate) enum Sniff {
    /// At the body's start, with this many bytes of a BOM so far.
    Bom(usize),
    /// Past the BOM, in the whitespace before the first field.
    Space,
    /// The first bytes after the whitespace, until they match or miss every field name.
    Field(Vec<u8>),
}

impl Default for Sniff {
    fn default() -> Self {
        Self::Bom(0)
    }
}

impl Sniff {
    /// Feeds the next bytes: `Some(true)` once the body starts like server-sent events,
    /// `Some(false)` once it cannot, `None` while the bytes so far do not tell.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Option<bool> {
        chunk.iter().find_map(|&b| self.byte(b))
    }

    fn byte(&mut self, b: u8) -> Option<bool> {
        match self {
            Self::Bom(matched) => {
                if BOM.get(*matched) == Some(&b) {
                    *matched += 1;
                    if *matched == BOM.len() {
                        *self = Self::Space;
                    }
                    None
                } else if *matched > 0 {
                    // A BOM's first bytes, then something else: not text a field can start.
                    Some(false)
                } else {
                    *self = Self::Space;
                    self.byte(b)
                }
            }
            Self::Space if b.is_ascii_whitespace() => None,
            Self::Space => {
                *self = Self::Field(Vec::with_capacity(8));
                self.byte(b)
            }
            Self::Field(head) => {
                head.push(b);
                if SSE_FIELDS.iter().any(|f| head.starts_with(f)) {
                    Some(true)
                } else if SSE_FIELDS.iter().any(|f| f.starts_with(head)) {
                    None
                } else {
                    Some(false)
                }
            }
        }
    }
}

/// Whether a whole body (or its first bytes) starts like server-sent events: `None` while the
/// bytes do not tell yet.
pub(crate) fn starts_like_events(body: &[u8]) -> Option<bool> {
    Sniff::default().feed(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sniffing rule stated on the whole prefix at once: an optional BOM, whitespace, then a
    /// field name. A proper prefix of a BOM does not tell yet.
    fn starts_like_sse(body: &[u8]) -> Option<bool> {
        if body.len() < BOM.len() && BOM.starts_with(body) {
            return None;
        }
        let head = body.strip_prefix(BOM).unwrap_or(body).trim_ascii_start();
        if head.is_empty() {
            None
        } else if SSE_FIELDS.iter().any(|f| head.starts_with(f)) {
            Some(true)
        } else if SSE_FIELDS.iter().any(|f| f.starts_with(head)) {
            None
        } else {
            Some(false)
        }
    }

    fn sniff(pieces: &[&[u8]]) -> Option<bool> {
        let mut sniff = Sniff::default();
        pieces.iter().find_map(|p| sniff.feed(p))
    }

    #[test]
    fn sniffing_decides_the_same_whatever_the_chunking() {
        let bodies: &[&[u8]] = &[
            b"",
            b"   \r\n\t ",
            b"data: {}\n\n",
            b"  \n event: x\ndata: 1\n\n",
            b": keep-alive\n\n",
            b"id: 1\n",
            b"retry: 10\n",
            b"\xEF\xBB\xBFdata: x\n\n",
            b"\xEF\xBB\xBF  \n:c\n",
            b"\xEF\xBB",
            b"\xEF\xBBx",
            b" \xEF\xBB\xBFdata: x",
            b"dat",
            b"dat a: x",
            b"{\"id\":\"chatcmpl-1\"}",
            b"   {\"data:\": 1}",
            b"<html>",
            b"retr",
            b"retry",
        ];
        for body in bodies {
            let want = starts_like_sse(body);
            assert_eq!(sniff(&[body]), want, "{body:?} whole");
            let bytewise: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(sniff(&bytewise), want, "{body:?} byte by byte");
            for i in 0..=body.len() {
                assert_eq!(
                    sniff(&[&body[..i], &body[i..]]),
                    want,
                    "{body:?} cut at {i}"
                );
            }
        }
    }

    #[test]
    fn a_split_bom_does_not_hide_a_stream() {
        // One byte of the BOM used to decide "not a stream" before the rest arrived.
        assert_eq!(sniff(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]), Some(true));
        assert_eq!(sniff(&[b"\xEF"]), None);
    }

    #[test]
    fn whitespace_keeps_the_sniffer_waiting_without_holding_it() {
        let mut sniffer = Sniff::default();
        for _ in 0..100_000 {
            assert_eq!(sniffer.feed(b" "), None);
        }
        assert!(matches!(sniffer, Sniff::Space));
        assert_eq!(sniffer.feed(b"{"), Some(false));
    }
}
