//! Quantized weights: the block types (GGUF's Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, the K-quants, ...; per-channel int8
//! stored as Q8_0) and the matrix products against them, so a model can hold its weights quantized in memory and
//! stream them at memory bandwidth.
//!
//! # Files
//! * `types.rs`: [`QuantFormat`] and the one table of what each block type is (ggml tag, name,
//!   values and bytes per block, exact dequantization); each type's layout and dequantizer in its
//!   own file (`q4_0.rs`, `q4_1.rs`, `q8_0.rs`, `q4_k.rs`, ...). How to add a type: `types.rs`.
//! * this file: [`quant_matmul`], its choice of instruction set and its split into tasks;
//! * `activations.rs`: the rows of `x` quantized to 8-bit blocks, once per call;
//! * `pack.rs`: the packed weight layout the kernels read ([`pack_rows`], once at load);
//! * `super_block.rs`: the types of 256-value super-blocks (the K-quants, IQ4_XS): what each tells the
//!   kernels, their packed layout, their arithmetic and portable dot product; `x86_super.rs`:
//!   their AVX2 and AVX-512 kernels, `neon_super.rs` their NEON kernel;
//! * `portable.rs`: the dot product in plain Rust, the reference the SIMD paths are tested
//!   against (and the kernel where there is none); `x86_avx2.rs`, `x86_avx512.rs`, `neon.rs`: the
//!   dot products per instruction set;
//! * [`int8`]: per-channel int8 quantization of `f32` weights (`dtype="int8"`, stored as Q8_0
//!   blocks that all hold the row's scale) and the arithmetic of their products ([`int8_matmul`]:
//!   one activation scale per lane set, integer sums over the whole row); `int8_avx512.rs`,
//!   `int8_avx2.rs`, `int8_neon.rs` its kernels (and AVX-512's lane quantizer), `int8_tests.rs`
//!   its tests;
//! * `tests.rs`: the kernels against the portable reference, bit for bit, and against `f64`
//!   (the NEON ones too, under qemu-aarch64 on an x86 machine: README, "Development").
//!
//! The kernels run the types of 32-value blocks (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1), and the types of
//! 256-value super-blocks that describe themselves to `super_block.rs` (Q4_K, Q5_K, Q6_K, Q3_K,
//! Q2_K, IQ4_XS; [`QuantFormat::has_kernels`]); IQ4_NL runs as Q8_0, converted exactly at load
//! ([`QuantFormat::runs_as`]). Block size and bytes
//! come from the type everywhere else (row sizes, checks, dequantization, loading). A packed
//! super-block is exactly one full group of the 32-value kernels' interleaving (8 sub-blocks of
//! 32 in the 8 lanes), so the K-quants reuse the activations, the task split and the lane order
//! below; their per-lane arithmetic is in `super_block.rs`.
//!
//! # Method (as llama.cpp and candle do it)
//! Each call first quantizes every row of `x` into 8-bit blocks of 32: `d = max|x| / 127`,
//! `q = round(x / d)` (ggml's `quantize_row_q8_0`), keeping `Σq` per block (and per half of 16,
//! for the K-quants' scales and minimums per 16) and, for Q4_1 and Q5_1, `s = d·Σq` (ggml's Q8_1). Then every output is a sum over blocks of exact integer dot products
//! scaled in `f32`:
//!
//! * Q8_0 weights: `Σ_b dw·dx · Σ qw·qx`;
//! * Q4_0 weights (`w = (nibble - 8)·dw`): `Σ_b dw·dx · (Σ nibble·qx - 8·Σqx)`, the bracket
//!   an exact integer: multiplying unsigned nibbles saves the sign handling signed weights need;
//! * Q4_1 weights (`w = nibble·dw + mw`): `Σ_b dw·dx · Σ nibble·qx + mw·s`; Q5_1 likewise with
//!   5-bit values (the nibble and a bit of `qh`);
//! * Q5_0 weights (`w = (q - 16)·dw`, `q` the nibble and a bit of `qh`): `Σ_b dw·dx · (Σ q·qx -
//!   16·Σqx)`, as Q4_0.
//!
//! Unlike ggml, the activation scales `d` and `s` stay in `f32` (ggml rounds them to `f16`): they
//! live only for one call, and it avoids an extra rounding for free.
//!
//! # Packed weights
//! The kernels read the weights in the layout of `pack.rs` ([`pack_rows`], once at load):
//! per group of 8 blocks the scales together, then the values interleaved 4 bytes per block, so
//! one vector load holds 4 values of each of 8 blocks and one integer dot-product instruction
//! (`vpdpbusd`, or `maddubs` + `madd`) advances 8 blocks at once, one per 32-bit lane. The rows
//! of `x` are quantized into the same interleaving. In GGUF's order each block needed its own
//! scale broadcast and a horizontal step: about twice the instructions, which left the 4-bit
//! kernels compute-bound below memory bandwidth.
//!
//! # Fixed arithmetic, shared by every path
//! Each block's dot product is one exact `i32` (`isum`, with Q4_0's `-8·Σqx`, Q5_0's `-16·Σqx` and Q8_0's offset
//! taken out in integers). Block `8g + l` of a row goes to lane `l` of an 8-lane `f32`
//! accumulator, `acc = fma(dw·dx, isum, acc)`, group after group; Q4_1 and Q5_1 also keep
//! `mins = fma(mw, s, mins)` per lane. Lanes past the end of a short last group add `0·0`. The
//! lanes (`acc + mins` for Q4_1 and Q5_1) are summed in the order `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
//!
//! The integers are exact on every path, and the `f32` operations are the same sequence, so the
//! AVX-512, AVX2, NEON and portable kernels give the same bits; none depends on the thread count, on the
//! task split or on how many rows of `x` are in the call (each output is one dot product computed
//! alone, whatever group of rows it was computed with).
//!
//! # Organisation
//! The outputs are split by weight rows (`n`) into rayon tasks in the current pool. A task takes
//! the rows of `x` in blocks that stay in L2 ([`X_BLOCK_BYTES`]) and its weight rows in chunks
//! that stay in L1 ([`W_CHUNK_BYTES`]); for each chunk it hands the kernel the block's rows of `x`
//! [`MR`] at a time, so the weights are read from memory once per call (per block of `x` rows,
//! when `m` is large) and a group of `x` rows from L2 once per chunk.
//! With [`PREFETCH_MIN_ROWS`] rows of `x` or more, the next chunk is fetched into L2 (AVX-512)
//! while the kernel works on this one, so that the first pass over a chunk does not wait on
//! memory ([`Kernel::prefetch_l2`]).
//!
//! The kernel computes a tile of outputs: up to 8 rows of `x` ([`Kernel::rows_per_tile`]) by
//! several weight rows.
//! * AVX-512: 8 rows of `x` for the 32-value types (4 for the types with minimums, whose second
//!   set of accumulators would not fit the registers), 4 for the super-blocks; by four weight
//!   rows for the 32-value types without minimums when the tile has more than 4 rows of `x`, two
//!   otherwise and for the super-blocks, then the rows left over by two and one. The accumulators
//!   stay in registers. The Q8_0 tiles of 8 rows and more reach 90-108 GMAC/s on weights in
//!   cache, ~85% of a loop of independent `vpdpbusd` (~1.8·10⁹ per second, ~115 GMAC/s on Zen 4):
//!   the integer instruction bounds them, not the `f32` steps (tiles with two rows of `x` per
//!   register, which halve those, were 0.85-1.02x: commit 87ae70c, reverted).
//! * AVX2 (16 registers): one weight row for the nibble types and the super-blocks, its group
//!   unpacked into 8 registers that meet 8 rows of `x` one after the other, the accumulators in
//!   memory (in L1), while 8 quantized rows of `x` fit half of L1 (`k` up to 2048), else 4 rows;
//!   Q8_0 takes two weight rows by 4 rows of `x`, Q3_K one by 4 (`x86_avx2::rows_per_tile`).
//!   Unpacked pairs of 4-bit weight rows (16 registers) were slower.
//! * NEON: two weight rows by 2 to 4 rows of `x`, for every type (one row of `x` alone takes one
//!   weight row); set by counting its 32 registers (`neon.rs`), their speed unmeasured on aarch64
//!   hardware (the kernels run there only under qemu so far).
//! * The portable path: one weight row by 4 rows of `x`.
//!
//! Each packed weight group is loaded and unpacked once for all the tile's rows of `x`, and each
//! piece of `x` once for all its weight rows; the offsets taken out in integers (Q4_0's `8·Σx`,
//! ...) are computed once per row of `x` for all of them. A row of `x` alone (decoding) takes the
//! 32-value weights one row at a time, which streams them best. The x86 tile sizes are the fastest
//! of those tried with `bench_quant_matmul_tiles` and `bench_quant_matmul_avx2_tiles` (`tests.rs`)
//! on a Zen 4 core; wider ones spill registers.
//!
//! The tile changes only which outputs are computed together, never an output's arithmetic: each
//! output keeps its own lanes and the order above, so its bits are those of
//! [`quant_matmul_scalar`] whatever the tile, its edges (the last rows of `x`, an odd last weight
//! row), `m` and the thread count.

