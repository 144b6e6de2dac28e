//! The model description (`CoreML.Specification.ModelDescription`): the interface Core ML shows to
//! apps (inputs, outputs, states, functions) plus metadata.
//!
//! * Single-function programs (one function called `main`) use the top-level `input` / `output` /
//!   `state` lists. Multi-function programs (spec ≥ 9) list every function in `functions` and name
//!   the `defaultFunctionName`; the top-level lists stay empty (coremltools `save_multifunction`).
//! * ML-program I/O features are multi-arrays (`ArrayFeatureType`, dtype fp32 / fp16 / int32 /
//!   int8; fp64 is read too) with a fixed shape (outputs with a symbolic shape get an empty shape);
//!   states are `StateFeatureType.arrayType` (fp16: Core ML's rule; [`StateDtypes::AllowFp32`]
//!   also writes fp32 states, for verification builds that are run by our interpreter and are not
//!   loadable by Core ML).
//! * [`Description::derive`] builds this from a program; [`Description::check`] verifies a
//!   description against a program (names in order, dtypes, static shapes) before writing.
//! * Decoding keeps everything the proto says about ML-program features (optional flag, default
//!   value, enumerated / ranged shapes, short descriptions) so read → write → read is faithful;
//!   other feature kinds (images, dictionaries, ...) are kept verbatim as [`FeatureKind::Other`].

use crate::codes::{array_data_type, dtype_from_array};
use crate::error::DescriptionError;
use coreml_proto::specification as spec;
use mil::{DType, Function, Program, TensorType, ValueType};
use spec::array_feature_type::{DefaultOptionalValue, ShapeFlexibility as PbFlex};
use spec::feature_type::Type as FtType;
use std::collections::BTreeMap;

/// Model metadata (`ModelDescription.metadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `shortDescription`.
    pub short_description: String,
    /// `versionString`.
    pub version: String,
    /// `author`.
    pub author: String,
    /// `license`.
    pub license: String,
    /// Free-form key/value pairs (coremltools adds `com.github.apple.coremltools.*`).
    pub user_defined: BTreeMap<String, String>,
}

/// Flexible input shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeFlexibility {
    /// One of these shapes.
    Enumerated(Vec<Vec<i64>>),
    /// Per dimension `(lower, upper)`; `upper == -1` means unbounded.
    Range(Vec<(u64, i64)>),
}

/// Default value of an optional multi-array input (the whole tensor is filled with it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultValue {
    /// `intDefaultValue`.
    Int(i32),
    /// `floatDefaultValue` (what coremltools writes, even for int32 inputs).
    Float(f32),
    /// `doubleDefaultValue`.
    Double(f64),
}

/// A multi-array feature type.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayFeature {
    /// Shape (the default shape for flexible inputs; empty for outputs with a symbolic shape).
    pub shape: Vec<i64>,
    /// Element dtype (fp32, fp16, fp64, int32 or int8).
    pub dtype: DType,
    /// Enumerated or ranged shapes of a flexible input.
    pub flexibility: Option<ShapeFlexibility>,
    /// Default value of an optional input.
    pub default: Option<DefaultValue>,
}

impl ArrayFeature {
    /// A fixed-shape array.
    pub fn new(dtype: DType, shape: &[usize]) -> ArrayFeature {
        ArrayFeature {
            shape: shape.iter().map(|&d| d as i64).collect(),
            dtype,
            flexibility: None,
            default: None,
        }
    }
}

/// The type of a feature.
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureKind {
    /// `multiArrayType`.
    Array(ArrayFeature),
    /// `stateType.arrayType`.
    State(ArrayFeature),
    /// Any other feature type, kept verbatim (`isOptional` cleared; see [`Feature::optional`]).
    Other(Box<spec::FeatureType>),
}

/// One input, output or state.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// Feature name (= the MIL input / output name).
    pub name: String,
    /// `shortDescription`.
    pub short_description: String,
    /// `FeatureType.isOptional`.
    pub optional: bool,
    /// The feature type.
    pub kind: FeatureKind,
}

