//! Reading a checkpoint's tensors by their transformers names, each refused (naming it) unless
//! it has the shape the model's config implies: the loaders every architecture's `load` uses.

use super::projection;
use crate::error::Result;
use crate::formats::WeightSource;
use crate::tensor::{Linear, Tensor};

/// The f32 tensor `name` (a norm's weight, a bias, a position table), of shape `shape`.
pub(crate) fn tensor(w: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Tensor> {
    w.tensor(name)?.expect_shape(name, shape)
}

/// The projection `{prefix}.weight` (`[out, inp]`, kept in the source's format: a GGUF file's
/// quantized blocks stay quantized), with `{prefix}.bias` (`[out]`) when `bias`; int8 when the
/// load asks for it.
pub(crate) fn linear(
    w: &dyn WeightSource,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear> {
    let name = format!("{prefix}.weight");
    let weight = w.weight(&name)?.expect_shape(&name, &[out, inp])?;
    let bias = if bias {
        Some(
            tensor(w, &format!("{prefix}.bias"), &[out])?
                .data()
                .to_vec(),
        )
    } else {
        None
    };
    projection(w, Linear::new(weight, bias)?)
}
