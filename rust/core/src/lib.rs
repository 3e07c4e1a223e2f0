//! fasttx-core: the pure-Rust half of fasttx.
//!
//! Layout (one concern per module):
//! - [`kernels`]: numeric building blocks (matmul, norms, activations, softmax, top-k), each with a
//!   scalar reference and SIMD paths picked at runtime.
//! - [`tensor`]: weight storage (memory-mapped or owned) and the [`tensor::Linear`] layer type.
//! - [`formats`]: readers for weight files (safetensors) into named tensors.
//! - [`models`]: one file per architecture, built from kernels; each exposes a decoding [`models::Session`].
//! - [`sampling`]: sampling's logits warpers (temperature, top-k, top-p, min-p) and the draw.
//! - [`threading`]: the per-model rayon pool.
//! - [`bandwidth`]: the memory read-bandwidth probe the benchmarks compare against.
//! - [`memory`]: buffers for weights converted at load (huge pages where available).
//!
//! Nothing here knows about Python; `rust/python` holds the PyO3 glue.

pub mod bandwidth;
pub mod decoding;
pub mod error;
pub mod formats;
pub mod kernels;
pub mod memory;
pub mod models;
pub mod sampling;
pub mod tensor;
pub mod threading;

pub use error::{Error, Result};
