//! Envelope decode throughput (MB/s) and per-event overhead (ns/event) for the JSON and
//! protobuf codecs, as `cargo xtask bench` prints them. Build with `--release` for real
//! figures.
//!
//! ```text
//! cargo run --release -p courier-e2b --example bench_codec
//! ```

use std::{hint::black_box, time::Instant};

use bytes::BytesMut;
use courier_e2b::{
    codec::{Codec, EndOfStream, Envelope, EnvelopeDecoder},
    proto::process::{ProcessEvent, StartResponse, process_event as ev},
};

const EVENTS: usize = 200_000;
const READ_SIZE: usize = 16 * 1024;

fn events(payload: usize) -> Vec<StartResponse> {
    (0..EVENTS)
        .map(|i| {
            let event = if i % 50 == 0 {
                ev::Event::Keepalive(ev::KeepAlive {})
            } else {
                let data = vec![b'a' + (i % 26) as u8; payload];
                ev::Event::Data(ev::DataEvent {
                    output: Some(ev::data_event::Output::Stdout(data)),
                })
            };
            StartResponse {
                event: Some(ProcessEvent { event: Some(event) }),
            }
        })
        .collect()
}

fn wire(codec: Codec, messages: &[StartResponse]) -> bytes::Bytes {
    let mut out = BytesMut::new();
    for message in messages {
        Envelope::message(codec.encode(message)).write_to(&mut out);
    }
    Envelope::end_stream(EndOfStream::ok().to_json()).write_to(&mut out);
    out.freeze()
}

/// Decodes the whole stream as a client would (reads of READ_SIZE bytes); returns seconds.
fn decode_all(codec: Codec, wire: &[u8]) -> f64 {
    let started = Instant::now();
    let mut decoder = EnvelopeDecoder::new(16 << 20);
    let mut count = 0usize;
    for read in wire.chunks(READ_SIZE) {
        decoder.push(read);
        while let Some(envelope) = decoder.next_envelope().expect("valid framing") {
            if envelope.is_end_stream() {
                break;
            }
            let message: StartResponse = codec.decode(&envelope.payload).expect("valid message");
            black_box(message);
            count += 1;
        }
    }
    decoder.finish(true).expect("complete stream");
    assert_eq!(count, EVENTS);
    started.elapsed().as_secs_f64()
}

fn main() {
    println!(
        "{:<6} {:>8} {:>12} {:>12} {:>12}",
        "codec", "payload", "wire MB", "MB/s", "ns/event"
    );
    for payload in [16usize, 256, 4096] {
        let messages = events(payload);
        for (name, codec) in [("json", Codec::Json), ("proto", Codec::Proto)] {
            let wire = wire(codec, &messages);
            decode_all(codec, &wire); // warm up
            let runs = 3;
            let best = (0..runs)
                .map(|_| decode_all(codec, &wire))
                .fold(f64::INFINITY, f64::min);
            let mb = wire.len() as f64 / 1e6;
            println!(
                "{name:<6} {payload:>8} {mb:>12.1} {:>12.0} {:>12.0}",
                mb / best,
                best * 1e9 / EVENTS as f64
            );
        }
    }
}
