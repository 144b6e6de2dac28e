//! The regenerated `proto/*.proto` files must compile to exactly the descriptors coremltools 9.0
//! ships (committed as `fixtures/coreml/proto/coremltools-9.0.descriptor-set.binpb` by
//! `scripts/gen_proto.py`), ignoring `json_name` and source info.

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn strip_message(m: &mut DescriptorProto) {
    for f in &mut m.field {
        f.json_name = None;
    }
    m.nested_type.iter_mut().for_each(strip_message);
}

fn normalise(mut f: FileDescriptorProto) -> FileDescriptorProto {
    f.source_code_info = None;
    f.message_type.iter_mut().for_each(strip_message);
    // protoc omits `syntax` for proto2 and writes "proto3" otherwise; all our files are proto3.
    f
}

#[test]
fn regenerated_protos_match_shipped_descriptors() {
    let proto_dir = root().join("proto");
    let shipped_bytes =
        std::fs::read(root().join("fixtures/coreml/proto/coremltools-9.0.descriptor-set.binpb"))
            .expect("descriptor set fixture (run scripts/gen_proto.py)");
    let shipped = FileDescriptorSet::decode(shipped_bytes.as_slice()).expect("decode fixture");
    assert_eq!(
        shipped.file.len(),
        34,
        "coremltools 9.0 ships 34 proto files"
    );

    let names: Vec<String> = shipped.file.iter().map(|f| f.name().to_string()).collect();
    let compiled = protox::compile(&names, [&proto_dir]).expect("protox compiles proto/");
    let mut mismatches = Vec::new();
    for want in shipped.file {
        let got = compiled
            .file
            .iter()
            .find(|f| f.name() == want.name())
            .cloned()
            .unwrap_or_else(|| panic!("{} not compiled", want.name()));
        let (got, want) = (normalise(got), normalise(want));
        if got != want {
            mismatches.push(want.name().to_string());
            eprintln!(
                "--- {} differs\n got: {:?}\nwant: {:?}",
                want.name(),
                got,
                want
            );
        }
    }
    assert!(
        mismatches.is_empty(),
        "descriptor mismatches: {mismatches:?}"
    );
}

#[test]
fn every_proto_file_has_the_license_header() {
    for e in std::fs::read_dir(root().join("proto")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "proto") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.contains("Copyright (c) 2017-2023, Apple Inc."),
                "{}",
                p.display()
            );
            assert!(text.contains("scripts/gen_proto.py"), "{}", p.display());
            assert!(
                text.contains("option optimize_for = LITE_RUNTIME;"),
                "{}",
                p.display()
            );
        }
    }
    let license = std::fs::read_to_string(root().join("proto/LICENSE")).unwrap();
    assert!(license.contains("Copyright (c) 2017-2023, Apple Inc."));
}
