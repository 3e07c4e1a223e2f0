//! Per-step helpers of the generation loop that are too heavy for Python: row-wise log-softmax of
//! the logits and the top-k over every beam's candidates.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{softmax::log_softmax, topk::topk};
use crate::sampling::{sample_row, warp_row, Warpers};

/// Log-softmax of each row of width `vocab`, in place.
pub fn log_softmax_rows(logits: &mut [f32], vocab: usize) {
    logits.par_chunks_mut(vocab).for_each(log_softmax);
}

/// The `k` best `(value, index)` of each row, best first: `(values [rows*k], indices [rows*k])`.
pub fn topk_rows(
    scores: &[f32],
    rows: usize,
    width: usize,
    k: usize,
) -> Result<(Vec<f32>, Vec<i64>)> {
    if k == 0 || k > width {
        return Err(Error::InvalidInput(format!(
            "top-k needs 1 <= k <= {width}, got k = {k}"
        )));
    }
    if scores.len() != rows * width {
        return Err(Error::InvalidInput(
            "top-k: scores do not match their shape".into(),
        ));
    }
    let per_row: Vec<Vec<(usize, f32)>> =
        scores.par_chunks(width).map(|row| topk(row, k)).collect();
    let values = per_row.iter().flatten().map(|&(_, v)| v).collect();
    let indices = per_row.iter().flatten().map(|&(i, _)| i as i64).collect();
    Ok((values, indices))
}

/// One token per row of `scores` `[rows, width]`, drawn after the warpers with uniform `u[row]`.
pub fn sample_rows(scores: &[f32], width: usize, w: &Warpers, u: &[f64]) -> Result<Vec<u32>> {
    w.validate()?;
    check_rows(scores, width, u.len())?;
    // transformers' multinomial refuses these rows too; a token drawn from them would be noise.
    for (r, row) in scores.chunks(width).enumerate() {
        if row.iter().any(|v| v.is_nan()) {
            return Err(Error::InvalidInput(format!(
                "sampling: the scores of row {r} hold NaN (the model produced NaN logits)"
            )));
        }
        if !row.iter().any(|v| v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "sampling: every token of row {r} was ruled out (no finite score left)"
            )));
        }
    }
    if u.len() == 1 {
        // One row: the work (~0.1 ms) is below what a parallel dispatch costs.
        return Ok(vec![sample_row(scores, w, u[0])]);
    }
    Ok(scores
        .par_chunks(width)
        .zip(u.par_iter())
        .map(|(row, &u)| sample_row(row, w, u))
        .collect())
}

/// The warpers applied to each row of `scores` (`-inf` where removed), in place.
pub fn warp_rows(scores: &mut [f32], width: usize, w: &Warpers) -> Result<()> {
    w.validate()?;
    check_rows(scores, width, scores.len() / width.max(1))?;
    scores
        .par_chunks_mut(width)
        .for_each(|row| warp_row(row, w));
    Ok(())
}

fn check_rows(scores: &[f32], width: usize, rows: usize) -> Result<()> {
    if width == 0 || scores.len() != rows * width {
        return Err(Error::InvalidInput(format!(
            "sampling: {} scores do not make {rows} rows of {width}",
            scores.len()
        )));
    }
    Ok(())
}
