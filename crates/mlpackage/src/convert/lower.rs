//! IR → MIL proto.
//!
//! Conventions copied from coremltools 9.0 (`backend/mil/load.py`, `helper.py`):
//! * every op gets `attributes["name"]` = string scalar;
//! * functions have one block specialisation keyed by their opset;
//! * literals go to `weight.bin` iff [`super::blob_eligible`] **and** they sit where coremltools
//!   would write a file value: the `val` attribute of `const`, and the inline inputs / attributes
//!   of `constexpr_*` ops; everything else is immediate;
//! * immediate tensors: fp32→`floats`, fp64→`doubles`, int32/int16/uint16→`ints`,
//!   int64/uint64→`longInts`, bool→`bools`, string→`strings`, everything else (fp16, bf16, fp8,
//!   int8, uint8, uint32, int4, uint1/2/3/4/6) → raw little-endian / packed `bytes`;
//! * `docString`s stay empty.

use super::{At, Loc, Located, Seg, blob_eligible};
use crate::codes::mil_data_type;
use crate::error::{ProgramError, WeightsError};
use crate::weights::WEIGHT_FILE_REF;
use coreml_proto::mil_spec as pb;
use mil::{Binding, Block, DType, Dim, Function, Operation, Program, TensorType, TensorValue};
use mil::{TensorData, Value, ValueType};
use pb::tensor_value as tv;
use std::collections::BTreeMap;

/// Where blob-eligible literals are sent; returns the record offset.
pub(crate) type BlobSink<'s> = dyn FnMut(&TensorValue) -> Result<u64, WeightsError> + 's;

/// Lowers IR to proto, sending blob literals to a sink.
pub(crate) struct Lowerer<'s, 'k> {
    pub(crate) spec_version: i32,
    pub(crate) sink: &'k mut BlobSink<'s>,
}

/// The proto `Dimension` of an IR dimension.
pub fn dimension(d: &Dim) -> pb::Dimension {
    use pb::dimension::{ConstantDimension, Dimension as D, UnknownDimension};
    pb::Dimension {
        dimension: Some(match *d {
            Dim::Fixed(size) => D::Constant(ConstantDimension { size }),
            Dim::Unknown { variadic } => D::Unknown(UnknownDimension { variadic }),
        }),
    }
}

/// The proto `TensorType` of an IR tensor type.
pub fn tensor_type(t: &TensorType) -> pb::TensorType {
    pb::TensorType {
        data_type: mil_data_type(t.dtype),
        rank: t.shape.len() as i64,
        dimensions: t.shape.iter().map(dimension).collect(),
        attributes: BTreeMap::new(),
    }
}

