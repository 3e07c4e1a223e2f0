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
///
/// Rows quantized for int8 weights ([`Activations::quantize_lanes`]) have one scale per lane set
/// instead of one per block: `lane_d` and `lane_offsets` hold 8 values (see `int8.rs`), and
/// `d`, `sum`, `s`, `half` are empty; otherwise those two are empty.
#[derive(Clone, Copy)]
pub(super) struct XRow<'a> {
    pub(super) qs: &'a [i8],
    pub(super) d: &'a [f32],
    pub(super) sum: &'a [i32],
    pub(super) s: &'a [f32],
    pub(super) half: &'a [i32],
    pub(super) lane_d: &'a [f32],
    pub(super) lane_offsets: &'a [i32],
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
    /// [`LANE_SETS`] per row when quantized by lane sets (`quantize_lanes`), else empty.
    lane_d: Vec<f32>,
    lane_offsets: Vec<i32>,
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
            lane_d: Vec::new(),
            lane_offsets: Vec::new(),
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
        let nbp = self.shape(m, k);
        self.lane_d.clear();
        self.lane_offsets.clear();
        // Every element is overwritten below; `resize` only zero-fills on growth.
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

    /// Sets the shape for `m` rows of `k` values and sizes `qs`; returns the padded blocks per row.
    fn shape(&mut self, m: usize, k: usize) -> usize {
        let kp = k.next_multiple_of(QK);
        let nbp = (kp / QK).next_multiple_of(LANES);
        self.m = m;
        self.k = kp;
        self.padded_blocks = nbp;
        self.qs.resize(m * nbp * QK, 0);
        nbp
    }

    /// Quantizes the `m` rows of `x` (`k > 0` values each) for int8 weights: per row one scale
    /// per lane set ([`quantize_row_lanes`]), the values in the packed interleaving, each row
    /// zero-padded to whole groups. Only `qs`, `lane_d` and `lane_offsets` are filled.
    pub(super) fn quantize_lanes(
        &mut self,
        kernel: Kernel,
        x: &[f32],
        m: usize,
        k: usize,
        parallel: bool,
    ) {
        let nbp = self.shape(m, k);
        self.d.clear();
        self.sum.clear();
        self.s.clear();
        self.half.clear();
        self.lane_d.resize(m * LANE_SETS, 0.0);
        self.lane_offsets.resize(m * LANE_SETS, 0);
        let x = &x[..m * k];
        let width = nbp * QK;
        let row = |((xr, qs), (d, offsets)): LaneRowMut<'_>| {
            kernel.quantize_row_lanes(xr, qs, d, offsets)
        };
        if parallel {
            x.par_chunks(k)
                .zip(self.qs.par_chunks_mut(width))
                .zip(
                    self.lane_d
                        .par_chunks_mut(LANE_SETS)
                        .zip(self.lane_offsets.par_chunks_mut(LANE_SETS)),
                )
                .for_each(row);
        } else {
            x.chunks(k)
                .zip(self.qs.chunks_mut(width))
                .zip(
                    self.lane_d
                        .chunks_mut(LANE_SETS)
                        .zip(self.lane_offsets.chunks_mut(LANE_SETS)),
                )
                .for_each(row);
        }
    }

    /// Row `i`: its values and the scales of its quantization (the other's parts empty).
    pub(super) fn row(&self, i: usize) -> XRow<'_> {
        let nbp = self.padded_blocks;
        fn part<T>(v: &[T], at: usize, len: usize) -> &[T] {
            v.get(at * len..(at + 1) * len).unwrap_or(&[])
        }
        XRow {
            qs: &self.qs[i * nbp * QK..(i + 1) * nbp * QK],
            d: part(&self.d, i, nbp),
            sum: part(&self.sum, i, nbp),
            s: part(&self.s, i, nbp),
            half: part(&self.half, i, 2 * nbp),
            lane_d: part(&self.lane_d, i, LANE_SETS),
            lane_offsets: part(&self.lane_offsets, i, LANE_SETS),
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
                + self.half.capacity()
                + self.lane_d.capacity()
                + self.lane_offsets.capacity())
    }
}