impl Feature {
    /// A required multi-array feature.
    pub fn array(name: impl Into<String>, array: ArrayFeature) -> Feature {
        Feature {
            name: name.into(),
            short_description: String::new(),
            optional: false,
            kind: FeatureKind::Array(array),
        }
    }

    /// The array type of an array or state feature.
    pub fn array_type(&self) -> Option<&ArrayFeature> {
        match &self.kind {
            FeatureKind::Array(a) | FeatureKind::State(a) => Some(a),
            FeatureKind::Other(_) => None,
        }
    }
}

/// The interface of one function of a multi-function model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionDescription {
    /// Function name (a key of `Program.functions`).
    pub name: String,
    /// Non-state inputs, in function-input order.
    pub inputs: Vec<Feature>,
    /// Outputs, in block-output order.
    pub outputs: Vec<Feature>,
    /// State inputs, in function-input order.
    pub states: Vec<Feature>,
    /// `predictedFeatureName` (classifiers only).
    pub predicted_feature_name: String,
    /// `predictedProbabilitiesName` (classifiers only).
    pub predicted_probabilities_name: String,
}

/// Borrowed view of one function's interface, whichever form the description uses.
#[derive(Clone, Copy, Debug)]
pub struct Interface<'a> {
    /// Non-state inputs.
    pub inputs: &'a [Feature],
    /// Outputs.
    pub outputs: &'a [Feature],
    /// States.
    pub states: &'a [Feature],
}

/// `ModelDescription`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Description {
    /// Top-level inputs (single-function form).
    pub inputs: Vec<Feature>,
    /// Top-level outputs (single-function form).
    pub outputs: Vec<Feature>,
    /// Top-level states (single-function form).
    pub states: Vec<Feature>,
    /// `predictedFeatureName` (classifiers only).
    pub predicted_feature_name: String,
    /// `predictedProbabilitiesName` (classifiers only).
    pub predicted_probabilities_name: String,
    /// `trainingInput` (updatable models only; kept verbatim).
    pub training_inputs: Vec<Feature>,
    /// Per-function interfaces (multi-function form).
    pub functions: Vec<FunctionDescription>,
    /// `defaultFunctionName` (multi-function form; empty otherwise).
    pub default_function: String,
    /// Model metadata.
    pub metadata: Metadata,
}

fn io_dtype(function: &str, name: &str, t: &TensorType) -> Result<DType, DescriptionError> {
    match t.dtype {
        DType::F32 | DType::F16 | DType::I32 | DType::I8 => Ok(t.dtype),
        dtype => Err(DescriptionError::IoDtype {
            function: function.into(),
            name: name.into(),
            dtype,
        }),
    }
}

/// Which state dtypes [`Description::derive_with`] accepts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum StateDtypes {
    /// fp16 only (Core ML's rule; coremltools refuses anything else).
    #[default]
    Fp16Only,
    /// fp16 or fp32: verification builds (e.g. `--precision fp32` stateful chunk sets, checked at
    /// fp32 tolerance by the CPU interpreter) that Core ML will not load.
    AllowFp32,
}

