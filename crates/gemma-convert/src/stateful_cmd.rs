//! `parity` and `bench` on stateful chunk sets (`--variant stateful` / `stateful3`), driven by the
//! stateful host (`mil_runtime::stateful`, what `Gemma4StatefulEngine` does; docs/STATEFUL.md).
//!
//! * `parity`: the prompt goes as the engine sends it — `prefill_b<T>` batches while they fit
//!   without wrapping the sliding ring, then `infer` one token at a time (T: `--batch`, or with
//!   `--prefill` the engine's choice of 16, 8, 4; neither: `infer` only) — then the decode ids one
//!   `infer` step each. Every position is compared, batch rows included (their logits come from the
//!   graph's normed rows and its own LM head weight; the last row of every batch is the graph's).
//! * `parity --turns FILE`: turn 1 of a two-turn golden, then every second-turn case, each from turn
//!   1's states: the session keeps the states, rewinds to the longest common prefix and feeds the
//!   rest; every recomputed position is compared with HF run from scratch over the whole turn.
//! * `bench`: decode tokens/s through `infer`; with `--prefill`, a prompt fed one token at a time
//!   vs in `prefill_b<T>` batches, then a second turn that extends the first (time to the first new
//!   token, reusing the states) vs the same sequence from a fresh state — ratios measured in one run.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use gemma4::Checkpoint;
use mil_runtime::BackendKind;
use mil_runtime::chunkset::{ModelConfig, SideFileEmbedder};
use mil_runtime::parity::{Comparator, Metrics, Tolerance, argmax};
use mil_runtime::stateful::{RowOutput, SessionOptions, StatefulSet, TurnOutput};
use serde_json::json;

use crate::bench::BenchArgs;
use crate::exit::{CheckFailed, UsageError};
use crate::parity::{ParityArgs, ReferenceRun, Run, RunKind, Runs, embedder_for, metrics_json};
use crate::verify_cmd::CheckedSet;

fn open(dir: &Path, kind: BackendKind) -> Result<StatefulSet> {
    StatefulSet::open(dir, kind).with_context(|| format!("loading {}", dir.display()))
}

/// The batch of a session: `--batch T` (must exist on every chunk), `--prefill` (the engine's
/// choice), or none (`infer` only).
fn batch(set: &StatefulSet, explicit: Option<usize>, prefill: bool) -> Result<Option<usize>> {
    match explicit {
        Some(t) if set.batches().contains(&t) => Ok(Some(t)),
        Some(t) => Err(UsageError {
            flag: "--batch",
            reason: format!(
                "the set has no prefill_b{t} on every chunk (available: {:?})",
                set.batches()
            ),
        }
        .into()),
        None if prefill => match set.engine_batch() {
            Some(t) => Ok(Some(t)),
            None => Err(UsageError {
                flag: "--prefill",
                reason: format!(
                    "the engine uses prefill_b16, prefill_b8 or prefill_b4; the set has {:?} \
                     (pick one with --batch, or build with --functions decode,prefill_b:…)",
                    set.batches()
                ),
            }
            .into()),
        },
        None => Ok(None),
    }
}

/// Compare every row with `reference(position)`.
fn compare<'r>(
    cmp: &mut Comparator,
    rows: &[RowOutput],
    reference: impl Fn(usize) -> Option<&'r [f32]>,
) -> Result<()> {
    for r in rows {
        let got = r
            .logits
            .as_ref()
            .with_context(|| format!("no logits at position {}", r.position))?;
        let want = reference(r.position)
            .with_context(|| format!("the reference has no logits for position {}", r.position))?;
        let id = r.token_id.map_or(argmax(got), |t| t as usize);
        cmp.add_at(r.position, got, want, id);
    }
    Ok(())
}

/// How the calls went: `[(T, count)]` in first-use order.
fn call_pattern(turn: &TurnOutput) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = Vec::new();
    for c in &turn.feed.calls {
        match v.iter_mut().find(|(t, _)| *t == c.t) {
            Some(e) => e.1 += 1,
            None => v.push((c.t, 1)),
        }
    }
    v
}

