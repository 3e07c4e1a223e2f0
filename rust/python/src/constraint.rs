//! Constrained output: thin handles over `fasttx_core::constraint`. The vocabulary comes in as one
//! bytes object plus token lengths (no per-token Python objects to convert), and every call that
//! compiles or masks runs with the GIL released.

use std::sync::Arc;

use fasttx_core::constraint::{
    Constraint, ConstraintEnv, ConstraintRows, ConstraintSpec, MaskOutcome,
};
use fasttx_core::Error;
use numpy::PyReadwriteArray2;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::run_native;
use crate::model::NativeModel;

/// The tokenizer side of constraints for one model (its vocabulary as bytes and its EOS ids).
#[pyclass(frozen, module = "fasttx._native")]
pub struct NativeConstraintEnv {
    env: Arc<ConstraintEnv>,
}

#[pymethods]
impl NativeConstraintEnv {
    /// `data`: the bytes of every token id, one after another; `lengths[id]`: how many bytes
    /// token `id` has (0 for ids without text); `special_ids`: tokens never produced unless a
    /// grammar names them; `eos_ids`: the tokens that end a row where the constraint may end.
    #[new]
    fn new(
        py: Python<'_>,
        data: &[u8],
        lengths: Vec<usize>,
        special_ids: Vec<u32>,
        eos_ids: Vec<u32>,
    ) -> PyResult<Self> {
        let total: usize = lengths.iter().sum();
        if total != data.len() {
            return Err(PyValueError::new_err(format!(
                "token lengths add up to {total} bytes but {} were given",
                data.len()
            )));
        }
        let data = data.to_vec();
        run_native(py, move || {
            let mut words = Vec::with_capacity(lengths.len());
            let mut at = 0;
            for n in lengths {
                words.push(data[at..at + n].to_vec());
                at += n;
            }
            let env = ConstraintEnv::new(words, &special_ids, &eos_ids)?;
            Ok(NativeConstraintEnv { env: Arc::new(env) })
        })
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.env.vocab_size()
    }

    #[getter]
    fn eos_ids(&self) -> Vec<u32> {
        self.env.eos().to_vec()
    }

    /// Compiles a constraint: `kind` is "json_schema" (JSON text), "regex", "grammar" (Lark) with
    /// a str, or "choices" with a list of str. An invalid one is a ValueError with the engine's
    /// message.
    fn compile(
        &self,
        py: Python<'_>,
        kind: &str,
        spec: &Bound<'_, PyAny>,
    ) -> PyResult<NativeConstraint> {
        let spec = match kind {
            "json_schema" => ConstraintSpec::JsonSchema(spec.extract()?),
            "regex" => ConstraintSpec::Regex(spec.extract()?),
            "grammar" => ConstraintSpec::Grammar(spec.extract()?),
            "choices" => ConstraintSpec::Choices(spec.extract()?),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown constraint kind {other:?} (json_schema, regex, choices, grammar)"
                )))
            }
        };
        let env = self.env.clone();
        run_native(py, move || {
            Ok(NativeConstraint {
                constraint: env.compile(&spec)?,
            })
        })
    }
}

/// A compiled constraint; `NativeConstraintRows` starts one matcher per row from it.
#[pyclass(module = "fasttx._native")]
pub struct NativeConstraint {
    constraint: Constraint,
}

/// The constraint state of every row of one generation (`None`: the row is unconstrained).
#[pyclass(module = "fasttx._native")]
pub struct NativeConstraintRows {
    rows: ConstraintRows,
}

fn checked_row(rows: &ConstraintRows, row: usize) -> PyResult<()> {
    if row >= rows.len() {
        return Err(PyValueError::new_err(format!(
            "row {row} out of range for {} rows",
            rows.len()
        )));
    }
    Ok(())
}

