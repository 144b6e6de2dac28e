//! Core ML backend (Apple targets with the `coreml` feature only).
//!
//! **This module cannot be compiled on the Linux build machine** (it needs the Apple SDK); it is
//! kept small and written against the `objc2-core-ml` 0.3 / `objc2-foundation` 0.3 bindings. It
//! must be compiled and exercised on a Mac before it is relied upon.
//!
//! Flow: `MLModel::compileModelAtURL` turns a `.mlpackage` into a temporary `.mlmodelc` once at
//! load (a `.mlmodelc` is loaded as it is); each function is loaded lazily as its own `MLModel`
//! with an `MLModelConfiguration` whose `functionName` selects the function and whose compute
//! units come from [`LoadOptions`] (default CPU + Neural Engine). Inputs are copied into freshly
//! allocated, contiguous `MLMultiArray`s (fp16 / fp32 / int32); outputs are copied out honouring
//! the array's strides (Core ML may pad the last dimension of ANE outputs).
//!
//! [`compile_model`] runs Core ML's compiler alone, for `gemma-convert compile`.
//!
//! Not covered: state inputs (`MLState`), image / sequence features, int8 I/O, taps (Core ML
//! cannot expose internal values: `predict_with_taps` returns an error when taps are requested).

use crate::backend::{Backend, ComputeUnits, LoadOptions, Signature, TensorMap};
use crate::error::RuntimeError;
use crate::tensor::{Tensor, TensorData};
use half::f16;
use mil::{DType, Program};
use objc2::AllocAnyThread;
use objc2::rc::Retained;
use objc2::runtime::{AnyObject, ProtocolObject};
use objc2_core_ml::{
    MLComputeUnits, MLDictionaryFeatureProvider, MLFeatureProvider, MLFeatureValue, MLModel,
    MLModelConfiguration, MLMultiArray, MLMultiArrayDataType,
};
use objc2_foundation::{NSArray, NSDictionary, NSError, NSNumber, NSString, NSURL};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn ns_err(what: &str, e: &NSError) -> RuntimeError {
    RuntimeError::Backend {
        backend: "coreml".into(),
        message: format!("{what}: {}", e.localizedDescription()),
    }
}

fn backend_err(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Backend {
        backend: "coreml".into(),
        message: message.into(),
    }
}

/// Compile a `.mlpackage` with Core ML's own compiler (`MLModel.compileModelAtURL`); returns the
/// temporary `.mlmodelc` directory Core ML wrote (the caller moves or copies it).
pub fn compile_model(path: &Path) -> Result<PathBuf, RuntimeError> {
    let url = NSURL::fileURLWithPath(&NSString::from_str(&path.display().to_string()));
    // SAFETY: `url` is a valid file URL; Core ML writes the bundle into a temporary directory.
    #[allow(deprecated)]
    let compiled = unsafe { MLModel::compileModelAtURL_error(&url) }
        .map_err(|e| ns_err(&format!("compiling {}", path.display()), &e))?;
    #[allow(unused_unsafe)]
    // SAFETY: reads the file path of a file URL.
    let p = unsafe { compiled.path() }
        .ok_or_else(|| backend_err(format!("compiling {}: no file path", path.display())))?;
    Ok(PathBuf::from(p.to_string()))
}

/// A package run by Core ML.
pub struct CoreMlBackend {
    path: PathBuf,
    compiled: Retained<NSURL>,
    units: MLComputeUnits,
    program: Program,
    models: BTreeMap<String, Retained<MLModel>>,
}

