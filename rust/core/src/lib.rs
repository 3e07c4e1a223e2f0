//! fasttx-core: the pure-Rust half of fasttx.
//!
//! Layout (one concern per module):
//! - [`kernels`]: numeric building blocks (matmul, quantized products, norms, activations, softmax,
//!   top-k), each with a scalar reference and SIMD paths picked at runtime.
//! - [`tensor`]: weight storage (memory-mapped or owned) and the [`tensor::Linear`] layer type.
//! - [`formats`]: readers for weight files into named tensors: safetensors, GGUF, and GGUF tensors
//!   under transformers' names.
//! - [`models`]: one file per architecture, built from kernels; each exposes a decoding [`models::Session`].
//! - [`constraint`]: constrained output (JSON schema, regex, choices, Lark grammar) as per-step
//!   token masks, with the `llguidance` engine.
//! - [`decoding`]: per-step helpers of the generation loop (log-softmax, top-k over beams).
//! - [`sampling`]: sampling's logits warpers (temperature, top-k, top-p, min-p) and the draw.
//! - [`threading`]: the per-model rayon pool.
//! - [`bandwidth`]: the memory read-bandwidth probe the benchmarks compare against.
//! - [`memory`]: buffers for weights converted at load (huge pages where available).
//! - [`interrupt`]: stopping a long call from another thread (Ctrl-C), checked between layers.
//! - [`error`]: the one error type, which `rust/python` maps onto Python exceptions.
//!
//! Nothing here knows about Python; `rust/python` holds the PyO3 glue.

pub mod bandwidth;
pub mod constraint;
pub mod decoding;
pub mod error;
pub mod formats;
pub mod interrupt;
pub mod kernels;
pub mod memory;
pub mod models;
pub mod sampling;
pub mod tensor;
pub mod threading;

pub use error::{Error, Result};
