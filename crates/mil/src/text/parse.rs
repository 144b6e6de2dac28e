//! Parser of compiled `model.mil` text (both dialects) into the IR.
//!
//! What it reads is what [`super`]'s module doc describes. The result is a [`Program`] (program and
//! function attributes kept as they are in the text) — blob references are resolved by the
//! caller's [`BlobResolver`] (the IR holds tensor data, not file offsets), ops without a `name`
//! attribute take the name of their first output, and nested blocks are rejected (our graphs have
//! no control flow). Errors name the line and column.

use super::{TextError, hexfloat};
use crate::{
    Binding, Block, DType, Dim, Function, NamedValueType, Operation, Program, TensorType,
    TensorValue, Value, ValueType,
};
use std::collections::BTreeMap;

/// Resolves `BLOBFILE(path, offset)` of a tensor type to the tensor.
pub trait BlobResolver {
    /// The tensor of type `ty` stored at `offset` in the file `path` (as written, e.g.
    /// `@model_path/weights/weight.bin`).
    fn resolve(&mut self, ty: &TensorType, path: &str, offset: u64) -> Result<TensorValue, String>;
}

impl<F: FnMut(&TensorType, &str, u64) -> Result<TensorValue, String>> BlobResolver for F {
    fn resolve(&mut self, ty: &TensorType, path: &str, offset: u64) -> Result<TensorValue, String> {
        self(ty, path, offset)
    }
}

