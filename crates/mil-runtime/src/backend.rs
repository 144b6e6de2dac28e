//! The [`Backend`] trait shared by the CPU interpreter and the Core ML backend, and the CPU
//! implementation [`CpuBackend`].
//!
//! A backend is loaded from a program (or a package on disk), lists its functions, describes each
//! function's signature and predicts. `predict_with_taps` (internal values by name) is optional:
//! the default implementation returns a [`RuntimeError::Backend`] error when taps are requested.
//! The trait is object safe; callers hold a `Box<dyn Backend>`.

use crate::error::RuntimeError;
use crate::interp::Interpreter;
use crate::state::ModelState;
use crate::tensor::Tensor;
use mil::{Program, TensorType};
use std::collections::BTreeMap;
use std::path::Path;

/// Which hardware a backend may use (only meaningful for Core ML; the CPU backend ignores it).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ComputeUnits {
    /// CPU only.
    CpuOnly,
    /// CPU and Neural Engine (the deployment target of our chunks).
    #[default]
    CpuAndNeuralEngine,
    /// CPU, GPU and Neural Engine.
    All,
}

/// Options for loading a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Compute units (Core ML only).
    pub compute_units: ComputeUnits,
    /// For backends that bind one function at load (Core ML): the function to load; `None` = the
    /// package's default function.
    pub function: Option<String>,
}

/// One input or output of a function signature.
#[derive(Clone, Debug, PartialEq)]
pub struct IoSpec {
    /// Feature name.
    pub name: String,
    /// Declared tensor type, if known.
    pub ty: Option<TensorType>,
    /// True for state inputs (passed in and returned under the same name).
    pub is_state: bool,
}

/// Inputs and outputs of one function.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    /// Inputs in declared order.
    pub inputs: Vec<IoSpec>,
    /// Outputs in declared order.
    pub outputs: Vec<IoSpec>,
}

/// The signature declared by a MIL function (inputs incl. states, outputs with their declared types).
pub fn signature_of(f: &mil::Function) -> Signature {
    let inputs = f
        .inputs
        .iter()
        .map(|v| match &v.ty {
            mil::ValueType::State(t) => IoSpec {
                name: v.name.clone(),
                ty: Some(t.clone()),
                is_state: true,
            },
            ty => IoSpec {
                name: v.name.clone(),
                ty: ty.as_tensor().cloned(),
                is_state: false,
            },
        })
        .collect();
    let outputs = f
        .block
        .outputs
        .iter()
        .map(|n| IoSpec {
            name: n.clone(),
            ty: f.find_value(n).and_then(|v| v.ty.as_tensor().cloned()),
            is_state: false,
        })
        .collect();
    Signature { inputs, outputs }
}

/// Named tensors.
pub type TensorMap = BTreeMap<String, Tensor>;

/// A model runner (object safe).
pub trait Backend {
    /// Load a package from disk (not available on `dyn Backend`; see [`load_backend`]).
    fn load(path: &Path, opts: &LoadOptions) -> Result<Self, RuntimeError>
    where
        Self: Sized;

    /// A short backend name for reports ("cpu-interpreter", "coreml").
    fn name(&self) -> &str;

    /// The functions this backend can run.
    fn functions(&self) -> Vec<String>;

    /// The signature of `function`.
    fn signature(&self, function: &str) -> Result<Signature, RuntimeError>;

    /// Run `function` on `inputs`.
    fn predict(&mut self, function: &str, inputs: &TensorMap) -> Result<TensorMap, RuntimeError>;

    /// Run `function` and also return the named internal values in `taps` (optional feature).
    fn predict_with_taps(
        &mut self,
        function: &str,
        inputs: &TensorMap,
        taps: &[&str],
    ) -> Result<(TensorMap, TensorMap), RuntimeError> {
        if taps.is_empty() {
            return Ok((self.predict(function, inputs)?, TensorMap::new()));
        }
        Err(RuntimeError::Backend {
            backend: self.name().to_string(),
            message: "this backend cannot return internal values (taps)".into(),
        })
    }

    /// The internal value whose `reduce_argmax` produces output `output` of `function` (through
    /// casts and reshapes; [`crate::logits::argmax_input`]), for backends that can tap values:
    /// where a head chunk's full-vocabulary logits are, whatever they are called.
    fn argmax_input(&self, function: &str, output: &str) -> Option<String> {
        let _ = (function, output);
        None
    }

