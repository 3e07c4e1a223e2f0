//! AVX-512F inner loops (x86_64 only), for the kernels where 16 lanes and 32 registers pay off:
//! the `matmul_nt` tiles and the attention vector primitives. Other kernels use their AVX2 code on
//! AVX-512 machines (`cpu::Isa::Avx512` implies AVX2 + FMA, see `cpu::detect`).
//!
//! # Safety
//! Every `pub` function here is `unsafe` because it is compiled with
//! `#[target_feature(enable = "avx512f,avx2,fma")]`: the caller must have checked
//! `cpu::supported(Isa::Avx512)`. Tails are handled with masked loads/stores (which do not touch
//! memory in masked-off lanes), so nothing reads or writes out of bounds.
//!
//! Determinism: as in the AVX2 code, each reduction's order depends only on the vector length.
//! The tiles' results differ from the AVX2 path's in the last bits (16 partial sums instead of
//! 8); `dot` reproduces the AVX2 `dot` exactly (see there).

use std::arch::x86_64::*;

use super::matmul::KSlice;
use super::x86_avx2::{self, prefetch_rows, prefetch_run, WPrefetch};

const LANES: usize = 16;

/// Mask with the first `n` (0..=16) lanes set.
#[inline]
fn tail_mask(n: usize) -> __mmask16 {
    debug_assert!(n <= LANES);
    ((1u32 << n) - 1) as __mmask16
}

/// Horizontal sum in one fixed order: lane `l` plus lane `l + 8`, then the AVX2 order.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn hsum(v: __m512) -> f32 {
    // extractf64x4 is AVX-512F (the f32x8 form would need AVX-512DQ).
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    x86_avx2::hsum(_mm256_add_ps(lo, hi))
}

// ---------------------------------------------------------------------------------------------
// matmul_nt micro-kernels

/// Widest tile (rows of `w`) used with a group of `mr` rows of `x`, indexed by `mr` (1..=4).
/// 4×4: 16 accumulators + 4 `w` vectors + 1 `x` vector of the 32 zmm registers.
pub(crate) const NT_NR: [usize; 5] = [0, 12, 8, 6, 4];
/// The tile of blocks of more than 8 rows (prefill, batches), `x` rows × `w` rows: 24
/// accumulators + 4 `w` + 1 `x` registers, 10 loads per 24 FMAs (4×4: 8 per 16). It stays in
/// registers only because the tile's start and end over a slice are out of line (see `tile`).
pub(crate) const NT_BIG: (usize, usize) = (6, 4);

/// Same contract as [`x86_avx2::nt_tile`], with 16 lanes per partial sum.
///
/// # Safety
/// AVX-512F+AVX2+FMA available; `x` valid for `mr` rows and `w` for `nr` rows of `ks.len` reads
/// (rows `ks.ld` apart); `y` valid for writes at `r·ldy + c` for `r < mr`, `c < nr`; `ks.partial`
/// as [`KSlice`] says.
#[allow(clippy::too_many_arguments)] // one flat signature shared by every ISA
#[target_feature(enable = "avx512f,avx2,fma")]
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
        (1, 12) => tile::<1, 12>(x, w, ks, y, ldy, stream),
        (2, 8) => tile::<2, 8>(x, w, ks, y, ldy, stream),
        (3, 6) => tile::<3, 6>(x, w, ks, y, ldy, stream),
        (4, 4) => tile::<4, 4>(x, w, ks, y, ldy, stream),
        (1, 6) => tile::<1, 6>(x, w, ks, y, ldy, stream),
        (2, 6) => tile::<2, 6>(x, w, ks, y, ldy, stream),
        (4, 2) => tile::<4, 2>(x, w, ks, y, ldy, stream),
        (4, 3) => tile::<4, 3>(x, w, ks, y, ldy, stream),
        (6, 4) => tile::<6, 4>(x, w, ks, y, ldy, stream),
        (5, 4) => tile::<5, 4>(x, w, ks, y, ldy, stream),
        (3, 4) => tile::<3, 4>(x, w, ks, y, ldy, stream),
        (2, 4) => tile::<2, 4>(x, w, ks, y, ldy, stream),
        (1, 4) => tile::<1, 4>(x, w, ks, y, ldy, stream),
        (6, 1) => tile::<6, 1>(x, w, ks, y, ldy, stream),
        (5, 1) => tile::<5, 1>(x, w, ks, y, ldy, stream),
        (4, 1) => tile::<4, 1>(x, w, ks, y, ldy, stream),
        (3, 1) => tile::<3, 1>(x, w, ks, y, ldy, stream),
        (2, 1) => tile::<2, 1>(x, w, ks, y, ldy, stream),
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

