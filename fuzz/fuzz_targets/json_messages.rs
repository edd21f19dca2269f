//! Decodes arbitrary bytes as every streamed/unary message type in both codecs: errors are
//! fine, panics are not; whatever decodes must re-encode and decode to the same value.

#![no_main]

use courier_e2b::{
    codec::{Codec, ConnectError, RpcMessage},
    proto::{filesystem, process},
};
use libfuzzer_sys::fuzz_target;

fn check<M: RpcMessage + PartialEq + std::fmt::Debug>(data: &[u8]) {
    for codec in [Codec::Json, Codec::Proto] {
        if let Ok(message) = codec.decode::<M>(data) {
            let again: M = codec.decode(&codec.encode(&message)).expect("re-encoded message decodes");
            assert_eq!(again, message);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<process::StartResponse>(data);
    check::<process::StartRequest>(data);
    check::<process::ListResponse>(data);
    check::<filesystem::ListDirResponse>(data);
    check::<filesystem::WatchDirResponse>(data);
    let _ = ConnectError::from_response(500, data);
});
