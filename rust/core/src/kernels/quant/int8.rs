//! Per-output-channel int8 (`dtype="int8"`): `f32` weights quantized with one scale per row and
//! stored as [`FORMAT`] blocks that all carry the row's scale, so the Q8_0 kernels run them.

use half::f16;
use rayon::prelude::*;

use super::QuantFormat;

/// The block type int8 rows are stored in.
pub const FORMAT: QuantFormat = QuantFormat::Q8_0;

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