use std::cell::Cell;

use rayon::prelude::*;

use super::cpu::{self, Isa};
use super::matmul::{balanced_tasks, SyncPtr};
use activations::{quantize_row, quantize_row_lanes, Activations, XRow, XRowMut, SCRATCH};
use portable::dot_portable;

mod activations;
pub mod int8;
#[cfg(target_arch = "x86_64")]
mod int8_avx2;
#[cfg(target_arch = "x86_64")]
mod int8_avx512;
#[cfg(target_arch = "aarch64")]
mod int8_neon;
#[cfg(test)]
mod int8_tests;
mod iq4_nl;
mod iq4_xs;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_super;
mod pack;
mod portable;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod super_block;
#[cfg(test)]
mod tests;
mod types;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;
#[cfg(target_arch = "x86_64")]
mod x86_super;

pub use int8::{quantize_rows_int8, quantize_rows_int8_from};
pub use pack::{dequantize_packed, pack_rows, pack_rows_then, unpack_row};
pub use types::QuantFormat;

/// Values per block of the types the kernels run, and of the 8-bit blocks `x` is quantized to.
const QK: usize = 32;

/// `f32` lanes of an accumulator (one AVX2 register); also blocks per packed group.
const LANES: usize = 8;
/// Rows of `x` that `product_cols` hands the kernels at once; each kernel takes them in tiles of
/// its own height ([`Kernel::rows_per_tile`]: 8 or 4), each weight group loaded (and its nibbles
/// unpacked) once for all the rows of a tile.
const MR: usize = 8;

