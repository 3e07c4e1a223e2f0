//! Weight storage. A [`Tensor`] is an f32 array that either borrows a memory-mapped file (when the
//! stored dtype is already f32 and suitably aligned: no copy, pages loaded on first touch) or owns a
//! converted copy (f16/bf16 upcast, or a layout the kernels need). A [`QuantMatrix`] keeps GGUF
//! blocks (Q4_0, Q4_1, Q8_0) as they are stored, for the quantized kernels. Both are cheap to clone
//! (shared storage), which is how a tied head shares the embedding.

use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::formats::gguf::{quant::dequantize, GgmlType};
use crate::kernels::matmul::matmul_nt;
use crate::kernels::quant::{quant_matmul, QuantFormat};

#[derive(Clone)]
enum Storage {
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Arc<Vec<f32>>),
}

#[derive(Clone)]
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
            storage: Storage::Owned(Arc::new(data)),
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

/// Bytes of quantized blocks: a view of a mapped file, or an owned (e.g. row-permuted) copy.
#[derive(Clone)]
pub enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Bytes::Owned(v) => v,
        }
    }
}

/// A `[rows, cols]` matrix stored as GGUF blocks of 32 along each row.
#[derive(Clone)]
pub struct QuantMatrix {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    bytes: Bytes,
}

impl QuantMatrix {
    pub fn new(format: QuantFormat, rows: usize, cols: usize, bytes: Bytes) -> Result<Self> {
        if cols % QuantFormat::BLOCK != 0 || bytes.as_slice().len() != rows * format.row_bytes(cols)
        {
            return Err(Error::Format(format!(
                "quantized matrix [{rows}, {cols}] of {format:?} does not match its {} bytes",
                bytes.as_slice().len()
            )));
        }
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            bytes,
        })
    }

    pub fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    fn ggml_type(&self) -> GgmlType {
        match self.format {
            QuantFormat::Q4_0 => GgmlType::Q4_0,
            QuantFormat::Q4_1 => GgmlType::Q4_1,
            QuantFormat::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// Row `i` dequantized into `out` (embedding lookups).
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        let rb = self.format.row_bytes(self.cols);
        dequantize(self.ggml_type(), &self.data()[i * rb..(i + 1) * rb], out);
    }
}

/// The weight of a projection or an embedding: f32, or quantized blocks run natively.
#[derive(Clone)]
pub enum Weight {
    F32(Tensor),
    Quant(QuantMatrix),
}

impl From<Tensor> for Weight {
    fn from(t: Tensor) -> Self {
        Weight::F32(t)
    }
}

impl Weight {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Weight::F32(t) => t.shape().to_vec(),
            Weight::Quant(q) => vec![q.rows, q.cols],
        }
    }

    pub fn expect_shape(self, name: &str, expected: &[usize]) -> Result<Self> {
        if self.shape() != expected {
            return Err(Error::Format(format!(
                "tensor '{name}' has shape {:?}, but the model config implies {expected:?}",
                self.shape()
            )));
        }
        Ok(self)
    }

    /// Appends row `i` (as f32) to `out`: the embedding lookup.
    pub fn extend_with_row(&self, i: usize, out: &mut Vec<f32>) {
        match self {
            Weight::F32(t) => out.extend_from_slice(t.row(i)),
            Weight::Quant(q) => {
                let start = out.len();
                out.resize(start + q.cols, 0.0);
                q.row_into(i, &mut out[start..]);
            }
        }
    }
}

/// A linear projection `y = x · Wᵀ (+ b)` with `W` stored `[out_features, in_features]`.
pub struct Linear {
    weight: Weight,
    out_features: usize,
    in_features: usize,
    bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn new(weight: impl Into<Weight>, bias: Option<Vec<f32>>) -> Result<Self> {
        let weight = weight.into();
        let shape = weight.shape();
        if shape.len() != 2 {
            return Err(Error::Format(format!(
                "a linear weight must be 2-D, got shape {shape:?}"
            )));
        }
        if let Some(b) = &bias {
            if b.len() != shape[0] {
                return Err(Error::Format(format!(
                    "bias of length {} does not match {} output features",
                    b.len(),
                    shape[0]
                )));
            }
        }
        Ok(Linear {
            out_features: shape[0],
            in_features: shape[1],
            weight,
            bias,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// `x: [m, in]` → `y: [m, out]` (overwritten).
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (self.out_features, self.in_features);
        match &self.weight {
            Weight::F32(w) => matmul_nt(x, w.data(), y, m, k, n),
            Weight::Quant(q) => quant_matmul(q.format, x, q.data(), y, m, k, n),
        }
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
