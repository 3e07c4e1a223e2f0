//! Weight file readers. Each format yields named [`Tensor`]s through [`WeightSource`], so model code
//! never knows which file format it was loaded from.

pub mod gguf;
pub mod gguf_hf;
pub mod safetensors;

use crate::error::Result;
use crate::tensor::{Tensor, Weight};

pub trait WeightSource {
    /// The tensor called `name`, converted to f32 (memory-mapped when no conversion is needed).
    fn tensor(&self, name: &str) -> Result<Tensor>;
    fn contains(&self, name: &str) -> bool;
    /// The weight of a projection or embedding: a source of quantized tensors may keep them
    /// quantized (its choice, made at load from the requested dtype); others give f32.
    fn weight(&self, name: &str) -> Result<Weight> {
        Ok(Weight::F32(self.tensor(name)?))
    }
}