#[pymethods]
impl NativeConstraintRows {
    /// One row per entry of `constraints`, each at the start of its constraint. `passthrough`:
    /// tokens the model's options force outside the text (forced BOS/EOS): a row forced to one
    /// is not masked, and the constraint skips it.
    #[new]
    #[pyo3(signature = (constraints, passthrough=Vec::new()))]
    fn new(constraints: Vec<Option<PyRef<'_, NativeConstraint>>>, passthrough: Vec<u32>) -> Self {
        let rows = constraints
            .iter()
            .map(|c| c.as_ref().map(|c| c.constraint.matcher()))
            .collect();
        NativeConstraintRows {
            rows: ConstraintRows::new(rows, passthrough),
        }
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// Sets to -inf, in place, every score of `scores` `[len(rows), vocab]` (float32, C order)
    /// that row `rows[i]`'s constraint forbids, rows in parallel on `model`'s threads. Returns per
    /// row whether a token with a finite score is left.
    #[pyo3(signature = (scores, rows, model=None))]
    fn mask(
        &mut self,
        py: Python<'_>,
        mut scores: PyReadwriteArray2<'_, f32>,
        rows: Vec<usize>,
        model: Option<PyRef<'_, NativeModel>>,
    ) -> PyResult<Vec<bool>> {
        let vocab = scores.as_array().dim().1;
        let data = scores.as_slice_mut().map_err(|_| {
            PyValueError::new_err("scores must be a C-contiguous float32 array [rows, vocab]")
        })?;
        let pool = model.map(|m| m.core().clone());
        let this = &mut self.rows;
        let outcome = run_native(py, move || match &pool {
            Some(m) if rows.len() > 1 => m.pool().install(|| this.mask(data, vocab, &rows)),
            _ => this.mask(data, vocab, &rows),
        })?;
        Ok(outcome.into_iter().map(|o| o == MaskOutcome::Ok).collect())
    }

    /// Advances row `rows[i]` past `tokens[i]`; returns per row whether its constraint is now
    /// complete. A token the constraint forbids is a ValueError when `strict`; otherwise that
    /// row allows no token from then on.
    #[pyo3(signature = (rows, tokens, strict=true))]
    fn consume(
        &mut self,
        py: Python<'_>,
        rows: Vec<usize>,
        tokens: Vec<u32>,
        strict: bool,
    ) -> PyResult<Vec<bool>> {
        let this = &mut self.rows;
        run_native(py, move || this.consume(&rows, &tokens, strict))
    }

    /// The rows become `old[index[0]], old[index[1]], ...` (as the session's `reorder`).
    fn reorder(&mut self, index: Vec<usize>) -> PyResult<()> {
        self.rows.reorder(&index).map_err(crate::errors::to_pyerr)
    }

    /// Whether row `row` is constrained.
    fn constrained(&self, row: usize) -> PyResult<bool> {
        checked_row(&self.rows, row)?;
        Ok(self.rows.is_constrained(row))
    }

    /// The ids row `row`'s constraint allows next (all ids for an unconstrained row).
    fn allowed(&mut self, py: Python<'_>, row: usize) -> PyResult<Vec<u32>> {
        checked_row(&self.rows, row)?;
        let this = &mut self.rows;
        run_native(py, move || match this.get_mut(row) {
            Some(m) => Ok(m.allowed()?.to_list()),
            None => Err(Error::InvalidInput(format!("row {row} is not constrained"))),
        })
    }

    /// Whether row `row`'s output so far is a complete match (EOS allowed now).
    fn accepting(&mut self, row: usize) -> PyResult<bool> {
        checked_row(&self.rows, row)?;
        Ok(self.rows.get_mut(row).is_none_or(|m| m.is_accepting()))
    }

    /// Whether row `row`'s constraint is complete: nothing but EOS may follow.
    fn stopped(&mut self, row: usize) -> PyResult<bool> {
        checked_row(&self.rows, row)?;
        Ok(self.rows.get_mut(row).is_some_and(|m| m.is_stopped()))
    }

    /// Takes back row `row`'s last `tokens` tokens.
    fn rollback(&mut self, row: usize, tokens: usize) -> PyResult<()> {
        checked_row(&self.rows, row)?;
        match self.rows.get_mut(row) {
            Some(m) => m.rollback(tokens).map_err(crate::errors::to_pyerr),
            None => Ok(()),
        }
    }
}
