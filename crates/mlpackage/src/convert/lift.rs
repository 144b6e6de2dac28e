//! MIL proto → IR.
//!
//! Inverse of [`super::lower`]. Accepts exactly what the IR can hold, so that lifting and lowering
//! again reproduces the same proto (up to blob offsets). Rejected (typed errors, never panics):
//! unknown data types, rank/dimension disagreement, immediates in the wrong `TensorValue` field or
//! with the wrong element count, non-empty `docString`s, `TensorType.attributes`, several block
//! specialisations, ops without a string `name` attribute, blob files other than
//! `@model_path/weights/weight.bin`, blobs that fail [`crate::weights::BlobReader::read`].
//!
//! Unknown op *types* are accepted here: rejecting them is the job of the `mil` validator.

use super::{At, Loc, Located, Seg};
use crate::codes::dtype_from_mil;
use crate::error::{ProgramError, WeightsError};
use crate::weights::{BlobReader, WEIGHT_FILE_REF};
use coreml_proto::mil_spec as pb;
use mil::{Binding, Block, DType, Dim, Function, NamedValueType, Operation, Program};
use mil::{TensorType, TensorValue, Value, ValueType};
use pb::tensor_value::Value as Tv;
use std::collections::BTreeMap;

/// Lifts proto to IR, resolving blobs through an optional reader.
pub(crate) struct Lifter<'r> {
    pub(crate) blobs: Option<&'r BlobReader>,
}

fn missing(what: &'static str) -> ProgramError {
    ProgramError::Missing { what }
}

/// The IR dimension of a proto dimension.
pub fn dimension(d: &pb::Dimension) -> Result<Dim, ProgramError> {
    use pb::dimension::Dimension as D;
    match &d.dimension {
        Some(D::Constant(c)) => Ok(Dim::Fixed(c.size)),
        Some(D::Unknown(u)) => Ok(Dim::Unknown {
            variadic: u.variadic,
        }),
        None => Err(missing("dimension")),
    }
}

/// The IR tensor type of a proto tensor type.
pub fn tensor_type(t: &pb::TensorType) -> Result<TensorType, ProgramError> {
    let dtype =
        dtype_from_mil(t.data_type).ok_or(ProgramError::UnknownDataType { code: t.data_type })?;
    if t.rank != t.dimensions.len() as i64 {
        return Err(ProgramError::Rank {
            rank: t.rank,
            dims: t.dimensions.len(),
        });
    }
    if !t.attributes.is_empty() {
        return Err(ProgramError::Unsupported {
            what: "TensorType.attributes".into(),
        });
    }
    let shape = t
        .dimensions
        .iter()
        .map(dimension)
        .collect::<Result<_, _>>()?;
    Ok(TensorType { dtype, shape })
}

/// The IR value type of a proto value type.
pub fn value_type(t: &pb::ValueType) -> Result<ValueType, ProgramError> {
    use pb::value_type::Type;
    let sub = |x: &Option<Box<pb::ValueType>>, what| {
        x.as_deref()
            .ok_or_else(|| missing(what))
            .and_then(value_type)
    };
    Ok(
        match t.r#type.as_ref().ok_or_else(|| missing("value type"))? {
            Type::TensorType(t) => ValueType::Tensor(tensor_type(t)?),
            Type::StateType(s) => match sub(&s.wrapped_type, "state wrapped type")? {
                ValueType::Tensor(t) => ValueType::State(t),
                other => {
                    return Err(ProgramError::Unsupported {
                        what: format!("state wrapping {other}"),
                    });
                }
            },
            Type::ListType(l) => ValueType::List {
                elem: Box::new(sub(&l.r#type, "list element type")?),
                length: l.length.as_ref().map(dimension).transpose()?,
            },
            Type::TupleType(t) => {
                ValueType::Tuple(t.types.iter().map(value_type).collect::<Result<_, _>>()?)
            }
            Type::DictionaryType(d) => ValueType::Dict {
                key: Box::new(sub(&d.key_type, "dictionary key type")?),
                value: Box::new(sub(&d.value_type, "dictionary value type")?),
            },
        },
    )
}

fn named(v: &pb::NamedValueType) -> Result<NamedValueType, ProgramError> {
    let ty = v.r#type.as_ref().ok_or_else(|| missing("value type"))?;
    Ok(NamedValueType {
        name: v.name.clone(),
        ty: value_type(ty)?,
    })
}

/// Whether a value of type `actual` may stand where `declared` is declared (list lengths that are
/// absent or unknown in the declaration match any length).
fn compatible(declared: &ValueType, actual: &ValueType) -> bool {
    match (declared, actual) {
        (
            ValueType::List {
                elem: e1,
                length: l1,
            },
            ValueType::List {
                elem: e2,
                length: l2,
            },
        ) => {
            compatible(e1, e2)
                && match (l1, l2) {
                    (Some(Dim::Fixed(a)), Some(Dim::Fixed(b))) => a == b,
                    _ => true,
                }
        }
        (ValueType::Tuple(a), ValueType::Tuple(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| compatible(x, y))
        }
        (ValueType::Dict { key: k1, value: v1 }, ValueType::Dict { key: k2, value: v2 }) => {
            compatible(k1, k2) && compatible(v1, v2)
        }
        _ => declared == actual,
    }
}

fn field_name(v: &Tv) -> &'static str {
    match v {
        Tv::Floats(_) => "floats",
        Tv::Ints(_) => "ints",
        Tv::Bools(_) => "bools",
        Tv::Strings(_) => "strings",
        Tv::LongInts(_) => "longInts",
        Tv::Doubles(_) => "doubles",
        Tv::Bytes(_) => "bytes",
    }
}

