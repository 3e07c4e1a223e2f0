//! Weight storage. A [`Tensor`] is an f32 array that either borrows a memory-mapped file (when the
//! stored dtype is already f32 and suitably aligned: no copy, pages loaded on first touch) or owns a
//! converted copy (f16/bf16 upcast, or a layout the kernels need). A [`QuantMatrix`] keeps blocks of
//! a quantized type ([`QuantFormat`]: GGUF's Q4_0, Q4_1, Q5_0, Q8_0 (which IQ4_NL blocks convert to
//! exactly at load), or int8 rows) repacked into the layout the quantized kernels stream
//! ([`pack_rows`](crate::kernels::quant::pack_rows)). Both are cheap to clone (shared storage), which is how a tied head shares the
//! embedding.

use std::cell::Cell;
use std::fs::File;
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::interrupt::{self, Interrupt};
use crate::kernels::matmul::{matmul_nt, row_block};
use crate::kernels::quant::{
    dequantize_packed, int8, int8_matmul, pack_rows_then, quant_matmul, quantize_rows_int8,
    quantize_rows_int8_from, QuantFormat,
};

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
        debug_assert!(offset.is_multiple_of(4) && offset + 4 * len <= map.len());
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

    /// For a memory-mapped tensor whose data has been copied into another form (stacked,
    /// quantized) and is not read again: drops its pages from the process's resident memory
    /// (see [`crate::memory::release_mapped`]). Owned tensors are left alone.
    pub fn release_mapped_pages(&self) {
        if let Storage::Mapped { map, offset, len } = &self.storage {
            crate::memory::release_mapped(&map[*offset..*offset + 4 * len]);
        }
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
        /// The file `map` maps, for [`Bytes::read_into`] (`None`: read through the mapping).
        file: Option<Arc<File>>,
    },
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped {
                map, offset, len, ..
            } => &map[*offset..*offset + *len],
            Bytes::Owned(v) => v,
        }
    }

    /// Copies the `out.len()` bytes at `at` into `out`. A mapped file's bytes are read from the
    /// file, not through the mapping: a page fault on a file mapping maps the neighbouring pages
    /// too (Linux's fault-around, which `MADV_RANDOM` does not turn off), so every embedding
    /// lookup through the mapping would add ~100 KiB to the process's resident set, tens of MB
    /// over a long prompt; a positional read adds nothing. Should the read fail, the mapping
    /// gives the same bytes.
    pub fn read_into(&self, at: usize, out: &mut [u8]) {
        #[cfg(unix)]
        if let Bytes::Mapped {
            offset,
            file: Some(file),
            ..
        } = self
        {
            use std::os::unix::fs::FileExt;
            if file.read_exact_at(out, (offset + at) as u64).is_ok() {
                return;
            }
        }
        out.copy_from_slice(&self.as_slice()[at..at + out.len()]);
    }

    /// As [`Tensor::release_mapped_pages`], for quantized blocks copied elsewhere at load.
    pub fn release_mapped_pages(&self) {
        if let Bytes::Mapped { .. } = self {
            crate::memory::release_mapped(self.as_slice());
        }
    }
}

/// A `[rows, cols]` matrix of blocks of `format` along each row, held in the kernels' packed
/// layout (each row keeps its size and place; see `kernels::quant`).
#[derive(Clone)]
pub struct QuantMatrix {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    /// int8 rows (`dtype="int8"`, Q8_0 blocks that all hold their row's scale): products run
    /// [`int8_matmul`], which takes the scale out of the sum.
    pub int8: bool,
    packed: Arc<Vec<u8>>,
}

