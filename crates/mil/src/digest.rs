//! FNV-1a 64-bit content digests of literal values (deterministic, no dependencies). Used by the
//! const-deduplication pass (bucketing; equality is then checked in full) and by the printer's
//! blob placeholders.

use crate::{Binding, TensorData, Value, ValueType};
use std::collections::BTreeMap;

/// An FNV-1a 64-bit hasher.
#[derive(Clone, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feed bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feed a length-prefixed string (so concatenations cannot collide trivially).
    pub fn write_str(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }

    /// The digest.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

fn type_into(t: &ValueType, h: &mut Fnv64) {
    h.write_str(&t.to_string());
}

/// Feed a value (its type and payload).
pub fn value_into(v: &Value, h: &mut Fnv64) {
    match v {
        Value::Tensor(t) => {
            h.write(b"T");
            h.write_str(&t.ty().to_string());
            match t.data() {
                TensorData::Bytes(b) => h.write(b.as_bytes()),
                TensorData::Strings(s) => s.iter().for_each(|s| h.write_str(s)),
            }
        }
        Value::Tuple(vs) => {
            h.write(b"U");
            h.write(&(vs.len() as u64).to_le_bytes());
            vs.iter().for_each(|v| value_into(v, h));
        }
        Value::List { elem, values } => {
            h.write(b"L");
            type_into(elem, h);
            h.write(&(values.len() as u64).to_le_bytes());
            values.iter().for_each(|v| value_into(v, h));
        }
        Value::Dict {
            key,
            value,
            entries,
        } => {
            h.write(b"D");
            type_into(key, h);
            type_into(value, h);
            h.write(&(entries.len() as u64).to_le_bytes());
            for (k, v) in entries {
                value_into(k, h);
                value_into(v, h);
            }
        }
    }
}

/// Digest of one value.
pub fn value_digest(v: &Value) -> u64 {
    let mut h = Fnv64::default();
    value_into(v, &mut h);
    h.finish()
}

/// Digest of an op's parameter bindings.
pub fn inputs_digest(inputs: &BTreeMap<String, Vec<Binding>>) -> u64 {
    let mut h = Fnv64::default();
    for (k, bs) in inputs {
        h.write_str(k);
        h.write(&(bs.len() as u64).to_le_bytes());
        for b in bs {
            match b {
                Binding::Name(n) => {
                    h.write(b"N");
                    h.write_str(n);
                }
                Binding::Value(v) => value_into(v, &mut h),
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorValue;

    #[test]
    fn fnv_reference_vector() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        let mut h = Fnv64::default();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn digest_depends_on_type_and_bytes() {
        let a = Value::Tensor(TensorValue::from_i32(&[2], &[1, 2]).unwrap());
        let b = Value::Tensor(TensorValue::from_i32(&[2], &[1, 3]).unwrap());
        let c = Value::Tensor(TensorValue::from_i32(&[1, 2], &[1, 2]).unwrap());
        assert_ne!(value_digest(&a), value_digest(&b));
        assert_ne!(value_digest(&a), value_digest(&c));
        assert_eq!(value_digest(&a), value_digest(&a.clone()));
    }
}
