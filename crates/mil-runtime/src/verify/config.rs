//! `model_config.json` against the manifest's build options, against itself and against
//! `hf_model/config.json`; and the contract derived from it ([`Derived`]: the I/O contract and the
//! chunk specs every package is checked against).

use super::Findings;
use chunkset::model_config::{ARCHITECTURE, COMPUTE_UNITS, PREFILL_SLIDING_MASK, ROPE_HF};
use chunkset::names::HF_MODEL_DIR;
use chunkset::{
    BuildSpec, ChunkRange, ChunkSetManifest, ChunkSpec, ContractError, FunctionKind, IoContract,
    IoDType, KindIo, KvSlot, LayerKind, LayerStack, MODEL_CONFIG_NAME, ModelConfig, Precision,
    Taps, VERIFY_FN, Variant,
};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

const MC: &str = MODEL_CONFIG_NAME;

/// The field and problem of a contract error reading `model_config.json` (its path left out: the
/// finding names the file).
pub(super) fn describe(e: &ContractError) -> (Option<String>, String) {
    match e {
        ContractError::MissingField { field, .. } => (Some(field.clone()), "missing".into()),
        ContractError::UnknownField { field, .. } => (
            Some(field.clone()),
            "unknown field (not in the contract)".into(),
        ),
        ContractError::InvalidField { field, msg, .. } => (Some(field.clone()), msg.clone()),
        ContractError::Syntax { msg, .. } => (None, format!("not valid JSON: {msg}")),
        ContractError::Io { source, .. } => (None, format!("cannot be read: {source}")),
        other => (None, other.to_string()),
    }
}

