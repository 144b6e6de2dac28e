//! Compile `proto/*.proto` (the Core ML specification) with protox + prost-build.
//!
//! No system `protoc` is needed. Maps are `BTreeMap` so encoding is deterministic.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest.join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&proto_dir])?;
    prost_build::Config::new()
        .btree_map(["."])
        .include_file("coreml_includes.rs")
        .compile_fds(fds)?;
    Ok(())
}
