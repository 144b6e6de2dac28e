//! Fuzz the package reader on the bytes of its three files.
//!
//! Input layout: `[flags: u8][model_len: u32 LE][manifest_len: u32 LE][model][manifest][weights]`
//! (lengths are clamped to what is left). `flags & 1`: use the standard manifest instead of the
//! fuzzed one (so mutations concentrate on the model and weights); `flags & 2`: no weight file.
//! The reader must return `Ok` or a typed error, never panic; whatever it accepts must survive a
//! lower → lift round trip through the writer's proto conversion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mil::Buffer;
use mlpackage::manifest::Manifest;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn len(data: &mut &[u8]) -> usize {
    let b = take(data, 4);
    let mut w = [0u8; 4];
    w[..b.len()].copy_from_slice(b);
    u32::from_le_bytes(w) as usize
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let flags = take(&mut data, 1).first().copied().unwrap_or(0);
    let model_len = len(&mut data);
    let manifest_len = len(&mut data);
    let model = take(&mut data, model_len);
    let fuzzed_manifest = take(&mut data, manifest_len);
    let standard = Manifest::standard().to_json();
    let manifest = if flags & 1 != 0 {
        standard.as_bytes()
    } else {
        fuzzed_manifest
    };
    let weights = (flags & 2 == 0).then(|| Buffer::from_vec(data.to_vec()));
    if let Ok(pkg) = mlpackage::read_package_from_parts(manifest, model, weights) {
        // anything the reader accepts can be written again (to memory) and read back equal
        let _ = mlpackage::encode_in_memory(&pkg).map(|(m, w)| {
            let again = mlpackage::read_package_from_parts(standard.as_bytes(), &m, w)
                .expect("a re-encoded package must read");
            assert_eq!(again.program, pkg.program);
        });
    }
});
