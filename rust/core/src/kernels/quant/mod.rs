//! Matrix products against weights kept in GGUF block formats (Q4_0, Q4_1, Q8_0), so a model can
//! hold its weights quantized in memory and stream them at memory bandwidth.
//!
//! # Method (as llama.cpp and candle do it)
//! Each call first quantizes every row of `x` into 8-bit blocks of 32: `d = max|x| / 127`,
//! `q = round(x / d)` (ggml's `quantize_row_q8_0`), keeping `Σq` per block and, for Q4_1,
//! `s = d·Σq` (ggml's Q8_1). Then every output is a sum over blocks of exact integer dot products
//! scaled in `f32`:
//!
//! * Q8_0 weights: `Σ_b dw·dx · Σ qw·qx`;
//! * Q4_0 weights (`w = (nibble - 8)·dw`): `Σ_b dw·dx · (Σ nibble·qx - 8·Σqx)`, the bracket
//!   an exact integer: multiplying unsigned nibbles saves the sign handling signed weights need;
//! * Q4_1 weights (`w = nibble·dw + mw`): `Σ_b dw·dx · Σ nibble·qx + mw·s`.
//!
//! Unlike ggml, the activation scales `d` and `s` stay in `f32` (ggml rounds them to `f16`): they
//! live only for one call, and it avoids an extra rounding for free.
//!
//! # Packed weights
//! The kernels read the weights in the layout of `quant_pack.rs` ([`pack_rows`], once at load):
//! per group of 8 blocks the scales together, then the values interleaved 4 bytes per block, so
//! one vector load holds 4 values of each of 8 blocks and one integer dot-product instruction
//! (`vpdpbusd`, or `maddubs` + `madd`) advances 8 blocks at once, one per 32-bit lane. The rows
//! of `x` are quantized into the same interleaving. In GGUF's order each block needed its own
//! scale broadcast and a horizontal step: about twice the instructions, which left the 4-bit
//! kernels compute-bound below memory bandwidth.
//!
//! # Fixed arithmetic, shared by every path
//! Each block's dot product is one exact `i32` (`isum`, with Q4_0's `-8·Σqx` and Q8_0's offset
//! taken out in integers). Block `8g + l` of a row goes to lane `l` of an 8-lane `f32`
//! accumulator, `acc = fma(dw·dx, isum, acc)`, group after group; Q4_1 also keeps
//! `mins = fma(mw, s, mins)` per lane. Lanes past the end of a short last group add `0·0`. The
//! lanes (`acc + mins` for Q4_1) are summed in the order `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
//!
//! The integers are exact on every path, and the `f32` operations are the same sequence, so the
//! AVX-512, AVX2 and portable kernels give the same bits; none depends on the thread count, on the
//! task split or on how many rows of `x` are in the call (each output is one dot product computed
//! alone, whatever group of rows it was computed with).
//!
//! # Organisation
//! The outputs are split by weight rows (`n`) into rayon tasks in the current pool. A task walks
//! its weight rows in chunks that stay in L1; for each chunk it takes the rows of `x` in groups of
//! up to [`MR`] and computes each weight row against the whole group, so the weights are read from
//! memory once per call (per block of `x` rows that fits in L2, when `m` is large).

// `n.is_multiple_of(k)` needs Rust 1.87; the workspace's rust-version is 1.80.
#![allow(clippy::manual_is_multiple_of)]

use std::cell::Cell;

use half::f16;
use rayon::prelude::*;

use super::cpu::{self, Isa};
use super::matmul::balanced_tasks;

#[cfg(target_arch = "aarch64")]
mod neon;
mod pack;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

pub use pack::{pack_rows, unpack_row};

/// Storage format of a quantized weight matrix (GGUF / ggml block types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantFormat {
    /// `f16 d; u8 qs[16]`: `w = (nibble - 8)·d`.
    Q4_0,
    /// `f16 d; f16 m; u8 qs[16]`: `w = nibble·d + m`.
    Q4_1,
    /// `f16 d; i8 qs[32]`: `w = q·d`.
    Q8_0,
}

impl QuantFormat {
    /// Values per block, for every format here.
    pub const BLOCK: usize = 32;

    /// Bytes of one block of 32 values.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_0 => 2 + Self::BLOCK / 2,
            QuantFormat::Q4_1 => 4 + Self::BLOCK / 2,
            QuantFormat::Q8_0 => 2 + Self::BLOCK,
        }
    }

    /// Bytes of one row of `k` values (`k` a multiple of [`Self::BLOCK`]).
    pub fn row_bytes(self, k: usize) -> usize {
        k / Self::BLOCK * self.block_bytes()
    }
}

/// Values per block.
const QK: usize = QuantFormat::BLOCK;
/// `f32` lanes of an accumulator (one AVX2 register); also blocks per packed group.
const LANES: usize = 8;
/// Rows of `x` computed together against one weight row: each weight group is loaded (and its
/// nibbles unpacked) once for all of them.
const MR: usize = 4;

/// `m·n·k` below which a product runs on the calling thread: rayon's dispatch (a few µs) would
/// cost more than it saves. Integer products are cheap, so this is higher than for `f32`.
const SERIAL_WORK: usize = 128 * 1024;
/// Multiply-adds a parallel task should at least have (a few µs of work), for the same reason.
const MIN_TASK_WORK: usize = 64 * 1024;
/// Aim for this many tasks per thread so uneven progress evens out.
const TASKS_PER_THREAD: usize = 8;
/// Bytes of quantized `x` rows a task keeps hot across the weight rows (inside a 512 KiB L2).
const X_BLOCK_BYTES: usize = 128 * 1024;
/// Bytes of weight rows swept by every group of `x` rows before moving on (inside L1).
const W_CHUNK_BYTES: usize = 16 * 1024;
/// `m·k` above which the activations are quantized in parallel.
const PAR_QUANTIZE: usize = 64 * 1024;
/// Scratch buffers larger than this (long prefills) are freed after the call, not kept.
const KEEP_SCRATCH_BYTES: usize = 8 << 20;

