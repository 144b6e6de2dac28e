//! Every fixture's swa4 chunks emit and validate (fp16 / fp32, dense / INT4).

mod common;

use common::{fixture, weights};
use gemma4_export::emit::emit_function;
use gemma4_export::{
    ChunkPlan, Compression, FunctionKind, ModelLayout, NBits, PlanOptions, Variant,
};

#[test]
fn all_fixtures_emit_valid_programs() {
    for name in ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"] {
        let ckpt = gemma4::Checkpoint::open(fixture(name)).unwrap();
        let layout = ModelLayout::from_config(ckpt.config());
        for (fp32, compression) in [
            (true, Compression::Dense),
            (false, Compression::Dense),
            (false, Compression::int(NBits::B4)),
        ] {
            for variant in [
                Variant::Swa4,
                Variant::Merged,
                Variant::Merged2,
                Variant::Merged1,
                Variant::Lite,
            ] {
                let plan = ChunkPlan::new(
                    &layout,
                    &PlanOptions {
                        variant: variant.clone(),
                        ctx: 32,
                        fp32,
                    },
                )
                .unwrap();
                for chunk in &plan.chunks {
                    let mut w = weights(&ckpt, fp32, compression);
                    let f = emit_function(&plan, chunk, FunctionKind::Decode, &mut w)
                        .unwrap_or_else(|e| panic!("{name} {variant:?} {}: {e}", chunk.name));
                    mil::validate::validate_function("decode_q1", &f)
                        .unwrap_or_else(|e| panic!("{name} {variant:?} {}: {e}", chunk.name));
                }
            }
        }
    }
}
