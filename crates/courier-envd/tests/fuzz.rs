//! Random bytes to every RPC route that cannot change the file system or start anything:
//! the answer is always a well-formed Connect response, never a panic or a hang.
//!
//! Start, Remove, Move and MakeDir are left out on purpose: these tests run as root on
//! developer machines, and random bytes can decode into a valid request.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use courier_e2b::codec::{EndOfStream, EnvelopeDecoder};
use proptest::prelude::*;

struct Route {
    path: &'static str,
    streaming: bool,
    /// Protobuf bodies too (ListDir only gets JSON: a random depth could walk the disk).
    proto: bool,
}

const ROUTES: &[Route] = &[
    Route {
        path: "/process.Process/List",
        streaming: false,
        proto: true,
    },
    Route {
        path: "/process.Process/SendInput",
        streaming: false,
        proto: true,
    },
    Route {
        path: "/process.Process/SendSignal",
        streaming: false,
        proto: true,
    },
    Route {
        path: "/process.Process/CloseStdin",
        streaming: false,
        proto: true,
    },
    Route {
        path: "/process.Process/Update",
        streaming: false,
        proto: true,
    },
    Route {
        path: "/process.Process/Connect",
        streaming: true,
        proto: true,
    },
    Route {
        path: "/process.Process/StreamInput",
        streaming: true,
        proto: true,
    },
    Route {
        path: "/filesystem.Filesystem/Stat",
        streaming: false,
        proto: true,
    },
    Route {
        path: "/filesystem.Filesystem/ListDir",
        streaming: false,
        proto: false,
    },
    Route {
        path: "/filesystem.Filesystem/WatchDir",
        streaming: true,
        proto: false,
    },
    Route {
        path: "/filesystem.Filesystem/GetWatcherEvents",
        streaming: false,
        proto: true,
    },
    Route {
        path: "/filesystem.Filesystem/RemoveWatcher",
        streaming: false,
        proto: true,
    },
];

fn check(route: &Route, reply: &Reply) -> Result<(), TestCaseError> {
    if route.streaming {
        prop_assert_eq!(reply.status, 200, "{}: {}", route.path, reply.text());
        let mut decoder = EnvelopeDecoder::new(64 << 20);
        decoder.push(&reply.body);
        let mut trailer = None;
        while let Some(envelope) = decoder
            .next_envelope()
            .map_err(|e| TestCaseError::fail(e.to_string()))?
        {
            if envelope.is_end_stream() {
                trailer = Some(envelope.payload);
            }
        }
        let trailer = trailer
            .ok_or_else(|| TestCaseError::fail(format!("{}: no end-of-stream", route.path)))?;
        EndOfStream::from_json(&trailer).map_err(|e| TestCaseError::fail(e.to_string()))?;
    } else if reply.status != 200 {
        let body: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| {
            TestCaseError::fail(format!("{}: error body not JSON: {e}", route.path))
        })?;
        prop_assert!(body["code"].is_string(), "{}: {}", route.path, body);
        prop_assert!(body["message"].is_string(), "{}: {}", route.path, body);
    }
    Ok(())
}

fn framed(streaming: bool, body: &[u8], raw: bool) -> Vec<u8> {
    if !streaming || raw {
        return body.to_vec();
    }
    courier_e2b::codec::Envelope::message(bytes::Bytes::copy_from_slice(body))
        .to_bytes()
        .to_vec()
}

#[test]
fn random_bytes_to_every_safe_route_get_connect_answers() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let envd = runtime.block_on(start());
    let addr = envd.addr;
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in proptest::collection::vec(any::<u8>(), 0..200), json in any::<bool>(), raw in any::<bool>(), index in 0..ROUTES.len())| {
        let route = &ROUTES[index];
        let json = json || !route.proto;
        let content_type = match (json, route.streaming) {
            (true, false) => "application/json",
            (false, false) => "application/proto",
            (true, true) => "application/connect+json",
            (false, true) => "application/connect+proto",
        };
        let payload = framed(route.streaming, &body, raw);
        let reply = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                request(addr, "POST", route.path, &[("content-type", content_type), ("connect-timeout-ms", "300")], payload),
            )
            .await
        });
        let reply = reply.map_err(|_| TestCaseError::fail(format!("{} hung", route.path)))?;
        check(route, &reply)?;
    });
    // JSON-shaped garbage reaches the message decoders, not just the JSON parser.
    for route in ROUTES {
        for body in [
            &b"{\"process\":{\"pid\":\"x\"}}"[..],
            b"{\"path\":7}",
            b"[]",
            b"null",
            b"{\"watcherId\":{}}",
        ] {
            let content_type = if route.streaming {
                "application/connect+json"
            } else {
                "application/json"
            };
            let payload = framed(route.streaming, body, false);
            let reply = runtime.block_on(request(
                addr,
                "POST",
                route.path,
                &[
                    ("content-type", content_type),
                    ("connect-timeout-ms", "300"),
                ],
                payload,
            ));
            check(route, &reply).unwrap();
        }
    }
    drop(envd);
}