impl CoreMlBackend {
    fn model(&mut self, function: &str) -> Result<&MLModel, RuntimeError> {
        if !self.program.functions.contains_key(function) {
            return Err(RuntimeError::UnknownFunction {
                name: function.to_string(),
                available: self.program.functions.keys().cloned().collect(),
            });
        }
        if !self.models.contains_key(function) {
            // SAFETY: plain Objective-C calls on objects we own; arguments are valid for the call.
            let model = unsafe {
                let config = MLModelConfiguration::new();
                config.setComputeUnits(self.units);
                if self.program.functions.len() > 1 {
                    config.setFunctionName(Some(&NSString::from_str(function)));
                }
                MLModel::modelWithContentsOfURL_configuration_error(&self.compiled, &config)
            }
            .map_err(|e| {
                ns_err(
                    &format!("loading function `{function}` of {}", self.path.display()),
                    &e,
                )
            })?;
            self.models.insert(function.to_string(), model);
        }
        self.models
            .get(function)
            .map(|m| &**m)
            .ok_or_else(|| backend_err("model cache"))
    }
}

fn multi_array(name: &str, t: &Tensor) -> Result<Retained<MLMultiArray>, RuntimeError> {
    let (dtype, elem) = match t.dtype() {
        DType::F16 => (MLMultiArrayDataType::Float16, 2),
        DType::F32 => (MLMultiArrayDataType::Float32, 4),
        DType::I32 => (MLMultiArrayDataType::Int32, 4),
        d => {
            return Err(backend_err(format!(
                "input `{name}`: dtype {d} is not supported by Core ML I/O"
            )));
        }
    };
    let dims: Vec<Retained<NSNumber>> = t
        .shape()
        .iter()
        .map(|&d| NSNumber::new_isize(d as isize))
        .collect();
    let shape = NSArray::from_retained_slice(&dims);
    // SAFETY: a new array of `t.len()` contiguous elements of `elem` bytes; we write exactly that many
    // bytes through its data pointer before handing it to Core ML.
    unsafe {
        let arr = MLMultiArray::initWithShape_dataType_error(MLMultiArray::alloc(), &shape, dtype)
            .map_err(|e| ns_err(&format!("allocating input `{name}`"), &e))?;
        #[allow(deprecated)]
        let dst = arr.dataPointer().as_ptr().cast::<u8>();
        let bytes: Vec<u8> = match t.data() {
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            _ => Vec::new(),
        };
        debug_assert_eq!(bytes.len(), t.len() * elem);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
        Ok(arr)
    }
}

fn read_array(name: &str, arr: &MLMultiArray) -> Result<Tensor, RuntimeError> {
    // SAFETY: shape, strides and data pointer describe the array's own buffer; we only read
    // elements at offsets derived from them.
    unsafe {
        let shape: Vec<usize> = arr
            .shape()
            .iter()
            .map(|n| n.integerValue().max(0) as usize)
            .collect();
        let strides: Vec<usize> = arr
            .strides()
            .iter()
            .map(|n| n.integerValue().max(0) as usize)
            .collect();
        let n: usize = shape.iter().product();
        let mut offs = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            offs.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>());
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        #[allow(deprecated)]
        let base = arr.dataPointer().as_ptr();
        let dt = arr.dataType();
        if dt == MLMultiArrayDataType::Float16 {
            let p = base.cast::<u16>();
            Tensor::from_f16(
                &shape,
                offs.iter().map(|&o| f16::from_bits(*p.add(o))).collect(),
            )
        } else if dt == MLMultiArrayDataType::Float32 {
            let p = base.cast::<f32>();
            Tensor::from_f32(&shape, offs.iter().map(|&o| *p.add(o)).collect())
        } else if dt == MLMultiArrayDataType::Int32 {
            let p = base.cast::<i32>();
            Tensor::from_i32(&shape, offs.iter().map(|&o| *p.add(o)).collect())
        } else if dt == MLMultiArrayDataType::Double {
            let p = base.cast::<f64>();
            Tensor::from_f32(&shape, offs.iter().map(|&o| *p.add(o) as f32).collect())
        } else {
            Err(backend_err(format!(
                "output `{name}`: unsupported MLMultiArray data type"
            )))
        }
    }
}