    /// A fresh (zero) state for `function`'s `state<…>` inputs, like Core ML's `makeState()`. The
    /// same state can be used with every function of the package that declares the same states.
    fn make_state(&self, function: &str) -> Result<ModelState, RuntimeError> {
        ModelState::for_signature(function, &self.signature(function)?)
    }

    /// Run `function` with `state` bound to its state inputs (checked against the function's
    /// declared states, see [`ModelState::check`]); the state's final values are kept in `state`,
    /// the other outputs (and the requested taps) are returned.
    fn predict_with_state(
        &mut self,
        function: &str,
        inputs: &TensorMap,
        state: &mut ModelState,
        taps: &[&str],
    ) -> Result<(TensorMap, TensorMap), RuntimeError> {
        let sig = self.signature(function)?;
        state.check(function, &sig)?;
        let mut all = inputs.clone();
        for (name, t) in state.tensors() {
            if all.insert(name.clone(), t.clone()).is_some() {
                return Err(RuntimeError::StateSchema {
                    function: function.to_string(),
                    detail: format!("`{name}` is given both as an input and as a state"),
                });
            }
        }
        let (mut outs, tapped) = self.predict_with_taps(function, &all, taps)?;
        state.absorb(function, &mut outs)?;
        Ok((outs, tapped))
    }
}

/// Which backend implementation to load.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU interpreter of this crate.
    Cpu,
    /// Core ML (Apple targets with the `coreml` feature only).
    CoreMl,
}

/// Load a package with the chosen backend, as a trait object.
pub fn load_backend(
    kind: BackendKind,
    path: &Path,
    opts: &LoadOptions,
) -> Result<Box<dyn Backend>, RuntimeError> {
    match kind {
        BackendKind::Cpu => Ok(Box::new(CpuBackend::load(path, opts)?)),
        #[cfg(all(target_vendor = "apple", feature = "coreml"))]
        BackendKind::CoreMl => Ok(Box::new(crate::coreml::CoreMlBackend::load(path, opts)?)),
        #[cfg(not(all(target_vendor = "apple", feature = "coreml")))]
        BackendKind::CoreMl => Err(RuntimeError::Backend {
            backend: "coreml".into(),
            message: "the Core ML backend needs an Apple target and the `coreml` feature".into(),
        }),
    }
}

/// The CPU interpreter as a [`Backend`].
#[derive(Clone, Debug)]
pub struct CpuBackend {
    interp: Interpreter,
}

impl CpuBackend {
    /// Compile a program held in memory.
    pub fn from_program(program: &Program) -> Result<CpuBackend, RuntimeError> {
        Ok(CpuBackend {
            interp: Interpreter::new(program)?,
        })
    }

    /// The underlying interpreter.
    pub fn interpreter(&self) -> &Interpreter {
        &self.interp
    }
}

impl Backend for CpuBackend {
    /// Read the model with [`mlpackage::read_model`] (a `.mlpackage` or a compiled `.mlmodelc`,
    /// weights memory-mapped) and compile every function. `opts` is ignored: the interpreter runs
    /// every function on the CPU.
    fn load(path: &Path, _opts: &LoadOptions) -> Result<CpuBackend, RuntimeError> {
        let pkg = mlpackage::read_model(path).map_err(|e| RuntimeError::Load {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        CpuBackend::from_program(&pkg.program)
    }

    fn name(&self) -> &str {
        "cpu-interpreter"
    }

    fn functions(&self) -> Vec<String> {
        self.interp.functions()
    }

    fn signature(&self, function: &str) -> Result<Signature, RuntimeError> {
        let inputs = self
            .interp
            .inputs(function)?
            .into_iter()
            .map(|i| IoSpec {
                name: i.name,
                ty: Some(i.ty),
                is_state: i.is_state,
            })
            .collect();
        let outputs = self
            .interp
            .outputs(function)?
            .into_iter()
            .map(|(name, ty)| IoSpec {
                name,
                ty,
                is_state: false,
            })
            .collect();
        Ok(Signature { inputs, outputs })
    }

    fn predict(&mut self, function: &str, inputs: &TensorMap) -> Result<TensorMap, RuntimeError> {
        self.interp.run(function, inputs)
    }

    fn argmax_input(&self, function: &str, output: &str) -> Option<String> {
        self.interp
            .argmax_input(function, output)
            .map(str::to_string)
    }

    fn predict_with_taps(
        &mut self,
        function: &str,
        inputs: &TensorMap,
        taps: &[&str],
    ) -> Result<(TensorMap, TensorMap), RuntimeError> {
        self.interp.run_with_taps(function, inputs, taps)
    }
}
