//! Weight file readers. Each format yields named [`Tensor`]s through [`WeightSource`], so model code
//! never knows which file format it was loaded from.

pub mod safetensors;

use crate::error::Result;
use crate::tensor::Tensor;

pub trait WeightSource {
    /// The tensor called `name`, converted to f32 (memory-mapped when no conversion is needed).
    fn tensor(&self, name: &str) -> Result<Tensor>;
    fn contains(&self, name: &str) -> bool;
}
