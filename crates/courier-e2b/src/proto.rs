//! The envd protobuf types, generated at build time from `proto/` (wire-compatible with E2B's
//! envd). Every message implements [`prost::Message`] and protojson-compatible serde, so it
//! travels in either [`Codec`](crate::codec::Codec).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `process.Process`: start, connect to, signal and feed processes.
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

/// `filesystem.Filesystem`: stat, list, move, remove and watch paths.
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}