impl QuantMatrix {
    /// From blocks in GGUF order (a mapped file's, or a copy): packs them into an owned buffer
    /// and releases the mapped pages, which are not read again.
    pub fn new(format: QuantFormat, rows: usize, cols: usize, bytes: Bytes) -> Result<Self> {
        Self::check(
            format,
            rows,
            cols,
            bytes.as_slice().len(),
            format.row_bytes(cols),
        )?;
        // Mapped pages are dropped chunk by chunk as they are packed (they are not read again),
        // then the pages the chunks' edges shared.
        let mapped = matches!(bytes, Bytes::Mapped { .. });
        let packed = pack_rows_then(format, bytes.as_slice(), cols, &|chunk| {
            if mapped {
                crate::memory::release_mapped(chunk)
            }
        });
        bytes.release_mapped_pages();
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            int8: false,
            packed: Arc::new(packed),
        })
    }

    /// int8 rows ([`quantize_rows_int8`]'s bytes, `cols` padded to whole blocks), packed.
    fn int8(rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self> {
        let q = QuantMatrix::new(int8::FORMAT, rows, cols, Bytes::Owned(Arc::new(bytes)))?;
        Ok(QuantMatrix { int8: true, ..q })
    }

    /// From rows already packed (rows of packed matrices with the same `cols` and kind,
    /// concatenated).
    fn from_packed(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        int8: bool,
        packed: Vec<u8>,
    ) -> Result<Self> {
        Self::check(
            format,
            rows,
            cols,
            packed.len(),
            format.packed_row_bytes(cols),
        )?;
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            int8,
            packed: Arc::new(packed),
        })
    }

    /// `len` bytes are `rows` rows of `cols` values, rows of `row_bytes` (GGUF's or packed).
    fn check(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        len: usize,
        row_bytes: usize,
    ) -> Result<()> {
        if !format.has_kernels() {
            return Err(Error::Format(format!(
                "{} weights cannot be run quantized (no kernels for them)",
                format.name()
            )));
        }
        if !cols.is_multiple_of(format.block_values()) || len != rows * row_bytes {
            return Err(Error::Format(format!(
                "quantized matrix [{rows}, {cols}] of {format:?} does not match its {len} bytes"
            )));
        }
        Ok(())
    }

    /// The packed rows, as `quant_matmul` takes them.
    pub fn data(&self) -> &[u8] {
        &self.packed
    }

    /// Row `i` dequantized into `out` (embedding lookups; no allocation, this runs for every
    /// token).
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        let rb = self.format.packed_row_bytes(self.cols);
        dequantize_packed(self.format, &self.data()[i * rb..(i + 1) * rb], out);
    }
}

thread_local! {
    /// Each thread's buffer for the stored bytes of one looked-up row (a lookup per token should
    /// not allocate).
    static ROW_BYTES: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A `[rows, cols]` matrix of blocks of `format` in the file's own block order, most often a view
/// of the mapped file: what a quantized tensor is until a projection needs it packed
/// ([`Linear::new`] packs it). Read row by row it is an embedding table that costs no copy and
/// whose rows are paged in only when looked up: an untied token embedding (a fifth of a small
/// model's file) never becomes wholly resident.
#[derive(Clone)]
pub struct QuantRows {
    /// The type the blocks are stored in (packing may convert it: [`QuantFormat::runs_as`]).
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    bytes: Bytes,
}

impl QuantRows {
    pub fn new(format: QuantFormat, rows: usize, cols: usize, bytes: Bytes) -> Result<Self> {
        if !cols.is_multiple_of(format.block_values())
            || bytes.as_slice().len() != rows * format.row_bytes(cols)
        {
            return Err(Error::Format(format!(
                "quantized matrix [{rows}, {cols}] of {format:?} does not match its {} bytes",
                bytes.as_slice().len()
            )));
        }
        Ok(QuantRows {
            format,
            rows,
            cols,
            bytes,
        })
    }

    /// Row `i` dequantized into `out` (`cols` values): the lookup reads that row's blocks only
    /// (from the file: [`Bytes::read_into`]).
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        let rb = self.format.row_bytes(self.cols);
        let mut row = ROW_BYTES.with(Cell::take);
        row.resize(rb, 0);
        self.bytes.read_into(i * rb, &mut row);
        self.format.dequantize(&row, out);
        ROW_BYTES.with(|c| c.set(row));
    }

    /// The blocks in the kernels' layout, converted first where the stored type runs as another
    /// (IQ4_NL as Q8_0, exactly). The mapped pages are released as they are copied.
    pub fn pack(&self) -> Result<QuantMatrix> {
        let runs_as = self.format.runs_as().ok_or_else(|| {
            Error::Format(format!(
                "{} weights cannot be run quantized (no kernels for them)",
                self.format.name()
            ))
        })?;
        let bytes = if runs_as == self.format {
            self.bytes.clone()
        } else {
            let converted = self.format.transcode(self.bytes.as_slice());
            self.bytes.release_mapped_pages();
            Bytes::Owned(Arc::new(converted))
        };
        QuantMatrix::new(runs_as, self.rows, self.cols, bytes)
    }
}

