//! Property tests for the Connect codec: message round trips in both codecs, envelope
//! framing split at any offset, and the framing errors.

use bytes::{Bytes, BytesMut};
use courier_e2b::{
    codec::{Code, Codec, ConnectError, EndOfStream, Envelope, EnvelopeDecoder, FrameError},
    proto::{
        filesystem::{EntryInfo, FileType, ListDirResponse},
        process::{ProcessConfig, ProcessEvent, StartRequest, process_event as ev},
    },
};
use proptest::prelude::*;

fn process_event() -> impl Strategy<Value = ProcessEvent> {
    let output = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(ev::data_event::Output::Stdout),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(ev::data_event::Output::Stderr),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(ev::data_event::Output::Pty),
    ];
    let event = prop_oneof![
        any::<u32>().prop_map(|pid| ev::Event::Start(ev::StartEvent { pid })),
        output.prop_map(|o| ev::Event::Data(ev::DataEvent { output: Some(o) })),
        (
            any::<i32>(),
            any::<bool>(),
            ".{0,20}",
            proptest::option::of(".{0,20}")
        )
            .prop_map(
                |(exit_code, exited, status, error)| ev::Event::End(ev::EndEvent {
                    exit_code,
                    exited,
                    status,
                    error
                })
            ),
        Just(ev::Event::Keepalive(ev::KeepAlive {})),
    ];
    event.prop_map(|e| ProcessEvent { event: Some(e) })
}

fn start_request() -> impl Strategy<Value = StartRequest> {
    (
        ".{0,16}",
        proptest::collection::vec(".{0,16}", 0..4),
        proptest::collection::hash_map("[A-Z_]{1,8}", ".{0,8}", 0..4),
        proptest::option::of(".{0,16}"),
        proptest::option::of(".{0,8}"),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(cmd, args, envs, cwd, tag, stdin)| StartRequest {
            process: Some(ProcessConfig {
                cmd,
                args,
                envs,
                cwd,
            }),
            pty: None,
            tag,
            stdin,
        })
}

fn entry() -> impl Strategy<Value = EntryInfo> {
    (
        ".{0,16}",
        0..4i32,
        any::<i64>(),
        any::<u32>(),
        proptest::option::of(".{0,16}"),
        any::<bool>(),
        (0..4_000_000_000i64, 0..1_000_000_000i32),
    )
        .prop_map(
            |(name, kind, size, mode, symlink_target, is_symlink, (seconds, nanos))| EntryInfo {
                name: name.clone(),
                r#type: FileType::try_from(kind).map_or(0, |k| k as i32),
                path: format!("/home/user/{name}"),
                size,
                mode,
                symlink_target,
                is_symlink,
                modified_time: Some(pbjson_types::Timestamp { seconds, nanos }),
                ..Default::default()
            },
        )
}

proptest! {
    #[test]
    fn process_events_round_trip_in_both_codecs(event in process_event()) {
        for codec in [Codec::Json, Codec::Proto] {
            let back: ProcessEvent = codec.decode(&codec.encode(&event)).unwrap();
            prop_assert_eq!(&back, &event);
        }
    }

    #[test]
    fn start_requests_round_trip_in_both_codecs(request in start_request()) {
        for codec in [Codec::Json, Codec::Proto] {
            let back: StartRequest = codec.decode(&codec.encode(&request)).unwrap();
            prop_assert_eq!(&back, &request);
        }
    }

    #[test]
    fn entries_round_trip_in_both_codecs(entries in proptest::collection::vec(entry(), 0..4)) {
        let message = ListDirResponse { entries };
        for codec in [Codec::Json, Codec::Proto] {
            let back: ListDirResponse = codec.decode(&codec.encode(&message)).unwrap();
            prop_assert_eq!(&back, &message);
        }
    }

    #[test]
    fn envelopes_survive_any_split_into_reads(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let wire = frame(&payloads);
        let mut offsets: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        offsets.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for offset in offsets {
            pieces.push(&wire[last..offset]);
            last = offset;
        }
        pieces.push(&wire[last..]);
        prop_assert_eq!(decode_pieces(&pieces).unwrap(), payloads);
    }
}

fn frame(payloads: &[Vec<u8>]) -> Bytes {
    let mut wire = BytesMut::new();
    for payload in payloads {
        Envelope::message(Bytes::copy_from_slice(payload)).write_to(&mut wire);
    }
    Envelope::end_stream(EndOfStream::ok().to_json()).write_to(&mut wire);
    wire.freeze()
}

