//! Chunk-set level files: side files the on-device runtime reads (with `model_config.json`) and the
//! set manifest, written through the contract's types ([`chunkset`]).

pub mod manifest;
pub mod npy;
pub mod side;