/// The weight of a projection or an embedding: f32, quantized blocks packed for the kernels, or
/// quantized blocks as stored (a table for lookups; a projection packs them).
#[derive(Clone)]
pub enum Weight {
    F32(Tensor),
    Quant(QuantMatrix),
    Table(QuantRows),
}

/// A projection's matrix, in a form the products run on.
#[derive(Clone)]
enum Matrix {
    F32(Tensor),
    Quant(QuantMatrix),
}

impl From<Matrix> for Weight {
    fn from(m: Matrix) -> Self {
        match m {
            Matrix::F32(t) => Weight::F32(t),
            Matrix::Quant(q) => Weight::Quant(q),
        }
    }
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
            Weight::Table(t) => vec![t.rows, t.cols],
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
            Weight::Table(t) => {
                let start = out.len();
                out.resize(start + t.cols, 0.0);
                t.row_into(i, &mut out[start..]);
            }
        }
    }
}

/// A linear projection `y = x · Wᵀ (+ b)` with `W` stored `[out_features, in_features]`.
pub struct Linear {
    weight: Matrix,
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
        let weight = match weight {
            Weight::F32(t) => Matrix::F32(t),
            Weight::Quant(q) => Matrix::Quant(q),
            Weight::Table(t) => Matrix::Quant(t.pack()?),
        };
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

    /// The weight matrix (shared storage: the clone is cheap).
    pub fn weight(&self) -> Weight {
        self.weight.clone().into()
    }

