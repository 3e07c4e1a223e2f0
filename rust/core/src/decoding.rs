//! Per-step helpers of the generation loop that are too heavy for Python: row-wise log-softmax of
//! the logits and the top-k over every beam's candidates.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{softmax::log_softmax, topk::topk};

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
