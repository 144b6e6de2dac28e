//! MIL IR ⇄ MIL protobuf (`CoreML.Specification.MILSpec`).
//!
//! * [`lower`]: IR → proto, deciding for every literal whether it goes to `weight.bin`
//!   ([`blob_eligible`]) and encoding immediates exactly as coremltools 9.0 does.
//! * [`lift`]: proto → IR, resolving `BlobFileValue`s through a [`crate::weights::BlobReader`]
//!   (zero copy) and rejecting anything the IR cannot represent faithfully (non-empty docStrings,
//!   tensor-type attributes, several block specialisations, ...), so read → write → read is exact.
//!
//! Errors carry a location path (`function `main` › op #3 `linear_0` (linear) › input `weight``).

pub mod lift;
pub mod lower;

use crate::error::ProgramError;
use mil::{DType, TensorType, TensorValue, Value, ValueType};
use std::fmt::{self, Write as _};

/// Whether coremltools would store this literal in `weight.bin` (`should_use_weight_file`):
/// at least 10 elements and dtype fp16, fp32, uint8, int8 or a sub-byte type (int4, uint1/2/3/4/6),
/// plus int16, uint16, int32, uint32 from specification version 9 (iOS 18) on.
pub fn blob_eligible(t: &TensorValue, spec_version: i32) -> bool {
    let dtype_ok = match t.dtype() {
        DType::F16 | DType::F32 | DType::U8 | DType::I8 => true,
        d if d.is_sub_byte() => true,
        DType::I16 | DType::U16 | DType::I32 | DType::U32 => spec_version >= 9,
        _ => false,
    };
    dtype_ok && t.num_elements() >= 10
}

/// The `Program.attributes["buildInfo"]` value coremltools writes: a dictionary of string scalars,
/// entries in the given order (coremltools: `coremltools-version`, `coremltools-component-torch`,
/// `coremltools-source-dialect`). The milproto loader accepts no other program attribute.
pub fn build_info(entries: &[(&str, &str)]) -> Value {
    let string = ValueType::Tensor(TensorType::scalar(DType::Str));
    Value::Dict {
        key: string.clone(),
        value: string,
        entries: entries
            .iter()
            .map(|(k, v)| {
                (
                    Value::Tensor(TensorValue::scalar_str(*k)),
                    Value::Tensor(TensorValue::scalar_str(*v)),
                )
            })
            .collect(),
    }
}

/// One step of a location path.
#[derive(Clone, Copy)]
pub(crate) enum Seg<'a> {
    ProgramAttr(&'a str),
    Function(&'a str),
    FunctionInput(usize, &'a str),
    FunctionAttr(&'a str),
    NestedBlock(usize),
    BlockInput(usize, &'a str),
    BlockAttr(&'a str),
    Op {
        index: usize,
        name: &'a str,
        ty: &'a str,
    },
    Input(&'a str, usize),
    Output(usize),
    Attr(&'a str),
    Elem(usize),
}

impl fmt::Display for Seg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::ProgramAttr(k) => write!(f, "program attribute `{k}`"),
            Seg::Function(n) => write!(f, "function `{n}`"),
            Seg::FunctionInput(i, n) => write!(f, "input #{i} `{n}`"),
            Seg::FunctionAttr(k) => write!(f, "function attribute `{k}`"),
            Seg::NestedBlock(i) => write!(f, "block #{i}"),
            Seg::BlockInput(i, n) => write!(f, "block input #{i} `{n}`"),
            Seg::BlockAttr(k) => write!(f, "block attribute `{k}`"),
            Seg::Op { index, name, ty } => write!(f, "op #{index} `{name}` ({ty})"),
            Seg::Input(p, i) => write!(f, "input `{p}`[{i}]"),
            Seg::Output(i) => write!(f, "output #{i}"),
            Seg::Attr(k) => write!(f, "attribute `{k}`"),
            Seg::Elem(i) => write!(f, "element #{i}"),
        }
    }
}

/// A location: a chain of segments on the stack, rendered only when an error occurs.
pub(crate) struct Loc<'a> {
    seg: Option<Seg<'a>>,
    parent: Option<&'a Loc<'a>>,
}

impl<'a> Loc<'a> {
    pub(crate) fn root() -> Loc<'static> {
        Loc {
            seg: None,
            parent: None,
        }
    }

    pub(crate) fn at(&'a self, seg: Seg<'a>) -> Loc<'a> {
        Loc {
            seg: Some(seg),
            parent: Some(self),
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(l) = cur {
            if let Some(s) = l.seg {
                segs.push(s);
            }
            cur = l.parent;
        }
        let mut out = String::new();
        for (i, s) in segs.iter().rev().enumerate() {
            if i > 0 {
                out.push_str(" › ");
            }
            let _ = write!(out, "{s}");
        }
        if out.is_empty() {
            out.push_str("program");
        }
        out
    }

    pub(crate) fn err<T>(&self, e: impl Into<ProgramError>) -> Result<T, Located> {
        Err(Located {
            location: self.render(),
            error: e.into(),
        })
    }
}

/// A [`ProgramError`] with its rendered location.
#[derive(Debug)]
pub(crate) struct Located {
    pub(crate) location: String,
    pub(crate) error: ProgramError,
}

/// Attach a location to a plain error.
pub(crate) trait At<T> {
    fn at(self, loc: &Loc<'_>) -> Result<T, Located>;
}

impl<T, E: Into<ProgramError>> At<T> for Result<T, E> {
    fn at(self, loc: &Loc<'_>) -> Result<T, Located> {
        self.or_else(|e| loc.err(e))
    }
}

#[cfg(test)]
mod tests;
