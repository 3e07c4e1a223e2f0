//! Per-output-channel int8 (`dtype="int8"`): `f32` weights quantized with one scale per row and
//! stored as [`FORMAT`] blocks that all carry the row's scale (packed as Q8_0 is, so lookups and
//! dequantization are Q8_0's), and the arithmetic of their products.
//!
//! # Arithmetic
//! A product with int8 rows sums exact integers over as much of the row as it can before any
//! `f32` step: the weight scale `dw` is the row's, and the activations get one scale per *lane
//! set* rather than one per block of 32. The kernels hold a packed group's values in 8 lanes per
//! block (`x86_avx512.rs`: lanes `l` and `8 + l` of a 512-bit register for block `l`); lane set `l`
//! of a row is what lane `l` meets in every group: the blocks `b` with `b % 8 = l`, `k / 8` values
//! spread evenly over the row (a row of at most 8 blocks has one block per set, so its
//! activations are quantized exactly as per block; 2 blocks per set at `k = 512`, 8 at `k =
//! 2048`). With one scale `dx_l` per set, each lane's integer sum runs over the whole row, and
//! the inner loop is integer dot products alone (`vpdpbusd`), ~1.3-1.5x the speed of Q8_0's
//! per-block scaling on Zen 4 (`bench_int8_matmul`), whose conversions and FMAs per group share
//! the pipes of the `vpdpbusd`s. An outlier value coarsens the `k / 8` values of its set
//! instead of 32.
//!
//! Exactly, for a packed int8 row and a row of `x` quantized by lane sets
//! ([`quantize_row_lanes`](super::activations::quantize_row_lanes)):
//!
//! * `I_l = Σ q_w·q_x` over lane set `l`, an exact `i32`;
//! * `f_l = dx_l · (I_l as f32)`, summed in [`hsum`](super::portable::hsum)'s order, times `dw`.
//!
//! [`dot_portable`] is that, the reference every SIMD kernel (`int8_*.rs`) matches bit for bit.

use half::f16;
use rayon::prelude::*;

use super::activations::{x_index, XRow};
use super::{pack, portable, QuantFormat, LANES, QK};

/// The block type int8 rows are stored in.
pub const FORMAT: QuantFormat = QuantFormat::Q8_0;
/// Bytes of one stored block, and of the scale heading it in a packed group (the kernels'
/// strides, as constants).
pub(super) const BLOCK_BYTES: usize = FORMAT.block_bytes();
pub(super) const HEAD_BYTES: usize = pack::head_bytes(FORMAT);

/// Each row of `w` (`[rows, cols]`, f32) quantized with one scale, `d = max|row| / 127` rounded up
/// to the next `f16`, `q = round(w / d)`, and stored as [`FORMAT`] blocks that all carry the row's
/// `d`. Rows are zero-padded to [`padded_cols`]`(cols)`, whole blocks. Returns the blocks in GGUF
/// order (for the kernels, [`pack_rows`](super::pack_rows) them).
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
    let rb = FORMAT.row_bytes(kp);
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

/// `cols` rounded up to whole blocks of [`FORMAT`]: the stored width of an int8 row.
pub fn padded_cols(cols: usize) -> usize {
    FORMAT.padded_cols(cols)
}

/// One row into `dst` (its padded width of Q8_0 blocks): `f16 d`, then `i8 q[32]`, per block.
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
    let (bb, bv) = (FORMAT.block_bytes(), FORMAT.block_values());
    for (b, blk) in dst.chunks_exact_mut(bb).enumerate() {
        blk[..2].copy_from_slice(&d.to_le_bytes());
        for (j, q) in blk[2..].iter_mut().enumerate() {
            let v = row.get(b * bv + j).copied().unwrap_or(0.0);
            let r = if df > 0.0 && finite {
                (v / df).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            *q = (r as i8) as u8;
        }
    }
}

/// One output of an int8 product: packed int8 row `w` (whole Q8_0 blocks, every scale the row's)
/// times one row of `x` quantized by lane sets, in the arithmetic of the module docs.
pub(super) fn dot_portable(w: &[u8], x: XRow<'_>) -> f32 {
    let bb = FORMAT.block_bytes();
    let mut isum = [0i32; LANES];
    for (b0, t) in pack::groups(w.len() / bb) {
        let values = &w[b0 * bb..(b0 + t) * bb][pack::head_bytes(FORMAT) * t..];
        let xg = &x.qs[b0 * QK..(b0 + LANES) * QK];
        for l in 0..t {
            for c in 0..QK / 4 {
                for (j, &byte) in values[4 * (c * t + l)..][..4].iter().enumerate() {
                    isum[l] += (byte as i32 - 128) * xg[x_index(l, 4 * c + j)] as i32;
                }
            }
        }
    }
    let f: [f32; LANES] = std::array::from_fn(|l| x.lane_d[l] * isum[l] as f32);
    portable::hsum(&f) * row_scale(w)
}

/// The scale of packed int8 row `w` (its first block's, which every block holds: a packed
/// group starts with its blocks' scales), as `f32`.
#[inline]
pub(super) fn row_scale(w: &[u8]) -> f32 {
    f16::from_le_bytes([w[0], w[1]]).to_f32()
}
