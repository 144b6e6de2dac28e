//! Value types: tensor types with (possibly unknown) dimensions, states, lists, tuples, dictionaries.
//!
//! These mirror `MILSpec.ValueType`. A scalar is a rank-0 tensor type.

use crate::DType;
use std::fmt;

/// One dimension of a tensor type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// A compile-time size.
    Fixed(u64),
    /// A symbolic size (flexible shapes); `variadic` mirrors the proto flag.
    Unknown { variadic: bool },
}

impl Dim {
    /// The fixed size, if any.
    pub fn fixed(self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Unknown { .. } => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Unknown { .. } => f.write_str("?"),
        }
    }
}

/// A tensor type: element dtype and shape (rank = `shape.len()`, rank 0 = scalar).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// A tensor type with all dimensions fixed.
    pub fn new(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType {
            dtype,
            shape: shape.iter().map(|&d| Dim::Fixed(d as u64)).collect(),
        }
    }

    /// A rank-0 tensor type.
    pub fn scalar(dtype: DType) -> TensorType {
        TensorType {
            dtype,
            shape: Vec::new(),
        }
    }

    /// Rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The shape as plain sizes, if every dimension is fixed.
    pub fn static_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| d.fixed().and_then(|n| usize::try_from(n).ok()))
            .collect()
    }

    /// Number of elements, if the shape is static and the product fits in `usize`.
    pub fn num_elements(&self) -> Option<usize> {
        let mut n: usize = 1;
        for d in self.static_shape()? {
            n = n.checked_mul(d)?;
        }
        Some(n)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        f.write_str(self.dtype.mil_name())?;
        f.write_str(", [")?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]>")
    }
}

/// A MIL value type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    Tensor(TensorType),
    /// An iOS18 state wrapping a tensor type (`read_state` / `write_state`).
    State(TensorType),
    /// A list of `elem` values with an optional fixed length.
    List {
        elem: Box<ValueType>,
        length: Option<Dim>,
    },
    Tuple(Vec<ValueType>),
    Dict {
        key: Box<ValueType>,
        value: Box<ValueType>,
    },
}

impl ValueType {
    /// The tensor type, if this is a tensor.
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            ValueType::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl From<TensorType> for ValueType {
    fn from(t: TensorType) -> Self {
        ValueType::Tensor(t)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor(t) => write!(f, "{t}"),
            ValueType::State(t) => write!(f, "state<{t}>"),
            ValueType::List { elem, length } => match length {
                Some(l) => write!(f, "list<{elem}, {l}>"),
                None => write!(f, "list<{elem}, ?>"),
            },
            ValueType::Tuple(ts) => {
                f.write_str("tuple<")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str(">")
            }
            ValueType::Dict { key, value } => write!(f, "dict<{key}, {value}>"),
        }
    }
}

/// A named, typed value: function inputs, op outputs, block inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedValueType {
    pub name: String,
    pub ty: ValueType,
}

impl NamedValueType {
    /// A named tensor.
    pub fn tensor(name: impl Into<String>, ty: TensorType) -> Self {
        NamedValueType {
            name: name.into(),
            ty: ValueType::Tensor(ty),
        }
    }
}
