//! The rows of `x` quantized to 8-bit blocks of 32 (ggml's Q8_0 for Q4_0/Q8_0 weights, Q8_1 for
//! Q4_1: see [`super`]), once per call, in the interleaved order of the packed weights.

use std::cell::Cell;

use rayon::prelude::*;

use super::{Kernel, LANES, QK};

/// One row of `x` quantized to 8-bit blocks, padded with zero blocks to whole groups of 8
/// (`nbp` blocks): `qs` holds the values interleaved as the packed weights are (per group, piece
/// `c` = values `4c..4c+4` of each of the 8 blocks); `d`, `sum` and `s` hold each block's scale,
/// `Σq` and `d·Σq`; `half` the `Σq` of each half of 16 values, for the super-block kernels (per
/// group: the first halves of its 8 blocks, then the second halves).
#[derive(Clone, Copy)]
pub(super) struct XRow<'a> {
    pub(super) qs: &'a [i8],
    pub(super) d: &'a [f32],
    pub(super) sum: &'a [i32],
    pub(super) s: &'a [f32],
    pub(super) half: &'a [i32],
}

#[cfg(test)]
impl XRow<'_> {
    /// Value `p` of the row (in element order).
    pub(super) fn value(&self, p: usize) -> i8 {
        let b = p / QK;
        self.qs[(b / LANES) * LANES * QK + x_index(b % LANES, p % QK)]
    }
}

/// The quantized rows of `x` for one call (reused across calls through [`SCRATCH`]).
#[derive(Default)]
pub(super) struct Activations {
    pub(super) m: usize,
    /// Values per row, padded to whole blocks.
    pub(super) k: usize,
    /// Blocks per row, rounded up to a multiple of [`LANES`].
    padded_blocks: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    sum: Vec<i32>,
    s: Vec<f32>,
    half: Vec<i32>,
}

thread_local! {
    /// Per-thread activation buffers: a call happens for every projection of every token, so the
    /// buffers are kept rather than allocated each time.
    pub(super) static SCRATCH: Cell<Activations> = const {
        Cell::new(Activations {
            m: 0,
            k: 0,
            padded_blocks: 0,
            qs: Vec::new(),
            d: Vec::new(),
            sum: Vec::new(),
            s: Vec::new(),
            half: Vec::new(),
        })
    };
}

impl Activations {
    /// Quantizes the `m` rows of `x` (`k > 0` values each), each zero-padded to whole groups.
    pub(super) fn quantize(
        &mut self,
        kernel: Kernel,
        x: &[f32],
        m: usize,
        k: usize,
        parallel: bool,
    ) {
        let kp = k.next_multiple_of(QK);
        let nbp = (kp / QK).next_multiple_of(LANES);
        self.m = m;
        self.k = kp;
        self.padded_blocks = nbp;
        // Every element is overwritten below; `resize` only zero-fills on growth.
        self.qs.resize(m * nbp * QK, 0);
        self.d.resize(m * nbp, 0.0);
        self.sum.resize(m * nbp, 0);
        self.s.resize(m * nbp, 0.0);
        self.half.resize(2 * m * nbp, 0);
        let x = &x[..m * k];
        let row = |((xr, half), ((qs, d), (sum, s))): ((&[f32], &mut [i32]), QuantRowMut<'_>)| {
            kernel.quantize_row(
                xr,
                XRowMut {
                    qs,
                    d,
                    sum,
                    s,
                    half,
                },
            )
        };
        let width = nbp * QK;
        if parallel {
            x.par_chunks(k)
                .zip(self.half.par_chunks_mut(2 * nbp))
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
                .zip(self.half.chunks_mut(2 * nbp))
                .zip(
                    (self.qs.chunks_mut(width).zip(self.d.chunks_mut(nbp)))
                        .zip(self.sum.chunks_mut(nbp).zip(self.s.chunks_mut(nbp))),
                )
                .for_each(row);
        }
    }