impl Backend for CoreMlBackend {
    fn load(path: &Path, opts: &LoadOptions) -> Result<CoreMlBackend, RuntimeError> {
        let pkg = mlpackage::read_model(path).map_err(|e| RuntimeError::Load {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        let url = NSURL::fileURLWithPath(&NSString::from_str(&path.display().to_string()));
        // A compiled bundle (ours or Apple's) is loaded as it is; a package is compiled first.
        let compiled = if mlpackage::compiled::is_bundle(path) {
            url
        } else {
            // SAFETY: compiles the package into a temporary .mlmodelc; `url` is a valid file URL.
            #[allow(deprecated)]
            unsafe { MLModel::compileModelAtURL_error(&url) }
                .map_err(|e| ns_err(&format!("compiling {}", path.display()), &e))?
        };
        let units = match opts.compute_units {
            ComputeUnits::CpuOnly => MLComputeUnits::CPUOnly,
            ComputeUnits::CpuAndNeuralEngine => MLComputeUnits::CPUAndNeuralEngine,
            ComputeUnits::All => MLComputeUnits::All,
        };
        let mut be = CoreMlBackend {
            path: path.to_path_buf(),
            compiled,
            units,
            program: pkg.program,
            models: BTreeMap::new(),
        };
        if let Some(f) = &opts.function {
            be.model(f)?;
        }
        Ok(be)
    }

    fn name(&self) -> &str {
        "coreml"
    }

    fn functions(&self) -> Vec<String> {
        self.program.functions.keys().cloned().collect()
    }

    fn signature(&self, function: &str) -> Result<Signature, RuntimeError> {
        let f =
            self.program
                .functions
                .get(function)
                .ok_or_else(|| RuntimeError::UnknownFunction {
                    name: function.to_string(),
                    available: self.functions(),
                })?;
        Ok(crate::backend::signature_of(f))
    }

    fn predict(&mut self, function: &str, inputs: &TensorMap) -> Result<TensorMap, RuntimeError> {
        let sig = self.signature(function)?;
        if let Some(s) = sig.inputs.iter().find(|i| i.is_state) {
            return Err(backend_err(format!(
                "state input `{}` is not supported by this backend",
                s.name
            )));
        }
        let mut keys: Vec<Retained<NSString>> = Vec::new();
        let mut vals: Vec<Retained<AnyObject>> = Vec::new();
        for (name, t) in inputs {
            let arr = multi_array(name, t)?;
            // SAFETY: wraps a valid MLMultiArray in a feature value.
            let fv = unsafe { MLFeatureValue::featureValueWithMultiArray(&arr) };
            keys.push(NSString::from_str(name));
            vals.push(Retained::into_super(Retained::into_super(fv)));
        }
        let key_refs: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
        let dict: Retained<NSDictionary<NSString, AnyObject>> =
            NSDictionary::from_retained_objects(&key_refs, &vals);
        let model = self.model(function)?;
        // SAFETY: the provider and model are valid; prediction returns an owned provider.
        let out = unsafe {
            let provider = MLDictionaryFeatureProvider::initWithDictionary_error(
                MLDictionaryFeatureProvider::alloc(),
                &dict,
            )
            .map_err(|e| ns_err("building the input provider", &e))?;
            model
                .predictionFromFeatures_error(ProtocolObject::from_ref(&*provider))
                .map_err(|e| ns_err(&format!("predicting `{function}`"), &e))?
        };
        let mut res = TensorMap::new();
        for o in &sig.outputs {
            // SAFETY: reading named features of the returned provider.
            let arr = unsafe {
                out.featureValueForName(&NSString::from_str(&o.name))
                    .and_then(|v| v.multiArrayValue())
            }
            .ok_or_else(|| {
                backend_err(format!("output `{}` missing or not a multi-array", o.name))
            })?;
            res.insert(o.name.clone(), read_array(&o.name, &arr)?);
        }
        Ok(res)
    }
}
