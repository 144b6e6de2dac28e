//! Chunk-set level files: side files the on-device runtime reads, the set manifest, the zip.

pub mod manifest;
pub mod npy;
pub mod side;