/// The runs of `parity` on a stateful set: the reference's ids (the first `prompt_len` are the
/// prompt) replayed through the stateful host, every position compared.
pub fn parity_runs(
    args: &ParityArgs,
    model_dir: &Path,
    cfg: &ModelConfig,
    reference: &ReferenceRun,
    named: Tolerance,
) -> Result<Runs> {
    let mut set = open(&args.chunks, args.backend.kind()?)?;
    let batch = batch(&set, args.batch, args.prefill)?;
    let backend = set.backend_name().to_string();
    let three = set.is_three_chunk();
    let (ids, prompt_len) = (&reference.ids, reference.prompt_len);
    let mut runs = Vec::new();
    for kind in args.embeddings.runs() {
        let emb = embedder_for(kind, &args.chunks, cfg, model_dir)?;
        let mut session = set.session(SessionOptions { batch, fault: None })?;
        let (turn, rows) = session
            .replay(&ids[..prompt_len], &ids[prompt_len..], emb.as_ref())
            .with_context(|| format!("{}: running the set", kind.label()))?;
        let mut cmp = Comparator::new();
        compare(&mut cmp, &rows, |p| reference.at(p).ok().map(Vec::as_slice))?;
        let pattern = call_pattern(&turn);
        let calls: Vec<String> = pattern
            .iter()
            .map(|(t, n)| format!("{n}×{}", mil_runtime::stateful::function_for(*t)))
            .collect();
        let mut extra = serde_json::Map::new();
        extra.insert("chunks".into(), if three { 3 } else { 4 }.into());
        extra.insert("batch".into(), json!(batch));
        extra.insert(
            "prompt_calls".into(),
            json!(
                pattern
                    .iter()
                    .map(|(t, n)| json!({"t": t, "calls": n}))
                    .collect::<Vec<_>>()
            ),
        );
        extra.insert("head_check".into(), json!(turn.feed.head_check));
        runs.push(Run {
            kind,
            tolerance: kind.tolerance(named),
            metrics: cmp.metrics(),
            how: format!(
                "{} chunks, prompt {prompt_len} tokens in {}, then {} infer steps: ",
                if three { 3 } else { 4 },
                calls.join(" + "),
                ids.len() - prompt_len
            ),
            notes: Vec::new(),
            extra,
        });
    }
    Ok(Runs { backend, runs })
}

/// One turn of a `--turns` run: name, how it resumed, positions computed, metrics.
type TurnRow = (String, TurnOutput, usize, Metrics);