/// Whether the kernels use their wide tiles (two weight rows; 8 rows of `x` for AVX-512's 32-value
/// blocks and for AVX2's nibble types and super-blocks). Always; the tests' micro-benchmarks turn
/// them off to time the narrow ones (one weight row by up to 4 rows of `x`, the kernels before the
/// tiles) in the same process.
#[cfg(not(test))]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)] // only the x86 and NEON kernels have them
#[inline(always)]
fn wide_tiles() -> bool {
    true
}

#[cfg(test)]
static NARROW_TILES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `product_cols` fetches the next chunk of weight rows into L2 while the kernel works on
/// this one (several rows of `x`, AVX-512). Always; the tests' micro-benchmark turns it off to time
/// both in the same process.
#[cfg(not(test))]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn chunk_prefetch() -> bool {
    true
}

#[cfg(test)]
static NO_CHUNK_PREFETCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn chunk_prefetch() -> bool {
    !NO_CHUNK_PREFETCH.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
fn wide_tiles() -> bool {
    !NARROW_TILES.load(std::sync::atomic::Ordering::Relaxed)
}

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
/// Rows of `x` from which `product_cols` fetches the next weight chunk into L2 while the kernel
/// works on this one ([`Kernel::prefetch_l2`]). With 2 rows the chunk's work is short enough that
/// the prefetches' own cost shows when the weights are already in cache (10-15% slower there,
/// 20-28% faster from memory: `bench_quant_chunk_prefetch`).
const PREFETCH_MIN_ROWS: usize = 4;
/// `m·k` above which the activations are quantized in parallel.
const PAR_QUANTIZE: usize = 64 * 1024;
/// Scratch buffers larger than this (long prefills) are freed after the call, not kept.
const KEEP_SCRATCH_BYTES: usize = 8 << 20;

/// `y[m][n] = x[m][k] · W[n][k]ᵀ` where W's rows are whole blocks of `fmt` in the packed layout
/// ([`pack_rows`]), i.e. `w.len() == n * fmt.row_bytes(fmt.padded_cols(k))`; when `k` is not a
/// whole number of blocks (int8 rows, see [`quantize_rows_int8`]) the weights' last block holds
/// zeros past `k`, and the rows of `x` are quantized as if zero-padded the same way.
///
/// Parallel over the current rayon pool; the result is bitwise independent of the thread count and
/// of `m`, and equal to [`quant_matmul_scalar`] (see the module docs).
///
/// # Panics
/// If `fmt` has no kernels ([`QuantFormat::has_kernels`]: loaders keep such weights as `f32`), or
/// a slice is too short.
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
/// If this CPU cannot run `isa`, `fmt` has no kernels, or a slice is too short.
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
    packed_matmul(isa, PackedRows::Blocks(fmt), x, w, None, y, m, k, n)
}

