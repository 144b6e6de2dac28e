//! Program passes: small named units run in an ordered [`Pipeline`] (coremltools style).
//!
//! | pass | what it does |
//! |---|---|
//! | [`dead_code_elimination`](dce::DeadCodeElimination) | drops ops whose outputs nobody uses (keeps function inputs and side-effecting ops such as `write_state`) |
//! | [`const_deduplication`](dedup::ConstDeduplication) | within a function, merges `const` ops with equal literals (and `constexpr_*` ops with equal parameters) into the first one |
//!
//! Named pipelines ([`Pipeline::named`]):
//! * `"default"` = `dead_code_elimination`, `const_deduplication`:
//!   DCE runs first so that deduplication hashes only live literals and the representative kept
//!   for each group of equal literals is a live op; deduplication removes the duplicates itself,
//!   so no second DCE is needed.
//! * `"empty"` = no passes (useful to only validate / dump).
//!
//! A pipeline can dump the MIL text after a pass ([`Pipeline::dump_after`], `--dump-after` in the
//! CLI) and stop after a pass ([`Pipeline::stop_after`]) to bisect a bad export. It validates the
//! program after the last pass it ran (on by default).

pub mod dce;
pub mod dedup;

use crate::validate::{ValidationError, validate};
use crate::{Function, Program};
use std::collections::BTreeSet;

/// Errors of passes and pipelines.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassError {
    /// No pipeline with that name.
    #[error("unknown pipeline `{name}` (known: {known})")]
    UnknownPipeline { name: String, known: String },
    /// No pass with that name in the pipeline.
    #[error("pipeline `{pipeline}` has no pass `{pass}` (passes: {passes})")]
    UnknownPass {
        pipeline: String,
        pass: String,
        passes: String,
    },
    /// The program is invalid after a pass.
    #[error("program invalid after pass `{pass}`: {source}")]
    Invalid {
        pass: String,
        source: Box<ValidationError>,
    },
}

/// One program transformation.
pub trait Pass {
    /// The pass name (snake_case, as in coremltools).
    fn name(&self) -> &'static str;

    /// Transform one function; returns how many ops were removed or rewritten.
    fn run_on_function(&self, f: &mut Function) -> usize;

    /// Transform the program (default: every function in name order).
    fn run(&self, p: &mut Program) -> usize {
        p.functions
            .values_mut()
            .map(|f| self.run_on_function(f))
            .sum()
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassRun {
    /// The pass name.
    pub pass: &'static str,
    /// Ops removed or rewritten.
    pub changed: usize,
}

/// What a pipeline run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PipelineReport {
    /// Passes run, in order.
    pub runs: Vec<PassRun>,
    /// MIL text dumps requested with [`Pipeline::dump_after`]: (pass, text).
    pub dumps: Vec<(String, String)>,
}

/// An ordered list of passes.
pub struct Pipeline {
    name: String,
    passes: Vec<Box<dyn Pass>>,
    dump_after: BTreeSet<String>,
    stop_after: Option<String>,
    validate: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("passes", &self.pass_names())
            .field("dump_after", &self.dump_after)
            .field("stop_after", &self.stop_after)
            .finish()
    }
}

/// Names accepted by [`Pipeline::named`].
pub const PIPELINES: [&str; 2] = ["default", "empty"];

impl Pipeline {
    /// A custom pipeline.
    pub fn new(name: impl Into<String>, passes: Vec<Box<dyn Pass>>) -> Pipeline {
        Pipeline {
            name: name.into(),
            passes,
            dump_after: BTreeSet::new(),
            stop_after: None,
            validate: true,
        }
    }

    /// A named pipeline (see the module docs).
    pub fn named(name: &str) -> Result<Pipeline, PassError> {
        let passes: Vec<Box<dyn Pass>> = match name {
            // Order: DCE first so deduplication only sees live literals (see module docs).
            "default" => vec![
                Box::new(dce::DeadCodeElimination),
                Box::new(dedup::ConstDeduplication::default()),
            ],
            "empty" => vec![],
            _ => {
                return Err(PassError::UnknownPipeline {
                    name: name.to_string(),
                    known: PIPELINES.join(", "),
                });
            }
        };
        Ok(Pipeline::new(name, passes))
    }

    /// The pipeline name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pass names, in order.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    fn check_pass(&self, pass: &str) -> Result<(), PassError> {
        if self.passes.iter().any(|p| p.name() == pass) {
            Ok(())
        } else {
            Err(PassError::UnknownPass {
                pipeline: self.name.clone(),
                pass: pass.to_string(),
                passes: self.pass_names().join(", "),
            })
        }
    }

    /// Dump the MIL text after `pass` (into [`PipelineReport::dumps`] / the run hook).
    pub fn dump_after(mut self, pass: &str) -> Result<Pipeline, PassError> {
        self.check_pass(pass)?;
        self.dump_after.insert(pass.to_string());
        Ok(self)
    }

    /// Stop the pipeline after `pass`.
    pub fn stop_after(mut self, pass: &str) -> Result<Pipeline, PassError> {
        self.check_pass(pass)?;
        self.stop_after = Some(pass.to_string());
        Ok(self)
    }

    /// Turn the final validation on or off.
    pub fn validate(mut self, on: bool) -> Pipeline {
        self.validate = on;
        self
    }

    /// Run the passes; dumps are collected as MIL text.
    pub fn run(&self, program: &mut Program) -> Result<PipelineReport, PassError> {
        let mut dumps = Vec::new();
        let mut report = self.run_with(program, |pass, p| {
            dumps.push((pass.to_string(), crate::printer::print_program(p)));
        })?;
        report.dumps = dumps;
        Ok(report)
    }

    /// Run the passes, calling `hook(pass, program)` after each pass listed in `dump_after`.
    pub fn run_with(
        &self,
        program: &mut Program,
        mut hook: impl FnMut(&str, &Program),
    ) -> Result<PipelineReport, PassError> {
        let mut report = PipelineReport::default();
        let mut last = "<start>";
        for pass in &self.passes {
            let changed = pass.run(program);
            report.runs.push(PassRun {
                pass: pass.name(),
                changed,
            });
            last = pass.name();
            if self.dump_after.contains(pass.name()) {
                hook(pass.name(), program);
            }
            if self.stop_after.as_deref() == Some(pass.name()) {
                break;
            }
        }
        if self.validate {
            validate(program).map_err(|e| PassError::Invalid {
                pass: last.to_string(),
                source: Box::new(e),
            })?;
        }
        Ok(report)
    }
}