/// `y[m][n] = x[m][k] · W[n][k]ᵀ` where W's rows are `⌈k/32⌉` blocks of `fmt` in the packed
/// layout ([`pack_rows`]), i.e. `w.len() == n * fmt.row_bytes(padded_cols(k))`; when `k` is not a multiple of
/// 32 (int8 rows, see [`quantize_rows_int8`]) the weights' last block holds zeros past `k`, and
/// the rows of `x` are quantized as if zero-padded the same way.
///
/// Parallel over the current rayon pool; the result is bitwise independent of the thread count and
/// of `m`, and equal to [`quant_matmul_scalar`] (see the module docs).
///
/// # Panics
/// If a slice is too short.
pub fn quant_matmul(
    fmt: QuantFormat,
    x: &[f32],
    w: &[u8],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    quant_matmul_with(cpu::isa(), fmt, x, w, y, m, k, n)
}

/// [`quant_matmul`] on an explicit instruction set (tests, benchmarks).
///
/// # Panics
/// If this CPU cannot run `isa`, or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quant_matmul_with(
    isa: Isa,
    fmt: QuantFormat,
    x: &[f32],
    w: &[u8],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    check_args(fmt, x, w, y, m, k, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y[..m * n].fill(0.0);
        return;
    }
    let kernel = Kernel::for_isa(isa);
    let threads = rayon::current_num_threads();
    let work = m.saturating_mul(n).saturating_mul(k);
    let parallel = threads > 1 && work >= SERIAL_WORK;

    // Taken out of the thread-local cell (not borrowed): if this thread runs another product while
    // it waits for its tasks (rayon work stealing), that call finds an empty buffer instead of
    // panicking on a double borrow.
    let mut act = SCRATCH.with(Cell::take);
    act.quantize(kernel, x, m, k, parallel && m * k >= PAR_QUANTIZE);

    let rb = fmt.row_bytes(act.k);
    // Rows of w per task: only a matter of load balance and of task overhead, since every task
    // streams its own weight rows once.
    let cols = if parallel {
        let affordable = (m * n * k / MIN_TASK_WORK).max(1);
        let tasks = balanced_tasks((TASKS_PER_THREAD * threads).min(affordable), threads, 1);
        n.div_ceil(tasks).next_multiple_of(4).min(n)
    } else {
        n
    };
    let tasks = n.div_ceil(cols);
    let yp = SyncPtr(y.as_mut_ptr());
    let act_ref = &act;
    let run = |t: usize| {
        let (c0, c1) = (t * cols, ((t + 1) * cols).min(n));
        // SAFETY: tasks write the disjoint column ranges c0..c1 of the m rows of y, whose length
        // (>= m·n) was checked, and `y` stays mutably borrowed by this call throughout.
        unsafe { product_cols(kernel, fmt, act_ref, &w[c0 * rb..c1 * rb], yp, c0, n) };
    };
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }

    if act.capacity_bytes() <= KEEP_SCRATCH_BYTES {
        SCRATCH.with(|c| c.set(act));
    }
}

/// Per-output-channel int8 (`dtype="int8"`): each row of `w` (`[rows, cols]`, f32) quantized with
/// one scale, `d = max|row| / 127` rounded up to the next `f16`, `q = round(w / d)`, and stored as
/// [`QuantFormat::Q8_0`] blocks that all carry the row's `d`, so the Q8_0 kernels run it. Rows are
/// zero-padded to `padded_cols(cols)` (a multiple of 32). Returns the blocks in GGUF order (for
/// the kernels, [`pack_rows`] them).
///
/// A row holding NaN or ±inf gets a NaN scale, so its outputs come out NaN as in f32.
pub fn quantize_rows_int8(w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let w = &w[..rows * cols];
    quantize_rows_int8_from(rows, cols, |i, row| {
        row.copy_from_slice(&w[i * cols..(i + 1) * cols])
    })
}

/// [`quantize_rows_int8`] of rows produced one at a time by `row(i, out)` (`out` holds `cols`
/// values): a quantized source is requantized without an `f32` copy of the whole matrix.
pub fn quantize_rows_int8_from(
    rows: usize,
    cols: usize,
    row: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<u8> {
    let kp = padded_cols(cols);
    let rb = QuantFormat::Q8_0.row_bytes(kp);
    let mut out = crate::memory::byte_buffer(rows * rb);
    if rb > 0 {
        out.par_chunks_mut(rb).enumerate().for_each_init(
            || vec![0.0f32; cols],
            |values, (i, dst)| {
                row(i, values);
                quantize_row_int8(values, dst)
            },
        );
    }
    out
}

/// `cols` rounded up to whole blocks of 32.
pub fn padded_cols(cols: usize) -> usize {
    cols.next_multiple_of(QK)
}

fn quantize_row_int8(row: &[f32], dst: &mut [u8]) {
    let finite = row.iter().all(|v| v.is_finite());
    let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = if !finite {
        f16::NAN
    } else {
        // The smallest f16 >= amax / 127, so that |w / d| <= 127 holds for the stored scale.
        let mut d = f16::from_f32(amax / 127.0);
        if d.to_f32() * 127.0 < amax {
            d = f16::from_bits(d.to_bits() + 1);
        }
        d
    };
    let df = d.to_f32();
    let bb = QuantFormat::Q8_0.block_bytes();
    for (b, blk) in dst.chunks_exact_mut(bb).enumerate() {
        blk[..2].copy_from_slice(&d.to_le_bytes());
        for (j, q) in blk[2..].iter_mut().enumerate() {
            let v = row.get(b * QK + j).copied().unwrap_or(0.0);
            let r = if df > 0.0 && finite {
                (v / df).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            *q = (r as i8) as u8;
        }
    }
}

/// Scalar reference with the same activation quantization (for tests): serial, one output at a
/// time, through the portable dot product; `w` packed as for [`quant_matmul`]. Same bits as
/// [`quant_matmul`].
///
/// # Panics
/// If a slice is too short.
pub fn quant_matmul_scalar(
    fmt: QuantFormat,
    x: &[f32],
    w: &[u8],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_args(fmt, x, w, y, m, k, n);
    if k == 0 {
        y[..m * n].fill(0.0);
        return;
    }
    let mut act = Activations::default();
    act.quantize(Kernel::Portable, x, m, k, false);
    let rb = fmt.row_bytes(act.k);
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = dot_portable(fmt, &w[j * rb..(j + 1) * rb], act.row(i));
        }
    }
}

