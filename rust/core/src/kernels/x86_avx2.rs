//! AVX2 + FMA inner loops (x86_64 only).
//!
//! # Safety
//! Every `pub` function here is `unsafe` for one reason: it is compiled with
//! `#[target_feature(enable = "avx2,fma")]`, so the caller must have checked that the CPU has both
//! (through [`super::cpu::isa`] / [`super::cpu::supported`]). Functions taking raw pointers state
//! their bounds requirements as well. Slices are handled with unaligned loads, and the last
//! `len % 8` elements with masked loads and stores, so nothing here reads or writes out of bounds.
//!
//! Determinism: every reduction here (tile dot products, sums, maxima) runs in an order that depends
//! only on the vector length, never on where the data sits in a tile or on the thread running it.

use std::arch::x86_64::*;

use super::matmul::KSlice;

const LANES: usize = 8;

/// Lane mask with the first `n` (0..=8) lanes set, for `maskload`/`maskstore` of a ragged tail.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tail_mask(n: usize) -> __m256i {
    debug_assert!(n <= LANES);
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Horizontal sum in one fixed order: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
/// The portable path in `matmul.rs` reproduces exactly this order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<0b01>(t, t)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(t, _mm_shuffle_ps::<0b01>(t, t)))
}

/// `e^x` per lane, max relative error about 1 ulp (see `exp_accuracy` in the tests).
///
/// `x = n·ln2 + r` with `|r| <= ln2/2`; `e^r` by its Taylor series to degree 7 (truncation error
/// below 6e-9 relative); `2^n` applied in two halves so that subnormal results and the overflow
/// edge come out right. NaN stays NaN, `+inf -> +inf`, `-inf -> 0`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp(x: __m256) -> __m256 {
    // Cody–Waite split of ln2: HI has 9 significant bits, so n·HI is exact for |n| <= 150 and
    // x - n·HI loses nothing; LO carries the rest.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Past these the result is +inf / 0 anyway; clamping keeps n inside the exponent's range.
    // `min(C, x)` returns `x` when `x` is NaN (minps returns its second operand on NaN).
    let x = _mm256_min_ps(_mm256_set1_ps(89.0), x);
    let x = _mm256_max_ps(_mm256_set1_ps(-104.0), x);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    // 2^n = 2^(n/2) · 2^(n - n/2): each factor is a normal float for n in [-150, 129].
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
}

// ---------------------------------------------------------------------------------------------
// matmul_nt micro-kernels

/// Widest tile (rows of `w`) used with a group of `mr` rows of `x`, indexed by `mr` (1..=4).
/// `mr·nr` accumulators plus the operands in flight fit the 16 ymm registers
/// (4×3: 12 accumulators + 3 `w` vectors + 1 `x` vector).
pub(crate) const NT_NR: [usize; 5] = [0, 8, 6, 4, 3];
/// The tile of blocks of more than 8 rows (prefill, batches), `x` rows × `w` rows.
pub(crate) const NT_BIG: (usize, usize) = (4, 3);