#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
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
        [[_mm512_setzero_ps(); NR]; MR]
    } else {
        load_partials::<MR, NR>(ks)
    };
    let body = len - len % LANES;
    let mut p = 0;
    // The loop once per kind of prefetch (each then with constant strides; see `WPrefetch`):
    // one prefetch per cache line (= one vector here) of each w row, as in the AVX2 tile.
    macro_rules! sweep {
        ($prefetch:expr) => {
            while p < body {
                $prefetch;
                let mut wv = [_mm512_setzero_ps(); NR];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(w.add(c * ld + p));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_ps(x.add(r * ldx + p));
                    for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(xv, wc, *a);
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
        let mut wv = [_mm512_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, w.add(c * ld + p));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(mask, x.add(r * ldx + p));
            for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, wc, *a);
            }
        }
    }
    if ks.last && NR == 4 {
        // The usual end of a prefill tile, in line (a short loop, unrolled: `acc` stays in
        // registers).
        for (r, acc_r) in acc.iter().enumerate() {
            _mm_storeu_ps(
                y.add(r * ldy),
                hsum4([acc_r[0], acc_r[1], acc_r[2], acc_r[3]]),
            );
        }
    } else {
        finish::<MR, NR>(acc, ks, y, ldy);
    }
}

/// The partial sums a tile starts a non-first slice of `k` from.
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn load_partials<const MR: usize, const NR: usize>(ks: &KSlice) -> [[__m512; NR]; MR] {
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    for (r, acc_r) in acc.iter_mut().enumerate() {
        for (c, a) in acc_r.iter_mut().enumerate() {
            *a = _mm512_loadu_ps(ks.partial_of(r, c, LANES));
        }
    }
    acc
}

/// A tile's outputs ([`hsum`] into `y`), or its partial sums when the slice is not the last.
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn finish<const MR: usize, const NR: usize>(
    acc: [[__m512; NR]; MR],
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        for (c, &a) in acc_r.iter().enumerate() {
            if ks.last {
                *y.add(r * ldy + c) = hsum(a);
            } else {
                _mm512_storeu_ps(ks.partial_of(r, c, LANES), a);
            }
        }
    }
}

/// [`hsum`] of four accumulators at once: the same additions of the same pairs in the same
/// order (lane `l` + lane `l + 8`, then `+ 4`, `+ 2`, `+ 1`), four accumulators side by side in
/// each vector, so a third of the instructions.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn hsum4(a: [__m512; 4]) -> __m128 {
    // 128-bit quarters: [a0.q0, a0.q1, a1.q0, a1.q1] + [a0.q2, a0.q3, a1.q2, a1.q3], i.e.
    // lanes l + l+8 of a0 and of a1 (and of a2, a3 in the other vector).
    let s01 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(a[0], a[1]),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(a[0], a[1]),
    );
    let s23 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(a[2], a[3]),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(a[2], a[3]),
    );
    // Lanes l + l+4 of each of the four 8-lane sums, one quarter each: [a0, a1, a2, a3].
    let t = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(s01, s23),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(s01, s23),
    );
    // Within each quarter: l + l+2 (as `movehl`), then l + l+1 (as the final `add_ss`).
    let u = _mm512_add_ps(t, _mm512_permute_ps::<0b11_10_11_10>(t));
    let v = _mm512_add_ps(u, _mm512_permute_ps::<0b01_01_01_01>(u));
    // Lanes 0, 4, 8, 12 to the front (a permute: one cheap instruction, unlike a compress).
    let front = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castps512_ps128(_mm512_permutexvar_ps(front, v))
}

// ---------------------------------------------------------------------------------------------
// matmul_nt decoding tiles on weights that start inside a cache line