    pub(super) fn row(&self, i: usize) -> XRow<'_> {
        let nbp = self.padded_blocks;
        XRow {
            qs: &self.qs[i * nbp * QK..(i + 1) * nbp * QK],
            d: &self.d[i * nbp..(i + 1) * nbp],
            sum: &self.sum[i * nbp..(i + 1) * nbp],
            s: &self.s[i * nbp..(i + 1) * nbp],
            half: &self.half[2 * i * nbp..2 * (i + 1) * nbp],
        }
    }

    /// Bytes of one quantized row (what a row costs in cache).
    pub(super) fn row_bytes(&self) -> usize {
        self.padded_blocks * (QK + 20)
    }

    pub(super) fn capacity_bytes(&self) -> usize {
        self.qs.capacity()
            + 4 * (self.d.capacity()
                + self.sum.capacity()
                + self.s.capacity()
                + self.half.capacity())
    }
}

/// The pieces of one row of [`Activations`] as `quantize` splits them.
type QuantRowMut<'a> = (
    (&'a mut [i8], &'a mut [f32]),
    (&'a mut [i32], &'a mut [f32]),
);

/// [`XRow`]'s buffers, being written.
pub(super) struct XRowMut<'a> {
    qs: &'a mut [i8],
    d: &'a mut [f32],
    sum: &'a mut [i32],
    s: &'a mut [f32],
    half: &'a mut [i32],
}

/// One row: blocks of 32 into `out.qs` in the interleaved order of [`XRow`], their scales, `Σq`
/// and `d·Σq` and the `Σq` of its halves; the padding blocks (to whole groups of 8) are zeroed. Always inlined so that
/// `x86_avx2::quantize_row` compiles this very code with AVX2 (every step is exact or correctly
/// rounded elementwise, so any vectorisation gives the same bits).
///
/// `x` may end inside a block (a row of `k` values when `k` is not a multiple of 32): that last
/// block is quantized as if zero-padded, matching weights padded the same way.
#[inline(always)]
pub(super) fn quantize_row(x: &[f32], out: XRowMut<'_>) {
    let nb = x.len().div_ceil(QK);
    let mut block = [0.0f32; QK];
    let mut q = [0i8; QK];
    for b in 0..out.d.len() {
        let (scale, halves) = if b < nb {
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
            (0.0, [0, 0])
        };
        let total = halves[0] + halves[1];
        out.d[b] = scale;
        out.sum[b] = total;
        let (g, l) = (b / LANES, b % LANES);
        out.half[2 * LANES * g + l] = halves[0];
        out.half[2 * LANES * g + LANES + l] = halves[1];
        out.s[b] = scale * total as f32;
        let group = &mut out.qs[(b / LANES) * LANES * QK..][..LANES * QK];
        for (c, piece) in q.chunks_exact(4).enumerate() {
            let at = x_index(b % LANES, 4 * c);
            group[at..at + 4].copy_from_slice(piece);
        }
    }
}

/// `d = max|x| / 127`, `q = round(x / d)` (ties to even), returning `d` and the `Σq` of the two halves. A block holding NaN
/// or ±inf gets `d = NaN` (and `q = 0`), so the outputs it touches come out NaN, as an `f32`
/// product would; an all-zero block gets `d = 0`.
///
/// Written over 8-lane arrays with selects and integer bit tricks (no `as` float-to-int casts,
/// whose saturating semantics LLVM does not vectorise) so that it compiles to vector code.
#[inline(always)]
fn quantize_block(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, [i32; 2]) {
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
        return (if poisoned { f32::NAN } else { 0.0 }, [0, 0]);
    }
    // Per half of 16 values (2 chunks of 8 each), per lane.
    let mut sums = [[0i32; LANES]; 2];
    for (ci, (qc, c)) in q
        .chunks_exact_mut(LANES)
        .zip(x.chunks_exact(LANES))
        .enumerate()
    {
        for l in 0..LANES {
            // Dividing (rather than multiplying by 1/d as ggml does) stays right when d is
            // subnormal, where 1/d overflows; the clamp only matters there too.
            let y = c[l] / d;
            let y = if y > 127.0 { 127.0 } else { y };
            let y = if y < -127.0 { -127.0 } else { y };
            let r = (y + ROUND).to_bits() as i32 - ROUND_BITS;
            qc[l] = r as i8;
            sums[ci / 2][l] += r;
        }
    }
    (d, sums.map(|h| h.iter().sum()))
}

/// Where value `v` of block `l` of a group sits in that group's quantized `x` (the packed
/// interleaving: piece `v / 4`, lane `l`).
#[inline]
pub(super) fn x_index(l: usize, v: usize) -> usize {
    (v / 4) * 4 * LANES + 4 * l + v % 4
}