/// Software prefetch of `w` by the decoding tiles (`stream` set: few rows of `x`, so `w` comes
/// from memory once per call). Multi-row tiles only: the 1-row tiles (8 or 12 `w` rows wide) run
/// at the machine's streaming rate without it, and gain nothing from any pattern tried.
///
/// A tile reads its `nr` rows of `w` side by side, `nr` interleaved streams of `k` floats each.
/// How far ahead to fetch depends on how long those streams are; measured with
/// `bench_matmul_mapped` (see the `matmul` module docs) on Zen 4, weights in a 4 KiB-page file
/// mapping and in huge pages alike:
/// - Rows shorter than a page ([`NT_SHORT_ROW`], e.g. k = 512): a stream ends before the
///   hardware prefetchers have ramped up on it, and each tile starts `nr` new ones. Since the
///   tile's rows are contiguous, the tile prefetches the *next* tile's `nr·k` floats as one
///   sequential run, `nr` lines per line of `k` it consumes, so that run finishes as the tile
///   does. This doubled m = 4, k = 512 (Marian, t5-small) from ~11 to ~20-25 GB/s, mapped or not;
///   the old per-row distance of 4 KiB pointed, for k = 512, two rows down: mostly into the
///   tile itself. Only while the next tile is small ([`NT_NEXT_TILE_MAX`]): with 16 KiB tiles of
///   4 KiB rows (k = 1024, m = 4) it was slower than per-row prefetch (it evicts the current tile
///   from a 32 KiB L1).
/// - Longer rows: each row prefetched one row's length ahead, at least [`NT_PREFETCH`] floats
///   and at most [`NT_PREFETCH_MAX`] (k = 2048: 8 KiB ahead, +10-20% over 4 KiB at m = 2..4).
///
/// In prefill shapes (w re-read from L1/L2) any prefetch halved the k = 2048 rate, hence the
/// `stream` flag.
pub(crate) const NT_PREFETCH: usize = 1024;
/// See [`NT_PREFETCH`].
pub(crate) const NT_PREFETCH_MAX: usize = 2048;
/// Rows of `w` shorter than this (floats: one 4 KiB page) take the next-tile prefetch.
pub(crate) const NT_SHORT_ROW: usize = 1024;
/// Largest next tile (`nr·k` floats, 16 KiB) prefetched as one run.
pub(crate) const NT_NEXT_TILE_MAX: usize = 4096;

/// Prefetches the line at `at` floats into each of `NR` rows of `w` (`ld` apart).
#[inline(always)]
pub(crate) fn prefetch_rows<const NR: usize>(w: *const f32, ld: usize, at: usize) {
    for c in 0..NR {
        // `wrapping_add`: the address may lie past the end of `w`, which a prefetch tolerates
        // but pointer `add` does not. SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(c * ld + at) as *const i8) };
    }
}

/// Prefetches `NR` consecutive cache lines from `at`.
#[inline(always)]
pub(crate) fn prefetch_run<const NR: usize>(at: *const f32) {
    for c in 0..NR {
        // SAFETY: as in `prefetch_rows`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(c * 16) as *const i8) };
    }
}

/// How a tile prefetches `w` (see [`NT_PREFETCH`]), one cache line per `w` row per 16 floats of
/// `k` it consumes.
#[derive(Clone, Copy)]
pub(crate) enum WPrefetch {
    Off,
    /// Each row `c` at `p + ahead` (floats) when the tile is at `p`.
    Rows {
        ahead: usize,
    },
    /// The next tile (starting where this one ends: `nr·k` floats on), in address order.
    NextTile,
}

impl WPrefetch {
    /// The prefetch of an `mr × nr` tile over `ks`.
    #[inline]
    pub(crate) fn of(stream: bool, mr: usize, nr: usize, ks: &KSlice) -> WPrefetch {
        if !stream || mr < 2 {
            WPrefetch::Off
        } else if ks.ld == ks.len && ks.len < NT_SHORT_ROW && nr * ks.len <= NT_NEXT_TILE_MAX {
            WPrefetch::NextTile
        } else {
            WPrefetch::Rows {
                ahead: ks.ld.clamp(NT_PREFETCH, NT_PREFETCH_MAX),
            }
        }
    }
}