fn derive_function(
    fname: &str,
    f: &Function,
    states: StateDtypes,
) -> Result<FunctionDescription, DescriptionError> {
    let mut d = FunctionDescription {
        name: fname.to_string(),
        ..FunctionDescription::default()
    };
    for input in &f.inputs {
        let (t, state) = match &input.ty {
            ValueType::Tensor(t) => (t, false),
            ValueType::State(t) => (t, true),
            _ => {
                return Err(DescriptionError::NotATensor {
                    function: fname.into(),
                    name: input.name.clone(),
                });
            }
        };
        let shape = t
            .static_shape()
            .ok_or_else(|| DescriptionError::DynamicInput {
                function: fname.into(),
                name: input.name.clone(),
                ty: t.clone(),
            })?;
        let dtype = io_dtype(fname, &input.name, t)?;
        let state_ok =
            dtype == DType::F16 || (states == StateDtypes::AllowFp32 && dtype == DType::F32);
        if state && !state_ok {
            return Err(DescriptionError::StateDtype {
                function: fname.into(),
                name: input.name.clone(),
                dtype,
            });
        }
        let array = ArrayFeature::new(dtype, &shape);
        let mut feature = Feature::array(input.name.clone(), array);
        if state {
            if let FeatureKind::Array(a) = feature.kind {
                feature.kind = FeatureKind::State(a);
            }
            d.states.push(feature);
        } else {
            d.inputs.push(feature);
        }
    }
    for name in &f.block.outputs {
        let decl = f
            .find_value(name)
            .ok_or_else(|| DescriptionError::UndefinedOutput {
                function: fname.into(),
                name: name.clone(),
            })?;
        let ValueType::Tensor(t) = &decl.ty else {
            return Err(DescriptionError::NotATensor {
                function: fname.into(),
                name: name.clone(),
            });
        };
        let dtype = io_dtype(fname, name, t)?;
        let shape: Vec<i64> = t
            .static_shape()
            .map(|s| s.iter().map(|&x| x as i64).collect())
            .unwrap_or_default();
        d.outputs.push(Feature::array(
            name.clone(),
            ArrayFeature {
                shape,
                dtype,
                flexibility: None,
                default: None,
            },
        ));
    }
    Ok(d)
}

impl Description {
    /// Derive the description of a program.
    ///
    /// A program whose only function is `main` (and `default_function` is `None` or `"main"`) gets
    /// the single-function form; anything else the multi-function form, every function listed in
    /// name order, the default being `default_function` or else `main`.
    pub fn derive(
        program: &Program,
        default_function: Option<&str>,
        metadata: Metadata,
    ) -> Result<Description, DescriptionError> {
        Description::derive_with(program, default_function, metadata, StateDtypes::Fp16Only)
    }

    /// [`Description::derive`] with a choice of accepted state dtypes.
    pub fn derive_with(
        program: &Program,
        default_function: Option<&str>,
        metadata: Metadata,
        states: StateDtypes,
    ) -> Result<Description, DescriptionError> {
        if let Some(name) = default_function
            && !program.functions.contains_key(name)
        {
            return Err(DescriptionError::NoFunction(name.into()));
        }
        let single = program.functions.len() == 1
            && program.functions.contains_key("main")
            && default_function.is_none_or(|d| d == "main");
        let mut functions = Vec::new();
        for (name, f) in &program.functions {
            functions.push(derive_function(name, f, states)?);
        }
        if single {
            let f = functions.pop().unwrap_or_default();
            return Ok(Description {
                inputs: f.inputs,
                outputs: f.outputs,
                states: f.states,
                metadata,
                ..Description::default()
            });
        }
        let default = match default_function {
            Some(d) => d.to_string(),
            None if program.functions.contains_key("main") => "main".to_string(),
            None => return Err(DescriptionError::NoDefault),
        };
        Ok(Description {
            functions,
            default_function: default,
            metadata,
            ..Description::default()
        })
    }

    /// True for the multi-function form.
    pub fn is_multifunction(&self) -> bool {
        !self.functions.is_empty()
    }