/// [`nt_tile`] for the decoding tiles (`stream`: at most 8 rows of `x`, each `w` row read once,
/// from memory). Weights memory-mapped from a safetensors file start wherever the file puts them
/// (its data is 8-byte aligned at most), so their rows usually start inside a cache line and
/// every 64-byte load of [`tile`] straddles two lines. `bench_matmul_misaligned` (`matmul.rs`,
/// Zen 4, one thread) streams such weights at 0.81-0.89x the aligned rate with one row of `x`
/// (k = 512 and 2048), 0.80-0.91x with 4 rows at k = 512, 0.88-0.98x with 8.
///
/// When every `w` row starts the same `shift` floats past a line (`ld` a multiple of 16),
/// [`tile_rotated`] reads `w` by whole lines, with the same bits. With one row of `x` it reads
/// `x` wherever it is (0.94-0.99x the aligned rate); with more rows only when `x`'s rows start
/// at the same `shift` past a line, `ldx` floats apart (a multiple of 16), so that its loads do
/// not split either: `NtKernel::block` copies the rows there. At k = 512 (offsets 20 and 24
/// bytes): 2 rows 0.94-1.02x the aligned rate (plain tiles 0.75-0.80x), 4 rows 0.85-0.93x
/// (0.84-0.90x; 0.92-0.93x against 0.87-0.88x at n = 58101, Marian's LM head), 8 rows
/// 0.93-1.03x (0.89-0.97x); k = 2048 about even. An earlier 4-row attempt without the copy
/// streamed 0.77-0.83x: its 4 loads of `x` per step split instead of `w`'s, and it lacked the
/// first line's prefetch (see [`tile_rotated`]). Anything else goes to [`nt_tile`].
///
/// # Safety
/// As [`nt_tile`].
#[allow(clippy::too_many_arguments)] // one flat signature shared by every ISA
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn nt_tile_stream(
    mr: usize,
    nr: usize,
    stream: bool,
    x: *const f32,
    w: *const f32,
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
) {
    let addr = w as usize;
    let shift = addr % 64 / 4;
    let rotatable = stream
        && ks.first
        && ks.last
        && addr.is_multiple_of(4)
        && shift != 0
        && ks.ld.is_multiple_of(LANES)
        && ks.len.is_multiple_of(LANES)
        && ks.len > 0;
    // Several rows of x: only at w's offset (see above).
    let x_along = mr == 1 || (x as usize % 64 == addr % 64 && ks.ldx.is_multiple_of(LANES));
    match (mr, nr) {
        _ if !(rotatable && x_along) => nt_tile(mr, nr, stream, x, w, ks, y, ldy),
        (1, 12) => tile_rotated::<1, 12>(x, w, ks, y, ldy, stream, shift),
        (2, 8) => tile_rotated::<2, 8>(x, w, ks, y, ldy, stream, shift),
        (3, 6) => tile_rotated::<3, 6>(x, w, ks, y, ldy, stream, shift),
        (4, 4) => tile_rotated::<4, 4>(x, w, ks, y, ldy, stream, shift),
        // Rows 5..8 of a block come as a group of 4 and one of 1, 2 or 3 (4 w rows wide).
        (1, 4) => tile_rotated::<1, 4>(x, w, ks, y, ldy, stream, shift),
        (2, 4) => tile_rotated::<2, 4>(x, w, ks, y, ldy, stream, shift),
        (3, 4) => tile_rotated::<3, 4>(x, w, ks, y, ldy, stream, shift),
        // The ragged edge of a block (fewer than `nr` rows of w left).
        _ => nt_tile(mr, nr, stream, x, w, ks, y, ldy),
    }
}