/// Decodes envelopes pushed piece by piece; returns the message payloads.
fn decode_pieces(pieces: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut decoder = EnvelopeDecoder::new(1 << 20);
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(envelope) = decoder.next_envelope()? {
            if !envelope.is_end_stream() {
                out.push(envelope.payload.to_vec());
            }
        }
    }
    decoder.finish(true)?;
    Ok(out)
}

#[test]
fn every_single_split_offset_decodes_the_same() {
    let payloads = vec![
        b"{\"event\":{\"start\":{\"pid\":42}}}".to_vec(),
        vec![],
        b"xyz".to_vec(),
    ];
    let wire = frame(&payloads);
    for offset in 0..=wire.len() {
        assert_eq!(
            decode_pieces(&[&wire[..offset], &wire[offset..]]).unwrap(),
            payloads,
            "split at {offset}"
        );
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_pieces(&bytes).unwrap(), payloads);
}

#[test]
fn an_oversized_length_is_rejected_with_a_clear_error() {
    let mut decoder = EnvelopeDecoder::new(1024);
    decoder.push(&[0, 0, 0, 0x10, 0x01]);
    let err = decoder.next_envelope().unwrap_err();
    assert_eq!(
        err,
        FrameError::Oversized {
            len: 4097,
            max: 1024
        }
    );
    assert_eq!(
        err.to_string(),
        "envelope of 4097 bytes exceeds the 1024-byte message limit"
    );
}

#[test]
fn a_truncated_stream_is_an_error() {
    let wire = frame(&[b"hello".to_vec()]);
    for cut in 1..wire.len() {
        let err = decode_pieces(&[&wire[..cut]]);
        assert!(
            matches!(
                err,
                Err(FrameError::Truncated { .. }) | Err(FrameError::MissingEndOfStream)
            ),
            "cut at {cut}: {err:?}"
        );
    }
    assert!(matches!(
        decode_pieces(&[&wire[..3]]),
        Err(FrameError::Truncated { buffered: 3 })
    ));
}

#[test]
fn a_missing_end_of_stream_is_an_error() {
    let mut wire = BytesMut::new();
    Envelope::message(Bytes::from_static(b"{}")).write_to(&mut wire);
    assert_eq!(decode_pieces(&[&wire]), Err(FrameError::MissingEndOfStream));
}

#[test]
fn data_after_end_of_stream_is_an_error() {
    let mut wire = BytesMut::from(&frame(&[])[..]);
    Envelope::message(Bytes::from_static(b"{}")).write_to(&mut wire);
    assert_eq!(decode_pieces(&[&wire]), Err(FrameError::TrailingData));
}

#[test]
fn trailers_carry_errors_and_metadata() {
    let end = EndOfStream::error(ConnectError::new(
        Code::NotFound,
        "process with pid 1 not found",
    ));
    assert_eq!(EndOfStream::from_json(&end.to_json()).unwrap(), end);
    assert_eq!(EndOfStream::from_json(b"{}").unwrap(), EndOfStream::ok());
    let parsed = EndOfStream::from_json(
        br#"{"error":{"code":"unavailable","message":"m"},"metadata":{"a":["b"]}}"#,
    )
    .unwrap();
    assert_eq!(parsed.error.unwrap().code, Code::Unavailable);
    assert_eq!(parsed.metadata["a"], ["b"]);
}

#[test]
fn json_decoding_matches_protojson_details() {
    // int64 as a string, camelCase or proto names, enums as names, unknown fields ignored.
    let json = br#"{"entries":[{"name":"a","type":"FILE_TYPE_FILE","size":"10","modified_time":"2026-01-02T03:04:05Z","isSymlink":true,"new":1}]}"#;
    let list: ListDirResponse = Codec::Json.decode(json).unwrap();
    assert_eq!(list.entries[0].size, 10);
    assert_eq!(list.entries[0].r#type, FileType::File as i32);
    assert!(list.entries[0].is_symlink);
    // A set oneof member is emitted even when empty.
    let keepalive = ProcessEvent {
        event: Some(ev::Event::Keepalive(ev::KeepAlive {})),
    };
    assert_eq!(&Codec::Json.encode(&keepalive)[..], br#"{"keepalive":{}}"#);
    let end = ProcessEvent {
        event: Some(ev::Event::End(ev::EndEvent::default())),
    };
    assert_eq!(&Codec::Json.encode(&end)[..], br#"{"end":{}}"#);
}