/// One `mr × nr` tile of `y = x · wᵀ`: `y[r·ldy + c] = dot(x[r·k..], w[c·k..])`, or one slice of
/// `k` of it ([`KSlice`]).
///
/// Every output is the same computation whatever the tile shape: eight FMA lanes over `k` (lane `l`
/// takes elements `8t + l`; the ragged tail is a masked load, i.e. zeros), then [`hsum`]. So a row of
/// `y` has the same bits whether `x` had 1 row or 100, and wherever the row fell in the tiling. A
/// product cut into slices of `k` carries each output's eight partial sums from one slice to the
/// next through memory, unrounded: the same FMAs in the same order, so the same bits.
///
/// `stream`: `w` is read from memory once (few rows of `x`), so prefetch it ([`WPrefetch`]).
///
/// # Safety
/// AVX2+FMA available; `x` valid for `mr` rows and `w` for `nr` rows of `ks.len` reads (rows
/// `ks.ld` apart); `y` valid for writes at `r·ldy + c` for `r < mr`, `c < nr`; `ks.partial` as
/// [`KSlice`] says.
#[allow(clippy::too_many_arguments)] // one flat signature shared by every ISA
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn nt_tile(
    mr: usize,
    nr: usize,
    stream: bool,
    x: *const f32,
    w: *const f32,
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
) {
    match (mr, nr) {
        (1, 8) => tile::<1, 8>(x, w, ks, y, ldy, stream),
        (2, 6) => tile::<2, 6>(x, w, ks, y, ldy, stream),
        (3, 4) => tile::<3, 4>(x, w, ks, y, ldy, stream),
        (4, 3) => tile::<4, 3>(x, w, ks, y, ldy, stream),
        (1, 3) => tile::<1, 3>(x, w, ks, y, ldy, stream),
        (2, 3) => tile::<2, 3>(x, w, ks, y, ldy, stream),
        (3, 3) => tile::<3, 3>(x, w, ks, y, ldy, stream),
        (4, 1) => tile::<4, 1>(x, w, ks, y, ldy, stream),
        (3, 1) => tile::<3, 1>(x, w, ks, y, ldy, stream),
        (2, 1) => tile::<2, 1>(x, w, ks, y, ldy, stream),
        // Any other shape, one output at a time: the same bits, only slower.
        _ => {
            for r in 0..mr {
                for c in 0..nr {
                    tile::<1, 1>(
                        x.add(r * ks.ldx),
                        w.add(c * ks.ld),
                        &ks.at(r, c, LANES),
                        y.add(r * ldy + c),
                        ldy,
                        false,
                    );
                }
            }
        }
    }
}

/// [`nt_tile`] for the blocks of more than 8 rows (prefill, batches): the same arithmetic (the
/// same FMAs in the same order, the same [`hsum`]), without prefetch (`w` is re-read from cache
/// there) and with the slice's start and end chosen at compile time, so that carrying partial
/// sums from one slice of `k` to the next costs a plain load or store per accumulator (no
/// out-of-line call, no copy of the accumulators through the stack). Shapes other than `h × 3`
/// (the edges) go to [`nt_tile`].
///
/// # Safety
/// As [`nt_tile`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm_tile(
    mr: usize,
    nr: usize,
    x: *const f32,
    w: *const f32,
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
) {
    macro_rules! by_slice {
        ($mr:literal) => {
            match (ks.first, ks.last) {
                (true, true) => gemm::<$mr, true, true>(x, w, ks, y, ldy),
                (true, false) => gemm::<$mr, true, false>(x, w, ks, y, ldy),
                (false, true) => gemm::<$mr, false, true>(x, w, ks, y, ldy),
                (false, false) => gemm::<$mr, false, false>(x, w, ks, y, ldy),
            }
        };
    }
    match (mr, nr) {
        (4, 3) => by_slice!(4),
        (3, 3) => by_slice!(3),
        (2, 3) => by_slice!(2),
        (1, 3) => by_slice!(1),
        _ => nt_tile(mr, nr, false, x, w, ks, y, ldy),
    }
}