/// The `MR` × `NR` [`tile`] over one whole pass of `k` whose `w` rows start `shift` (1..16)
/// floats past a cache line, reading `w` by aligned lines and `x` at the same offset (aligned
/// too when `x` sits at `shift` past a line, as [`nt_tile_stream`] asks of several rows). Line
/// `t` holds elements `16t - shift + l` in lane `l`, so lane `l` here sums the products
/// [`tile`]'s lane `(l - shift) mod 16` does, in the same order. The first line lends only lanes
/// `shift..` to its FMAs, the last one (past the row's last full vector) only lanes `..shift`
/// (masked FMAs: the other lanes keep their sums untouched); both are read by masked loads of
/// the line, which do not touch the other lanes, so nothing outside the rows is read (no
/// permutes: unaligned loads of the rows' end vectors permuted into line order, the version
/// before, made opus-mt-en-de's f32 beam 4 ~5% slower end to end).
/// The same prefetch of `w` as [`tile`] (one per line of each row, [`WPrefetch`]). Rotating the
/// accumulators back once at the end gives [`tile`]'s lane sums, bit for bit, and the same
/// horizontal sums give its outputs.
///
/// # Safety
/// As [`nt_tile`] with `ks.first && ks.last`, `w` at `shift` floats past a 64-byte boundary,
/// `ks.ld` and `ks.len` multiples of 16, `ks.len > 0`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_rotated<const MR: usize, const NR: usize>(
    x: *const f32,
    w: *const f32,
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
    stream: bool,
    shift: usize,
) {
    debug_assert!(ks.first && ks.last && (1..LANES).contains(&shift));
    debug_assert!(ks.len > 0 && ks.len.is_multiple_of(LANES) && ks.ld.is_multiple_of(LANES));
    debug_assert!((w as usize - 4 * shift).is_multiple_of(64));
    let (ld, ldx, len) = (ks.ld, ks.ldx, ks.len);
    // Line-aligned starts (`wrapping_sub`: before the rows; only read from one vector in).
    let (wl, xl) = (w.wrapping_sub(shift), x.wrapping_sub(shift));
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    // Lane l of line t holds element 16t - shift + l: the first line's lanes `shift..` and the
    // last line's (t = len / 16) lanes `..shift` are inside the rows.
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // The part of the first or last line inside the rows (`lanes`), read by masked loads of the
    // line (the other lanes are not read: nothing outside the rows is touched) and added by
    // masked FMAs (the other lanes keep their sums, negative zeros included).
    macro_rules! edge {
        ($p:expr, $lanes:expr) => {
            let (p, lanes) = ($p, $lanes);
            let mut wv = [_mm512_setzero_ps(); NR];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_load_ps(lanes, wl.wrapping_add(c * ld + p));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(lanes, xl.wrapping_add(r * ldx + p));
                for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                    *a = _mm512_mask3_fmadd_ps(xv, wc, *a, lanes);
                }
            }
        };
    }
    // As in `tile`, the loop once per kind of prefetch, `p` here counting from the lines. The
    // first line's prefetch too (`p = 0`, before its edge): with `NextTile` it is the next tile's
    // first lines, without which each tile would start with `NR` misses.
    let mut p = 0;
    macro_rules! sweep {
        ($prefetch:expr) => {{
            $prefetch;
            edge!(0, tail_mask(LANES - shift) << shift);
            p += LANES;
            while p < len {
                $prefetch;
                let mut wv = [_mm512_setzero_ps(); NR];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_load_ps(wl.wrapping_add(c * ld + p));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_ps(xl.wrapping_add(r * ldx + p));
                    for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(xv, wc, *a);
                    }
                }
                p += LANES;
            }
        }};
    }
    match WPrefetch::of(stream, MR, NR, ks) {
        WPrefetch::Off => sweep!({}),
        WPrefetch::Rows { ahead } => sweep!(prefetch_rows::<NR>(wl, ld, p + ahead)),
        WPrefetch::NextTile => sweep!(prefetch_run::<NR>(wl.wrapping_add(NR * (len + p)))),
    }
    edge!(len, tail_mask(shift));
    // Lane j of `tile`'s sums is lane (j + shift) mod 16 here.
    let back = _mm512_and_si512(
        _mm512_add_epi32(lane, _mm512_set1_epi32(shift as i32)),
        _mm512_set1_epi32(LANES as i32 - 1),
    );
    for acc_r in acc.iter_mut() {
        for a in acc_r.iter_mut() {
            *a = _mm512_permutexvar_ps(back, *a);
        }
    }
    // `tile`'s ends (the same horizontal sums).
    for (r, acc_r) in acc.iter().enumerate() {
        if NR == 4 {
            _mm_storeu_ps(
                y.add(r * ldy),
                hsum4([acc_r[0], acc_r[1], acc_r[2], acc_r[3]]),
            );
        } else {
            for (c, &a) in acc_r.iter().enumerate() {
                *y.add(r * ldy + c) = hsum(a);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// vector

/// The AVX2 `dot`'s exact arithmetic (so attention, the one ISA-dependent step left in a
/// quantized model's decoding, gives the same bits on both paths), in one register: the AVX2
/// kernel's two 8-lane accumulators take alternate 8-element chunks, which is element `j` in
/// lane `j mod 16` of a 16-lane one; its short tail (fewer than 8 left) goes to the second
/// accumulator, i.e. lanes 8.. here. The final sum is lane `l` plus lane `l + 8`, then the AVX2
/// order, as there.
///
/// # Safety
/// AVX-512F+AVX2+FMA available.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + LANES <= n {
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc);
        i += LANES;
    }
    // As in the AVX2 code, every lane an FMA touches gets one, with zeros past the end (a lane
    // holding -0 becomes +0 either way).
    let rest = n - i;
    if rest >= LANES / 2 {
        // AVX2: a full chunk into the first accumulator, the rest (zero-padded) into the second.
        let m = tail_mask(rest);
        let (x, y) = (
            _mm512_maskz_loadu_ps(m, pa.add(i)),
            _mm512_maskz_loadu_ps(m, pb.add(i)),
        );
        acc = _mm512_fmadd_ps(x, y, acc);
    } else if rest > 0 {
        // AVX2: the zero-padded rest into the second accumulator alone, i.e. lanes 8..16 here,
        // loaded from 8 elements earlier (masked-off lanes are not read, so that address may
        // lie before the slice).
        let m = ((tail_mask(rest) as u32) << (LANES / 2)) as __mmask16;
        let x = _mm512_maskz_loadu_ps(m, pa.add(i).wrapping_sub(LANES / 2));
        let y = _mm512_maskz_loadu_ps(m, pb.add(i).wrapping_sub(LANES / 2));
        acc = _mm512_mask3_fmadd_ps(x, y, acc, 0xFF00);
    }
    hsum(acc)
}