/// `chunk1 [0, 3), chunk2 [3, 5)`.
fn fmt_ranges(v: &[ChunkRange]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|c| format!("{} [{}, {})", c.name, c.layers[0], c.layers[1]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a ≈ b` to 1e-9 relative.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// The layer kinds present in `layer_types`.
fn present(cfg: &ModelConfig, kind: LayerKind) -> bool {
    cfg.layer_types.contains(&kind)
}

/// The first KV-shared layer `F = L − num_kv_shared_layers` (layers before it own their KV).
fn first_shared(cfg: &ModelConfig) -> usize {
    cfg.num_layers.saturating_sub(cfg.num_kv_shared_layers)
}

/// The layer facts `cfg` describes (the contract's, [`LayerStack`]: what the writer's plan derives
/// its chunk roles from), over the layers both `num_layers` and `layer_types` cover (the checks
/// report a disagreement between them).
fn stack(cfg: &ModelConfig) -> LayerStack {
    let n = cfg.num_layers.min(cfg.layer_types.len());
    LayerStack::with_shared_suffix(
        cfg.layer_types[..n].to_vec(),
        first_shared(cfg),
        cfg.per_layer_dim > 0,
    )
}

/// The producer of a kind: its last KV-owning layer.
fn producer(cfg: &ModelConfig, kind: LayerKind) -> Option<usize> {
    stack(cfg).producer(kind)
}

/// The KV slots of the KV-owning layers in `range`.
fn kv_slots(cfg: &ModelConfig, range: &Range<usize>) -> Vec<KvSlot> {
    stack(cfg).kv_slots(range)
}

/// The chunk specs of consecutive layer ranges (the roles every chunk's I/O follows from).
fn specs(cfg: &ModelConfig, cuts: &[(String, Range<usize>)]) -> Vec<ChunkSpec> {
    stack(cfg).chunk_specs(cuts)
}

/// Check that `ranges` cover `0..l` in order, each non-empty; findings on `field`.
fn check_cover(ranges: &[(String, [usize; 2])], l: usize, field: &str, f: &mut Findings) -> bool {
    if ranges.is_empty() {
        f.unusable(
            MC,
            Some(field),
            "is empty: a set has at least one chunk".into(),
        );
        return false;
    }
    let mut at = 0;
    for (i, (name, [s, e])) in ranges.iter().enumerate() {
        if *s != at || e <= s || *e > l {
            f.mismatch(
                MC,
                Some(&format!("{field}[{i}].layers")),
                format!(
                    "{name} holds layers [{s}, {e}): the chunks must cover layers 0..{l} in order \
                     (this one should start at {at})"
                ),
            );
            return false;
        }
        at = *e;
    }
    if at != l {
        f.mismatch(
            MC,
            Some(field),
            format!("the chunks end at layer {at}, the model has {l} layers"),
        );
        return false;
    }
    true
}

/// Every check of `model_config.json` that needs no package (see the module doc).
pub(super) fn check(
    dir: &Path,
    cfg: &ModelConfig,
    manifest: &ChunkSetManifest,
    present_files: &BTreeSet<String>,
    f: &mut Findings,
) {
    let spec = &manifest.build.spec;
    let by_manifest = "the manifest's build says";
    // against the build options
    f.differ(
        MC,
        "variant",
        cfg.variant.as_str(),
        spec.variant.name(),
        by_manifest,
    );
    f.differ(
        MC,
        "context_length",
        cfg.context_length,
        spec.ctx,
        by_manifest,
    );
    f.differ(MC, "precision", cfg.precision, spec.precision, by_manifest);
    f.differ(
        MC,
        "quantization",
        cfg.quantization.clone(),
        spec.quantization(),
        by_manifest,
    );
    f.differ(
        MC,
        "model_name",
        cfg.model_name.clone(),
        spec.model_name(),
        by_manifest,
    );
    let fns = &spec.functions;
    let by_functions = "the manifest's build functions say";
    f.differ(MC, "verify_k", cfg.verify_k, fns.verify, by_functions);
    f.differ(
        MC,
        "verify_function",
        cfg.verify_function.as_deref(),
        fns.verify.map(|_| VERIFY_FN),
        by_functions,
    );
    f.differ(
        MC,
        "prefill_length",
        cfg.prefill_length,
        fns.prefill,
        by_functions,
    );
    f.differ(
        MC,
        "prefill_sliding_mask",
        cfg.prefill_sliding_mask.as_deref(),
        fns.prefill.map(|_| PREFILL_SLIDING_MASK),
        by_functions,
    );
    let ranges = |v: &[chunkset::ChunkEntry]| -> Vec<ChunkRange> {
        v.iter()
            .map(|c| ChunkRange {
                name: c.name.clone(),
                layers: c.layers,
            })
            .collect()
    };
    f.differ_text(
        MC,
        "chunks",
        fmt_ranges(&ranges(&cfg.chunks)),
        fmt_ranges(&manifest.build.chunks),
        "the manifest's build chunks are",
    );
    let cfg_prefill: Option<Vec<ChunkRange>> = cfg.prefill_chunks.as_ref().map(|v| {
        v.iter()
            .map(|c| ChunkRange {
                name: c.name.clone(),
                layers: c.layers,
            })
            .collect()
    });
    f.differ_text(
        MC,
        "prefill_chunks",
        fmt_ranges(cfg_prefill.as_deref().unwrap_or_default()),
        fmt_ranges(manifest.build.prefill_chunks.as_deref().unwrap_or_default()),
        "the manifest's build prefill chunks are",
    );
    f.differ_text(
        MC,
        "chunks",
        cfg.chunks
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        spec.variant.chunk_names().join(", "),
        &format!("a {} set's chunks are", spec.variant.name()),
    );

    // against itself
    f.differ(
        MC,
        "architecture",
        cfg.architecture.as_str(),
        ARCHITECTURE,
        "the contract says",
    );
    f.differ(
        MC,
        "compute_units",
        cfg.compute_units.as_str(),
        COMPUTE_UNITS,
        "the contract says",
    );
    f.differ(
        MC,
        "tokenizer_repo",
        cfg.tokenizer_repo.as_str(),
        HF_MODEL_DIR,
        "the contract says",
    );
    f.differ(MC, "rope", cfg.rope.as_str(), ROPE_HF, "the contract says");
    let l = cfg.num_layers;
    f.differ(
        MC,
        "num_hidden_layers",
        cfg.num_hidden_layers,
        l,
        "num_layers is",
    );
    f.differ(
        MC,
        "layer_types",
        cfg.layer_types.len(),
        l,
        "entries; num_layers is",
    );
    for (field, v) in [
        ("num_layers", l),
        ("hidden_size", cfg.hidden_size),
        ("vocab_size", cfg.vocab_size),
        ("num_attention_heads", cfg.num_attention_heads),
        ("context_length", cfg.context_length),
        ("sliding_window", cfg.sliding_window),
    ] {
        if v == 0 {
            f.mismatch(MC, Some(field), "is 0".into());
        }
    }
    if cfg.num_kv_shared_layers >= l.max(1) {
        f.mismatch(
            MC,
            Some("num_kv_shared_layers"),
            format!("is {}, the model has {l} layers", cfg.num_kv_shared_layers),
        );
    }
    for (field, dim, kind) in [
        ("head_dim", cfg.head_dim, LayerKind::Sliding),
        ("global_head_dim", cfg.global_head_dim, LayerKind::Full),
    ] {
        if dim.is_some() != present(cfg, kind) {
            f.mismatch(
                MC,
                Some(field),
                format!(
                    "is {dim:?}, but layer_types {} {} layers",
                    if present(cfg, kind) { "has" } else { "has no" },
                    kind.label()
                ),
            );
        }
        if dim == Some(0) {
            f.mismatch(MC, Some(field), "is 0".into());
        }
    }
    if cfg.sliding_window > cfg.context_length {
        f.mismatch(
            MC,
            Some("sliding_window"),
            format!(
                "is {}, more than context_length {} (a window is capped at the context)",
                cfg.sliding_window, cfg.context_length
            ),
        );
    }
    let (h, p) = (cfg.hidden_size as f64, cfg.per_layer_dim as f64);
    for (field, got, want) in [
        ("embed_scale", cfg.embed_scale, h.sqrt()),
        ("per_layer_embed_scale", cfg.per_layer_embed_scale, p.sqrt()),
        (
            "per_layer_model_projection_scale",
            cfg.per_layer_model_projection_scale,
            1.0 / h.sqrt(),
        ),
        (
            "per_layer_input_scale",
            cfg.per_layer_input_scale,
            std::f64::consts::FRAC_1_SQRT_2,
        ),
    ] {
        if !close(got, want) {
            f.mismatch(
                MC,
                Some(field),
                format!("is {got}, the contract says {want}"),
            );
        }
    }
    f.differ(
        MC,
        "eos_token_id",
        cfg.eos_token_id,
        cfg.eos_token_ids.first().copied(),
        "the first of eos_token_ids is",
    );
    let rope_rows = cfg.context_length.saturating_mul(2).max(4096);
    f.differ(
        MC,
        "rope_rows",
        cfg.rope_rows,
        rope_rows,
        "max(2 × context_length, 4096) is",
    );
    if cfg.variant == spec.variant.name() {
        let (sliding, full) = spec
            .variant
            .cache_policies(cfg.context_length, cfg.sliding_window);
        let by_variant = format!("a {} set keeps", spec.variant.name());
        f.differ(
            MC,
            "sliding_cache_policy",
            cfg.sliding_cache_policy,
            sliding.kind(),
            &by_variant,
        );
        f.differ(
            MC,
            "sliding_cache_length",
            cfg.sliding_cache_length,
            sliding.len(),
            &by_variant,
        );
        f.differ(
            MC,
            "full_cache_policy",
            cfg.full_cache_policy,
            full.kind(),
            &by_variant,
        );
        f.differ(
            MC,
            "full_cache_length",
            cfg.full_cache_length,
            full.len(),
            &by_variant,
        );
    }
    let decode: Vec<(String, [usize; 2])> = cfg
        .chunks
        .iter()
        .map(|c| (c.name.clone(), c.layers))
        .collect();
    if check_cover(&decode, l, "chunks", f) && cfg.layer_types.len() == l {
        for (i, c) in cfg.chunks.iter().enumerate() {
            let want = kv_slots(cfg, &(c.layers[0]..c.layers[1]));
            f.differ(
                MC,
                &format!("chunks[{i}].kv_slots"),
                &c.kv_slots,
                &want,
                "its KV-owning layers give",
            );
        }
    }
    if let Some(pc) = &cfg.prefill_chunks {
        let cuts: Vec<(String, [usize; 2])> =
            pc.iter().map(|c| (c.name.clone(), c.layers)).collect();
        let names: Vec<String> = Variant::Swa4
            .chunk_names()
            .iter()
            .map(|n| format!("prefill_{n}"))
            .collect();
        f.differ(
            MC,
            "prefill_chunks",
            pc.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            names,
            "prefill chunks are",
        );
        if check_cover(&cuts, l, "prefill_chunks", f) && cfg.layer_types.len() == l {
            let cuts: Vec<(String, Range<usize>)> = pc
                .iter()
                .map(|c| (c.name.clone(), c.layers[0]..c.layers[1]))
                .collect();
            let io = io_contract(cfg, spec.taps);
            for (i, (c, s)) in pc.iter().zip(specs(cfg, &cuts)).enumerate() {
                f.differ(
                    MC,
                    &format!("prefill_chunks[{i}].kv"),
                    c.kv.clone(),
                    io.prefill_kv_outputs(&s),
                    "its KV-owning layers give",
                );
            }
        }
    }
    if cfg.layer_types.len() == l {
        let facts = &manifest.build;
        f.differ(
            MC,
            "layer_types",
            (
                producer(cfg, LayerKind::Sliding),
                producer(cfg, LayerKind::Full),
            ),
            (facts.sliding_producer, facts.full_producer),
            "give KV producers (sliding, full); the manifest's build says",
        );
    }
    check_hf_config(dir, cfg, manifest, present_files, f);
}

/// The I/O contract of the set `cfg` describes, with the optional outputs `taps` its build recorded.
pub(super) fn io_contract(cfg: &ModelConfig, taps: Taps) -> IoContract {
    let kind = |k: LayerKind| {
        let here = present(cfg, k);
        let head = match k {
            LayerKind::Sliding => cfg.head_dim,
            LayerKind::Full => cfg.global_head_dim,
        };
        KindIo {
            head_dim: if here { head.unwrap_or(0) } else { 0 },
            kv_heads: if here {
                cfg.num_key_value_heads.unwrap_or(1)
            } else {
                1
            },
            cache: cfg.cache(k),
        }
    };
    let (sliding, full) = (kind(LayerKind::Sliding), kind(LayerKind::Full));
    IoContract {
        hidden: cfg.hidden_size,
        ple_total: cfg.per_layer_dim.saturating_mul(cfg.num_layers),
        ctx: cfg.context_length,
        float: match cfg.precision {
            Precision::Fp16 => IoDType::Float16,
            Precision::Fp32 => IoDType::Float32,
        },
        slot_width: sliding.head_dim.max(full.head_dim),
        sliding,
        full,
        sliding_producer: producer(cfg, LayerKind::Sliding),
        full_producer: producer(cfg, LayerKind::Full),
        vocab: cfg.vocab_size,
        num_layers: cfg.num_layers,
        taps,
    }
}

/// What every package is checked against.
pub(super) struct Derived {
    pub io: IoContract,
    /// Decode chunks and the functions of their packages (default first).
    pub chunks: Vec<ChunkSpec>,
    pub functions: Vec<FunctionKind>,
    /// Prefill chunks and their `N`.
    pub prefill: Vec<ChunkSpec>,
    pub prefill_n: Option<usize>,
}

/// The contract of the set, when the config's layout is sound enough to derive one (the checks of
/// [`check`] report why not).
pub(super) fn derive(cfg: &ModelConfig, spec: &BuildSpec, f: &mut Findings) -> Option<Derived> {
    let l = cfg.num_layers;
    let sound = |v: &[(String, [usize; 2])]| {
        let mut at = 0;
        v.iter().all(|(_, [s, e])| {
            let ok = *s == at && s < e && *e <= l;
            at = *e;
            ok
        }) && at == l
            && !v.is_empty()
    };
    let decode: Vec<(String, [usize; 2])> = cfg
        .chunks
        .iter()
        .map(|c| (c.name.clone(), c.layers))
        .collect();
    if l == 0 || cfg.layer_types.len() != l || !sound(&decode) {
        return None;
    }
    let cuts = |v: &[(String, [usize; 2])]| -> Vec<(String, Range<usize>)> {
        v.iter().map(|(n, [s, e])| (n.clone(), *s..*e)).collect()
    };
    let chunks = specs(cfg, &cuts(&decode));
    let prefill_cuts: Vec<(String, [usize; 2])> = cfg
        .prefill_chunks()
        .iter()
        .map(|c| (c.name.clone(), c.layers))
        .collect();
    let prefill = if prefill_cuts.is_empty() || sound(&prefill_cuts) {
        specs(cfg, &cuts(&prefill_cuts))
    } else {
        Vec::new()
    };
    let variant = Variant::parse(&cfg.variant, None, None).ok();
    if variant.as_ref().map(Variant::name) != Some(spec.variant.name()) {
        // functions follow the variant: without an agreed one they cannot be derived
        f.mismatch(
            MC,
            Some("variant"),
            "the packages' functions cannot be checked without the set's variant".into(),
        );
        return None;
    }
    Some(Derived {
        io: io_contract(cfg, spec.taps),
        chunks,
        functions: spec.functions.chunk_functions(&spec.variant),
        prefill,
        prefill_n: cfg.prefill_length,
    })
}

/// `hf_model/config.json`: the checkpoint's config recorded in the manifest, spelling the facts of
/// `model_config.json` the same way.
fn check_hf_config(
    dir: &Path,
    cfg: &ModelConfig,
    manifest: &ChunkSetManifest,
    present_files: &BTreeSet<String>,
    f: &mut Findings,
) {
    let rel = format!("{HF_MODEL_DIR}/config.json");
    if !present_files.contains(&rel) {
        if !manifest.files.iter().any(|e| e.path == rel) {
            f.mismatch(
                &rel,
                None,
                "missing: a set carries the checkpoint's config (and tokenizer) in hf_model/"
                    .into(),
            );
        }
        return;
    }
    let path = dir.join(&rel);
    if let Some(rec) = manifest
        .build
        .model_files
        .iter()
        .find(|e| e.path == "config.json")
        && let Ok((_, sha)) = chunkset::sha256_file(&path)
        && sha != rec.sha256
    {
        f.mismatch(
            &rel,
            Some("sha256"),
            format!(
                "is {sha}, not the checkpoint's config.json recorded in the manifest ({})",
                rec.sha256
            ),
        );
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            f.unusable(&rel, None, format!("cannot be read: {e}"));
            return;
        }
    };
    let v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            f.mismatch(&rel, None, format!("not valid JSON: {e}"));
            return;
        }
    };
    let (text_cfg, prefix) = match v.get("text_config") {
        Some(t @ serde_json::Value::Object(_)) => (t, "text_config."),
        _ => (&v, ""),
    };
    let field = |k: &str| format!("{prefix}{k}");
    let mismatch = |f: &mut Findings, k: &str, got: String, want: String| {
        f.mismatch(&rel, Some(&field(k)), format!("is {got}, {MC} says {want}"));
    };
    for (k, want) in [
        ("hidden_size", Some(cfg.hidden_size)),
        ("num_hidden_layers", Some(cfg.num_layers)),
        ("vocab_size", Some(cfg.vocab_size)),
        (
            "vocab_size_per_layer_input",
            Some(cfg.vocab_size_per_layer_input),
        ),
        ("hidden_size_per_layer_input", Some(cfg.per_layer_dim)),
        ("num_attention_heads", Some(cfg.num_attention_heads)),
        ("num_key_value_heads", cfg.num_key_value_heads),
        ("num_kv_shared_layers", Some(cfg.num_kv_shared_layers)),
    ] {
        let (Some(got), Some(want)) = (text_cfg.get(k).and_then(|x| x.as_u64()), want) else {
            continue;
        };
        if got != want as u64 {
            mismatch(f, k, got.to_string(), want.to_string());
        }
    }
    if let Some(w) = text_cfg.get("sliding_window").and_then(|x| x.as_u64()) {
        // the window is capped at the context
        let capped = (w as usize).min(cfg.context_length.max(1));
        if capped != cfg.sliding_window {
            mismatch(
                f,
                "sliding_window",
                format!("{w} (capped at the context: {capped})"),
                cfg.sliding_window.to_string(),
            );
        }
    }
    if let Some(types) = text_cfg.get("layer_types").and_then(|x| x.as_array()) {
        let got: Vec<&str> = types.iter().filter_map(|t| t.as_str()).collect();
        let want: Vec<&str> = cfg.layer_types.iter().map(|k| k.attention_type()).collect();
        if got != want {
            mismatch(f, "layer_types", format!("{got:?}"), format!("{want:?}"));
        }
    }
    if let Some(x) = text_cfg.get("final_logit_softcapping") {
        let got = x.as_f64();
        if got.is_some() != cfg.final_logit_softcapping.is_some()
            || got
                .zip(cfg.final_logit_softcapping)
                .is_some_and(|(a, b)| !close(a, b))
        {
            mismatch(
                f,
                "final_logit_softcapping",
                format!("{got:?}"),
                format!("{:?}", cfg.final_logit_softcapping),
            );
        }
    }
    if let Some(got) = text_cfg.get("rms_norm_eps").and_then(|x| x.as_f64())
        && !close(got, cfg.rms_norm_eps)
    {
        mismatch(
            f,
            "rms_norm_eps",
            got.to_string(),
            cfg.rms_norm_eps.to_string(),
        );
    }
}