/// `y[m][n] = x[m][k] · W[n][k]ᵀ (+ bias[n])` for int8 weights ([`quantize_rows_int8`], then
/// [`pack_rows`] as Q8_0): [`quant_matmul`]'s contract, in the int8 arithmetic of [`int8`] (the
/// row's scale taken out of the sum), bitwise equal to [`int8_matmul_scalar`]. The bias is added
/// to each output after its product (`y = product + bias`, the bits of adding it afterwards), by
/// the task that computed it while it is in cache: a serial pass over a long input's outputs
/// cost ~5% of a Marian encoder.
pub fn int8_matmul(
    x: &[f32],
    w: &[u8],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    int8_matmul_with(cpu::isa(), x, w, bias, y, m, k, n)
}

/// [`int8_matmul`] on an explicit instruction set (tests, benchmarks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn int8_matmul_with(
    isa: Isa,
    x: &[f32],
    w: &[u8],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    packed_matmul(isa, PackedRows::Int8, x, w, bias, y, m, k, n)
}

/// What the packed weight rows of a product are, which decides its arithmetic: blocks of a type,
/// each with its own scales (the module docs), or int8 rows whose blocks all hold the row's scale
/// (Q8_0 blocks; [`int8`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PackedRows {
    Blocks(QuantFormat),
    Int8,
}

impl PackedRows {
    /// The block type the rows are stored in.
    fn format(self) -> QuantFormat {
        match self {
            PackedRows::Blocks(fmt) => fmt,
            PackedRows::Int8 => int8::FORMAT,
        }
    }
}

