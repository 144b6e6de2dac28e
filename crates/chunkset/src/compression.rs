//! Weight compression of a build: dense, or k-means LUT palettization with a bit width that is
//! valid by construction.

use crate::kinds::Precision;
use serde::{Deserialize, Serialize};

/// Bits per palettized weight index: the widths MIL has index types for (`uint1` … `uint8` without
/// 5 and 7), which `constexpr_lut_to_dense` and the `palettize` crate both support.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
#[repr(u8)]
pub enum NBits {
    B1 = 1,
    B2 = 2,
    B3 = 3,
    B4 = 4,
    B6 = 6,
    B8 = 8,
}

/// A bit width with no MIL index type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a palettization bit width (1, 2, 3, 4, 6 or 8)")]
pub struct BadNBits(pub u8);

impl NBits {
    /// Every valid width, ascending.
    pub const ALL: [NBits; 6] = [
        NBits::B1,
        NBits::B2,
        NBits::B3,
        NBits::B4,
        NBits::B6,
        NBits::B8,
    ];

    /// The number of bits.
    pub fn bits(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for NBits {
    type Error = BadNBits;

    fn try_from(n: u8) -> Result<NBits, BadNBits> {
        NBits::ALL
            .into_iter()
            .find(|b| b.bits() == n)
            .ok_or(BadNBits(n))
    }
}

impl From<NBits> for u8 {
    fn from(b: NBits) -> u8 {
        b.bits()
    }
}

/// Output channels sharing one LUT unless told otherwise (coremltools' recipe for Gemma).
pub const DEFAULT_GROUP_SIZE: usize = 32;

/// Palettization settings: `2^nbits` LUT entries per group of `group_size` output channels.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LutConfig {
    pub nbits: NBits,
    /// Output channels per LUT (positive).
    pub group_size: usize,
}

/// How the weights of the graphs are stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// fp16 (or fp32 in fp32 builds), as in the checkpoint.
    Dense,
    /// Eligible projections palettized (coremltools' default policy), the rest dense.
    Palettize(LutConfig),
}

impl Compression {
    /// INT`nbits` with the default group size.
    pub fn int(nbits: NBits) -> Compression {
        Compression::Palettize(LutConfig {
            nbits,
            group_size: DEFAULT_GROUP_SIZE,
        })
    }

    /// The LUT settings, if palettizing.
    pub fn lut(&self) -> Option<&LutConfig> {
        match self {
            Compression::Dense => None,
            Compression::Palettize(c) => Some(c),
        }
    }

    /// `model_config.json`'s `quantization`: `int4`, ..., or the precision name when dense.
    pub fn label(&self, precision: Precision) -> String {
        match self {
            Compression::Dense => precision.name().to_string(),
            Compression::Palettize(c) => format!("int{}", c.nbits.bits()),
        }
    }

    /// The `(nbits, group_size)` pair `manifest.json` records: `(0, 32)` for dense.
    pub fn to_record(&self) -> (u8, usize) {
        match self {
            Compression::Dense => (0, DEFAULT_GROUP_SIZE),
            Compression::Palettize(c) => (c.nbits.bits(), c.group_size),
        }
    }

    /// The compression of a recorded `(nbits, group_size)` pair (`nbits` 0 = dense).
    pub fn from_record(nbits: u8, group_size: usize) -> Result<Compression, BadNBits> {
        if nbits == 0 {
            return Ok(Compression::Dense);
        }
        Ok(Compression::Palettize(LutConfig {
            nbits: NBits::try_from(nbits)?,
            group_size,
        }))
    }
}