/// An `MR × 3` tile over one slice of `k` that is the first (`FIRST`: accumulators start at
/// zero, else from `ks.partial`) and/or the last (`LAST`: outputs to `y`, else partial sums back
/// to `ks.partial`).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm<const MR: usize, const FIRST: bool, const LAST: bool>(
    x: *const f32,
    w: *const f32,
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
) {
    const NR: usize = 3;
    let (ld, ldx, len) = (ks.ld, ks.ldx, ks.len);
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    if !FIRST {
        for (r, acc_r) in acc.iter_mut().enumerate() {
            for (c, a) in acc_r.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(ks.partial_of(r, c, LANES));
            }
        }
    }
    let body = len - len % LANES;
    let mut p = 0;
    while p < body {
        let mut wv = [_mm256_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(w.add(c * ld + p));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = _mm256_loadu_ps(x.add(r * ldx + p));
            for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(xv, wc, *a);
            }
        }
        p += LANES;
    }
    if p < len {
        let mask = tail_mask(len - p);
        let mut wv = [_mm256_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm256_maskload_ps(w.add(c * ld + p), mask);
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = _mm256_maskload_ps(x.add(r * ldx + p), mask);
            for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(xv, wc, *a);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (c, &a) in acc_r.iter().enumerate() {
            if LAST {
                *y.add(r * ldy + c) = hsum(a);
            } else {
                _mm256_storeu_ps(ks.partial_of(r, c, LANES), a);
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const MR: usize, const NR: usize>(
    x: *const f32,
    w: *const f32,
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
    stream: bool,
) {
    let (ld, ldx, len) = (ks.ld, ks.ldx, ks.len);
    // Start and finish out of line: loops over `acc` with a runtime index would otherwise keep
    // the array in memory, its accumulators spilled around the FMAs.
    let mut acc = if ks.first {
        [[_mm256_setzero_ps(); NR]; MR]
    } else {
        load_partials::<MR, NR>(ks)
    };
    let body = len - len % LANES;
    let mut p = 0;
    // The loop once per kind of prefetch, each then with constant strides (one loop testing the
    // kind, or computing addresses with run-time strides, made the AVX-512 4 × 4 tile ~20%
    // slower at m = 4 and the m = 8 pair of tiles ~30%): one prefetch per cache line (two
    // vectors here) of each w row.
    macro_rules! sweep {
        ($prefetch:expr) => {
            while p < body {
                if p % 16 == 0 {
                    $prefetch;
                }
                let mut wv = [_mm256_setzero_ps(); NR];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(w.add(c * ld + p));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(r * ldx + p));
                    for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(xv, wc, *a);
                    }
                }
                p += LANES;
            }
        };
    }
    match WPrefetch::of(stream, MR, NR, ks) {
        WPrefetch::Off => sweep!({}),
        WPrefetch::Rows { ahead } => sweep!(prefetch_rows::<NR>(w, ld, p + ahead)),
        WPrefetch::NextTile => sweep!(prefetch_run::<NR>(w.wrapping_add(NR * (len + p)))),
    }
    if p < len {
        let mask = tail_mask(len - p);
        let mut wv = [_mm256_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm256_maskload_ps(w.add(c * ld + p), mask);
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = _mm256_maskload_ps(x.add(r * ldx + p), mask);
            for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(xv, wc, *a);
            }
        }
    }
    finish::<MR, NR>(acc, ks, y, ldy);
}

/// The partial sums a tile starts a non-first slice of `k` from.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_partials<const MR: usize, const NR: usize>(ks: &KSlice) -> [[__m256; NR]; MR] {
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    for (r, acc_r) in acc.iter_mut().enumerate() {
        for (c, a) in acc_r.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(ks.partial_of(r, c, LANES));
        }
    }
    acc
}

/// A tile's outputs ([`hsum`] into `y`), or its partial sums when the slice is not the last.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish<const MR: usize, const NR: usize>(
    acc: [[__m256; NR]; MR],
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        for (c, &a) in acc_r.iter().enumerate() {
            if ks.last {
                *y.add(r * ldy + c) = hsum(a);
            } else {
                _mm256_storeu_ps(ks.partial_of(r, c, LANES), a);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// matmul_nn

/// One row of `y = a · b`: `y[j] = Σ_p a[p] · b[p·n + j]`, summed in `p` order with FMA.
///
/// # Safety
/// AVX2+FMA available; `a.len() == k`, `b.len() >= k·n`, `y.len() == n`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn nn_row(a: &[f32], b: &[f32], y: &mut [f32], k: usize, n: usize) {
    debug_assert!(a.len() == k && b.len() >= k * n && y.len() == n);
    let b = b.as_ptr();
    let yp = y.as_mut_ptr();
    let mut j = 0;
    // 32 columns at a time: four independent FMA chains hide the FMA latency.
    while j + 4 * LANES <= n {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (p, &ap) in a.iter().enumerate() {
            let av = _mm256_set1_ps(ap);
            let row = b.add(p * n + j);
            for (q, s) in acc.iter_mut().enumerate() {
                *s = _mm256_fmadd_ps(av, _mm256_loadu_ps(row.add(q * LANES)), *s);
            }
        }
        for (q, &s) in acc.iter().enumerate() {
            _mm256_storeu_ps(yp.add(j + q * LANES), s);
        }
        j += 4 * LANES;
    }
    while j < n {
        let width = LANES.min(n - j);
        let mask = tail_mask(width);
        let mut s = _mm256_setzero_ps();
        for (p, &ap) in a.iter().enumerate() {
            let bv = _mm256_maskload_ps(b.add(p * n + j), mask);
            s = _mm256_fmadd_ps(_mm256_set1_ps(ap), bv, s);
        }
        _mm256_maskstore_ps(yp.add(j), mask, s);
        j += width;
    }
}

// ---------------------------------------------------------------------------------------------
// vector

/// # Safety
/// AVX2+FMA available; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut s0 = _mm256_setzero_ps();
    let mut s1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 2 * LANES <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        let j = i + LANES;
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)), s1);
        i += 2 * LANES;
    }
    if i + LANES <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        i += LANES;
    }
    if i < n {
        let m = tail_mask(n - i);
        s1 = _mm256_fmadd_ps(
            _mm256_maskload_ps(pa.add(i), m),
            _mm256_maskload_ps(pb.add(i), m),
            s1,
        );
    }
    hsum(_mm256_add_ps(s0, s1))
}