/// The product of [`quant_matmul_with`] and [`int8_matmul_with`].
#[allow(clippy::too_many_arguments)]
fn packed_matmul(
    isa: Isa,
    rows: PackedRows,
    x: &[f32],
    w: &[u8],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let fmt = rows.format();
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    check_args(fmt, x, w, y, m, k, n);
    assert!(
        bias.is_none_or(|b| b.len() >= n),
        "bias shorter than the outputs"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y[..m * n].fill(0.0);
        add_bias(bias, &mut y[..m * n], n);
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
    let par_quantize = parallel && m * k >= PAR_QUANTIZE;
    match rows {
        PackedRows::Blocks(_) => act.quantize(kernel, x, m, k, par_quantize),
        PackedRows::Int8 => act.quantize_lanes(kernel, x, m, k, par_quantize),
    }

    let rb = fmt.packed_row_bytes(act.k);
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
        unsafe {
            product_cols(
                kernel,
                rows,
                act_ref,
                &w[c0 * rb..c1 * rb],
                bias.map(|b| &b[c0..c1]),
                yp,
                c0,
                n,
            )
        };
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
    scalar_product(PackedRows::Blocks(fmt), x, w, y, m, k, n)
}

/// [`quant_matmul_scalar`] for [`int8_matmul`]: the portable int8 dot product, one output at a
/// time. Same bits as [`int8_matmul`].
///
/// # Panics
/// If a slice is too short.
pub fn int8_matmul_scalar(
    x: &[f32],
    w: &[u8],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_args(int8::FORMAT, x, w, y, m, k, n);
    if k == 0 {
        y[..m * n].fill(0.0);
    } else {
        scalar_product(PackedRows::Int8, x, w, y, m, k, n);
    }
    add_bias(bias, &mut y[..m * n], n);
}

/// `y[i][j] += bias[j]` for every row of `y` (rows of `n`).
fn add_bias(bias: Option<&[f32]>, y: &mut [f32], n: usize) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            for (v, bj) in row.iter_mut().zip(b) {
                *v += bj;
            }
        }
    }
}

/// The serial products of the scalar references, for `k > 0`.
fn scalar_product(
    rows: PackedRows,
    x: &[f32],
    w: &[u8],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let mut act = Activations::default();
    match rows {
        PackedRows::Blocks(_) => act.quantize(Kernel::Portable, x, m, k, false),
        PackedRows::Int8 => act.quantize_lanes(Kernel::Portable, x, m, k, false),
    }
    let rb = rows.format().packed_row_bytes(act.k);
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = portable_dot(rows, &w[j * rb..(j + 1) * rb], act.row(i));
        }
    }
}

/// The portable dot product of one packed row of `rows` and one quantized row of `x`.
fn portable_dot(rows: PackedRows, w: &[u8], x: XRow<'_>) -> f32 {
    match rows {
        PackedRows::Blocks(fmt) => dot_portable(fmt, w, x),
        PackedRows::Int8 => int8::dot_portable(w, x),
    }
}

fn check_args(fmt: QuantFormat, x: &[f32], w: &[u8], y: &[f32], m: usize, k: usize, n: usize) {
    assert!(
        fmt.has_kernels() && (fmt.block_values() == QK || fmt.super_block().is_some()),
        "quant_matmul: no kernels for {}",
        fmt.name()
    );
    // Super-block rows are whole super-blocks (no zero-padded `k` there).
    assert!(
        fmt.block_values() == QK || k.is_multiple_of(fmt.block_values()),
        "quant_matmul: k={k} is not whole {} super-blocks",
        fmt.name()
    );
    assert!(
        x.len() >= m * k
            && w.len() >= n * fmt.packed_row_bytes(fmt.padded_cols(k))
            && y.len() >= m * n,
        "quant_matmul: slices too short for m={m} k={k} n={n} {fmt:?} \
         (x {}, w {} bytes, y {})",
        x.len(),
        w.len(),
        y.len()
    );
}