    /// Bytes of the weight matrix as stored (f32, or quantized blocks) plus the bias: what one
    /// product streams.
    pub fn weight_bytes(&self) -> usize {
        let matrix = match &self.weight {
            Matrix::F32(t) => 4 * t.numel(),
            Matrix::Quant(q) => q.data().len(),
        };
        matrix + 4 * self.bias.as_ref().map_or(0, Vec::len)
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The same projection with per-output-channel int8 weights (`dtype="int8"`, see
    /// [`quantize_rows_int8`]). Block-quantized weights (a GGUF file's) are requantized row by
    /// row from their exact `f32` values, without an `f32` copy of the matrix.
    pub fn into_int8(self) -> Result<Linear> {
        let (n, k) = (self.out_features, self.in_features);
        let bytes = match &self.weight {
            Matrix::F32(t) => {
                let bytes = quantize_rows_int8(t.data(), n, k);
                t.release_mapped_pages();
                bytes
            }
            Matrix::Quant(q) => quantize_rows_int8_from(n, k, |i, row| q.row_into(i, row)),
        };
        let q = QuantMatrix::int8(n, int8::padded_cols(k), bytes)?;
        Ok(Linear {
            weight: Matrix::Quant(q),
            ..self
        })
    }

    /// `x: [m, in]` → `y: [m, out]` (overwritten).
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (self.out_features, self.in_features);
        match &self.weight {
            Matrix::F32(w) => matmul_nt(x, w.data(), y, m, k, n),
            // (int8 rows may be padded past `k` to whole blocks: the kernel pads `x` to match.)
            // The int8 product adds the bias itself, as it goes.
            Matrix::Quant(q) if q.int8 => {
                return int8_matmul(x, q.data(), self.bias.as_deref(), y, m, k, n)
            }
            Matrix::Quant(q) => quant_matmul(q.format, x, q.data(), y, m, k, n),
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
        let mut y = Vec::new();
        self.forward_into(x, m, &mut y);
        y
    }

    /// `x: [m, in]` → `y` resized to `[m, out]` (a buffer reused across steps).
    pub fn forward_into(&self, x: &[f32], m: usize, y: &mut Vec<f32>) {
        y.resize(m * self.out_features(), 0.0);
        self.forward(x, m, y);
    }

    /// [`forward_into`](Self::forward_into) that `interrupt` can stop: see [`forward_checked`].
    pub fn forward_checked(
        &self,
        x: &[f32],
        m: usize,
        y: &mut Vec<f32>,
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        let (k, n) = (self.in_features, self.out_features);
        forward_checked(k, n, x, m, y, interrupt, |x, m, y| self.forward(x, m, y))
    }
}

/// A projection `x: [m, k]` → `y: [m, n]` (`y` resized) that Ctrl-C can stop: one product over a
/// long input (a prefill's feed-forward, the head over every position) takes seconds, so with an
/// `interrupt` the rows go through in chunks ([`interrupt::chunk_rows`]) with a check before each,
/// returning [`Error::Interrupted`] with `y` partly written. Every row gets the bits one call
/// gives it: the products compute each output alone, whichever rows share the call.
#[allow(clippy::too_many_arguments)]
fn forward_checked(
    k: usize,
    n: usize,
    x: &[f32],
    m: usize,
    y: &mut Vec<f32>,
    interrupt: Option<&Interrupt>,
    forward: impl Fn(&[f32], usize, &mut [f32]),
) -> Result<()> {
    let chunk = match interrupt {
        Some(_) => interrupt::chunk_rows(n.saturating_mul(k), row_block(k)),
        None => m,
    };
    forward_in_chunks(k, n, chunk, x, m, y, interrupt, forward)
}

/// [`forward_checked`] in chunks of `chunk` rows.
#[allow(clippy::too_many_arguments)]
fn forward_in_chunks(
    k: usize,
    n: usize,
    chunk: usize,
    x: &[f32],
    m: usize,
    y: &mut Vec<f32>,
    interrupt: Option<&Interrupt>,
    forward: impl Fn(&[f32], usize, &mut [f32]),
) -> Result<()> {
    y.resize(m * n, 0.0);
    for rows in interrupt::row_ranges(m, chunk) {
        interrupt::check(interrupt)?;
        let (x, y) = (
            &x[rows.start * k..rows.end * k],
            &mut y[rows.start * n..rows.end * n],
        );
        forward(x, rows.len(), y);
    }
    Ok(())
}

/// Several projections of the same input (attention's q/k/v, a gated feed-forward's two input
/// halves) computed as one product: their weights are stacked at load, so a decoding step streams
/// them in one pass and pays for one dispatch (and, for quantized weights, one quantization of the
/// input) instead of one per projection. Projections whose weights cannot be stacked (f32 beside
/// quantized, two block formats) run one after the other with the same result layout.
pub struct LinearSet {
    stacked: Option<Linear>,
    parts: Vec<Linear>,
    /// Output width of each projection, in order.
    widths: Vec<usize>,
}

impl LinearSet {
    /// `parts` must share their input size.
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::Format("an empty set of projections".into()));
        };
        let k = first.in_features;
        if parts.iter().any(|p| p.in_features != k) {
            return Err(Error::Format(
                "projections of one input must have the same input size".into(),
            ));
        }
        let widths = parts.iter().map(|p| p.out_features).collect();
        if parts.len() == 1 {
            // Nothing to stack: the projection itself, without a copy.
            return Ok(LinearSet {
                stacked: parts.into_iter().next(),
                parts: Vec::new(),
                widths,
            });
        }
        let stacked = stack(&parts)?;
        Ok(LinearSet {
            parts: if stacked.is_some() { Vec::new() } else { parts },
            stacked,
            widths,
        })
    }

    /// Total output width: a result row holds every projection's outputs side by side.
    pub fn out_features(&self) -> usize {
        self.widths.iter().sum()
    }

    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    pub fn weight_bytes(&self) -> usize {
        self.stacked
            .iter()
            .chain(&self.parts)
            .map(Linear::weight_bytes)
            .sum()
    }

    /// `x: [m, in]` → `y: [m, out_features()]`, row `i` = `[part0(x_i) | part1(x_i) | ...]`.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        if let Some(s) = &self.stacked {
            return s.forward(x, m, y);
        }
        let total = self.out_features();
        let mut offset = 0;
        for p in &self.parts {
            let part = p.apply(x, m);
            let w = p.out_features;
            for (dst, src) in y.chunks_exact_mut(total).zip(part.chunks_exact(w)).take(m) {
                dst[offset..offset + w].copy_from_slice(src);
            }
            offset += w;
        }
    }

    /// Convenience: allocate and return `[m, out_features()]`.
    pub fn apply(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = Vec::new();
        self.forward_into(x, m, &mut y);
        y
    }

    /// [`split`](Self::split) into caller-owned buffers (reused across decoding steps).
    pub fn split_into(&self, y: &[f32], m: usize, outs: &mut [&mut Vec<f32>]) {
        let total = self.out_features();
        let mut offset = 0;
        for (out, &w) in outs.iter_mut().zip(&self.widths) {
            out.clear();
            for row in y.chunks_exact(total).take(m) {
                out.extend_from_slice(&row[offset..offset + w]);
            }
            offset += w;
        }
    }

    /// `x: [m, in]` → `y` resized to `[m, out_features()]` (a buffer reused across steps).
    pub fn forward_into(&self, x: &[f32], m: usize, y: &mut Vec<f32>) {
        y.resize(m * self.out_features(), 0.0);
        self.forward(x, m, y);
    }

    /// [`forward_into`](Self::forward_into) that `interrupt` can stop: see [`forward_checked`].
    pub fn forward_checked(
        &self,
        x: &[f32],
        m: usize,
        y: &mut Vec<f32>,
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        // (`new` keeps the stacked projection or the parts, never neither.)
        let k = self
            .stacked
            .as_ref()
            .unwrap_or_else(|| &self.parts[0])
            .in_features;
        let n = self.out_features();
        forward_checked(k, n, x, m, y, interrupt, |x, m, y| self.forward(x, m, y))
    }

    /// Splits a result of [`forward`](Self::forward) into one `[m, width]` array per projection.
    pub fn split(&self, y: &[f32], m: usize) -> Vec<Vec<f32>> {
        let mut out: Vec<Vec<f32>> = self.widths.iter().map(|_| Vec::new()).collect();
        self.split_into(y, m, &mut out.iter_mut().collect::<Vec<_>>());
        out
    }
}

