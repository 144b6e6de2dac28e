//! The interpreter runs compiled bundles: every coremltools-written fixture package
//! (`fixtures/coreml/`: fp16, 4-bit palettized, int4 blockwise, multi-function, stateful) is
//! compiled to a `.mlmodelc` by `mlpackage::compiled`, loaded through the same `CpuBackend::load`
//! as the package, and must give bit-identical outputs (and states) for the stored inputs.

use mil_runtime::{Backend, CpuBackend, LoadOptions, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/coreml")
}

fn st_tensor(st: &SafeTensors<'_>, name: &str, want: mil::DType) -> Tensor {
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let shape = v.shape().to_vec();
    let d = v.data();
    let t = match v.dtype() {
        Dtype::F32 => Tensor::from_f32(
            &shape,
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
        .unwrap(),
        Dtype::I32 => Tensor::from_i32(
            &shape,
            d.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
        .unwrap(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    if want == mil::DType::F16 && t.dtype() == mil::DType::F32 {
        Tensor::f16_from_f32(t.shape(), &t.to_f32().unwrap()).unwrap()
    } else {
        t
    }
}

#[test]
fn compiled_fixture_bundles_run_bit_identically_to_their_packages() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "tiny_fp16",
        "tiny_pal4",
        "tiny_int4blk",
        "tiny_multi",
        "tiny_state",
    ] {
        let pkg = fixtures().join(format!("{name}.mlpackage"));
        let bundle = tmp.path().join(format!("{name}.mlmodelc"));
        mlpackage::compiled::compile_package(&pkg, &bundle, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = std::fs::read(fixtures().join(format!("{name}.io.safetensors"))).unwrap();
        let io = SafeTensors::deserialize(&bytes).unwrap();
        let mut a = CpuBackend::load(&pkg, &LoadOptions::default()).unwrap();
        let mut b = CpuBackend::load(&bundle, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name} bundle: {e}"));
        let functions = a.functions();
        assert_eq!(b.functions(), functions, "{name}");
        for f in &functions {
            let sig = a.signature(f).unwrap();
            assert_eq!(b.signature(f).unwrap(), sig, "{name}/{f}");
            let prefix = if functions.len() > 1 {
                format!("{f}.")
            } else {
                String::new()
            };
            let mut inputs = BTreeMap::new();
            for i in &sig.inputs {
                let want = i.ty.as_ref().map(|t| t.dtype).unwrap_or(mil::DType::F32);
                let key = if i.is_state {
                    format!("{prefix}state_in.{}", i.name)
                } else {
                    format!("{prefix}input.{}", i.name)
                };
                inputs.insert(i.name.clone(), st_tensor(&io, &key, want));
            }
            let (oa, ob) = (
                a.predict(f, &inputs).unwrap(),
                b.predict(f, &inputs).unwrap(),
            );
            assert!(!oa.is_empty());
            assert_eq!(oa.keys().collect::<Vec<_>>(), ob.keys().collect::<Vec<_>>());
            for (k, t) in &oa {
                let u = &ob[k];
                assert_eq!(t.shape(), u.shape(), "{name}/{f}/{k}");
                let bits = |t: &Tensor| {
                    t.to_f32()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    bits(t),
                    bits(u),
                    "{name}/{f}/{k}: bundle differs from package"
                );
            }
        }
    }
}
