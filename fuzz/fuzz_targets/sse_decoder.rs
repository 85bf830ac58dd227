//! The SSE decoder: no panic, bounded memory, and the same events however the body is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::sse::{Decoder, Frame};

type Events = Vec<(Option<String>, Vec<u8>, u64, bool)>;

fn decode(chunks: &[&[u8]]) -> Events {
    let mut d = Decoder::with_max_event_bytes(4096);
    let mut out = Vec::new();
    let mut on = |f: Frame<'_>| match f {
        Frame::Event(e) => out.push((
            e.event_type().map(str::to_owned),
            e.data().to_vec(),
            e.offset(),
            e.is_complete(),
        )),
        Frame::Oversized { offset, size } => {
            out.push((None, size.to_le_bytes().to_vec(), offset, false))
        }
    };
    for c in chunks {
        d.feed(c, &mut on);
    }
    d.finish(&mut on);
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(&[data]);
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    assert_eq!(decode(&[a, b]), whole);
    if data.len() <= 4096 {
        let bytewise: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(decode(&bytewise), whole);
    }
});