/// # Safety
/// AVX-512F+AVX2+FMA available.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let a = _mm512_set1_ps(alpha);
    let mut i = 0;
    while i + LANES <= n {
        let v = _mm512_fmadd_ps(a, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
        _mm512_storeu_ps(py.add(i), v);
        i += LANES;
    }
    if i < n {
        let m = tail_mask(n - i);
        let v = _mm512_fmadd_ps(
            a,
            _mm512_maskz_loadu_ps(m, px.add(i)),
            _mm512_maskz_loadu_ps(m, py.add(i)),
        );
        _mm512_mask_storeu_ps(py.add(i), m, v);
    }
}

// ---------------------------------------------------------------------------------------------
// matmul_nt: the tile of blocks of more than 8 rows

/// [`nt_tile`] for the blocks of more than 8 rows (prefill, batches): the same arithmetic (the
/// same FMAs in the same order, the same [`hsum`]), with the slice's start and end chosen at
/// compile time, so that carrying partial sums from one slice of `k` to the next costs a plain
/// load or store per accumulator (no out-of-line call, no copy of the accumulators through the
/// stack). Shapes other than `h × 4` (the edges) go to [`nt_tile`].
///
/// # Safety
/// As [`nt_tile`].
#[allow(clippy::too_many_arguments)] // one flat signature shared by every ISA
#[target_feature(enable = "avx512f,avx2,fma")]
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
        (6, 4) => by_slice!(6),
        (5, 4) => by_slice!(5),
        (4, 4) => by_slice!(4),
        (3, 4) => by_slice!(3),
        (2, 4) => by_slice!(2),
        (1, 4) => by_slice!(1),
        _ => nt_tile(mr, nr, false, x, w, ks, y, ldy),
    }
}

/// An `MR × 4` tile over one slice of `k` that is the first (`FIRST`: accumulators start at
/// zero, else from `ks.partial`) and/or the last (`LAST`: outputs to `y`, else partial sums back
/// to `ks.partial`).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gemm<const MR: usize, const FIRST: bool, const LAST: bool>(
    x: *const f32,
    w: *const f32,
    ks: &KSlice,
    y: *mut f32,
    ldy: usize,
) {
    const NR: usize = 4;
    let (ld, ldx, len) = (ks.ld, ks.ldx, ks.len);
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    if !FIRST {
        for (r, acc_r) in acc.iter_mut().enumerate() {
            for (c, a) in acc_r.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(ks.partial_of(r, c, LANES));
            }
        }
    }
    let body = len - len % LANES;
    let mut p = 0;
    while p < body {
        let mut wv = [_mm512_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(w.add(c * ld + p));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = _mm512_loadu_ps(x.add(r * ldx + p));
            for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, wc, *a);
            }
        }
        p += LANES;
    }
    if p < len {
        let mask = tail_mask(len - p);
        let mut wv = [_mm512_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, w.add(c * ld + p));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(mask, x.add(r * ldx + p));
            for (a, &wc) in acc_r.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, wc, *a);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        if LAST {
            _mm_storeu_ps(
                y.add(r * ldy),
                hsum4([acc_r[0], acc_r[1], acc_r[2], acc_r[3]]),
            );
        } else {
            for (c, &a) in acc_r.iter().enumerate() {
                _mm512_storeu_ps(ks.partial_of(r, c, LANES), a);
            }
        }
    }
}