/// `parity --turns FILE` (the set already checked): turn 1, then every second turn from turn 1's
/// states, for each run (device, exact); the side files the turns read are checked first.
pub fn turns(
    args: &ParityArgs,
    model_dir: &Path,
    ckpt: &Checkpoint,
    path: &Path,
    named: Tolerance,
    checked: &CheckedSet,
) -> Result<()> {
    let t = gemma4::golden::Turns::load(path).map_err(|e| UsageError {
        flag: "--turns",
        reason: e.to_string(),
    })?;
    let mut set = open(&args.chunks, args.backend.kind()?)?;
    if t.turn1.vocab != set.config().vocab_size {
        return Err(UsageError {
            flag: "--turns",
            reason: format!(
                "golden vocabulary {} does not match the set's {}",
                t.turn1.vocab,
                set.config().vocab_size
            ),
        }
        .into());
    }
    let goldens: Vec<&gemma4::Golden> = std::iter::once(&t.turn1)
        .chain(t.turn2.iter().map(|(_, g)| g))
        .collect();
    let ids: Vec<u32> = goldens
        .iter()
        .flat_map(|g| g.input_ids.iter().chain(&g.decode_input_ids))
        .copied()
        .collect();
    if let Some(&x) = ids.iter().find(|&&x| x as usize >= set.config().vocab_size) {
        return Err(UsageError {
            flag: "--turns",
            reason: format!(
                "token {x} is outside the vocabulary ({})",
                set.config().vocab_size
            ),
        }
        .into());
    }
    let side = crate::side_check::check(&args.chunks, &checked.config, ckpt, &ids)?;
    let batch = batch(&set, args.batch, args.prefill)?;
    let rows_of = |g: &gemma4::Golden| -> Vec<Vec<f32>> {
        g.logits
            .chunks(g.vocab)
            .chain(g.decode_logits.chunks(g.vocab))
            .map(<[f32]>::to_vec)
            .collect()
    };
    let mut failures = side.failures.clone();
    let mut results: Vec<(RunKind, Tolerance, Vec<TurnRow>)> = Vec::new();
    for kind in args.embeddings.runs() {
        let tolerance = kind.tolerance(named);
        let emb = embedder_for(kind, &args.chunks, &checked.config, model_dir)?;
        let mut session = set.session(SessionOptions { batch, fault: None })?;
        let mut report: Vec<TurnRow> = Vec::new();
        let mut run = |name: &str,
                       g: &gemma4::Golden,
                       session: &mut mil_runtime::stateful::StatefulSession<'_>|
         -> Result<()> {
            let (turn, rows) = session
                .replay(&g.input_ids, &g.decode_input_ids, emb.as_ref())
                .with_context(|| format!("{}: turn {name}", kind.label()))?;
            let want = rows_of(g);
            let mut cmp = Comparator::new();
            compare(&mut cmp, &rows, |p| want.get(p).map(Vec::as_slice))?;
            let m = cmp.metrics();
            if let Err(why) = tolerance.check(&m) {
                failures.push(format!(
                    "{} ({} tolerance), {name}: {why}",
                    kind.label(),
                    tolerance.name()
                ));
            }
            report.push((name.to_string(), turn, rows.len(), m));
            Ok(())
        };
        run("turn1", &t.turn1, &mut session)?;
        let after_turn1 = session.conversation().clone();
        for (case, g) in &t.turn2 {
            session.set_conversation(after_turn1.clone())?;
            run(&format!("turn2.{case}"), g, &mut session)?;
        }
        results.push((kind, tolerance, report));
    }
    let results_json = |tolerance: Tolerance, report: &[TurnRow]| -> serde_json::Value {
        json!(
            report
                .iter()
                .map(|(name, turn, n, m)| {
                    let mut v = metrics_json(m, tolerance);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("turn".into(), name.clone().into());
                        o.insert("common_prefix".into(), turn.common_prefix.into());
                        o.insert("resumed_at".into(), turn.resumed_at.into());
                        o.insert("snapshot".into(), json!(turn.snapshot));
                        o.insert("computed_positions".into(), (*n).into());
                    }
                    v
                })
                .collect::<Vec<_>>()
        )
    };
    // the exact run heads the report when there is one
    let primary = results
        .iter()
        .position(|r| r.0 == RunKind::Exact)
        .unwrap_or(0);
    if args.json {
        let (kind, tolerance, report) = &results[primary];
        let mut v = json!({
            "turns": path,
            "chunks": args.chunks,
            "embeddings": kind.embeddings(),
            "tolerance": tolerance.name(),
            "batch": batch,
            "pass": failures.is_empty(),
            "failures": failures,
            "results": results_json(*tolerance, report),
            "verify": crate::verify_cmd::report_json(&args.chunks, &checked.report, checked.seconds),
            "side_files": side.to_json(),
        });
        if *kind == RunKind::Exact
            && let Some((_, tol, rep)) = results.iter().find(|r| r.0 == RunKind::Device)
            && let Some(o) = v.as_object_mut()
        {
            o.insert(
                "device".into(),
                json!({
                    "embeddings": RunKind::Device.embeddings(),
                    "tolerance": tol.name(),
                    "results": results_json(*tol, rep),
                }),
            );
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}",
            crate::verify_cmd::summary(&args.chunks, &checked.report, checked.seconds)
        );
        println!("{}", side.line());
        for (kind, tolerance, report) in &results {
            println!("{}:", kind.label());
            for (name, turn, n, m) in report {
                let how = match (turn.resumed_at, turn.snapshot) {
                    (0, _) => "from position 0".to_string(),
                    (r, Some(q)) => format!(
                        "rewound to the ring snapshot at {q} (common prefix {}), resumed at {r}",
                        turn.common_prefix
                    ),
                    (r, None) => format!("common prefix {}, resumed at {r}", turn.common_prefix),
                };
                println!(
                    "{name}: {how}; {n} positions computed, top-1 {:.1}%, max |Δlogit| {:.3e} → {} ({})",
                    100.0 * m.top1_agreement,
                    m.max_abs_logit_diff,
                    if tolerance.check(m).is_ok() {
                        "PASS"
                    } else {
                        "FAIL"
                    },
                    tolerance.name()
                );
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CheckFailed(format!("two-turn parity: {}", failures.join("; "))).into())
    }
}

