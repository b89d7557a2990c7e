//! Generates the envd message types and service stubs from the checked-in descriptor set.
//!
//! `proto/envd.binpb` is produced from the `.proto` files by
//! `protoc --include_imports --include_source_info --descriptor_set_out=proto/envd.binpb -I proto proto/process.proto proto/filesystem.proto`,
//! so building needs no `protoc`. Regenerate it whenever a `.proto` file changes.

fn main() {
    println!("cargo:rerun-if-changed=proto/envd.binpb");
    connectrpc_build::Config::new()
        .descriptor_set("proto/envd.binpb")
        .files(&["process.proto", "filesystem.proto"])
        .include_file("_connectrpc.rs")
        .compile()
        .expect("generating envd code from proto/envd.binpb");
}
