//! Typed access to one JSON object of `config.json`, with dotted field names in every error.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Typed access to one JSON object with dotted field names in errors.
pub(super) struct Fields<'a> {
    pub(super) obj: &'a Map<String, Value>,
    pub(super) prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub(super) fn path(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// The value, treating JSON null as absent.
    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn usize_of(&self, name: &str, v: &Value) -> Result<usize> {
        let invalid = |reason: String| Error::InvalidField {
            field: self.path(name),
            reason,
        };
        if let Some(u) = v.as_u64() {
            return usize::try_from(u).map_err(|_| invalid(format!("{u} does not fit in usize")));
        }
        if let Some(i) = v.as_i64() {
            return Err(invalid(format!("must not be negative, got {i}")));
        }
        if let Some(f) = v.as_f64() {
            // JSON writers sometimes emit integral floats (e.g. 64.0).
            if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= 9.0e15 {
                return Ok(f as usize);
            }
            return Err(invalid(format!("must be a non-negative integer, got {f}")));
        }
        Err(invalid(format!("must be an integer, got {v}")))
    }

    pub(super) fn req_usize(&self, name: &str) -> Result<usize> {
        match self.get(name) {
            Some(v) => self.usize_of(name, v),
            None => Err(Error::MissingField {
                field: self.path(name),
            }),
        }
    }

    pub(super) fn opt_usize(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            Some(v) => self.usize_of(name, v),
            None => Ok(default),
        }
    }

    pub(super) fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(Error::InvalidField {
                    field: self.path(name),
                    reason: format!("must be a finite number, got {v}"),
                }),
            },
        }
    }

    pub(super) fn opt_bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(Error::InvalidField {
                field: self.path(name),
                reason: format!("must be true or false, got {v}"),
            }),
        }
    }

    pub(super) fn opt_str(&self, name: &str) -> Result<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(Error::InvalidField {
                field: self.path(name),
                reason: format!("must be a string, got {v}"),
            }),
        }
    }

    pub(super) fn opt_token(&self, name: &str, default: Option<u32>) -> Result<Option<u32>> {
        if !self.obj.contains_key(name) {
            return Ok(default);
        }
        match self.get(name) {
            None => Ok(None),
            Some(v) => Ok(Some(self.token_of(name, v)?)),
        }
    }

    pub(super) fn token_of(&self, name: &str, v: &Value) -> Result<u32> {
        let u = self.usize_of(name, v)?;
        u32::try_from(u).map_err(|_| Error::InvalidField {
            field: self.path(name),
            reason: format!("token id {u} does not fit in u32"),
        })
    }
}

/// `value` if it lies in `min..=max`, else an error naming `field`.
pub(super) fn check_range(field: String, value: usize, min: usize, max: usize) -> Result<usize> {
    if value < min {
        return Err(Error::InvalidField {
            field,
            reason: format!("must be at least {min}, got {value}"),
        });
    }
    if value > max {
        return Err(Error::InvalidField {
            field,
            reason: format!("{value} is absurdly large (limit {max})"),
        });
    }
    Ok(value)
}