/// `bench` on a stateful set (already checked, `_checked` holds its shared lock).
pub fn bench(args: &BenchArgs, _checked: &CheckedSet) -> Result<()> {
    let t_load = Instant::now();
    let mut set = open(&args.chunks, args.backend.kind()?)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let emb = SideFileEmbedder::open(&args.chunks, set.config())?;
    let names = set.chunk_names();
    let backend = set.backend_name().to_string();
    let ctx = set.config().context_length;
    let vocab = set.config().vocab_size as u32;
    let start = args.start.or(set.config().bos_token_id).unwrap_or(2);
    let batch = if args.prefill {
        batch(&set, args.batch, true)?
    } else {
        None
    };
    let prompt_len = if args.prefill { args.prompt_tokens } else { 1 };
    let follow = 8usize;
    let tokens = args.tokens.unwrap_or(64);
    let total = args.warmup + tokens;
    if prompt_len == 0 || prompt_len + total + follow + 1 > ctx {
        return Err(UsageError {
            flag: "--prompt-tokens",
            reason: format!(
                "a prompt of {prompt_len}, {total} decode steps and a second turn of {follow} must fit \
                 the context length {ctx}"
            ),
        }
        .into());
    }
    let prompt: Vec<u32> = std::iter::once(start)
        .chain((3..).map(|t| t % vocab))
        .take(prompt_len)
        .collect();
    let secs = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    };

    // prefill: one token at a time vs in batches (each from a fresh state)
    let mut prefill = None;
    if let Some(t) = batch {
        let mut s1 = set.session(SessionOptions::default())?;
        if args.warmup > 0 {
            s1.feed(&prompt, &emb, mil_runtime::stateful::Logits::None)?;
            s1.reset()?;
        }
        let serial = secs(&mut || {
            s1.feed(&prompt, &emb, mil_runtime::stateful::Logits::None)?;
            Ok(())
        })?;
        drop(s1);
        let mut sb = set.session(SessionOptions {
            batch: Some(t),
            fault: None,
        })?;
        let mut calls = 0;
        let batched = secs(&mut || {
            calls = sb
                .feed(&prompt, &emb, mil_runtime::stateful::Logits::None)?
                .calls
                .len();
            Ok(())
        })?;
        prefill = Some((t, serial, batched, calls));
    }

    // decode, then a second turn that extends the first
    let mut session = set.session(SessionOptions { batch, fault: None })?;
    let first = session
        .turn(&prompt, &emb, mil_runtime::stateful::Logits::None)
        .context("prompt")?;
    let mut token = first.feed.next_token;
    let mut generated = vec![token];
    let mut per_chunk = vec![0f64; names.len()];
    let mut t0 = Instant::now();
    for step in 0..total {
        if step == args.warmup {
            t0 = Instant::now();
            per_chunk.iter_mut().for_each(|x| *x = 0.0);
        }
        let (out, call) = session
            .step_timed(token, &emb, false)
            .with_context(|| format!("decode step {step}"))?;
        for (acc, d) in per_chunk.iter_mut().zip(&call.chunk_times) {
            *acc += d.as_secs_f64() * 1e3;
        }
        token = out.token_id.context("infer returned no token")?;
        generated.push(token);
    }
    let decode_s = t0.elapsed().as_secs_f64();
    let tps = tokens as f64 / decode_s;
    let ms: Vec<f64> = per_chunk.iter().map(|t| t / tokens as f64).collect();
    let mut second: Vec<u32> = session.conversation().tokens().to_vec();
    second.push(token);
    second.extend((0..follow).map(|i| (start + 100 + i as u32) % vocab));
    let mut resumed = None;
    let reuse_s = secs(&mut || {
        resumed = Some(session.turn(&second, &emb, mil_runtime::stateful::Logits::None)?);
        Ok(())
    })?;
    drop(session);
    let mut fresh = set.session(SessionOptions { batch, fault: None })?;
    let fresh_s = secs(&mut || {
        fresh.turn(&second, &emb, mil_runtime::stateful::Logits::None)?;
        Ok(())
    })?;
    let resumed = resumed.context("second turn")?;

    if args.json {
        let v = json!({
            "chunks": args.chunks,
            "backend": backend,
            "chunk_names": names,
            "load_seconds": load_s,
            "decode": {"tokens": tokens, "warmup": args.warmup, "tokens_per_second": tps, "ms_per_token": 1e3 / tps,
                "ms_per_chunk_call": names.iter().zip(&ms).map(|(n, m)| json!({"chunk": n, "ms": m})).collect::<Vec<_>>()},
            "prefill": prefill.map(|(t, serial, batched, calls)| json!({
                "tokens": prompt_len, "batch": t, "calls": calls,
                "serial_seconds": serial, "batched_seconds": batched,
                "serial_tokens_per_second": prompt_len as f64 / serial,
                "batched_tokens_per_second": prompt_len as f64 / batched,
                "speedup": serial / batched,
            })),
            "second_turn": {
                "tokens": second.len(), "resumed_at": resumed.resumed_at,
                "new_tokens": second.len() - resumed.resumed_at,
                "reuse_seconds": reuse_s, "fresh_seconds": fresh_s, "speedup": fresh_s / reuse_s,
            },
            "generated": generated,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "bench {} ({backend}, stateful {} chunks): decode {} tokens = {tps:.2} tokens/s ({:.1} ms/token), load {load_s:.2} s",
            args.chunks.display(),
            names.len(),
            tokens,
            1e3 / tps
        );
        for (n, m) in names.iter().zip(&ms) {
            println!("  {n:<16} {m:9.2} ms/call");
        }
        if let Some((t, serial, batched, calls)) = prefill {
            println!(
                "prefill {prompt_len} tokens: one at a time {serial:.2} s ({:.1} tokens/s); prefill_b{t} ({calls} calls) {batched:.2} s ({:.1} tokens/s) = {:.2}× faster",
                prompt_len as f64 / serial,
                prompt_len as f64 / batched,
                serial / batched
            );
        }
        println!(
            "second turn of {} tokens: reusing the states (resumed at {}, {} new) {reuse_s:.3} s to the next token; from a fresh state {fresh_s:.3} s = {:.1}× faster",
            second.len(),
            resumed.resumed_at,
            second.len() - resumed.resumed_at,
            fresh_s / reuse_s
        );
    }
    Ok(())
}