/// The weights (and biases) of `parts` stacked row-wise into one projection, or `None` when their
/// storage differs. The stacked copy is owned: mapped f32 weights are copied once at load.
fn stack(parts: &[Linear]) -> Result<Option<Linear>> {
    let k = parts[0].in_features;
    let n: usize = parts.iter().map(|p| p.out_features).sum();
    let weight = match &parts[0].weight {
        Matrix::F32(_) => {
            if parts.iter().any(|p| !matches!(p.weight, Matrix::F32(_))) {
                return Ok(None);
            }
            let mut data = crate::memory::weight_buffer(n * k);
            let mut at = 0;
            for p in parts {
                if let Matrix::F32(t) = &p.weight {
                    data[at..at + t.numel()].copy_from_slice(t.data());
                    at += t.numel();
                    t.release_mapped_pages();
                }
            }
            Weight::F32(Tensor::from_vec(vec![n, k], data)?)
        }
        Matrix::Quant(q0) => {
            let same = |p: &Linear| matches!(&p.weight, Matrix::Quant(q) if q.format == q0.format && q.cols == q0.cols && q.int8 == q0.int8);
            if !parts.iter().all(same) {
                return Ok(None);
            }
            // (int8 rows may be padded past `k` to whole blocks: `q0.cols`.)
            let mut data = crate::memory::byte_buffer(n * q0.format.packed_row_bytes(q0.cols));
            let mut at = 0;
            for p in parts {
                if let Matrix::Quant(q) = &p.weight {
                    data[at..at + q.data().len()].copy_from_slice(q.data());
                    at += q.data().len();
                }
            }
            Weight::Quant(QuantMatrix::from_packed(
                q0.format, n, q0.cols, q0.int8, data,
            )?)
        }
    };
    let bias = if parts.iter().any(|p| p.bias.is_some()) {
        let mut b = Vec::with_capacity(n);
        for p in parts {
            match &p.bias {
                Some(v) => b.extend_from_slice(v),
                None => b.resize(b.len() + p.out_features, 0.0),
            }
        }
        Some(b)
    } else {
        None
    };
    let mut stacked = Linear::new(weight, bias)?;
    stacked.in_features = k;
    Ok(Some(stacked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn f32_linear(n: usize, k: usize, seed: f32, bias: bool) -> Linear {
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
        let b = bias.then(|| (0..n).map(|i| i as f32 * 0.1 - seed).collect());
        Linear::new(Tensor::from_vec(vec![n, k], w).unwrap(), b).unwrap()
    }

    fn quant_linear(fmt: QuantFormat, n: usize, k: usize, seed: f32) -> Linear {
        // Arbitrary block bytes with small, finite f16 scales (and Q4_1 / Q4_K minimums).
        let mut bytes: Vec<u8> = (0..n * fmt.row_bytes(k))
            .map(|i| ((i as f32 * 0.73 + seed).cos() * 127.0 + 128.0) as u8)
            .collect();
        for (b, blk) in bytes.chunks_exact_mut(fmt.block_bytes()).enumerate() {
            let d = f16::from_f32(0.01 + 0.001 * (b % 7) as f32);
            // Where each layout keeps its f16 scale (and minimum), so no random bytes act as one.
            let (d_at, min_at) = match fmt {
                QuantFormat::Q6_K => (208, None),
                QuantFormat::Q3_K => (108, None),
                QuantFormat::Q2_K => (80, Some(82)),
                QuantFormat::Q4_1 | QuantFormat::Q5_1 | QuantFormat::Q4_K | QuantFormat::Q5_K => {
                    (0, Some(2))
                }
                _ => (0, None),
            };
            blk[d_at..d_at + 2].copy_from_slice(&d.to_le_bytes());
            if let Some(at) = min_at {
                blk[at..at + 2].copy_from_slice(&f16::from_f32(-0.05).to_le_bytes());
            }
        }
        let q = QuantMatrix::new(fmt, n, k, Bytes::Owned(Arc::new(bytes))).unwrap();
        Linear::new(Weight::Quant(q), None).unwrap()
    }

    /// A stacked set gives each projection's own bits, side by side, whether or not the weights
    /// could be stacked (f32, one block format, or mixed storage run one by one).
    #[test]
    fn linear_set_equals_its_parts() {
        let (m, k) = (3, 64);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.11).sin()).collect();
        let sets: Vec<Vec<Linear>> = vec![
            vec![
                f32_linear(5, k, 0.1, true),
                f32_linear(7, k, 0.2, false),
                f32_linear(2, k, 0.3, true),
            ],
            vec![
                quant_linear(QuantFormat::Q4_1, 9, k, 0.4),
                quant_linear(QuantFormat::Q4_1, 4, k, 0.5),
            ],
            vec![
                quant_linear(QuantFormat::Q8_0, 6, k, 0.6),
                f32_linear(3, k, 0.7, false),
            ],
            vec![
                quant_linear(QuantFormat::Q8_0, 6, k, 0.6),
                quant_linear(QuantFormat::Q4_0, 5, k, 0.8),
            ],
        ];
        // Super-block types (rows of 256 values; packed rows larger than the file's for Q4_K).
        let (mk, xk) = (3, 256);
        let xs: Vec<f32> = (0..mk * xk).map(|i| (i as f32 * 0.11).sin()).collect();
        let super_sets: Vec<Vec<Linear>> = vec![
            vec![
                quant_linear(QuantFormat::Q4_K, 9, xk, 0.4),
                quant_linear(QuantFormat::Q4_K, 4, xk, 0.5),
            ],
            vec![
                quant_linear(QuantFormat::Q6_K, 3, xk, 0.6),
                quant_linear(QuantFormat::Q4_K, 5, xk, 0.7),
            ],
        ];
        let cases = sets
            .into_iter()
            .map(|p| (p, &x, m))
            .chain(super_sets.into_iter().map(|p| (p, &xs, mk)));
        for (case, (parts, x, m)) in cases.enumerate() {
            let want: Vec<Vec<f32>> = parts.iter().map(|p| p.apply(x, m)).collect();
            let set = LinearSet::new(parts).unwrap();
            let got = set.split(&set.apply(x, m), m);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                let (gb, wb): (Vec<u32>, Vec<u32>) = (
                    g.iter().map(|v| v.to_bits()).collect(),
                    w.iter().map(|v| v.to_bits()).collect(),
                );
                assert_eq!(gb, wb, "case {case}");
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Ctrl-C's chunks change no bit: a product cut into chunks of any size (inside the kernels'
    /// row blocks, across them, ragged) gives what one call gives, for f32 (several row blocks
    /// of 68 rows at k = 700), int8, a block format, and a set run part by part.
    #[test]
    fn chunked_products_give_the_bits_of_one_call() {
        let (m, k) = (150, 704);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.013).sin()).collect();
        let sets = [
            LinearSet::new(vec![f32_linear(300, k, 0.2, true)]).unwrap(),
            LinearSet::new(vec![f32_linear(40, k, 0.1, false).into_int8().unwrap()]).unwrap(),
            LinearSet::new(vec![quant_linear(QuantFormat::Q4_1, 70, k, 0.4)]).unwrap(),
            LinearSet::new(vec![
                quant_linear(QuantFormat::Q8_0, 30, k, 0.6),
                f32_linear(20, k, 0.7, true),
            ])
            .unwrap(),
        ];
        for (case, set) in sets.iter().enumerate() {
            let n = set.out_features();
            let want = set.apply(&x, m);
            for threads in [1, 2] {
                for chunk in [1, 3, 4, 67, 68, 100, m] {
                    let mut got = vec![f32::NAN; 7];
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads);
                    pool.build()
                        .unwrap()
                        .install(|| {
                            forward_in_chunks(k, n, chunk, &x, m, &mut got, None, |x, m, y| {
                                set.forward(x, m, y)
                            })
                        })
                        .unwrap();
                    assert_eq!(bits(&got), bits(&want), "case {case}, chunks of {chunk}");
                }
            }
        }
    }

    /// Once interrupted, the next chunk is not started: the call returns `Interrupted`.
    #[test]
    fn an_interrupted_product_stops_between_chunks() {
        let (m, k) = (8, 64);
        let lin = f32_linear(5, k, 0.3, false);
        let x = vec![1.0; m * k];
        let stop = Interrupt::default();
        let mut y = Vec::new();
        assert!(lin.forward_checked(&x, m, &mut y, Some(&stop)).is_ok());
        assert_eq!(bits(&y), bits(&lin.apply(&x, m)));
        stop.request();
        let calls = std::cell::Cell::new(0);
        let err = forward_in_chunks(k, 5, 2, &x, m, &mut y, Some(&stop), |_, _, _| {
            calls.set(calls.get() + 1)
        });
        assert!(matches!(err, Err(Error::Interrupted)));
        assert_eq!(calls.get(), 0);
    }

    /// int8 projections (k a multiple of 32, and k = 48 padded to 64): outputs within the error
    /// the per-row step allows, and stacked int8 parts give each part's bits.
    #[test]
    fn int8_linear_is_close_to_f32_and_stacks() {
        for k in [48usize, 64] {
            let m = 3;
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.21).cos()).collect();
            let parts = [f32_linear(9, k, 0.1, true), f32_linear(4, k, 0.3, false)];
            for p in &parts {
                let want = p.apply(&x, m);
                let q = Linear {
                    weight: p.weight.clone(),
                    bias: p.bias.clone(),
                    ..*p
                }
                .into_int8()
                .unwrap();
                assert!(matches!(q.weight, Matrix::Quant(_)));
                let got = q.apply(&x, m);
                // |w| <= 1 so the weight step is <= 1/127; activations are 8-bit per block too.
                let bound = 2.0 * k as f32 / 127.0 * 0.5 + 1e-3;
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= bound, "k={k}: {g} vs {w}");
                }
                assert!(
                    got.iter().zip(&want).any(|(g, w)| g != w),
                    "int8 changed nothing"
                );
            }
            let q: Vec<Linear> = parts
                .iter()
                .map(|p| {
                    Linear {
                        weight: p.weight.clone(),
                        bias: p.bias.clone(),
                        ..*p
                    }
                    .into_int8()
                    .unwrap()
                })
                .collect();
            let alone: Vec<Vec<f32>> = q.iter().map(|p| p.apply(&x, m)).collect();
            let set = LinearSet::new(q).unwrap();
            assert!(set.stacked.is_some(), "int8 parts of one input stack");
            let got = set.split(&set.apply(&x, m), m);
            for (g, a) in got.iter().zip(&alone) {
                assert_eq!(
                    g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    /// int8 from block-quantized weights (row by row) is int8 from their dequantized f32 matrix:
    /// the same bytes, so the same products.
    #[test]
    fn int8_from_blocks_equals_int8_from_their_f32() {
        let (m, n) = (3, 11);
        for fmt in QuantFormat::all().filter(|f| f.has_kernels()) {
            let k = fmt.padded_cols(96);
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.13).sin()).collect();
            let blocks = quant_linear(fmt, n, k, 0.9);
            let Matrix::Quant(q) = &blocks.weight else {
                unreachable!()
            };
            let mut f = vec![0.0; n * k];
            for (i, row) in f.chunks_exact_mut(k).enumerate() {
                q.row_into(i, row);
            }
            let dense = Linear::new(Tensor::from_vec(vec![n, k], f).unwrap(), None).unwrap();
            let (a, b) = (blocks.into_int8().unwrap(), dense.into_int8().unwrap());
            let (Matrix::Quant(qa), Matrix::Quant(qb)) = (&a.weight, &b.weight) else {
                panic!("{fmt:?}: not quantized")
            };
            assert_eq!(qa.data(), qb.data(), "{fmt:?}");
            assert_eq!(
                a.apply(&x, m)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                b.apply(&x, m)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn linear_set_rejects_mismatched_inputs() {
        assert!(LinearSet::new(vec![
            f32_linear(2, 8, 0.0, false),
            f32_linear(2, 16, 0.0, false)
        ])
        .is_err());
        assert!(LinearSet::new(Vec::new()).is_err());
    }
}
