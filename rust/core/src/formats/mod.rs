//! Weight file readers. Each format yields named [`Tensor`]s through [`WeightSource`], so model code
//! never knows which file format it was loaded from.

pub mod gguf;
pub mod gguf_hf;
pub mod safetensors;

use crate::error::Result;
use crate::interrupt::{self, Interrupt};
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
    /// Whether the model's projections are to be stored as per-channel int8 (`dtype="int8"`).
    fn int8(&self) -> bool {
        false
    }
}

/// `dtype="int8"`: the tensors of `0`, with the request to quantize every projection (the models
/// do it through `models::projection`; norms, biases and embedding lookups stay f32, except that
/// a Llama-family model with a tied head looks tokens up in the head's int8 rows).
pub struct Int8<'a>(pub &'a dyn WeightSource);

impl WeightSource for Int8<'_> {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.0.tensor(name)
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn weight(&self, name: &str) -> Result<Weight> {
        self.0.weight(name)
    }
    fn int8(&self) -> bool {
        true
    }
}

/// The tensors of `source`, each fetch first checking `interrupt`: loading converts tensor after
/// tensor (dequantization, packing, int8), seconds for a large model, and Ctrl-C should stop it
/// within one tensor's conversion.
pub struct Interruptible<'a> {
    pub source: &'a dyn WeightSource,
    pub interrupt: &'a Interrupt,
}

impl WeightSource for Interruptible<'_> {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        interrupt::check(Some(self.interrupt))?;
        self.source.tensor(name)
    }
    fn contains(&self, name: &str) -> bool {
        self.source.contains(name)
    }
    fn weight(&self, name: &str) -> Result<Weight> {
        interrupt::check(Some(self.interrupt))?;
        self.source.weight(name)
    }
    fn int8(&self) -> bool {
        self.source.int8()
    }
}