/// The pieces of one row of [`Activations`] as `quantize` splits them.
type QuantRowMut<'a> = (
    (&'a mut [i8], &'a mut [f32]),
    (&'a mut [i32], &'a mut [f32]),
);

/// A row of `x` and the pieces of [`Activations`] `quantize_lanes` writes for it.
type LaneRowMut<'a> = ((&'a [f32], &'a mut [i8]), (&'a mut [f32], &'a mut [i32]));

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

/// Lane sets of a row quantized for int8 weights: one per lane of a packed group (the blocks
/// `b` with `b % 8 = l`; `int8.rs`).
pub(super) const LANE_SETS: usize = LANES;

/// One row for int8 weights: the values of each lane set (the blocks `b` with `b % 8 = l`) get
/// one scale `d = max|x| / 127` over the set, `q = round(x / d)` as [`quantize_block`] rounds (a
/// set holding NaN or ±inf gets `d = NaN` and `q = 0`; an all-zero set `d = 0`); the values go
/// into `qs` in the packed interleaving (zero past the row, to whole groups), `offsets` gets
/// `-128·Σq` per set. A row of at most 8 blocks has one block per set: its blocks' scales are
/// then exactly [`quantize_block`]'s. Always inlined so that the AVX2 build compiles it with AVX2,
/// as [`quantize_row`].
#[inline(always)]
pub(super) fn quantize_row_lanes(x: &[f32], qs: &mut [i8], d: &mut [f32], offsets: &mut [i32]) {
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    let nb = x.len().div_ceil(QK);
    // The ragged last block zero-padded.
    let mut last = [0.0f32; QK];
    let tail = &x[(nb - 1) * QK..];
    last[..tail.len()].copy_from_slice(tail);
    let block = |b: usize| -> &[f32] {
        if b + 1 < nb {
            &x[b * QK..(b + 1) * QK]
        } else {
            &last
        }
    };
    // Per lane and position in a chunk of 8 values: the largest |x| and the non-finite flag
    // (`v·0` is ±0 for finite `v`, NaN otherwise), over every chunk of every block of the lane.
    let mut amax = [[0.0f32; LANES]; LANES];
    let mut poison = [[0.0f32; LANES]; LANES];
    for b in 0..nb {
        let (m, p) = (&mut amax[b % LANES], &mut poison[b % LANES]);
        for c in block(b).chunks_exact(LANES) {
            for t in 0..LANES {
                let a = c[t].abs();
                m[t] = if a > m[t] { a } else { m[t] };
                p[t] += c[t] * 0.0;
            }
        }
    }
    for l in 0..LANES {
        let a = amax[l]
            .iter()
            .fold(0.0f32, |a, &v| if v > a { v } else { a });
        d[l] = if poison[l].iter().sum::<f32>() != 0.0 {
            f32::NAN
        } else {
            a / 127.0
        };
    }
    let mut sums = [[0i32; LANES]; LANES];
    let groups = qs.len() / (LANES * QK);
    for b in 0..groups * LANES {
        let (g, l) = (b / LANES, b % LANES);
        let group = &mut qs[g * LANES * QK..][..LANES * QK];
        let mut q = [0i8; QK];
        // A NaN or zero scale gives q = 0, as `quantize_block`.
        if b < nb && d[l] > 0.0 {
            let (dl, sum) = (d[l], &mut sums[l]);
            for (qc, c) in q.chunks_exact_mut(LANES).zip(block(b).chunks_exact(LANES)) {
                for t in 0..LANES {
                    // Dividing, as `quantize_block` does (right for subnormal scales too).
                    let y = c[t] / dl;
                    let y = if y > 127.0 { 127.0 } else { y };
                    let y = if y < -127.0 { -127.0 } else { y };
                    let r = (y + ROUND).to_bits() as i32 - ROUND_BITS;
                    qc[t] = r as i8;
                    sum[t] += r;
                }
            }
        }
        for c in 0..QK / 4 {
            group[x_index(l, 4 * c)..][..4].copy_from_slice(&q[4 * c..4 * c + 4]);
        }
    }
    for l in 0..LANES {
        offsets[l] = -128 * sums[l].iter().sum::<i32>();
    }
}