    /// The interface of a function (`main` for the single-function form).
    pub fn interface(&self, function: &str) -> Option<Interface<'_>> {
        if self.is_multifunction() {
            self.functions
                .iter()
                .find(|f| f.name == function)
                .map(|f| Interface {
                    inputs: &f.inputs,
                    outputs: &f.outputs,
                    states: &f.states,
                })
        } else if function == "main" {
            Some(Interface {
                inputs: &self.inputs,
                outputs: &self.outputs,
                states: &self.states,
            })
        } else {
            None
        }
    }

    /// The function Core ML runs by default (`main` for the single-function form).
    pub fn default_function_name(&self) -> &str {
        if self.is_multifunction() {
            &self.default_function
        } else {
            "main"
        }
    }

    /// Check that this description matches `program`: every function described (and only those),
    /// input / state / output names in order, dtypes equal, fixed shapes equal.
    pub fn check(&self, program: &Program) -> Result<(), DescriptionError> {
        let mismatch = |function: &str, what: String| DescriptionError::Mismatch {
            function: function.into(),
            what,
        };
        if self.is_multifunction() {
            if !self.inputs.is_empty() || !self.outputs.is_empty() || !self.states.is_empty() {
                return Err(mismatch(
                    "*",
                    "multi-function description also has top-level inputs/outputs".into(),
                ));
            }
            if !self
                .functions
                .iter()
                .any(|f| f.name == self.default_function)
            {
                return Err(mismatch(
                    &self.default_function,
                    "defaultFunctionName is not a described function".into(),
                ));
            }
        }
        let described: Vec<&str> = if self.is_multifunction() {
            self.functions.iter().map(|f| f.name.as_str()).collect()
        } else {
            vec!["main"]
        };
        for name in program.functions.keys() {
            if !described.contains(&name.as_str()) {
                return Err(mismatch(name, "function is not described".into()));
            }
        }
        for name in described {
            let f = program
                .functions
                .get(name)
                .ok_or_else(|| DescriptionError::NoFunction(name.into()))?;
            let Some(iface) = self.interface(name) else {
                return Err(DescriptionError::NoFunction(name.into()));
            };
            check_function(name, f, iface)?;
        }
        Ok(())
    }
}

fn check_feature(
    fname: &str,
    feature: &Feature,
    actual_name: &str,
    actual: Option<&TensorType>,
    what: &str,
) -> Result<(), DescriptionError> {
    let mismatch = |w: String| DescriptionError::Mismatch {
        function: fname.into(),
        what: w,
    };
    if feature.name != actual_name {
        return Err(mismatch(format!(
            "{what} `{}` is described, the program has `{actual_name}`",
            feature.name
        )));
    }
    let (Some(a), Some(t)) = (feature.array_type(), actual) else {
        return Ok(()); // non-array features (images, ...) are not checked
    };
    if a.dtype != t.dtype {
        return Err(mismatch(format!(
            "{what} `{actual_name}` is described as {}, the program has {}",
            a.dtype, t.dtype
        )));
    }
    if a.flexibility.is_none()
        && !a.shape.is_empty()
        && let Some(s) = t.static_shape()
        && s.iter().map(|&x| x as i64).collect::<Vec<_>>() != a.shape
    {
        return Err(mismatch(format!(
            "{what} `{actual_name}` is described with shape {:?}, the program has {t}",
            a.shape
        )));
    }
    Ok(())
}

fn check_function(fname: &str, f: &Function, iface: Interface<'_>) -> Result<(), DescriptionError> {
    let mismatch = |w: String| DescriptionError::Mismatch {
        function: fname.into(),
        what: w,
    };
    let inputs: Vec<_> = f
        .inputs
        .iter()
        .filter(|v| !matches!(v.ty, ValueType::State(_)))
        .collect();
    let states: Vec<_> = f
        .inputs
        .iter()
        .filter(|v| matches!(v.ty, ValueType::State(_)))
        .collect();
    if inputs.len() != iface.inputs.len() {
        return Err(mismatch(format!(
            "{} inputs described, the program has {}",
            iface.inputs.len(),
            inputs.len()
        )));
    }
    if states.len() != iface.states.len() {
        return Err(mismatch(format!(
            "{} states described, the program has {}",
            iface.states.len(),
            states.len()
        )));
    }
    for (feat, v) in iface.inputs.iter().zip(&inputs) {
        check_feature(fname, feat, &v.name, v.ty.as_tensor(), "input")?;
    }
    for (feat, v) in iface.states.iter().zip(&states) {
        let t = match &v.ty {
            ValueType::State(t) => Some(t),
            _ => None,
        };
        check_feature(fname, feat, &v.name, t, "state")?;
    }
    if f.block.outputs.len() != iface.outputs.len() {
        return Err(mismatch(format!(
            "{} outputs described, the program has {}",
            iface.outputs.len(),
            f.block.outputs.len()
        )));
    }
    for (feat, name) in iface.outputs.iter().zip(&f.block.outputs) {
        let t = f.find_value(name).and_then(|v| v.ty.as_tensor());
        check_feature(fname, feat, name, t, "output")?;
    }
    Ok(())
}