/// A parsed program and the `program(x.y)` version it declared.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedProgram {
    /// The version in `program(…)`, as written (`1.0`, `1.3`).
    pub version: String,
    pub program: Program,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    Str(String),
    Punct(char),
    Arrow,
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, msg: impl Into<String>) -> TextError {
        TextError::Parse {
            line: self.line,
            col: self.col,
            message: msg.into(),
        }
    }

    fn bump(&mut self) -> Option<u8> {
        let c = *self.s.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(&c) = self.s.get(self.pos) {
            if c.is_ascii_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    /// The next token with its position, `None` at the end.
    fn next(&mut self) -> Result<Option<(Tok, usize, usize)>, TextError> {
        self.skip_ws();
        let (line, col) = (self.line, self.col);
        let Some(&c) = self.s.get(self.pos) else {
            return Ok(None);
        };
        let tok = if c == b'"' {
            self.bump();
            let mut out = Vec::new();
            loop {
                match self.bump() {
                    None => return Err(self.err("unterminated string")),
                    Some(b'"') => break,
                    Some(b'\\') => match self.bump() {
                        Some(b'n') => out.push(b'\n'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b'u') => {
                            // \u{hex}
                            if self.bump() != Some(b'{') {
                                return Err(self.err("bad \\u escape"));
                            }
                            let mut hex = String::new();
                            loop {
                                match self.bump() {
                                    Some(b'}') => break,
                                    Some(h) if h.is_ascii_hexdigit() => hex.push(h as char),
                                    _ => return Err(self.err("bad \\u escape")),
                                }
                            }
                            let ch = u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.err("bad \\u escape"))?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        Some(e) => out.push(e),
                        None => return Err(self.err("unterminated string")),
                    },
                    Some(b) => out.push(b),
                }
            }
            Tok::Str(String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))?)
        } else if c == b'-' && self.s.get(self.pos + 1) == Some(&b'>') {
            self.bump();
            self.bump();
            Tok::Arrow
        } else if c.is_ascii_digit() || c == b'-' || c == b'+' {
            let start = self.pos;
            self.bump();
            while let Some(&d) = self.s.get(self.pos) {
                let prev = self.s[self.pos - 1];
                let hex = self.s[start..self.pos].contains(&b'x');
                let exp_sign = (d == b'-' || d == b'+')
                    && (matches!(prev, b'p' | b'P') || (!hex && matches!(prev, b'e' | b'E')));
                if d.is_ascii_alphanumeric() || d == b'.' || exp_sign {
                    self.bump();
                } else {
                    break;
                }
            }
            Tok::Num(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.pos;
            while let Some(&d) = self.s.get(self.pos) {
                if d.is_ascii_alphanumeric() || d == b'_' {
                    self.bump();
                } else {
                    break;
                }
            }
            Tok::Ident(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
        } else if b"()[]{}<>,=;?".contains(&c) {
            self.bump();
            Tok::Punct(c as char)
        } else {
            return Err(self.err(format!("unexpected character `{}`", c as char)));
        };
        Ok(Some((tok, line, col)))
    }
}

struct Parser<'a, 'r> {
    toks: Vec<(Tok, usize, usize)>,
    i: usize,
    /// Nesting depth of types and literals (bounded: no stack overflow on hostile text).
    depth: usize,
    resolver: &'r mut dyn BlobResolver,
    _src: std::marker::PhantomData<&'a ()>,
}

/// A nested literal before it is given its type.
#[derive(Debug)]
enum Raw {
    Scalar(String, usize, usize),
    Str(String),
    Seq(Vec<Raw>),
    Tuple(Vec<Raw>),
    Dict(Vec<(Raw, Raw)>),
}

/// Deepest nesting of types and literals accepted.
const MAX_DEPTH: usize = 64;

const TYPE_WORDS: [&str; 5] = ["tensor", "state", "list", "tuple", "dict"];

impl Parser<'_, '_> {
    fn pos(&self) -> (usize, usize) {
        match self.toks.get(self.i).or(self.toks.last()) {
            Some((_, l, c)) => (*l, *c),
            None => (1, 1),
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, TextError> {
        let (line, col) = self.pos();
        Err(TextError::Parse {
            line,
            col,
            message: msg.into(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k).map(|t| &t.0)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.0.clone());
        self.i += 1;
        t
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn expect(&mut self, c: char) -> Result<(), TextError> {
        if self.is_punct(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end of the text".into(),
            Some(Tok::Ident(s)) => format!("`{s}`"),
            Some(Tok::Num(s)) => format!("`{s}`"),
            Some(Tok::Str(s)) => format!("\"{s}\""),
            Some(Tok::Punct(c)) => format!("`{c}`"),
            Some(Tok::Arrow) => "`->`".into(),
        }
    }

    fn ident(&mut self) -> Result<String, TextError> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                self.i += 1;
                Ok(s)
            }
            _ => self.err(format!("expected a name, found {}", self.describe())),
        }
    }

    fn keyword(&mut self, k: &str) -> Result<(), TextError> {
        match self.peek() {
            Some(Tok::Ident(s)) if s == k => {
                self.i += 1;
                Ok(())
            }
            _ => self.err(format!("expected `{k}`, found {}", self.describe())),
        }
    }

    /// Does a type start here?
    fn at_type(&self) -> bool {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                TYPE_WORDS.contains(&s.as_str()) && self.peek_at(1) == Some(&Tok::Punct('<'))
                    || DType::from_mil_name(s).is_some()
            }
            _ => false,
        }
    }

    fn dims(&mut self) -> Result<Vec<Dim>, TextError> {
        self.expect('[')?;
        let mut dims = Vec::new();
        while !self.is_punct(']') {
            if !dims.is_empty() {
                self.expect(',')?;
            }
            match self.next() {
                Some(Tok::Punct('?')) => dims.push(Dim::Unknown { variadic: false }),
                Some(Tok::Num(n)) => match n.parse::<u64>() {
                    Ok(v) => dims.push(Dim::Fixed(v)),
                    Err(_) => {
                        self.i -= 1;
                        return self.err(format!("bad dimension `{n}`"));
                    }
                },
                _ => {
                    self.i -= 1;
                    return self.err(format!("expected a dimension, found {}", self.describe()));
                }
            }
        }
        self.expect(']')?;
        Ok(dims)
    }

    fn dtype(&mut self) -> Result<DType, TextError> {
        let s = self.ident()?;
        match DType::from_mil_name(&s) {
            Some(d) => Ok(d),
            None => {
                self.i -= 1;
                self.err(format!("unknown dtype `{s}`"))
            }
        }
    }

    fn tensor_type(&mut self) -> Result<TensorType, TextError> {
        match self.parse_type()? {
            ValueType::Tensor(t) => Ok(t),
            other => self.err(format!("expected a tensor type, found {other}")),
        }
    }

    fn parse_type(&mut self) -> Result<ValueType, TextError> {
        self.enter()?;
        let t = self.parse_type_inner();
        self.depth -= 1;
        t
    }

    fn enter(&mut self) -> Result<(), TextError> {
        if self.depth >= MAX_DEPTH {
            return self.err(format!("nested more than {MAX_DEPTH} levels deep"));
        }
        self.depth += 1;
        Ok(())
    }

    fn parse_type_inner(&mut self) -> Result<ValueType, TextError> {
        let word = self.ident()?;
        if DType::from_mil_name(&word).is_some() && !self.is_punct('<') {
            self.i -= 1;
            return Ok(ValueType::Tensor(TensorType::scalar(self.dtype()?)));
        }
        self.expect('<')?;
        let t = match word.as_str() {
            "tensor" => {
                let dtype = self.dtype()?;
                self.expect(',')?;
                let shape = self.dims()?;
                ValueType::Tensor(TensorType { dtype, shape })
            }
            "state" => ValueType::State(self.tensor_type()?),
            "list" => {
                let elem = self.parse_type()?;
                self.expect(',')?;
                let length = match self.next() {
                    Some(Tok::Punct('?')) => None,
                    Some(Tok::Num(n)) => match n.parse::<u64>() {
                        Ok(v) => Some(Dim::Fixed(v)),
                        Err(_) => return self.err(format!("bad list length `{n}`")),
                    },
                    _ => return self.err("expected a list length"),
                };
                ValueType::List {
                    elem: Box::new(elem),
                    length,
                }
            }
            "tuple" => {
                let mut ts = vec![self.parse_type()?];
                while self.is_punct(',') {
                    self.i += 1;
                    ts.push(self.parse_type()?);
                }
                ValueType::Tuple(ts)
            }
            "dict" => {
                let key = self.parse_type()?;
                self.expect(',')?;
                let value = self.parse_type()?;
                ValueType::Dict {
                    key: Box::new(key),
                    value: Box::new(value),
                }
            }
            other => {
                self.i -= 2;
                return self.err(format!("unknown type `{other}`"));
            }
        };
        self.expect('>')?;
        Ok(t)
    }

    /// A literal without type: scalar token, string, `[…]`, `(…)` or `{…}`.
    fn raw(&mut self) -> Result<Raw, TextError> {
        self.enter()?;
        let r = self.raw_inner();
        self.depth -= 1;
        r
    }

    fn raw_inner(&mut self) -> Result<Raw, TextError> {
        let (line, col) = self.pos();
        match self.next() {
            Some(Tok::Num(n)) => Ok(Raw::Scalar(n, line, col)),
            Some(Tok::Ident(s)) if matches!(s.as_str(), "true" | "false" | "inf" | "nan") => {
                Ok(Raw::Scalar(s, line, col))
            }
            Some(Tok::Str(s)) => Ok(Raw::Str(s)),
            Some(Tok::Punct('[')) => {
                let items = self.raw_items(']')?;
                Ok(Raw::Seq(items))
            }
            Some(Tok::Punct('(')) => Ok(Raw::Tuple(self.raw_items(')')?)),
            Some(Tok::Punct('{')) => {
                let mut entries = Vec::new();
                while !self.is_punct('}') {
                    if !entries.is_empty() {
                        self.expect(',')?;
                    }
                    self.expect('{')?;
                    let k = self.raw()?;
                    self.expect(',')?;
                    let v = self.raw()?;
                    self.expect('}')?;
                    entries.push((k, v));
                }
                self.expect('}')?;
                Ok(Raw::Dict(entries))
            }
            _ => {
                self.i -= 1;
                self.err(format!("expected a literal, found {}", self.describe()))
            }
        }
    }

    fn raw_items(&mut self, close: char) -> Result<Vec<Raw>, TextError> {
        let mut items = Vec::new();
        while !self.is_punct(close) {
            if !items.is_empty() {
                self.expect(',')?;
            }
            items.push(self.raw()?);
        }
        self.expect(close)?;
        Ok(items)
    }

    /// `type(content)` (the type already parsed).
    fn typed_literal_body(&mut self, ty: &ValueType) -> Result<Value, TextError> {
        self.expect('(')?;
        let v = if let (ValueType::Tensor(t), Some(Tok::Ident(w))) = (ty, self.peek()) {
            if w == "BLOBFILE" {
                self.blobfile(t)?
            } else {
                let raw = self.raw()?;
                self.value_of(ty, raw)?
            }
        } else {
            let raw = self.raw()?;
            self.value_of(ty, raw)?
        };
        self.expect(')')?;
        Ok(v)
    }

    fn typed_literal(&mut self) -> Result<Value, TextError> {
        self.enter()?;
        let v = self
            .parse_type()
            .and_then(|ty| self.typed_literal_body(&ty));
        self.depth -= 1;
        v
    }

    fn blobfile(&mut self, t: &TensorType) -> Result<Value, TextError> {
        self.keyword("BLOBFILE")?;
        self.expect('(')?;
        let mut path = None;
        let mut offset = None;
        while !self.is_punct(')') {
            if path.is_some() || offset.is_some() {
                self.expect(',')?;
            }
            let key = self.ident()?;
            self.expect('=')?;
            let v = self.typed_literal()?;
            match (key.as_str(), v.as_tensor()) {
                ("path", Some(t)) if t.strings().is_some_and(|s| s.len() == 1) => {
                    path = t.strings().and_then(|s| s.first()).cloned();
                }
                ("offset", Some(t)) if t.dtype() == DType::U64 && t.num_elements() == 1 => {
                    offset = t
                        .to_i64_vec()
                        .ok()
                        .and_then(|v| v.first().map(|&x| x as u64));
                }
                _ => return self.err(format!("bad BLOBFILE argument `{key}`")),
            }
        }
        self.expect(')')?;
        let (Some(path), Some(offset)) = (path, offset) else {
            return self.err("BLOBFILE needs `path` and `offset`");
        };
        match self.resolver.resolve(t, &path, offset) {
            Ok(v) if v.ty() == t => Ok(Value::Tensor(v)),
            Ok(v) => self.err(format!(
                "BLOBFILE {path} at offset {offset} holds {}, the text declares {}",
                v.ty(),
                t
            )),
            Err(message) => Err(TextError::Blob {
                path,
                offset,
                message,
            }),
        }
    }

    /// Give `raw` the type `ty`.
    fn value_of(&self, ty: &ValueType, raw: Raw) -> Result<Value, TextError> {
        match ty {
            ValueType::Tensor(t) => Ok(Value::Tensor(self.tensor_of(t, raw)?)),
            ValueType::Tuple(ts) => match raw {
                Raw::Tuple(items) if items.len() == ts.len() => Ok(Value::Tuple(
                    ts.iter()
                        .zip(items)
                        .map(|(t, r)| self.value_of(t, r))
                        .collect::<Result<_, _>>()?,
                )),
                _ => self.err(format!("expected a {} literal", fmt_ty(ty))),
            },
            ValueType::List { elem, length } => match raw {
                Raw::Seq(items) => {
                    if let Some(Dim::Fixed(n)) = length
                        && *n != items.len() as u64
                    {
                        return self.err(format!("list of {n} elements has {}", items.len()));
                    }
                    Ok(Value::List {
                        elem: (**elem).clone(),
                        values: items
                            .into_iter()
                            .map(|r| self.value_of(elem, r))
                            .collect::<Result<_, _>>()?,
                    })
                }
                _ => self.err(format!("expected a {} literal", fmt_ty(ty))),
            },
            ValueType::Dict { key, value } => match raw {
                Raw::Dict(entries) => Ok(Value::Dict {
                    key: (**key).clone(),
                    value: (**value).clone(),
                    entries: entries
                        .into_iter()
                        .map(|(k, v)| Ok((self.value_of(key, k)?, self.value_of(value, v)?)))
                        .collect::<Result<_, TextError>>()?,
                }),
                _ => self.err(format!("expected a {} literal", fmt_ty(ty))),
            },
            ValueType::State(_) => self.err("a state has no literal"),
        }
    }

    fn tensor_of(&self, t: &TensorType, raw: Raw) -> Result<TensorValue, TextError> {
        // shape from the nesting (unknown dimensions of the declared type are taken from it)
        let mut shape = Vec::new();
        let mut leaves = Vec::new();
        fn walk<'r>(
            r: &'r Raw,
            depth: usize,
            shape: &mut Vec<usize>,
            leaves: &mut Vec<&'r Raw>,
        ) -> Result<(), String> {
            match r {
                Raw::Seq(items) => {
                    if shape.len() == depth {
                        shape.push(items.len());
                    } else if shape.len() > depth && shape[depth] != items.len() {
                        return Err("ragged tensor literal".into());
                    }
                    for it in items {
                        walk(it, depth + 1, shape, leaves)?;
                    }
                    Ok(())
                }
                Raw::Scalar(..) | Raw::Str(_) => {
                    if shape.len() != depth && !(shape.is_empty() && depth == 0) {
                        return Err("ragged tensor literal".into());
                    }
                    leaves.push(r);
                    Ok(())
                }
                _ => Err("expected a tensor literal".into()),
            }
        }
        walk(&raw, 0, &mut shape, &mut leaves).or_else(|m| self.err(m))?;
        if shape.len() != t.rank() && !(t.rank() == 0 && shape.is_empty()) {
            // an empty innermost list has no leaves to tell its depth; accept `[]` for any rank
            // with a zero dimension
            let zero = t.shape.contains(&Dim::Fixed(0)) && leaves.is_empty();
            if !zero {
                return self.err(format!(
                    "literal of rank {} for type {}",
                    shape.len(),
                    fmt_ty(&ValueType::Tensor(t.clone()))
                ));
            }
            shape = t.static_shape().unwrap_or_default();
        }
        for (d, &n) in t.shape.iter().zip(&shape) {
            if let Dim::Fixed(f) = d
                && *f != n as u64
            {
                return self.err(format!("literal has {n} elements where {t} says {f}"));
            }
        }
        let ty = TensorType::new(t.dtype, &shape);
        let leaf = |r: &Raw| -> Result<String, TextError> {
            match r {
                Raw::Scalar(s, ..) => Ok(s.clone()),
                Raw::Str(s) => Ok(s.clone()),
                _ => self.err("expected a scalar"),
            }
        };
        let texts: Vec<String> = leaves.iter().map(|r| leaf(r)).collect::<Result<_, _>>()?;
        let bad = |s: &str| -> TextError {
            let (line, col) = leaves
                .iter()
                .find_map(|r| match r {
                    Raw::Scalar(x, l, c) if x == s => Some((*l, *c)),
                    _ => None,
                })
                .unwrap_or_else(|| self.pos());
            TextError::Parse {
                line,
                col,
                message: format!("`{s}` is not a {} value", t.dtype),
            }
        };
        let d = t.dtype;
        let bytes: Vec<u8> = match d {
            DType::Str => {
                if leaves.iter().any(|r| !matches!(r, Raw::Str(_))) {
                    return self.err("string tensor with a non-string element");
                }
                return Ok(TensorValue::from_strings(&shape, texts)?);
            }
            DType::Bool => texts
                .iter()
                .map(|s| match s.as_str() {
                    "true" => Ok(1u8),
                    "false" => Ok(0u8),
                    _ => Err(bad(s)),
                })
                .collect::<Result<_, _>>()?,
            DType::F16 | DType::F32 | DType::F64 | DType::Bf16 => {
                let mut out = Vec::new();
                for s in &texts {
                    let x = hexfloat::parse(s).ok_or_else(|| bad(s))?;
                    match d {
                        DType::F16 => out.extend(half::f16::from_f64(x).to_le_bytes()),
                        DType::Bf16 => out.extend(half::bf16::from_f64(x).to_le_bytes()),
                        DType::F32 => out.extend((x as f32).to_le_bytes()),
                        _ => out.extend(x.to_le_bytes()),
                    }
                }
                out
            }
            d if d.is_int() => {
                let bits = d.bits().unwrap_or(8);
                let mut out = Vec::new();
                let mut small = Vec::new();
                for s in &texts {
                    let v: i128 = s.parse().map_err(|_| bad(s))?;
                    let (lo, hi): (i128, i128) = if d.is_signed_int() {
                        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                    } else {
                        (0, (1i128 << bits) - 1)
                    };
                    if v < lo || v > hi {
                        return Err(bad(s));
                    }
                    if bits < 8 {
                        small.push((v as i64 & ((1 << bits) - 1)) as u8);
                    } else {
                        out.extend_from_slice(&(v as i64).to_le_bytes()[..bits / 8]);
                    }
                }
                if bits < 8 {
                    crate::value::pack_bits(&small, bits)
                } else {
                    out
                }
            }
            d => {
                return self.err(format!("{d} literals are not supported in MIL text"));
            }
        };
        Ok(TensorValue::from_bytes(ty, bytes)?)
    }

    /// `[k = typed_literal, …]`.
    fn attrs(&mut self) -> Result<BTreeMap<String, Value>, TextError> {
        let mut out = BTreeMap::new();
        if !self.is_punct('[') {
            return Ok(out);
        }
        self.i += 1;
        while !self.is_punct(']') {
            if !out.is_empty() {
                self.expect(',')?;
            }
            let k = self.ident()?;
            self.expect('=')?;
            let v = self.typed_literal()?;
            if out.insert(k.clone(), v).is_some() {
                return self.err(format!("attribute `{k}` given twice"));
            }
        }
        self.expect(']')?;
        Ok(out)
    }

    fn binding(&mut self) -> Result<Binding, TextError> {
        if self.at_type()
            && (self.peek_at(1) == Some(&Tok::Punct('('))
                || self.peek_at(1) == Some(&Tok::Punct('<')))
        {
            return Ok(Binding::Value(self.typed_literal()?));
        }
        Ok(Binding::Name(self.ident()?))
    }

    fn op(&mut self) -> Result<Operation, TextError> {
        let mut outputs = Vec::new();
        // an op without outputs (`write_state(…)[…];`) starts with its type and `(`
        let no_outputs =
            matches!(self.peek(), Some(Tok::Ident(_))) && self.peek_at(1) == Some(&Tok::Punct('('));
        if !no_outputs {
            loop {
                let ty = self.parse_type()?;
                let name = self.ident()?;
                outputs.push(NamedValueType { name, ty });
                if self.is_punct(',') {
                    self.i += 1;
                } else {
                    self.expect('=')?;
                    break;
                }
            }
        }
        let op_type = self.ident()?;
        self.expect('(')?;
        let mut inputs: BTreeMap<String, Vec<Binding>> = BTreeMap::new();
        while !self.is_punct(')') {
            if !inputs.is_empty() {
                self.expect(',')?;
            }
            let param = self.ident()?;
            self.expect('=')?;
            let bindings = if self.is_punct('(') {
                self.i += 1;
                let mut bs = Vec::new();
                while !self.is_punct(')') {
                    if !bs.is_empty() {
                        self.expect(',')?;
                    }
                    bs.push(self.binding()?);
                }
                self.expect(')')?;
                bs
            } else {
                vec![self.binding()?]
            };
            if inputs.insert(param.clone(), bindings).is_some() {
                return self.err(format!("parameter `{param}` given twice"));
            }
        }
        self.expect(')')?;
        let mut attributes = self.attrs()?;
        if self.is_punct('{') || self.peek() == Some(&Tok::Punct('(')) {
            return self.err("nested blocks (control flow) are not supported");
        }
        self.expect(';')?;
        let name = match attributes.remove("name") {
            None => outputs.first().map(|o| o.name.clone()).unwrap_or_default(),
            Some(Value::Tensor(t)) if t.strings().is_some_and(|s| s.len() == 1) => t
                .strings()
                .and_then(|s| s.first())
                .cloned()
                .unwrap_or_default(),
            Some(_) => return self.err("op `name` must be a string"),
        };
        Ok(Operation {
            op_type,
            name,
            inputs,
            outputs,
            attributes,
            blocks: Vec::new(),
        })
    }

    fn function(&mut self) -> Result<(String, Function), TextError> {
        self.keyword("func")?;
        let name = self.ident()?;
        self.expect('<')?;
        let opset_word = self.ident()?;
        self.expect('>')?;
        let opset = opset_name(&opset_word);
        self.expect('(')?;
        let mut inputs = Vec::new();
        while !self.is_punct(')') {
            if !inputs.is_empty() {
                self.expect(',')?;
            }
            let ty = self.parse_type()?;
            let n = self.ident()?;
            inputs.push(NamedValueType { name: n, ty });
        }
        self.expect(')')?;
        let attributes = self.attrs()?;
        self.expect('{')?;
        let mut ops = Vec::new();
        while !self.is_punct('}') {
            ops.push(self.op()?);
        }
        self.expect('}')?;
        match self.next() {
            Some(Tok::Arrow) => {}
            _ => {
                self.i -= 1;
                return self.err(format!("expected `->`, found {}", self.describe()));
            }
        }
        self.expect('(')?;
        let mut outputs = Vec::new();
        while !self.is_punct(')') {
            if !outputs.is_empty() {
                self.expect(',')?;
            }
            outputs.push(self.ident()?);
        }
        self.expect(')')?;
        self.expect(';')?;
        Ok((
            name,
            Function {
                inputs,
                opset,
                block: Block {
                    inputs: Vec::new(),
                    outputs,
                    operations: ops,
                    attributes: BTreeMap::new(),
                },
                attributes,
            },
        ))
    }

    fn program(&mut self) -> Result<ParsedProgram, TextError> {
        self.keyword("program")?;
        self.expect('(')?;
        let version = match self.next() {
            Some(Tok::Num(v)) => v,
            _ => {
                self.i -= 1;
                return self.err(format!("expected a version, found {}", self.describe()));
            }
        };
        self.expect(')')?;
        let attributes = self.attrs()?;
        self.expect('{')?;
        let mut functions = BTreeMap::new();
        while !self.is_punct('}') {
            let (name, f) = self.function()?;
            if functions.insert(name.clone(), f).is_some() {
                return self.err(format!("function `{name}` defined twice"));
            }
        }
        self.expect('}')?;
        if self.peek().is_some() {
            return self.err(format!("unexpected {} after the program", self.describe()));
        }
        Ok(ParsedProgram {
            version,
            program: Program {
                version: 1,
                functions,
                attributes,
            },
        })
    }
}

