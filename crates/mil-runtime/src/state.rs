//! Model states (Core ML's `MLState`): the tensors behind a function's `state<tensor<…>>` inputs,
//! owned by the caller and carried from one call to the next.
//!
//! Core ML's behaviour, which the stateful chunk sets and their Swift runtime rely on, and which this
//! module reproduces:
//! * `makeState()` gives zero-filled buffers of the declared types ([`ModelState::for_signature`]);
//! * a prediction with a state reads it and leaves the state's final value behind (the graph's
//!   `write_state` ops); nothing else touches it between calls;
//! * one state object serves every function of a multi-function package that declares the same
//!   states: `Gemma4StatefulEngine` makes the state from a chunk's `infer` model and passes it to the
//!   same package's `prefill_b<T>` model. [`Backend::predict_with_state`](crate::Backend) checks
//!   that the called function declares exactly the state's schema (same names, dtypes and shapes, in
//!   any order) and fails with [`RuntimeError::StateSchema`] otherwise.

use crate::backend::Signature;
use crate::error::RuntimeError;
use crate::tensor::Tensor;
use mil::{DType, TensorType};
use std::collections::BTreeMap;

/// The state tensors of one model, by state name.
#[derive(Clone, Debug)]
pub struct ModelState {
    tensors: BTreeMap<String, Tensor>,
}

fn zeros(ty: &TensorType) -> Option<Tensor> {
    let shape = ty.static_shape()?;
    let n: usize = shape.iter().product();
    match ty.dtype {
        DType::F16 => Tensor::from_f16(&shape, vec![half::f16::ZERO; n]).ok(),
        DType::F32 => Tensor::from_f32(&shape, vec![0.0; n]).ok(),
        DType::I32 => Tensor::from_i32(&shape, vec![0; n]).ok(),
        _ => None,
    }
}

impl ModelState {
    /// The zero state of a function: one zero tensor per declared state input.
    pub fn for_signature(function: &str, sig: &Signature) -> Result<ModelState, RuntimeError> {
        let mut tensors = BTreeMap::new();
        for s in sig.inputs.iter().filter(|i| i.is_state) {
            let t =
                s.ty.as_ref()
                    .and_then(zeros)
                    .ok_or_else(|| RuntimeError::StateSchema {
                        function: function.to_string(),
                        detail: format!(
                            "state `{}` has no static fp16 / fp32 / int32 tensor type ({:?})",
                            s.name, s.ty
                        ),
                    })?;
            tensors.insert(s.name.clone(), t);
        }
        Ok(ModelState { tensors })
    }

    /// State names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// True if the model has no states.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The current value of a state.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Every state, by name.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// Replace a state's value (what `MLState.withMultiArray` lets a host do); the new value must
    /// have the state's dtype and shape.
    pub fn set(&mut self, name: &str, value: Tensor) -> Result<(), RuntimeError> {
        let cur = self
            .tensors
            .get_mut(name)
            .ok_or_else(|| RuntimeError::StateSchema {
                function: String::new(),
                detail: format!("no state named `{name}`"),
            })?;
        if cur.dtype() != value.dtype() || cur.shape() != value.shape() {
            return Err(RuntimeError::StateSchema {
                function: String::new(),
                detail: format!(
                    "state `{name}` is {}, the new value {}",
                    cur.tensor_type(),
                    value.tensor_type()
                ),
            });
        }
        *cur = value;
        Ok(())
    }

    /// Check that `function` (signature `sig`) declares exactly these states.
    pub fn check(&self, function: &str, sig: &Signature) -> Result<(), RuntimeError> {
        let err = |detail: String| RuntimeError::StateSchema {
            function: function.to_string(),
            detail,
        };
        let declared: BTreeMap<&str, Option<&TensorType>> = sig
            .inputs
            .iter()
            .filter(|i| i.is_state)
            .map(|i| (i.name.as_str(), i.ty.as_ref()))
            .collect();
        let held: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        if declared.keys().copied().collect::<Vec<_>>() != held {
            return Err(err(format!(
                "the function declares states {:?}, the state holds {held:?}",
                declared.keys().collect::<Vec<_>>()
            )));
        }
        for (name, t) in &self.tensors {
            let want = declared.get(name.as_str()).copied().flatten();
            if want != Some(&t.tensor_type()) {
                return Err(err(format!(
                    "state `{name}` is {} here, the function declares {}",
                    t.tensor_type(),
                    want.map_or("no static type".to_string(), |w| w.to_string())
                )));
            }
        }
        Ok(())
    }

    /// Take the final state values out of a prediction's outputs (the interpreter returns them
    /// under the state names).
    pub(crate) fn absorb(
        &mut self,
        function: &str,
        outputs: &mut BTreeMap<String, Tensor>,
    ) -> Result<(), RuntimeError> {
        for (name, cur) in self.tensors.iter_mut() {
            let t = outputs
                .remove(name)
                .ok_or_else(|| RuntimeError::StateSchema {
                    function: function.to_string(),
                    detail: format!("the prediction returned no value for state `{name}`"),
                })?;
            if t.tensor_type() != cur.tensor_type() {
                return Err(RuntimeError::StateSchema {
                    function: function.to_string(),
                    detail: format!(
                        "state `{name}` came back as {}, declared {}",
                        t.tensor_type(),
                        cur.tensor_type()
                    ),
                });
            }
            *cur = t;
        }
        Ok(())
    }
}
