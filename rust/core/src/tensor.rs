//! Weight storage. A [`Tensor`] is an f32 array that either borrows a memory-mapped file (when the
//! stored dtype is already f32 and suitably aligned: no copy, pages loaded on first touch) or owns a
//! converted copy (f16/bf16 upcast, or a layout the kernels need).

use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::kernels::matmul::matmul_nt;

enum Storage {
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl Tensor {
    pub fn from_vec(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::Format(format!(
                "tensor of shape {shape:?} needs {numel} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            shape,
            storage: Storage::Owned(data),
        })
    }

    /// A view of `len` f32 values at byte `offset` of a mapping. The caller has checked bounds and
    /// 4-byte alignment (see `formats::safetensors`).
    pub(crate) fn mapped(shape: Vec<usize>, map: Arc<Mmap>, offset: usize) -> Self {
        let len = shape.iter().product();
        debug_assert!(offset % 4 == 0 && offset + 4 * len <= map.len());
        Tensor {
            shape,
            storage: Storage::Mapped { map, offset, len },
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped { map, offset, len } => {
                let bytes = &map[*offset..*offset + 4 * len];
                // SAFETY: the bytes are in bounds and 4-byte aligned (checked when the view was made),
                // every bit pattern is a valid f32, and the mapping is read-only and outlives `self`.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, *len) }
            }
        }
    }

    /// Row `i` of a 2-D tensor.
    pub fn row(&self, i: usize) -> &[f32] {
        let cols = self.shape[self.shape.len() - 1];
        &self.data()[i * cols..(i + 1) * cols]
    }

    /// Checks the shape against what the config implies, naming the tensor on mismatch.
    pub fn expect_shape(self, name: &str, expected: &[usize]) -> Result<Self> {
        if self.shape != expected {
            return Err(Error::Format(format!(
                "tensor '{name}' has shape {:?}, but the model config implies {expected:?}",
                self.shape
            )));
        }
        Ok(self)
    }
}

/// A linear projection `y = x · Wᵀ (+ b)` with `W` stored `[out_features, in_features]`.
pub struct Linear {
    weight: Tensor,
    bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Vec<f32>>) -> Result<Self> {
        if weight.shape().len() != 2 {
            return Err(Error::Format(format!(
                "a linear weight must be 2-D, got shape {:?}",
                weight.shape()
            )));
        }
        if let Some(b) = &bias {
            if b.len() != weight.shape()[0] {
                return Err(Error::Format(format!(
                    "bias of length {} does not match {} output features",
                    b.len(),
                    weight.shape()[0]
                )));
            }
        }
        Ok(Linear { weight, bias })
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `x: [m, in]` → `y: [m, out]` (overwritten).
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (self.out_features(), self.in_features());
        matmul_nt(x, self.weight.data(), y, m, k, n);
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(n).take(m) {
                for (v, bi) in row.iter_mut().zip(b) {
                    *v += bi;
                }
            }
        }
    }

    /// Convenience: allocate and return `[m, out]`.
    pub fn apply(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * self.out_features()];
        self.forward(x, m, &mut y);
        y
    }
}