/// Computes columns `c0..c0 + w.len()/row_bytes` of every row of `y` (row stride `n`), plus
/// `bias` (those columns' entries) where given.
///
/// # Safety
/// `y` is valid for writes of `act.m` rows of `n` values, the columns are inside `0..n`, and no
/// other thread writes them meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn product_cols(
    kernel: Kernel,
    packed: PackedRows,
    act: &Activations,
    w: &[u8],
    bias: Option<&[f32]>,
    y: SyncPtr,
    c0: usize,
    n: usize,
) {
    let rb = packed.format().packed_row_bytes(act.k);
    let (m, cols) = (act.m, w.len() / rb);
    let x_block = (X_BLOCK_BYTES / act.row_bytes()).max(MR) / MR * MR;
    let w_chunk = (W_CHUNK_BYTES / rb).max(1);
    for i0 in (0..m).step_by(x_block) {
        let i1 = (i0 + x_block).min(m);
        // The block's rows of `x`, MR at a time, made once for all the chunks (an `XRow` is
        // seven slices: building them per chunk cost ~5% of a batch-32 decoding step).
        let groups: Vec<(usize, [XRow<'_>; MR])> = (i0..i1)
            .step_by(MR)
            .map(|g0| {
                let g1 = (g0 + MR).min(i1);
                (g0, std::array::from_fn(|r| act.row((g0 + r).min(g1 - 1))))
            })
            .collect();
        for j0 in (0..cols).step_by(w_chunk) {
            let j1 = (j0 + w_chunk).min(cols);
            if m >= PREFETCH_MIN_ROWS {
                kernel.prefetch_l2(&w[j1 * rb..(j1 + w_chunk).min(cols) * rb]);
            }
            for (g0, rows) in &groups {
                let g1 = (g0 + MR).min(i1);
                // SAFETY: rows g0..g1 < m and columns c0 + j0..c0 + j1 <= n of y (the caller's
                // contract); the rows come from `act`, quantized for `act.k`, the length of
                // the weight rows.
                let out = y.get().add(g0 * n + c0 + j0);
                kernel.dot(packed, &w[j0 * rb..j1 * rb], rb, &rows[..g1 - g0], out, n);
            }
        }
        // The bias onto the block's outputs of this task, still in cache (whole rows of the
        // task's columns: long runs, unlike a chunk's).
        if bias.is_some() {
            for i in i0..i1 {
                // SAFETY: the outputs this call just wrote (row `i`, columns `c0..c0 + cols`).
                let row = std::slice::from_raw_parts_mut(y.get().add(i * n + c0), cols);
                add_bias(bias, row, cols);
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
    /// aarch64 Advanced SIMD for the dot products (with `sdot` where the CPU has `dotprod`);
    /// the portable quantizer.
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

    /// [`quantize_row_lanes`], compiled for this kernel's instruction set (same results).
    fn quantize_row_lanes(self, x: &[f32], qs: &mut [i8], d: &mut [f32], offsets: &mut [i32]) {
        match self {
            // SAFETY: `Avx512` is only chosen when `x86_avx512::available()`; the slices are
            // those `Activations::quantize_lanes` sizes.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { int8_avx512::quantize_row_lanes(x, qs, d, offsets) },
            // SAFETY: `Avx2` is only chosen when `x86_avx2::available()`.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86_avx2::quantize_row_lanes(x, qs, d, offsets) },
            _ => quantize_row_lanes(x, qs, d, offsets),
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

    /// Asks for `bytes` (the next chunk of weight rows) in L2, where this kernel profits from it.
    ///
    /// With several rows of `x` the kernel works on a chunk of weights long enough for the whole
    /// next chunk (16 KiB) to arrive meanwhile, while its own prefetch (a few KiB ahead of the
    /// group it reads) leaves loads waiting on memory. `bench_quant_chunk_prefetch` (Q8_0, one
    /// thread, Zen 4, medians of CPU time): weights streamed from memory 1.07-1.15x at m = 4..8
    /// (the vocabulary projections of t5-small and opus-mt), 1.00-1.06x at m = 32; from L3
    /// 1.0-1.2x; from L2 (a small matrix called again at once) 0.95-0.99x at m = 8..32.
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // only AVX-512 prefetches
    fn prefetch_l2(self, bytes: &[u8]) {
        match self {
            // SAFETY: only chosen when `x86_avx512::available()`.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if chunk_prefetch() => unsafe { x86_avx512::prefetch_l2(bytes) },
            _ => {}
        }
    }

    /// How many rows of `x` this kernel's tiles for `fmt` hold (the most its `dot_tile` takes),
    /// for rows of `k` quantized values.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn rows_per_tile(self, rows: PackedRows, k: usize) -> usize {
        let fmt = match rows {
            PackedRows::Blocks(fmt) => fmt,
            PackedRows::Int8 => {
                return match self {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512 if wide_tiles() => int8_avx512::ROWS_PER_TILE,
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 => int8_avx2::ROWS_PER_TILE,
                    #[cfg(target_arch = "aarch64")]
                    Kernel::Neon => int8_neon::ROWS_PER_TILE,
                    _ => 4,
                }
            }
        };
        match (self, fmt.super_block()) {
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx512, None) if wide_tiles() => x86_avx512::rows_per_tile(fmt),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, _) if wide_tiles() => x86_avx2::rows_per_tile(fmt, k),
            _ => 4,
        }
    }

    /// `y[r·ldy + j] = w_j · xs[r]` for every packed weight row `w_j` of `w` (rows of `rb` bytes,
    /// whole blocks) and 1..=[`MR`] rows of `x`, in tiles of [`Kernel::rows_per_tile`] rows.
    ///
    /// # Safety
    /// `y` valid for those writes; the rows come from [`Activations::row`] for `k` values, where
    /// `rb = fmt.row_bytes(k)`.
    #[inline]
    unsafe fn dot(
        self,
        rows: PackedRows,
        w: &[u8],
        rb: usize,
        xs: &[XRow<'_>],
        y: *mut f32,
        ldy: usize,
    ) {
        let tile = self.rows_per_tile(rows, xs[0].qs.len());
        for (t, xs) in xs.chunks(tile).enumerate() {
            // SAFETY: the rows of this tile are rows `t·tile..` of the caller's, inside `y`.
            unsafe {
                match rows {
                    PackedRows::Blocks(fmt) => {
                        self.dot_tile(fmt, w, rb, xs, y.add(t * tile * ldy), ldy)
                    }
                    PackedRows::Int8 => self.dot_tile_int8(w, rb, xs, y.add(t * tile * ldy), ldy),
                }
            };
        }
    }

    /// [`Kernel::dot_tile`] for int8 rows.
    ///
    /// # Safety
    /// As [`Kernel::dot`].
    #[inline]
    unsafe fn dot_tile_int8(self, w: &[u8], rb: usize, xs: &[XRow<'_>], y: *mut f32, ldy: usize) {
        match self {
            // Only chosen when `x86_avx512::available()`; the rows from `Activations::row`.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => int8_avx512::dot(w, rb, xs, y, ldy),
            // Only chosen when `x86_avx2::available()`; the rows from `Activations::row`.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => int8_avx2::dot(w, rb, xs, y, ldy),
            // NEON is always there on aarch64; the rows from `Activations::row`.
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => int8_neon::dot(w, rb, xs, y, ldy),
            Kernel::Portable => {
                for (j, wj) in w.chunks_exact(rb).enumerate() {
                    for (r, x) in xs.iter().enumerate() {
                        *y.add(r * ldy + j) = int8::dot_portable(wj, *x);
                    }
                }
            }
        }
    }

    /// [`Kernel::dot`] for at most [`Kernel::rows_per_tile`] rows of `x`.
    ///
    /// # Safety
    /// As [`Kernel::dot`].
    #[inline]
    unsafe fn dot_tile(
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
            // have the lengths `x86_avx2::dot` and `x86_super::avx2::dot` require.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => match fmt.super_block() {
                Some(sb) => x86_super::avx2::dot(sb, w, rb, xs, y, ldy),
                None => x86_avx2::dot(fmt, w, rb, xs, y, ldy),
            },
            // Only chosen when `x86_avx512::available()`; same row contract as the AVX2 kernel.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => match fmt.super_block() {
                Some(sb) => x86_super::avx512::dot(sb, w, rb, xs, y, ldy),
                None => x86_avx512::dot(fmt, w, rb, xs, y, ldy),
            },
            // Same row contract as the AVX2 kernel; NEON is always there on aarch64.
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => match fmt.super_block() {
                Some(sb) => neon_super::dot(sb, w, rb, xs, y, ldy),
                None => neon::dot(fmt, w, rb, xs, y, ldy),
            },
        }
    }
}