/// `y += alpha · x` with FMA.
///
/// # Safety
/// AVX2+FMA available; `x.len() == y.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + LANES <= n {
        let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
        _mm256_storeu_ps(py.add(i), v);
        i += LANES;
    }
    if i < n {
        let m = tail_mask(n - i);
        let v = _mm256_fmadd_ps(
            a,
            _mm256_maskload_ps(px.add(i), m),
            _mm256_maskload_ps(py.add(i), m),
        );
        _mm256_maskstore_ps(py.add(i), m, v);
    }
}

// ---------------------------------------------------------------------------------------------
// softmax

/// Largest element (NaNs are skipped, as in `f32::max`); `-inf` for an empty slice.
#[target_feature(enable = "avx2,fma")]
unsafe fn max(x: &[f32]) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut m = ninf;
    let mut i = 0;
    while i + LANES <= n {
        // maxps returns its second operand when either is NaN: keep the running max then.
        m = _mm256_max_ps(_mm256_loadu_ps(p.add(i)), m);
        i += LANES;
    }
    if i < n {
        let mask = tail_mask(n - i);
        let v = _mm256_blendv_ps(
            ninf,
            _mm256_maskload_ps(p.add(i), mask),
            _mm256_castsi256_ps(mask),
        );
        m = _mm256_max_ps(v, m);
    }
    hmax(m)
}

/// Calls `f(e)` for `e = exp(x - max)` over `x` 8 at a time; lanes past the end of `x` are zero in
/// `e`. When `store`, writes `e` back into `x`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn for_each_exp(x: &mut [f32], max: f32, store: bool, mut f: impl FnMut(__m256)) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let vmax = _mm256_set1_ps(max);
    let mut i = 0;
    while i + LANES <= n {
        let e = exp(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vmax));
        if store {
            _mm256_storeu_ps(p.add(i), e);
        }
        f(e);
        i += LANES;
    }
    if i < n {
        let mask = tail_mask(n - i);
        let e = exp(_mm256_sub_ps(_mm256_maskload_ps(p.add(i), mask), vmax));
        let e = _mm256_and_ps(e, _mm256_castsi256_ps(mask));
        if store {
            _mm256_maskstore_ps(p.add(i), mask, e);
        }
        f(e);
    }
}

/// See [`super::softmax::softmax`] for the contract (all `-inf` → zeros).
///
/// # Safety
/// AVX2+FMA available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn softmax(x: &mut [f32]) {
    let max = max(x);
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let mut sum = _mm256_setzero_ps();
    for_each_exp(x, max, true, |e| sum = _mm256_add_ps(sum, e));
    scale(x, 1.0 / hsum(sum));
}