fn check_args(fmt: QuantFormat, x: &[f32], w: &[u8], y: &[f32], m: usize, k: usize, n: usize) {
    assert!(
        x.len() >= m * k && w.len() >= n * fmt.row_bytes(padded_cols(k)) && y.len() >= m * n,
        "quant_matmul: slices too short for m={m} k={k} n={n} {fmt:?} \
         (x {}, w {} bytes, y {})",
        x.len(),
        w.len(),
        y.len()
    );
}

/// Computes columns `c0..c0 + w.len()/row_bytes` of every row of `y` (row stride `n`).
///
/// # Safety
/// `y` is valid for writes of `act.m` rows of `n` values, the columns are inside `0..n`, and no
/// other thread writes them meanwhile.
unsafe fn product_cols(
    kernel: Kernel,
    fmt: QuantFormat,
    act: &Activations,
    w: &[u8],
    y: SyncPtr,
    c0: usize,
    n: usize,
) {
    let rb = fmt.row_bytes(act.k);
    let (m, cols) = (act.m, w.len() / rb);
    let x_block = (X_BLOCK_BYTES / act.row_bytes()).max(MR) / MR * MR;
    let w_chunk = (W_CHUNK_BYTES / rb).max(1);
    for i0 in (0..m).step_by(x_block) {
        let i1 = (i0 + x_block).min(m);
        for j0 in (0..cols).step_by(w_chunk) {
            let j1 = (j0 + w_chunk).min(cols);
            for g0 in (i0..i1).step_by(MR) {
                let g1 = (g0 + MR).min(i1);
                let rows: [XRow<'_>; MR] = std::array::from_fn(|r| act.row((g0 + r).min(g1 - 1)));
                // SAFETY: rows g0..g1 < m and columns c0 + j0..c0 + j1 <= n of y (the caller's
                // contract); the rows come from `act`, quantized for `act.k`, the length of
                // the weight rows.
                kernel.dot(
                    fmt,
                    &w[j0 * rb..j1 * rb],
                    rb,
                    &rows[..g1 - g0],
                    y.get().add(g0 * n + c0 + j0),
                    n,
                );
            }
        }
    }
}

/// Which dot-product implementation a call uses.
#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F/BW/VL/VNNI for the integer sums (two pieces of a packed group per register);
    /// AVX2 for the rest.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// aarch64 Advanced SIMD for the dot products; the portable quantizer.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    fn for_isa(isa: Isa) -> Kernel {
        match isa {
            // The AVX2 kernel also needs F16C (for the weights' f16 scales), which every AVX2 CPU
            // has in practice, but `cpu` does not check it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if x86_avx512::available() => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 if x86_avx2::available() => Kernel::Avx2,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Kernel::Neon,
            _ => Kernel::Portable,
        }
    }

    /// [`quantize_row`], compiled for this kernel's instruction set (same results).
    fn quantize_row(self, x: &[f32], out: XRowMut<'_>) {
        match self {
            Kernel::Portable => quantize_row(x, out),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => quantize_row(x, out),
            // SAFETY: `Avx2` and `Avx512` are only chosen when `x86_avx2::available()`.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => unsafe { x86_avx2::quantize_row(x, out) },
        }
    }

    /// `y[r·ldy + j] = w_j · xs[r]` for every packed weight row `w_j` of `w` (rows of `rb` bytes,
    /// whole blocks) and 1..=[`MR`] rows of `x`.
    ///
    /// # Safety
    /// `y` valid for those writes; the rows come from [`Activations::row`] for `k` values, where
    /// `rb = fmt.row_bytes(k)`.
    #[inline]
    unsafe fn dot(
        self,
        fmt: QuantFormat,
        w: &[u8],
        rb: usize,
        xs: &[XRow<'_>],
        y: *mut f32,
        ldy: usize,
    ) {
        match self {
            Kernel::Portable => {
                for (j, wj) in w.chunks_exact(rb).enumerate() {
                    for (r, x) in xs.iter().enumerate() {
                        *y.add(r * ldy + j) = dot_portable(fmt, wj, *x);
                    }
                }
            }
            // `Avx2` is only chosen when `x86_avx2::available()`; the rows from `Activations::row`
            // have the lengths `x86_avx2::dot` requires.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86_avx2::dot(fmt, w, rb, xs, y, ldy),
            // Only chosen when `x86_avx512::available()`; same row contract as the AVX2 kernel.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86_avx512::dot(fmt, w, rb, xs, y, ldy),
            // Same row contract as the AVX2 kernel; NEON is always there on aarch64.
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => neon::dot(fmt, w, rb, xs, y, ldy),
        }
    }
}

/// One output of the product: packed weight row `w` (whole blocks of `fmt`) times one quantized
/// row of `x`, in the fixed arithmetic of the module docs. The reference for the SIMD kernels, and
/// the kernel itself where there is no SIMD one (`mul_add` is one instruction on aarch64).
fn dot_portable(fmt: QuantFormat, w: &[u8], x: XRow<'_>) -> f32 {
    let bb = fmt.block_bytes();
    let mut acc = [0.0f32; LANES];
    let mut mins = [0.0f32; LANES];
    for (b0, t) in pack::groups(w.len() / bb) {
        let group = &w[b0 * bb..(b0 + t) * bb];
        let xg = &x.qs[b0 * QK..(b0 + LANES) * QK];
        for l in 0..LANES {
            let b = b0 + l;
            // Lanes past a short group add 0·0, as the SIMD kernels' masked loads make them.
            let (isum, dw, mw) = if l < t {
                let mut isum = block_isum(fmt, group, t, l, xg);
                if fmt == QuantFormat::Q4_0 {
                    isum -= 8 * x.sum[b];
                }
                let dw = f16_at(group, pack::packed_offset(fmt, t, l, 0));
                let mw = match fmt {
                    QuantFormat::Q4_1 => f16_at(group, pack::packed_offset(fmt, t, l, 2)),
                    _ => 0.0,
                };
                (isum, dw, mw)
            } else {
                (0, 0.0, 0.0)
            };
            acc[l] = (dw * x.d[b]).mul_add(isum as f32, acc[l]);
            if fmt == QuantFormat::Q4_1 {
                mins[l] = mw.mul_add(x.s[b], mins[l]);
            }
        }
    }
    let lanes: [f32; LANES] = std::array::from_fn(|l| match fmt {
        QuantFormat::Q4_1 => acc[l] + mins[l],
        _ => acc[l],
    });
    hsum(&lanes)
}