fn fmt_ty(t: &ValueType) -> String {
    super::fmt_type(t, super::Dialect::Ios18)
}

/// The opset string of a text opset (`ios18` → `CoreML8`); other spellings verbatim.
pub fn opset_name(text: &str) -> String {
    match text {
        "ios15" => "CoreML5",
        "ios16" => "CoreML6",
        "ios17" => "CoreML7",
        "ios18" => "CoreML8",
        other => other,
    }
    .to_string()
}

/// Parse `model.mil` text. `resolver` turns every `BLOBFILE(…)` into its tensor.
pub fn parse_program(
    text: &str,
    resolver: &mut dyn BlobResolver,
) -> Result<ParsedProgram, TextError> {
    let mut lx = Lexer {
        s: text.as_bytes(),
        pos: 0,
        line: 1,
        col: 1,
    };
    let mut toks = Vec::new();
    while let Some(t) = lx.next()? {
        toks.push(t);
    }
    Parser {
        toks,
        i: 0,
        depth: 0,
        resolver,
        _src: std::marker::PhantomData,
    }
    .program()
}

/// Parse one typed literal (`int32(3)`, `tensor<fp16, [2]>([0x1p+0, 0x0p+0])`, …); blob
/// references go to `resolver`.
pub fn parse_literal(text: &str, resolver: &mut dyn BlobResolver) -> Result<Value, TextError> {
    let mut lx = Lexer {
        s: text.as_bytes(),
        pos: 0,
        line: 1,
        col: 1,
    };
    let mut toks = Vec::new();
    while let Some(t) = lx.next()? {
        toks.push(t);
    }
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
        resolver,
        _src: std::marker::PhantomData,
    };
    let v = p.typed_literal()?;
    if p.peek().is_some() {
        return p.err(format!("unexpected {} after the literal", p.describe()));
    }
    Ok(v)
}