/// See [`super::softmax::log_softmax`]. The sum of exponentials is accumulated in f64 because rows
/// are vocabulary-sized (32k+) and beam scores add these log-probabilities up.
///
/// # Safety
/// AVX2+FMA available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn log_softmax(x: &mut [f32]) {
    let max = max(x);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut s0 = _mm256_setzero_pd();
    let mut s1 = _mm256_setzero_pd();
    for_each_exp(x, max, false, |e| {
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
    });
    let s = _mm256_add_pd(s0, s1);
    let h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
    let sum = _mm_cvtsd_f64(h) + _mm_cvtsd_f64(_mm_unpackhi_pd(h, h));
    let lse = sum.ln() as f32;
    // (x - max) - lse, like PyTorch: x - max is exact near the top of the distribution.
    let (vmax, vlse) = (_mm256_set1_ps(max), _mm256_set1_ps(lse));
    map(x, |v| _mm256_sub_ps(_mm256_sub_ps(v, vmax), vlse));
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale(x: &mut [f32], s: f32) {
    let vs = _mm256_set1_ps(s);
    map(x, |v| _mm256_mul_ps(v, vs));
}

/// `x[i] = f(x[i])` 8 lanes at a time; the ragged tail goes through a zero-padded stack buffer.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map(x: &mut [f32], f: impl Fn(__m256) -> __m256) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        _mm256_storeu_ps(c.as_mut_ptr(), f(_mm256_loadu_ps(c.as_ptr())));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut buf = [0.0f32; LANES];
        buf[..rest.len()].copy_from_slice(rest);
        _mm256_storeu_ps(buf.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr())));
        rest.copy_from_slice(&buf[..rest.len()]);
    }
}

// ---------------------------------------------------------------------------------------------
// norm

/// Sum of squares of `x` in f32: 16 lanes of partial sums, then [`hsum`].
///
/// # Safety
/// AVX2+FMA available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn sum_squares(x: &[f32]) -> f32 {
    dot(x, x)
}

/// `out = w · (x · inv)`, the scaling half of RMSNorm (same operation order as the scalar path).
///
/// # Safety
/// AVX2+FMA available; the three slices have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn scale_by_weight(x: &[f32], weight: &[f32], inv: f32, out: &mut [f32]) {
    let n = x.len().min(weight.len()).min(out.len());
    let (px, pw, po) = (x.as_ptr(), weight.as_ptr(), out.as_mut_ptr());
    let vinv = _mm256_set1_ps(inv);
    let mut i = 0;
    while i + LANES <= n {
        let v = _mm256_mul_ps(_mm256_loadu_ps(px.add(i)), vinv);
        _mm256_storeu_ps(po.add(i), _mm256_mul_ps(_mm256_loadu_ps(pw.add(i)), v));
        i += LANES;
    }
    if i < n {
        let m = tail_mask(n - i);
        let v = _mm256_mul_ps(_mm256_maskload_ps(px.add(i), m), vinv);
        _mm256_maskstore_ps(
            po.add(i),
            m,
            _mm256_mul_ps(_mm256_maskload_ps(pw.add(i), m), v),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// activations

/// GELU, tanh approximation, written as `u · sigmoid(2z)` (identical to `0.5·u·(1 + tanh z)`)
/// so that no `1 + tanh` cancellation happens for negative `u`.
///
/// # Safety
/// AVX2+FMA available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_tanh(x: &mut [f32]) {
    // -2z = u · (-2C - 2C·0.044715·u²), C = sqrt(2/pi)
    const C: f32 = 0.797_884_6;
    let a = _mm256_set1_ps(-2.0 * C);
    let b = _mm256_set1_ps(-2.0 * C * 0.044715);
    let one = _mm256_set1_ps(1.0);
    map(x, |u| {
        let t = _mm256_fmadd_ps(b, _mm256_mul_ps(u, u), a);
        let e = exp(_mm256_mul_ps(u, t));
        _mm256_div_ps(u, _mm256_add_ps(one, e))
    });
}

/// `x · sigmoid(x) = x / (1 + e^-x)`.
///
/// # Safety
/// AVX2+FMA available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn silu(x: &mut [f32]) {
    let one = _mm256_set1_ps(1.0);
    let neg = _mm256_set1_ps(-0.0);
    map(x, |u| {
        let e = exp(_mm256_xor_ps(u, neg));
        _mm256_div_ps(u, _mm256_add_ps(one, e))
    });
}

/// Test hook: `exp` over a slice.
///
/// # Safety
/// AVX2+FMA available.
#[cfg(test)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_slice(x: &mut [f32]) {
    map(x, |v| exp(v));
}
