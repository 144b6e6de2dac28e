//! `mil-runtime`: run MIL programs on the CPU (and, on Apple targets, through Core ML) behind one
//! [`Backend`] trait.
//!
//! * [`tensor`]: the runtime [`Tensor`] (fp16 stays f16; the fp16 emulation model is "one rounding
//!   per op output", see the module doc);
//! * [`interp`]: the [`Interpreter`] — load-time compilation (op support check, const and
//!   constexpr evaluation, last-use analysis), signature checks, `run` / `run_with_taps`;
//! * [`ops`]: one kernel module per op family, each with a spec sheet;
//! * [`backend`]: the object-safe [`Backend`] trait and the CPU implementation;
//! * [`logits`]: where a head chunk's full-vocabulary logits are (the input of the argmax behind
//!   `token_id`, whatever it is called);
//! * [`verify`]: [`verify::verify_set`], a chunk set on disk against its manifest, its
//!   `model_config.json` and the contract (files, packages and their I/O, side files);
//! * [`state`]: [`ModelState`], the caller-held `MLState` of stateful functions (zero at start,
//!   carried across calls and shared by the functions of a package);
//! * [`stateful`]: the host loop of stateful chunk sets (`Gemma4StatefulEngine`'s), with
//!   batched prefill and cross-turn KV reuse;
//! * [`parity`] / [`fidelity`]: logit metrics and named tolerances; the many-sequence statistics
//!   of the fp16 fidelity benchmark (intervals, paired ratios, the CI gate);
//! * `coreml` (Apple targets, feature `coreml`): the Core ML backend.
//!
//! Architecture invariant: this crate never sees `gemma4`; it only knows MIL programs (built in
//! memory or read back from an `.mlpackage`), so parity compares two independent implementations.

pub mod backend;
pub mod chunkset;
pub mod error;
pub mod fidelity;
pub mod interp;
pub mod logits;
pub(crate) mod npy;
pub mod ops;
pub mod parity;
pub mod state;
pub mod stateful;
pub mod storage;
pub mod tensor;
pub mod verify;

#[cfg(all(target_vendor = "apple", feature = "coreml"))]
pub mod coreml;

pub use backend::{
    Backend, BackendKind, ComputeUnits, CpuBackend, IoSpec, LoadOptions, Signature, TensorMap,
    load_backend, signature_of,
};
pub use error::{KernelError, RuntimeError};
pub use interp::{InputSpec, Interpreter, Profile};
pub use state::ModelState;
pub use tensor::{Tensor, TensorData};