// ----------------------------------------------------------------------------- proto conversion

fn array_to_proto(a: &ArrayFeature) -> spec::ArrayFeatureType {
    spec::ArrayFeatureType {
        shape: a.shape.clone(),
        data_type: array_data_type(a.dtype).unwrap_or(0),
        shape_flexibility: a.flexibility.as_ref().map(|f| match f {
            ShapeFlexibility::Enumerated(shapes) => {
                PbFlex::EnumeratedShapes(spec::array_feature_type::EnumeratedShapes {
                    shapes: shapes
                        .iter()
                        .map(|s| spec::array_feature_type::Shape { shape: s.clone() })
                        .collect(),
                })
            }
            ShapeFlexibility::Range(r) => {
                PbFlex::ShapeRange(spec::array_feature_type::ShapeRange {
                    size_ranges: r
                        .iter()
                        .map(|&(lower_bound, upper_bound)| spec::SizeRange {
                            lower_bound,
                            upper_bound,
                        })
                        .collect(),
                })
            }
        }),
        default_optional_value: a.default.map(|d| match d {
            DefaultValue::Int(x) => DefaultOptionalValue::IntDefaultValue(x),
            DefaultValue::Float(x) => DefaultOptionalValue::FloatDefaultValue(x),
            DefaultValue::Double(x) => DefaultOptionalValue::DoubleDefaultValue(x),
        }),
    }
}

fn array_from_proto(
    name: &str,
    a: &spec::ArrayFeatureType,
) -> Result<ArrayFeature, DescriptionError> {
    let dtype = dtype_from_array(a.data_type).ok_or_else(|| DescriptionError::ArrayDataType {
        name: name.into(),
        code: a.data_type,
    })?;
    Ok(ArrayFeature {
        shape: a.shape.clone(),
        dtype,
        flexibility: a.shape_flexibility.as_ref().map(|f| match f {
            PbFlex::EnumeratedShapes(e) => {
                ShapeFlexibility::Enumerated(e.shapes.iter().map(|s| s.shape.clone()).collect())
            }
            PbFlex::ShapeRange(r) => ShapeFlexibility::Range(
                r.size_ranges
                    .iter()
                    .map(|s| (s.lower_bound, s.upper_bound))
                    .collect(),
            ),
        }),
        default: a.default_optional_value.map(|d| match d {
            DefaultOptionalValue::IntDefaultValue(x) => DefaultValue::Int(x),
            DefaultOptionalValue::FloatDefaultValue(x) => DefaultValue::Float(x),
            DefaultOptionalValue::DoubleDefaultValue(x) => DefaultValue::Double(x),
        }),
    })
}

fn feature_to_proto(f: &Feature) -> spec::FeatureDescription {
    let mut ty = match &f.kind {
        FeatureKind::Array(a) => spec::FeatureType {
            is_optional: false,
            r#type: Some(FtType::MultiArrayType(array_to_proto(a))),
        },
        FeatureKind::State(a) => spec::FeatureType {
            is_optional: false,
            r#type: Some(FtType::StateType(spec::StateFeatureType {
                r#type: Some(spec::state_feature_type::Type::ArrayType(array_to_proto(a))),
            })),
        },
        FeatureKind::Other(t) => (**t).clone(),
    };
    ty.is_optional = f.optional;
    spec::FeatureDescription {
        name: f.name.clone(),
        short_description: f.short_description.clone(),
        r#type: Some(ty),
    }
}