/// Block `l`'s integer dot product in a packed group of `t` blocks (`group`) against the
/// group's quantized `x` (`xg`): the nibbles (Q4_0 without its `- 8`) or Q8_0's signed `q`, times
/// the activations, summed exactly. Walks the group's pieces as the SIMD kernels load them.
fn block_isum(fmt: QuantFormat, group: &[u8], t: usize, l: usize, xg: &[i8]) -> i32 {
    let values = &group[pack::head_bytes(fmt) * t..];
    let x = |v: usize| xg[x_index(l, v)] as i32;
    let mut isum = 0;
    match fmt {
        QuantFormat::Q8_0 => {
            for c in 0..QK / 4 {
                for (j, &byte) in values[4 * (c * t + l)..][..4].iter().enumerate() {
                    isum += (byte as i32 - 128) * x(4 * c + j);
                }
            }
        }
        QuantFormat::Q4_0 | QuantFormat::Q4_1 => {
            // Byte j of a block holds value j (low nibble) and value j + 16 (high nibble).
            for c in 0..QK / 8 {
                for (j, &byte) in values[4 * (c * t + l)..][..4].iter().enumerate() {
                    isum += (byte & 0x0F) as i32 * x(4 * c + j);
                    isum += (byte >> 4) as i32 * x(QK / 2 + 4 * c + j);
                }
            }
        }
    }
    isum
}

/// Where value `v` of block `l` of a group sits in that group's quantized `x` (the packed
/// interleaving: piece `v / 4`, lane `l`).
#[inline]
fn x_index(l: usize, v: usize) -> usize {
    (v / 4) * 4 * LANES + 4 * l + v % 4
}

/// The little-endian `f16` at byte `at` of `b`, as `f32` (exact).
#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The AVX2 kernel's horizontal sum order: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline]
fn hsum(a: &[f32; LANES]) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// One row of `x` quantized to 8-bit blocks, padded with zero blocks to whole groups of 8
/// (`nbp` blocks): `qs` holds the values interleaved as the packed weights are (per group, piece
/// `c` = values `4c..4c+4` of each of the 8 blocks); `d`, `sum` and `s` hold each block's scale,
/// `Σq` and `d·Σq`.
#[derive(Clone, Copy)]
struct XRow<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    sum: &'a [i32],
    s: &'a [f32],
}

#[cfg(test)]
impl XRow<'_> {
    /// Value `p` of the row (in element order).
    fn value(&self, p: usize) -> i8 {
        let b = p / QK;
        self.qs[(b / LANES) * LANES * QK + x_index(b % LANES, p % QK)]
    }
}

/// The quantized rows of `x` for one call (reused across calls through [`SCRATCH`]).
#[derive(Default)]
struct Activations {
    m: usize,
    k: usize,
    /// Blocks per row, rounded up to a multiple of [`LANES`].
    padded_blocks: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    sum: Vec<i32>,
    s: Vec<f32>,
}

thread_local! {
    /// Per-thread activation buffers: a call happens for every projection of every token, so the
    /// buffers are kept rather than allocated each time.
    static SCRATCH: Cell<Activations> = const {
        Cell::new(Activations {
            m: 0,
            k: 0,
            padded_blocks: 0,
            qs: Vec::new(),
            d: Vec::new(),
            sum: Vec::new(),
            s: Vec::new(),
        })
    };
}

impl Activations {
    /// Quantizes the `m` rows of `x` (`k > 0` values each), each zero-padded to whole groups.
    fn quantize(&mut self, kernel: Kernel, x: &[f32], m: usize, k: usize, parallel: bool) {
        let kp = padded_cols(k);
        let nbp = (kp / QK).next_multiple_of(LANES);
        self.m = m;
        self.k = kp;
        self.padded_blocks = nbp;
        // Every element is overwritten below; `resize` only zero-fills on growth.
        self.qs.resize(m * nbp * QK, 0);
        self.d.resize(m * nbp, 0.0);
        self.sum.resize(m * nbp, 0);
        self.s.resize(m * nbp, 0.0);
        let x = &x[..m * k];
        let row = |(xr, ((qs, d), (sum, s))): (&[f32], QuantRowMut<'_>)| {
            kernel.quantize_row(xr, XRowMut { qs, d, sum, s })
        };
        let width = nbp * QK;
        if parallel {
            x.par_chunks(k)
                .zip(
                    (self
                        .qs
                        .par_chunks_mut(width)
                        .zip(self.d.par_chunks_mut(nbp)))
                    .zip(self.sum.par_chunks_mut(nbp).zip(self.s.par_chunks_mut(nbp))),
                )
                .for_each(row);
        } else {
            x.chunks(k)
                .zip(
                    (self.qs.chunks_mut(width).zip(self.d.chunks_mut(nbp)))
                        .zip(self.sum.chunks_mut(nbp).zip(self.s.chunks_mut(nbp))),
                )
                .for_each(row);
        }
    }

    fn row(&self, i: usize) -> XRow<'_> {
        let nbp = self.padded_blocks;
        XRow {
            qs: &self.qs[i * nbp * QK..(i + 1) * nbp * QK],
            d: &self.d[i * nbp..(i + 1) * nbp],
            sum: &self.sum[i * nbp..(i + 1) * nbp],
            s: &self.s[i * nbp..(i + 1) * nbp],
        }
    }

    /// Bytes of one quantized row (what a row costs in cache).
    fn row_bytes(&self) -> usize {
        self.padded_blocks * (QK + 12)
    }

    fn capacity_bytes(&self) -> usize {
        self.qs.capacity() + 4 * (self.d.capacity() + self.sum.capacity() + self.s.capacity())
    }
}

/// The pieces of one row of [`Activations`] as `quantize` splits them.
type QuantRowMut<'a> = (
    (&'a mut [i8], &'a mut [f32]),
    (&'a mut [i32], &'a mut [f32]),
);

/// [`XRow`]'s buffers, being written.
struct XRowMut<'a> {
    qs: &'a mut [i8],
    d: &'a mut [f32],
    sum: &'a mut [i32],
    s: &'a mut [f32],
}

