//! Generates the envd protobuf types from `proto/` with protox (pure Rust, so no system
//! `protoc` is needed) and their protojson serde impls with pbjson.

use std::{env, path::PathBuf};

use prost::Message;

fn main() {
    let protos = [
        "proto/process/process.proto",
        "proto/filesystem/filesystem.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"]).expect("the envd .proto files compile");
    let bytes = descriptors.encode_to_vec();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mut config = prost_build::Config::new();
    config.extern_path(".google.protobuf", "::pbjson_types");
    config.compile_well_known_types();
    config
        .compile_fds(descriptors)
        .expect("prost generates the envd types");

    pbjson_build::Builder::new()
        .register_descriptors(&bytes)
        .expect("descriptors are valid")
        .out_dir(&out)
        // Like connect-go's protojson (DiscardUnknown): newer envds add fields, and the
        // official SDKs must be able to talk to older servers and vice versa.
        .ignore_unknown_fields()
        .build(&[".process", ".filesystem"])
        .expect("pbjson generates the serde impls");
}