fn expected_field(d: DType) -> &'static str {
    match d {
        DType::Bool => "bools",
        DType::Str => "strings",
        DType::F32 => "floats",
        DType::F64 => "doubles",
        DType::I32 | DType::I16 | DType::U16 => "ints",
        DType::I64 | DType::U64 => "longInts",
        _ => "bytes",
    }
}

/// Decode an immediate tensor of (static) type `ty`.
pub fn immediate_tensor(ty: TensorType, t: &pb::TensorValue) -> Result<TensorValue, ProgramError> {
    let n = ty
        .num_elements()
        .ok_or_else(|| ProgramError::DynamicLiteral { ty: ty.clone() })?;
    let dtype = ty.dtype;
    let want = expected_field(dtype);
    let Some(v) = &t.value else {
        if n == 0 {
            return if dtype == DType::Str {
                Ok(TensorValue::from_strings(
                    &ty.static_shape().unwrap_or_default(),
                    Vec::new(),
                )?)
            } else {
                Ok(TensorValue::from_bytes(ty, Vec::new())?)
            };
        }
        return Err(missing("tensor payload"));
    };
    if field_name(v) != want {
        return Err(ProgramError::WrongField {
            dtype,
            found: field_name(v),
            expected: want,
        });
    }
    let count = |found: usize| {
        if found == n {
            Ok(())
        } else {
            Err(ProgramError::Count {
                ty: ty.clone(),
                unit: "elements",
                expected: n,
                found,
            })
        }
    };
    let bytes: Vec<u8> = match v {
        Tv::Strings(s) => {
            count(s.values.len())?;
            let shape = ty.static_shape().unwrap_or_default();
            return Ok(TensorValue::from_strings(&shape, s.values.clone())?);
        }
        Tv::Bools(b) => {
            count(b.values.len())?;
            b.values.iter().map(|&x| u8::from(x)).collect()
        }
        Tv::Floats(f) => {
            count(f.values.len())?;
            f.values.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        Tv::Doubles(f) => {
            count(f.values.len())?;
            f.values.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        Tv::LongInts(l) => {
            count(l.values.len())?;
            l.values.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        Tv::Ints(i) => {
            count(i.values.len())?;
            let mut out = Vec::with_capacity(i.values.len() * 4);
            for &x in &i.values {
                match dtype {
                    DType::I16 => out.extend_from_slice(
                        &i16::try_from(x)
                            .map_err(|_| ProgramError::OutOfRange {
                                dtype,
                                value: x.into(),
                            })?
                            .to_le_bytes(),
                    ),
                    DType::U16 => out.extend_from_slice(
                        &u16::try_from(x)
                            .map_err(|_| ProgramError::OutOfRange {
                                dtype,
                                value: x.into(),
                            })?
                            .to_le_bytes(),
                    ),
                    _ => out.extend_from_slice(&x.to_le_bytes()),
                }
            }
            out
        }
        Tv::Bytes(b) => {
            let expected = dtype.storage_bytes(n).unwrap_or(0);
            if b.values.len() != expected {
                return Err(ProgramError::Count {
                    ty,
                    unit: "bytes",
                    expected,
                    found: b.values.len(),
                });
            }
            b.values.clone()
        }
    };
    Ok(TensorValue::from_bytes(ty, bytes)?)
}

impl Lifter<'_> {
    /// Lift a whole program.
    pub(crate) fn program(&self, p: &pb::Program) -> Result<Program, Located> {
        let root = Loc::root();
        if !p.doc_string.is_empty() {
            return root.err(ProgramError::Unsupported {
                what: "Program.docString".into(),
            });
        }
        let mut attributes = BTreeMap::new();
        for (k, v) in &p.attributes {
            attributes.insert(k.clone(), self.value(v, &root.at(Seg::ProgramAttr(k)))?);
        }
        let mut functions = BTreeMap::new();
        for (name, f) in &p.functions {
            functions.insert(
                name.clone(),
                self.function(f, &root.at(Seg::Function(name)))?,
            );
        }
        Ok(Program {
            version: p.version,
            functions,
            attributes,
        })
    }

    fn function(&self, f: &pb::Function, loc: &Loc<'_>) -> Result<Function, Located> {
        let mut inputs = Vec::with_capacity(f.inputs.len());
        for (i, v) in f.inputs.iter().enumerate() {
            inputs.push(named(v).at(&loc.at(Seg::FunctionInput(i, &v.name)))?);
        }
        let mut attributes = BTreeMap::new();
        for (k, v) in &f.attributes {
            attributes.insert(k.clone(), self.value(v, &loc.at(Seg::FunctionAttr(k)))?);
        }
        let block = match (
            f.block_specializations.len(),
            f.block_specializations.get(&f.opset),
        ) {
            (1, Some(b)) => self.block(b, loc)?,
            _ => {
                let keys: Vec<&String> = f.block_specializations.keys().collect();
                return loc.err(ProgramError::Unsupported {
                    what: format!(
                        "block specializations {keys:?} (need exactly one, keyed by the opset {:?})",
                        f.opset
                    ),
                });
            }
        };
        Ok(Function {
            inputs,
            opset: f.opset.clone(),
            block,
            attributes,
        })
    }

    fn block(&self, b: &pb::Block, loc: &Loc<'_>) -> Result<Block, Located> {
        let mut inputs = Vec::with_capacity(b.inputs.len());
        for (i, v) in b.inputs.iter().enumerate() {
            inputs.push(named(v).at(&loc.at(Seg::BlockInput(i, &v.name)))?);
        }
        let mut attributes = BTreeMap::new();
        for (k, v) in &b.attributes {
            attributes.insert(k.clone(), self.value(v, &loc.at(Seg::BlockAttr(k)))?);
        }
        let mut operations = Vec::with_capacity(b.operations.len());
        for (index, op) in b.operations.iter().enumerate() {
            operations.push(self.op(op, index, loc)?);
        }
        Ok(Block {
            inputs,
            outputs: b.outputs.clone(),
            operations,
            attributes,
        })
    }

    fn op_name(&self, op: &pb::Operation, loc: &Loc<'_>) -> Result<String, Located> {
        let Some(v) = op.attributes.get("name") else {
            return loc.err(missing("op `name` attribute"));
        };
        match self.value(v, &loc.at(Seg::Attr("name")))? {
            Value::Tensor(t) if t.ty().rank() == 0 && t.strings().is_some_and(|s| s.len() == 1) => {
                Ok(t.strings()
                    .and_then(|s| s.first())
                    .cloned()
                    .unwrap_or_default())
            }
            _ => loc.at(Seg::Attr("name")).err(ProgramError::TypeMismatch {
                declared: "op name must be a string scalar".into(),
            }),
        }
    }

    fn op(&self, op: &pb::Operation, index: usize, parent: &Loc<'_>) -> Result<Operation, Located> {
        let anon = parent.at(Seg::Op {
            index,
            name: "?",
            ty: &op.r#type,
        });
        let name = self.op_name(op, &anon)?;
        let loc = parent.at(Seg::Op {
            index,
            name: &name,
            ty: &op.r#type,
        });
        let mut inputs = BTreeMap::new();
        for (param, arg) in &op.inputs {
            let mut bindings = Vec::with_capacity(arg.arguments.len());
            for (i, b) in arg.arguments.iter().enumerate() {
                use pb::argument::binding::Binding as B;
                let l = loc.at(Seg::Input(param, i));
                bindings.push(match &b.binding {
                    Some(B::Name(n)) => Binding::Name(n.clone()),
                    Some(B::Value(v)) => Binding::Value(self.value(v, &l)?),
                    None => return l.err(missing("binding")),
                });
            }
            inputs.insert(param.clone(), bindings);
        }
        let mut outputs = Vec::with_capacity(op.outputs.len());
        for (i, v) in op.outputs.iter().enumerate() {
            outputs.push(named(v).at(&loc.at(Seg::Output(i)))?);
        }
        let mut attributes = BTreeMap::new();
        for (k, v) in &op.attributes {
            if k != "name" {
                attributes.insert(k.clone(), self.value(v, &loc.at(Seg::Attr(k)))?);
            }
        }
        let mut blocks = Vec::with_capacity(op.blocks.len());
        for (i, b) in op.blocks.iter().enumerate() {
            blocks.push(self.block(b, &loc.at(Seg::NestedBlock(i)))?);
        }
        Ok(Operation {
            op_type: op.r#type.clone(),
            name,
            inputs,
            outputs,
            attributes,
            blocks,
        })
    }

    fn blob(
        &self,
        f: &pb::value::BlobFileValue,
        ty: &TensorType,
    ) -> Result<TensorValue, ProgramError> {
        if f.file_name != WEIGHT_FILE_REF {
            return Err(ProgramError::BlobFile {
                name: f.file_name.clone(),
                expected: WEIGHT_FILE_REF,
            });
        }
        let reader = self
            .blobs
            .ok_or(WeightsError::NoWeightFile { offset: f.offset })?;
        Ok(reader.read(f.offset, ty)?)
    }

    fn value(&self, v: &pb::Value, loc: &Loc<'_>) -> Result<Value, Located> {
        use pb::value::Value as V;
        use pb::value::immediate_value::Value as Imm;
        if !v.doc_string.is_empty() {
            return loc.err(ProgramError::Unsupported {
                what: "Value.docString".into(),
            });
        }
        let declared = value_type(
            v.r#type
                .as_ref()
                .ok_or_else(|| missing("value type"))
                .at(loc)?,
        )
        .at(loc)?;
        let mismatch = || ProgramError::TypeMismatch {
            declared: declared.to_string(),
        };
        let imm = match &v.value {
            None => return loc.err(missing("value payload")),
            Some(V::BlobFileValue(f)) => {
                return match &declared {
                    ValueType::Tensor(t) => Ok(Value::Tensor(self.blob(f, t).at(loc)?)),
                    _ => loc.err(mismatch()),
                };
            }
            Some(V::ImmediateValue(i)) => i
                .value
                .as_ref()
                .ok_or_else(|| missing("immediate value"))
                .at(loc)?,
        };
        let lift_all = |vs: &[pb::Value]| -> Result<Vec<Value>, Located> {
            let mut out = Vec::with_capacity(vs.len());
            for (i, x) in vs.iter().enumerate() {
                out.push(self.value(x, &loc.at(Seg::Elem(i)))?);
            }
            Ok(out)
        };
        let value = match (&declared, imm) {
            (ValueType::Tensor(t), Imm::Tensor(x)) => {
                Value::Tensor(immediate_tensor(t.clone(), x).at(loc)?)
            }
            (ValueType::Tuple(_), Imm::Tuple(x)) => Value::Tuple(lift_all(&x.values)?),
            (ValueType::List { elem, .. }, Imm::List(x)) => Value::List {
                elem: (**elem).clone(),
                values: lift_all(&x.values)?,
            },
            (ValueType::Dict { key, value }, Imm::Dictionary(d)) => {
                let mut entries = Vec::with_capacity(d.values.len());
                for (i, kv) in d.values.iter().enumerate() {
                    let l = loc.at(Seg::Elem(i));
                    let k = kv
                        .key
                        .as_ref()
                        .ok_or_else(|| missing("dictionary key"))
                        .at(&l)?;
                    let x = kv
                        .value
                        .as_ref()
                        .ok_or_else(|| missing("dictionary value"))
                        .at(&l)?;
                    let (k, x) = (self.value(k, &l)?, self.value(x, &l)?);
                    if !compatible(key, &k.value_type()) || !compatible(value, &x.value_type()) {
                        return l.err(mismatch());
                    }
                    entries.push((k, x));
                }
                Value::Dict {
                    key: (**key).clone(),
                    value: (**value).clone(),
                    entries,
                }
            }
            _ => return loc.err(mismatch()),
        };
        let ok = match (&declared, &value) {
            (ValueType::List { elem, .. }, Value::List { values, .. }) => {
                values.iter().all(|x| compatible(elem, &x.value_type()))
            }
            _ => true,
        };
        if !ok || !compatible(&declared, &value.value_type()) {
            return loc.err(mismatch());
        }
        Ok(value)
    }
}