/// One row: blocks of 32 into `out.qs` in the interleaved order of [`XRow`], their scales, `Σq`
/// and `d·Σq`; the padding blocks (to whole groups of 8) are zeroed. Always inlined so that
/// `x86_avx2::quantize_row` compiles this very code with AVX2 (every step is exact or correctly
/// rounded elementwise, so any vectorisation gives the same bits).
///
/// `x` may end inside a block (a row of `k` values when `k` is not a multiple of 32): that last
/// block is quantized as if zero-padded, matching weights padded the same way.
#[inline(always)]
fn quantize_row(x: &[f32], out: XRowMut<'_>) {
    let nb = x.len().div_ceil(QK);
    let mut block = [0.0f32; QK];
    let mut q = [0i8; QK];
    for b in 0..out.d.len() {
        let (scale, total) = if b < nb {
            let xb = &x[b * QK..x.len().min((b + 1) * QK)];
            match <&[f32; QK]>::try_from(xb) {
                Ok(whole) => quantize_block(whole, &mut q),
                // The ragged last block, zero-padded.
                Err(_) => {
                    block[..xb.len()].copy_from_slice(xb);
                    block[xb.len()..].fill(0.0);
                    quantize_block(&block, &mut q)
                }
            }
        } else {
            q.fill(0);
            (0.0, 0)
        };
        out.d[b] = scale;
        out.sum[b] = total;
        out.s[b] = scale * total as f32;
        let group = &mut out.qs[(b / LANES) * LANES * QK..][..LANES * QK];
        for (c, piece) in q.chunks_exact(4).enumerate() {
            let at = x_index(b % LANES, 4 * c);
            group[at..at + 4].copy_from_slice(piece);
        }
    }
}

/// `d = max|x| / 127`, `q = round(x / d)` (ties to even), returning `(d, Σq)`. A block holding NaN
/// or ±inf gets `d = NaN` (and `q = 0`), so the outputs it touches come out NaN, as an `f32`
/// product would; an all-zero block gets `d = 0`.
///
/// Written over 8-lane arrays with selects and integer bit tricks (no `as` float-to-int casts,
/// whose saturating semantics LLVM does not vectorise) so that it compiles to vector code.
#[inline(always)]
fn quantize_block(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
    // `y + 1.5·2^23` has the bits `0x4B40_0000 + round(y)` (ties to even) for |y| < 2^22.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    let mut amax = [0.0f32; LANES];
    // `v·0` is ±0 for finite `v` and NaN for NaN or ±inf: the sum flags a non-finite block.
    let mut poison = [0.0f32; LANES];
    for c in x.chunks_exact(LANES) {
        for l in 0..LANES {
            let a = c[l].abs();
            amax[l] = if a > amax[l] { a } else { amax[l] };
            poison[l] += c[l] * 0.0;
        }
    }
    let amax = amax.iter().fold(0.0f32, |m, &a| if a > m { a } else { m });
    let d = amax / 127.0;
    let poisoned = poison.iter().sum::<f32>() != 0.0;
    if poisoned || d == 0.0 {
        q.fill(0);
        return (if poisoned { f32::NAN } else { 0.0 }, 0);
    }
    let mut sums = [0i32; LANES];
    for (qc, c) in q.chunks_exact_mut(LANES).zip(x.chunks_exact(LANES)) {
        for l in 0..LANES {
            // Dividing (rather than multiplying by 1/d as ggml does) stays right when d is
            // subnormal, where 1/d overflows; the clamp only matters there too.
            let y = c[l] / d;
            let y = if y > 127.0 { 127.0 } else { y };
            let y = if y < -127.0 { -127.0 } else { y };
            let r = (y + ROUND).to_bits() as i32 - ROUND_BITS;
            qc[l] = r as i8;
            sums[l] += r;
        }
    }
    (d, sums.iter().sum())
}