/// The proto `ValueType` of an IR value type.
pub fn value_type(t: &ValueType) -> pb::ValueType {
    use pb::value_type::Type;
    let ty = match t {
        ValueType::Tensor(t) => Type::TensorType(tensor_type(t)),
        ValueType::State(t) => Type::StateType(Box::new(pb::StateType {
            wrapped_type: Some(Box::new(value_type(&ValueType::Tensor(t.clone())))),
        })),
        ValueType::List { elem, length } => Type::ListType(Box::new(pb::ListType {
            r#type: Some(Box::new(value_type(elem))),
            length: length.as_ref().map(dimension),
        })),
        ValueType::Tuple(ts) => Type::TupleType(pb::TupleType {
            types: ts.iter().map(value_type).collect(),
        }),
        ValueType::Dict { key, value } => Type::DictionaryType(Box::new(pb::DictionaryType {
            key_type: Some(Box::new(value_type(key))),
            value_type: Some(Box::new(value_type(value))),
        })),
    };
    pb::ValueType { r#type: Some(ty) }
}

fn named(v: &mil::NamedValueType) -> pb::NamedValueType {
    pb::NamedValueType {
        name: v.name.clone(),
        r#type: Some(value_type(&v.ty)),
    }
}

fn le_chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// The immediate `TensorValue` encoding of a tensor literal (coremltools' field choice per dtype).
pub fn immediate_tensor(t: &TensorValue) -> Result<pb::TensorValue, ProgramError> {
    let bytes = match t.data() {
        TensorData::Strings(s) => {
            return Ok(pb::TensorValue {
                value: Some(tv::Value::Strings(tv::RepeatedStrings {
                    values: s.clone(),
                })),
            });
        }
        TensorData::Bytes(b) => b.as_bytes(),
    };
    let value = match t.dtype() {
        DType::Bool => tv::Value::Bools(tv::RepeatedBools {
            values: bytes.iter().map(|&b| b != 0).collect(),
        }),
        DType::F32 => tv::Value::Floats(tv::RepeatedFloats {
            values: le_chunks::<4>(bytes).map(f32::from_le_bytes).collect(),
        }),
        DType::F64 => tv::Value::Doubles(tv::RepeatedDoubles {
            values: le_chunks::<8>(bytes).map(f64::from_le_bytes).collect(),
        }),
        DType::I32 => tv::Value::Ints(tv::RepeatedInts {
            values: le_chunks::<4>(bytes).map(i32::from_le_bytes).collect(),
        }),
        DType::I16 => tv::Value::Ints(tv::RepeatedInts {
            values: le_chunks::<2>(bytes)
                .map(|c| i32::from(i16::from_le_bytes(c)))
                .collect(),
        }),
        DType::U16 => tv::Value::Ints(tv::RepeatedInts {
            values: le_chunks::<2>(bytes)
                .map(|c| i32::from(u16::from_le_bytes(c)))
                .collect(),
        }),
        DType::I64 => tv::Value::LongInts(tv::RepeatedLongInts {
            values: le_chunks::<8>(bytes).map(i64::from_le_bytes).collect(),
        }),
        DType::U64 => tv::Value::LongInts(tv::RepeatedLongInts {
            values: le_chunks::<8>(bytes)
                .map(|c| u64::from_le_bytes(c) as i64)
                .collect(),
        }),
        DType::Str => {
            return Err(ProgramError::TypeMismatch {
                declared: t.ty().to_string(),
            });
        }
        _ => tv::Value::Bytes(tv::RepeatedBytes {
            values: bytes.to_vec(),
        }),
    };
    Ok(pb::TensorValue { value: Some(value) })
}

impl Lowerer<'_, '_> {
    /// Lower a whole program.
    pub(crate) fn program(&mut self, p: &Program) -> Result<pb::Program, Located> {
        let root = Loc::root();
        let mut attributes = BTreeMap::new();
        for (k, v) in &p.attributes {
            attributes.insert(
                k.clone(),
                self.value(v, false, &root.at(Seg::ProgramAttr(k)))?,
            );
        }
        let mut functions = BTreeMap::new();
        for (name, f) in &p.functions {
            functions.insert(
                name.clone(),
                self.function(f, &root.at(Seg::Function(name)))?,
            );
        }
        Ok(pb::Program {
            version: p.version,
            functions,
            doc_string: String::new(),
            attributes,
        })
    }

    fn function(&mut self, f: &Function, loc: &Loc<'_>) -> Result<pb::Function, Located> {
        let mut attributes = BTreeMap::new();
        for (k, v) in &f.attributes {
            attributes.insert(
                k.clone(),
                self.value(v, false, &loc.at(Seg::FunctionAttr(k)))?,
            );
        }
        let block = self.block(&f.block, loc)?;
        Ok(pb::Function {
            inputs: f.inputs.iter().map(named).collect(),
            opset: f.opset.clone(),
            block_specializations: BTreeMap::from([(f.opset.clone(), block)]),
            attributes,
        })
    }

    fn block(&mut self, b: &Block, loc: &Loc<'_>) -> Result<pb::Block, Located> {
        let mut attributes = BTreeMap::new();
        for (k, v) in &b.attributes {
            attributes.insert(k.clone(), self.value(v, false, &loc.at(Seg::BlockAttr(k)))?);
        }
        let mut operations = Vec::with_capacity(b.operations.len());
        for (index, op) in b.operations.iter().enumerate() {
            let l = loc.at(Seg::Op {
                index,
                name: &op.name,
                ty: &op.op_type,
            });
            operations.push(self.op(op, &l)?);
        }
        Ok(pb::Block {
            inputs: b.inputs.iter().map(named).collect(),
            outputs: b.outputs.clone(),
            operations,
            attributes,
        })
    }

    fn op(&mut self, op: &Operation, loc: &Loc<'_>) -> Result<pb::Operation, Located> {
        let constexpr = op.op_type.starts_with("constexpr_");
        let mut inputs = BTreeMap::new();
        for (param, bindings) in &op.inputs {
            let mut arguments = Vec::with_capacity(bindings.len());
            for (i, b) in bindings.iter().enumerate() {
                use pb::argument::binding::Binding as B;
                let binding = match b {
                    Binding::Name(n) => B::Name(n.clone()),
                    Binding::Value(v) => {
                        B::Value(self.value(v, constexpr, &loc.at(Seg::Input(param, i)))?)
                    }
                };
                arguments.push(pb::argument::Binding {
                    binding: Some(binding),
                });
            }
            inputs.insert(param.clone(), pb::Argument { arguments });
        }
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "name".to_string(),
            self.value(&TensorValue::scalar_str(&op.name).into(), false, loc)?,
        );
        for (k, v) in &op.attributes {
            let l = loc.at(Seg::Attr(k));
            if k == "name" {
                return l.err(ProgramError::Unsupported {
                    what: "an attribute called `name` besides the op name".into(),
                });
            }
            let blob_ok = constexpr || (op.op_type == "const" && k == "val");
            attributes.insert(k.clone(), self.value(v, blob_ok, &l)?);
        }
        let mut blocks = Vec::with_capacity(op.blocks.len());
        for (i, b) in op.blocks.iter().enumerate() {
            blocks.push(self.block(b, &loc.at(Seg::NestedBlock(i)))?);
        }
        Ok(pb::Operation {
            r#type: op.op_type.clone(),
            inputs,
            outputs: op.outputs.iter().map(named).collect(),
            blocks,
            attributes,
        })
    }

    fn value(&mut self, v: &Value, blob_ok: bool, loc: &Loc<'_>) -> Result<pb::Value, Located> {
        use pb::value::immediate_value::Value as Imm;
        use pb::value::{BlobFileValue, ImmediateValue, Value as V};
        let imm = |x: Imm| Some(V::ImmediateValue(ImmediateValue { value: Some(x) }));
        let value = match v {
            Value::Tensor(t) => {
                if blob_ok && blob_eligible(t, self.spec_version) {
                    let offset = (self.sink)(t).map_err(ProgramError::from).at(loc)?;
                    Some(V::BlobFileValue(BlobFileValue {
                        file_name: WEIGHT_FILE_REF.to_string(),
                        offset,
                    }))
                } else {
                    imm(Imm::Tensor(immediate_tensor(t).at(loc)?))
                }
            }
            Value::Tuple(vs) => {
                let mut values = Vec::with_capacity(vs.len());
                for (i, x) in vs.iter().enumerate() {
                    values.push(self.value(x, false, &loc.at(Seg::Elem(i)))?);
                }
                imm(Imm::Tuple(pb::TupleValue { values }))
            }
            Value::List { values: vs, .. } => {
                let mut values = Vec::with_capacity(vs.len());
                for (i, x) in vs.iter().enumerate() {
                    values.push(self.value(x, false, &loc.at(Seg::Elem(i)))?);
                }
                imm(Imm::List(pb::ListValue { values }))
            }
            Value::Dict { entries, .. } => {
                let mut values = Vec::with_capacity(entries.len());
                for (i, (k, x)) in entries.iter().enumerate() {
                    let l = loc.at(Seg::Elem(i));
                    values.push(pb::dictionary_value::KeyValuePair {
                        key: Some(self.value(k, false, &l)?),
                        value: Some(self.value(x, false, &l)?),
                    });
                }
                imm(Imm::Dictionary(pb::DictionaryValue { values }))
            }
        };
        Ok(pb::Value {
            doc_string: String::new(),
            r#type: Some(value_type(&v.value_type())),
            value,
        })
    }
}
