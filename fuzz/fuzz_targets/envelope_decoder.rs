//! Feeds arbitrary bytes, split at arbitrary points, to the envelope decoder: it must never
//! panic, must never return a payload above its limit, and must decode the same envelopes
//! whatever the split.

#![no_main]

use courier_e2b::codec::{EndOfStream, EnvelopeDecoder};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fn decode(pieces: &[&[u8]]) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut decoder = EnvelopeDecoder::new(MAX);
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        loop {
            match decoder.next_envelope() {
                Ok(Some(envelope)) => {
                    assert!(envelope.payload.len() <= MAX);
                    if envelope.is_end_stream() {
                        // Trailers come from the network too: parsing must not panic.
                        let _ = EndOfStream::from_json(&envelope.payload);
                    }
                    out.push((envelope.flags, envelope.payload.to_vec()));
                }
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    let ok = decoder.finish(true).is_ok();
    (out, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let whole = decode(&[rest]);
    let at = usize::from(split) % (rest.len() + 1);
    let split = decode(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, split, "decoding must not depend on how the bytes arrive");
});