/// Raw output pointer shared by the tasks of one product, each writing its own columns.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: only used by `quant_matmul_with`, whose tasks write disjoint parts of the buffer.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    // A method (not `.0`) so closures capture the whole Send/Sync wrapper, not the bare pointer.
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf::quant::{dequantize_q4_0, dequantize_q4_1, dequantize_q8_0};
    use crate::kernels::testutil::{random, report_skipped, with_threads};

    const FORMATS: [QuantFormat; 3] = [QuantFormat::Q4_0, QuantFormat::Q4_1, QuantFormat::Q8_0];

    /// `n` rows of random blocks: every byte of `qs` random (all nibbles, Q8_0 values -128..=127
    /// included), scales of realistic size (Q4_0 `d` of either sign, Q4_1 `m` negative as the
    /// quantizer makes it for centred weights).
    fn random_weights(fmt: QuantFormat, n: usize, k: usize, seed: u64) -> Vec<u8> {
        let bytes = random(n * fmt.row_bytes(k), seed);
        let mut w: Vec<u8> = bytes.iter().map(|v| ((v + 1.0) * 128.0) as u8).collect();
        let scales = random(2 * n * k / QK, seed + 1);
        for (b, blk) in w.chunks_exact_mut(fmt.block_bytes()).enumerate() {
            let (r0, r1) = (scales[2 * b], scales[2 * b + 1]);
            let (d, m) = match fmt {
                QuantFormat::Q4_0 => (0.02 * r0, 0.0),
                QuantFormat::Q4_1 => (0.01 * (1.5 + r0), -0.08 * (1.5 + r1)),
                QuantFormat::Q8_0 => (0.002 * r0, 0.0),
            };
            blk[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            if fmt == QuantFormat::Q4_1 {
                blk[2..4].copy_from_slice(&f16::from_f32(m).to_le_bytes());
            }
        }
        w
    }

    /// The weights as `f32` through the GGUF reader's exact dequantizers.
    fn dequantize(fmt: QuantFormat, w: &[u8], n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0.0; n * k];
        match fmt {
            QuantFormat::Q4_0 => dequantize_q4_0(w, &mut out),
            QuantFormat::Q4_1 => dequantize_q4_1(w, &mut out),
            QuantFormat::Q8_0 => dequantize_q8_0(w, &mut out),
        }
        out
    }

    /// `x` with rows of different magnitudes and a few outliers, like hidden states.
    fn activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut x = random(m * k, seed);
        for (i, row) in x.chunks_mut(k.max(1)).enumerate() {
            let scale = 0.5 + i as f32;
            for (p, v) in row.iter_mut().enumerate() {
                *v *= if p % 97 == 5 { 8.0 * scale } else { scale };
            }
        }
        x
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        isa: Isa,
        threads: usize,
        fmt: QuantFormat,
        x: &[f32],
        w: &[u8],
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f32> {
        let w = pack_rows(fmt, w, padded_cols(k));
        let mut y = vec![f32::NAN; m * n];
        with_threads(threads, || {
            quant_matmul_with(isa, fmt, x, &w, &mut y, m, k, n)
        });
        y
    }

    /// [`quant_matmul_scalar`] on GGUF-order weights (packed here).
    #[allow(clippy::too_many_arguments)]
    fn scalar(fmt: QuantFormat, x: &[f32], w: &[u8], y: &mut [f32], m: usize, k: usize, n: usize) {
        quant_matmul_scalar(fmt, x, &pack_rows(fmt, w, padded_cols(k)), y, m, k, n)
    }

    const KS: [usize; 4] = [32, 96, 576, 1536];
    const NS: [usize; 5] = [1, 7, 33, 192, 577];
    const MS: [usize; 3] = [1, 3, 8];

    /// Every path, thread count and odd shape gives the scalar reference's bits (the integer
    /// sums are exact and the f32 steps are the same sequence on every path).
    #[test]
    fn quant_matmul_matches_scalar_bitwise() {
        report_skipped();
        for fmt in FORMATS {
            for k in KS {
                for n in NS {
                    let w = random_weights(fmt, n, k, (k * 1000 + n) as u64);
                    for m in MS {
                        let x = activations(m, k, (m * 7 + k) as u64);
                        let mut want = vec![0.0; m * n];
                        scalar(fmt, &x, &w, &mut want, m, k, n);
                        for isa in cpu::supported_isas() {
                            for threads in [1, 2] {
                                let got = run(isa, threads, fmt, &x, &w, m, k, n);
                                if bits(&got) != bits(&want) {
                                    let worst = got
                                        .iter()
                                        .zip(&want)
                                        .map(|(g, w)| ((g - w) / w.abs().max(1e-6)).abs())
                                        .fold(0.0f32, f32::max);
                                    panic!(
                                        "{fmt:?} {isa:?} m={m} k={k} n={n} threads={threads}: \
                                         differs from scalar (max rel diff {worst:e})"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `k` not a multiple of 32 (int8 rows padded to whole blocks): every path gives the bits of
    /// the scalar reference, which are those of `x` explicitly zero-padded to the blocks.
    #[test]
    fn ragged_k_is_the_zero_padded_product() {
        for fmt in FORMATS {
            for (m, k, n) in [(1, 1, 5), (3, 48, 7), (2, 33, 9), (5, 100, 33)] {
                let kp = padded_cols(k);
                let w = random_weights(fmt, n, kp, (k * 31 + n) as u64);
                let x = activations(m, k, (m * 5 + k) as u64);
                let mut xp = vec![0.0; m * kp];
                for (dst, src) in xp.chunks_exact_mut(kp).zip(x.chunks_exact(k)) {
                    dst[..k].copy_from_slice(src);
                }
                let mut want = vec![0.0; m * n];
                scalar(fmt, &xp, &w, &mut want, m, kp, n);
                let mut unpadded = vec![0.0; m * n];
                scalar(fmt, &x, &w, &mut unpadded, m, k, n);
                assert_eq!(
                    bits(&unpadded),
                    bits(&want),
                    "{fmt:?} m={m} k={k} n={n}: scalar"
                );
                for isa in cpu::supported_isas() {
                    for threads in [1, 2] {
                        let got = run(isa, threads, fmt, &x, &w, m, k, n);
                        assert_eq!(bits(&got), bits(&want), "{fmt:?} {isa:?} m={m} k={k} n={n}");
                    }
                }
            }
        }
    }

    /// Large m: several blocks of `x` rows and several tasks.
    #[test]
    fn quant_matmul_prefill_shape_matches_scalar() {
        let (m, k, n) = (37, 4096, 100);
        for fmt in FORMATS {
            let w = random_weights(fmt, n, k, 21);
            let x = activations(m, k, 22);
            let mut want = vec![0.0; m * n];
            scalar(fmt, &x, &w, &mut want, m, k, n);
            for isa in cpu::supported_isas() {
                let got = run(isa, 2, fmt, &x, &w, m, k, n);
                assert_eq!(bits(&got), bits(&want), "{fmt:?} {isa:?} prefill");
            }
        }
    }

    /// y[i] has the same bits whether x[i] is alone (m = 1), row i of a batch of 7, or in a pair,
    /// with 1 or 2 threads.
    #[test]
    fn quant_matmul_bitwise_independent_of_m_and_threads() {
        for fmt in FORMATS {
            for isa in cpu::supported_isas() {
                for &(k, n) in &[(576, 1031), (96, 50), (2048, 97)] {
                    let m = 7;
                    let x = activations(m, k, 5);
                    let w = random_weights(fmt, n, k, 6);
                    let batch1 = run(isa, 1, fmt, &x, &w, m, k, n);
                    let batch2 = run(isa, 2, fmt, &x, &w, m, k, n);
                    let what = format!("{fmt:?} {isa:?} k={k} n={n}");
                    assert_eq!(bits(&batch1), bits(&batch2), "{what}: 1 vs 2 threads");
                    for i in 0..m {
                        for threads in [1, 2] {
                            let single =
                                run(isa, threads, fmt, &x[i * k..(i + 1) * k], &w, 1, k, n);
                            assert_eq!(
                                bits(&single),
                                bits(&batch1[i * n..(i + 1) * n]),
                                "{what} row {i}: m=1 ({threads} threads) vs m=7"
                            );
                        }
                    }
                    let pair = run(isa, 2, fmt, &x[5 * k..], &w, 2, k, n);
                    assert_eq!(
                        bits(&pair),
                        bits(&batch1[5 * n..]),
                        "{what}: rows 5..7 as m=2"
                    );
                }
            }
        }
    }

    /// Against the product of the exactly dequantized weights with the exactly dequantized
    /// 8-bit activations, in f64: checks the integer and scale arithmetic on its own (only f32
    /// rounding remains, so the tolerance is tight).
    #[test]
    fn quant_matmul_equals_dequantized_product_of_quantized_activations() {
        let (m, k, n) = (3, 1536, 65);
        for fmt in FORMATS {
            let w = random_weights(fmt, n, k, 31);
            let wf = dequantize(fmt, &w, n, k);
            let x = activations(m, k, 32);
            let mut act = Activations::default();
            act.quantize(Kernel::Portable, &x, m, k, false);
            for isa in cpu::supported_isas() {
                let y = run(isa, 2, fmt, &x, &w, m, k, n);
                for i in 0..m {
                    let xr = act.row(i);
                    let xh: Vec<f64> = (0..k)
                        .map(|p| xr.value(p) as f64 * xr.d[p / QK] as f64)
                        .collect();
                    for j in 0..n {
                        let wr = &wf[j * k..(j + 1) * k];
                        let exact: f64 = wr.iter().zip(&xh).map(|(&a, &b)| a as f64 * b).sum();
                        let scale: f64 = wr
                            .iter()
                            .zip(&xh)
                            .map(|(&a, &b)| (a as f64 * b).abs())
                            .sum();
                        let err = (y[i * n + j] as f64 - exact).abs();
                        assert!(
                            err <= 1e-5 * scale,
                            "{fmt:?} {isa:?} [{i}][{j}]: {} vs {exact} (scale {scale})",
                            y[i * n + j]
                        );
                    }
                }
            }
        }
    }

    /// Against the exact f32 weights times the unquantized `x`: the error is what 8-bit
    /// activations cost. Measured relative to `‖x_i‖·‖w_j‖` (the size a dot product can have) and
    /// to `|y|`, printed for the record (`--nocapture`).
    #[test]
    fn quant_matmul_accuracy_vs_f32() {
        for fmt in FORMATS {
            let (mut worst_norm, mut sum_norm, mut count) = (0.0f64, 0.0f64, 0usize);
            let mut worst_y = 0.0f64;
            for &(m, k, n) in &[(3, 576, 192), (2, 1536, 577), (8, 96, 33)] {
                let w = random_weights(fmt, n, k, 41);
                let wf = dequantize(fmt, &w, n, k);
                let x = activations(m, k, 42);
                let y = run(cpu::isa(), 2, fmt, &x, &w, m, k, n);
                for i in 0..m {
                    let xr = &x[i * k..(i + 1) * k];
                    let xn = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    for j in 0..n {
                        let wr = &wf[j * k..(j + 1) * k];
                        let wn = wr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                        let exact: f64 =
                            wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let err = (y[i * n + j] as f64 - exact).abs();
                        let rel = err / (xn * wn);
                        worst_norm = worst_norm.max(rel);
                        sum_norm += rel;
                        count += 1;
                        if exact.abs() > 0.1 * xn * wn {
                            worst_y = worst_y.max(err / exact.abs());
                        }
                    }
                }
            }
            println!(
                "{fmt:?}: |y - y_f32| / (‖x‖·‖w‖): max {worst_norm:.2e}, mean {:.2e}; \
                 / |y| where |y| > 0.1‖x‖‖w‖: max {worst_y:.2e}",
                sum_norm / count as f64
            );
            assert!(
                worst_norm < 1e-2,
                "{fmt:?}: error {worst_norm:e} of ‖x‖·‖w‖"
            );
        }
    }

    /// Pins the block layouts and nibble order with hand-made blocks. `x` holds integers with
    /// max |x| = 127, so it quantizes exactly (d = 1) and every product is exact.
    #[test]
    fn known_nibbles() {
        let k = 64;
        let x: Vec<f32> = (0..k)
            .map(|p| [127.0, -3.0, 5.0, 1.0, -127.0, 0.0, 2.0][p % 7])
            .collect();
        for isa in cpu::supported_isas() {
            // Q4_0, d = 0.5: byte j = nibbles (j, 15 - j), i.e. element j = j - 8 and element
            // j + 16 = 7 - j.
            let mut w = Vec::new();
            for _ in 0..k / QK {
                w.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
                w.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
            }
            let want: f32 = (0..k)
                .map(|p| {
                    let j = p % QK;
                    let q = if j < 16 {
                        j as f32 - 8.0
                    } else {
                        7.0 - (j - 16) as f32
                    };
                    0.5 * q * x[p]
                })
                .sum();
            let got = run(isa, 1, QuantFormat::Q4_0, &x, &w, 1, k, 1);
            assert_eq!(got[0], want, "Q4_0 {isa:?}");

            // Q4_1, d = 0.25, m = -1: same nibbles, element = q·0.25 - 1.
            let mut w = Vec::new();
            for _ in 0..k / QK {
                w.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
                w.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
                w.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
            }
            let want: f32 = (0..k)
                .map(|p| {
                    let j = p % QK;
                    let q = if j < 16 {
                        j as f32
                    } else {
                        15.0 - (j - 16) as f32
                    };
                    (0.25 * q - 1.0) * x[p]
                })
                .sum();
            let got = run(isa, 1, QuantFormat::Q4_1, &x, &w, 1, k, 1);
            assert_eq!(got[0], want, "Q4_1 {isa:?}");

            // Q8_0, d = 1: values -128, -119, ... covering both extremes.
            let mut w = Vec::new();
            let mut vals = Vec::new();
            for blk in 0..k / QK {
                w.extend_from_slice(&f16::from_f32(1.0).to_le_bytes());
                for j in 0..QK {
                    let v = if blk == 0 && j == 0 {
                        127
                    } else {
                        (j as i32 * 9 - 128 + blk as i32) as i8
                    };
                    w.push(v as u8);
                    vals.push(v as f32);
                }
            }
            let want: f32 = vals.iter().zip(&x).map(|(a, b)| a * b).sum();
            let got = run(isa, 1, QuantFormat::Q8_0, &x, &w, 1, k, 1);
            assert_eq!(got[0], want, "Q8_0 {isa:?}");
            // And the reference dequantizer agrees on the meaning of those bytes.
            let wf = dequantize(QuantFormat::Q8_0, &w, 1, k);
            assert_eq!(wf, vals);
        }
    }

    /// The largest products the integer steps meet: Q8_0 weights of -128 against activations of
    /// ±127 (pair sums of ±32512 in `maddubs`, just inside i16), and 15-nibbles.
    #[test]
    fn extreme_values_do_not_saturate() {
        let k = 64;
        for isa in cpu::supported_isas() {
            for sign in [1.0f32, -1.0] {
                // All x = ±1 quantize to q = ±127 with d = 1/127.
                let x = vec![sign; k];
                for (fmt, byte) in [
                    (QuantFormat::Q8_0, 0x80u8),
                    (QuantFormat::Q8_0, 0x7F),
                    (QuantFormat::Q4_0, 0xFF),
                    (QuantFormat::Q4_0, 0x00),
                    (QuantFormat::Q4_1, 0xFF),
                ] {
                    let mut w = vec![byte; fmt.row_bytes(k)];
                    for blk in w.chunks_exact_mut(fmt.block_bytes()) {
                        blk[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
                        if fmt == QuantFormat::Q4_1 {
                            blk[2..4].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
                        }
                    }
                    let want: f32 = dequantize(fmt, &w, 1, k).iter().map(|v| v * sign).sum();
                    let got = run(isa, 1, fmt, &x, &w, 1, k, 1)[0];
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs(),
                        "{fmt:?} {isa:?} byte {byte:#x} x = {sign}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Empty shapes, zero rows of x, and NaN/inf in x (NaN outputs for that row only).
    #[test]
    fn edge_cases() {
        for fmt in FORMATS {
            for isa in cpu::supported_isas() {
                let mut y = vec![1.0; 6];
                quant_matmul_with(isa, fmt, &[], &[], &mut y, 2, 0, 3);
                assert_eq!(y, vec![0.0; 6]);
                let w3 = random_weights(fmt, 3, 32, 1);
                quant_matmul_with(isa, fmt, &[], &pack_rows(fmt, &w3, 32), &mut y, 0, 32, 3);
                quant_matmul_with(isa, fmt, &[0.0; 64], &[], &mut y, 2, 32, 0);

                let (m, k, n) = (3, 96, 5);
                let w = random_weights(fmt, n, k, 51);
                let mut x = vec![0.0; m * k];
                x[k + 40] = f32::NAN;
                x[2 * k + 3] = f32::INFINITY;
                let y = run(isa, 1, fmt, &x, &w, m, k, n);
                assert!(
                    y[..n].iter().all(|&v| v == 0.0),
                    "{fmt:?} {isa:?}: zero row"
                );
                assert!(
                    y[n..].iter().all(|v| v.is_nan()),
                    "{fmt:?} {isa:?}: NaN/inf rows"
                );
            }
        }
    }

    /// Per-channel int8: one f16 scale per row (>= max|row| / 127), every element within half a
    /// step of its value, padding zeros, and the product equal to the Q8_0 product of those bytes.
    #[test]
    fn int8_rows_have_one_scale_and_half_step_error() {
        for &(n, k) in &[(1usize, 32usize), (5, 48), (7, 576), (3, 1)] {
            let mut w = random(n * k, (n * k) as u64);
            w[0] *= 40.0; // an outlier sets row 0's scale
            let bytes = quantize_rows_int8(&w, n, k);
            let kp = padded_cols(k);
            let rb = QuantFormat::Q8_0.row_bytes(kp);
            assert_eq!(bytes.len(), n * rb);
            let deq = dequantize(QuantFormat::Q8_0, &bytes, n, kp);
            for r in 0..n {
                let row = &w[r * k..(r + 1) * k];
                let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let blocks = &bytes[r * rb..(r + 1) * rb];
                let d = f16::from_le_bytes([blocks[0], blocks[1]]).to_f32();
                assert!(
                    d * 127.0 >= amax && d <= amax / 127.0 * 1.001 + 1e-7,
                    "row {r}: d {d} amax {amax}"
                );
                for b in blocks.chunks_exact(QuantFormat::Q8_0.block_bytes()) {
                    assert_eq!(
                        f16::from_le_bytes([b[0], b[1]]).to_f32(),
                        d,
                        "one scale per row"
                    );
                }
                for c in 0..kp {
                    let got = deq[r * kp + c];
                    if c < k {
                        assert!((got - row[c]).abs() <= d / 2.0 + 1e-7, "row {r} col {c}");
                    } else {
                        assert_eq!(got, 0.0, "padding");
                    }
                }
            }
        }
    }

    /// `cargo test --release -p fasttx-core quant -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_quant_matmul() {
        use std::time::Instant;
        // (1, 576, 256) stays in L2 (compute speed); n = 49152 streams ~30 MB from memory.
        let shapes = [
            (1, 576, 256),
            (1, 4608, 32),
            (1, 576, 1536),
            (1, 576, 49152),
            (8, 576, 1536),
            (128, 576, 1536),
        ];
        for fmt in [QuantFormat::Q8_0, QuantFormat::Q4_1, QuantFormat::Q4_0] {
            for &(m, k, n) in &shapes {
                let w = pack_rows(fmt, &random_weights(fmt, n, k, 61), k);
                let x = activations(m, k, 62);
                let mut y = vec![0.0; m * n];
                for threads in [1, 2] {
                    let bytes = w.len() as f64;
                    // Enough repetitions for ~0.3 s at ~10 GB/s, at least 5.
                    let reps = ((3e9 / bytes / m as f64) as usize).clamp(5, 3000);
                    let mut times = with_threads(threads, || {
                        quant_matmul(fmt, &x, &w, &mut y, m, k, n); // warm-up
                        (0..reps)
                            .map(|_| {
                                let t = Instant::now();
                                quant_matmul(fmt, &x, &w, &mut y, m, k, n);
                                t.elapsed().as_secs_f64()
                            })
                            .collect::<Vec<_>>()
                    });
                    times.sort_by(f64::total_cmp);
                    let (best, median) = (times[0], times[times.len() / 2]);
                    println!(
                        "quant_matmul {fmt:?} {:?} m={m:3} k={k} n={n:5} threads={threads}: \
                         best {:8.1} µs ({:5.1} GB/s of weights, {:6.1} GMAC/s), median {:8.1} µs ({:5.1} GB/s)",
                        cpu::isa(),
                        best * 1e6,
                        bytes / best / 1e9,
                        (m * n * k) as f64 / best / 1e9,
                        median * 1e6,
                        bytes / median / 1e9
                    );
                }
            }
        }
    }
}