fn feature_from_proto(f: &spec::FeatureDescription) -> Result<Feature, DescriptionError> {
    let ty = f.r#type.as_ref().ok_or_else(|| DescriptionError::NoType {
        name: f.name.clone(),
    })?;
    let kind = match &ty.r#type {
        Some(FtType::MultiArrayType(a)) => FeatureKind::Array(array_from_proto(&f.name, a)?),
        Some(FtType::StateType(s)) => match &s.r#type {
            Some(spec::state_feature_type::Type::ArrayType(a)) => {
                FeatureKind::State(array_from_proto(&f.name, a)?)
            }
            None => {
                return Err(DescriptionError::NoType {
                    name: f.name.clone(),
                });
            }
        },
        Some(_) => {
            let mut other = ty.clone();
            other.is_optional = false;
            FeatureKind::Other(Box::new(other))
        }
        None => {
            return Err(DescriptionError::NoType {
                name: f.name.clone(),
            });
        }
    };
    Ok(Feature {
        name: f.name.clone(),
        short_description: f.short_description.clone(),
        optional: ty.is_optional,
        kind,
    })
}

fn features_from_proto(v: &[spec::FeatureDescription]) -> Result<Vec<Feature>, DescriptionError> {
    v.iter().map(feature_from_proto).collect()
}

impl Description {
    /// Encode as `ModelDescription` (metadata omitted when entirely empty).
    pub fn to_proto(&self) -> spec::ModelDescription {
        let m = &self.metadata;
        let metadata = (*m != Metadata::default()).then(|| spec::Metadata {
            short_description: m.short_description.clone(),
            version_string: m.version.clone(),
            author: m.author.clone(),
            license: m.license.clone(),
            user_defined: m.user_defined.clone(),
        });
        let conv = |v: &[Feature]| v.iter().map(feature_to_proto).collect::<Vec<_>>();
        spec::ModelDescription {
            functions: self
                .functions
                .iter()
                .map(|f| spec::FunctionDescription {
                    name: f.name.clone(),
                    input: conv(&f.inputs),
                    output: conv(&f.outputs),
                    state: conv(&f.states),
                    predicted_feature_name: f.predicted_feature_name.clone(),
                    predicted_probabilities_name: f.predicted_probabilities_name.clone(),
                })
                .collect(),
            default_function_name: self.default_function.clone(),
            metadata,
            input: conv(&self.inputs),
            output: conv(&self.outputs),
            state: conv(&self.states),
            predicted_feature_name: self.predicted_feature_name.clone(),
            predicted_probabilities_name: self.predicted_probabilities_name.clone(),
            training_input: conv(&self.training_inputs),
        }
    }

    /// Decode a `ModelDescription`.
    pub fn from_proto(d: &spec::ModelDescription) -> Result<Description, DescriptionError> {
        let metadata = d
            .metadata
            .as_ref()
            .map(|m| Metadata {
                short_description: m.short_description.clone(),
                version: m.version_string.clone(),
                author: m.author.clone(),
                license: m.license.clone(),
                user_defined: m.user_defined.clone(),
            })
            .unwrap_or_default();
        let mut functions = Vec::with_capacity(d.functions.len());
        for f in &d.functions {
            functions.push(FunctionDescription {
                name: f.name.clone(),
                inputs: features_from_proto(&f.input)?,
                outputs: features_from_proto(&f.output)?,
                states: features_from_proto(&f.state)?,
                predicted_feature_name: f.predicted_feature_name.clone(),
                predicted_probabilities_name: f.predicted_probabilities_name.clone(),
            });
        }
        Ok(Description {
            inputs: features_from_proto(&d.input)?,
            outputs: features_from_proto(&d.output)?,
            states: features_from_proto(&d.state)?,
            predicted_feature_name: d.predicted_feature_name.clone(),
            predicted_probabilities_name: d.predicted_probabilities_name.clone(),
            training_inputs: features_from_proto(&d.training_input)?,
            functions,
            default_function: d.default_function_name.clone(),
            metadata,
        })
    }
}
