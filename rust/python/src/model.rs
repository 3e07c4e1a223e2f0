//! `NativeModel` and `NativeSession`: thin handles over `fasttx_core::models`. They convert numpy
//! arrays at the boundary and call into the core with the GIL released; no math happens here.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use fasttx_core::models::{self, Model, Session, StepInput, TokenBatch, Want};
use fasttx_core::sampling::Warpers;
use fasttx_core::Error;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::{run_native, to_pyerr};
use crate::interrupt::{run_interruptible, run_interruptible_on_thread};

#[pyclass(frozen, module = "fasttx._native")]
pub struct NativeModel {
    model: Arc<dyn Model>,
}

/// Token ids from any integer numpy array, checked to fit in u32.
fn ids_to_u32(ids: &PyReadonlyArray2<'_, i64>, what: &str) -> PyResult<Vec<u32>> {
    let view = ids.as_array();
    view.iter()
        .map(|&t| {
            u32::try_from(t).map_err(|_| {
                PyValueError::new_err(format!(
                    "{what} holds token id {t}, which is not a valid id"
                ))
            })
        })
        .collect()
}

fn mask_to_u8(
    mask: Option<PyReadonlyArray2<'_, i64>>,
    shape: (usize, usize),
    what: &str,
) -> PyResult<Option<Vec<u8>>> {
    let Some(mask) = mask else { return Ok(None) };
    let view = mask.as_array();
    if view.dim() != shape {
        return Err(PyValueError::new_err(format!(
            "{what} has shape {:?}, but the ids have shape {shape:?}",
            view.dim()
        )));
    }
    Ok(Some(view.iter().map(|&v| u8::from(v != 0)).collect()))
}

/// The values of a score array in row-major order (one copy, a memcpy when contiguous).
fn scores_vec(scores: &PyReadonlyArray2<'_, f32>) -> Vec<f32> {
    match scores.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => scores.as_array().iter().copied().collect(),
    }
}

impl NativeModel {
    /// The core model (for other handles that run on its threads).
    pub(crate) fn core(&self) -> &Arc<dyn Model> {
        &self.model
    }
}

#[pymethods]
impl NativeModel {
    /// Loads architecture `arch` from `config_json` and the weight files (safetensors shards or one
    /// GGUF file); `dtype` is "auto", "f32" or "int8".
    #[new]
    fn new(
        py: Python<'_>,
        arch: String,
        config_json: String,
        weight_files: Vec<PathBuf>,
        dtype: String,
        threads: usize,
    ) -> PyResult<Self> {
        let model = run_interruptible_on_thread(py, move |interrupt| {
            models::load_interruptible(
                &arch,
                &config_json,
                &weight_files,
                &dtype,
                threads,
                Some(interrupt),
            )
        })?;
        Ok(NativeModel { model })
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    #[getter]
    fn is_encoder_decoder(&self) -> bool {
        self.model.is_encoder_decoder()
    }

    /// The position limit that caps `generate`'s default length budget (`None`: no limit).
    #[getter]
    fn max_positions(&self) -> Option<usize> {
        self.model.max_positions()
    }

    /// Whether `max_positions` bounds prompt plus new tokens (learned positions end there).
    #[getter]
    fn max_positions_is_hard(&self) -> bool {
        self.model.max_positions_is_hard()
    }

    #[getter]
    fn threads(&self) -> usize {
        self.model.pool().current_num_threads()
    }

    /// Bytes of weights one batch-1 decoding step streams (decoder projections and LM head, as
    /// stored).
    #[getter]
    fn decode_weight_bytes(&self) -> usize {
        self.model.decode_weight_bytes()
    }

    /// The `k` best entries of each row of `scores` `[rows, width]` as `(values, indices)`, both
    /// `[rows, k]`, best first (ties keep index order); runs on this model's threads.
    fn topk_rows<'py>(
        &self,
        py: Python<'py>,
        scores: PyReadonlyArray2<'py, f32>,
        k: usize,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>)> {
        let (rows, width) = scores.as_array().dim();
        let data = scores_vec(&scores);
        let model = self.model.clone();
        let (values, indices) = run_native(py, move || {
            model
                .pool()
                .install(|| fasttx_core::decoding::topk_rows(&data, rows, width, k))
        })?;
        Ok((
            values.into_pyarray(py).reshape([rows, k])?,
            PyArray1::from_vec(py, indices).reshape([rows, k])?,
        ))
    }

    /// One sampled token per row of `scores` `[rows, vocab]` after transformers' warpers
    /// (temperature, top_k (0 = off), top_p (1 = off), min_p (None = off), min_keep), drawn with the
    /// uniform numbers `uniforms[row]` in `[0, 1)`; runs on this model's threads.
    #[pyo3(signature = (scores, uniforms, temperature, top_k, top_p, min_p, min_keep))]
    #[allow(clippy::too_many_arguments)]
    fn sample_rows(
        &self,
        py: Python<'_>,
        scores: PyReadonlyArray2<'_, f32>,
        uniforms: Vec<f64>,
        temperature: f32,
        top_k: usize,
        top_p: f64,
        min_p: Option<f32>,
        min_keep: usize,
    ) -> PyResult<Vec<u32>> {
        let (_, width) = scores.as_array().dim();
        let data = scores_vec(&scores);
        let w = Warpers {
            temperature,
            top_k,
            top_p,
            min_p,
            min_keep,
        };
        let model = self.model.clone();
        run_native(py, move || {
            let run = || fasttx_core::decoding::sample_rows(&data, width, &w, &uniforms);
            // One row runs on the calling thread: handing it to the pool costs more than it takes.
            if uniforms.len() == 1 {
                run()
            } else {
                model.pool().install(run)
            }
        })
    }

    /// The log-softmax of each row of `scores` `[rows, vocab]`: the same bits as a session step's
    /// `log_softmax=True` output, for callers that need the raw logits of that step too.
    fn log_softmax_rows<'py>(
        &self,
        py: Python<'py>,
        scores: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (rows, width) = scores.as_array().dim();
        let mut data = scores_vec(&scores);
        if width > 0 {
            let model = self.model.clone();
            data = run_native(py, move || {
                model
                    .pool()
                    .install(|| fasttx_core::decoding::log_softmax_rows(&mut data, width));
                Ok::<_, fasttx_core::Error>(data)
            })?;
        }
        data.into_pyarray(py).reshape([rows, width])
    }

    /// `scores` `[rows, vocab]` after the warpers of [`sample_rows`]: removed tokens are `-inf`.
    #[pyo3(signature = (scores, temperature, top_k, top_p, min_p, min_keep))]
    #[allow(clippy::too_many_arguments)]
    fn warp_rows<'py>(
        &self,
        py: Python<'py>,
        scores: PyReadonlyArray2<'py, f32>,
        temperature: f32,
        top_k: usize,
        top_p: f64,
        min_p: Option<f32>,
        min_keep: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (rows, width) = scores.as_array().dim();
        let mut data = scores_vec(&scores);
        let w = Warpers {
            temperature,
            top_k,
            top_p,
            min_p,
            min_keep,
        };
        let model = self.model.clone();
        let data = run_native(py, move || {
            model
                .pool()
                .install(|| fasttx_core::decoding::warp_rows(&mut data, width, &w))
                .map(|_| data)
        })?;
        data.into_pyarray(py).reshape([rows, width])
    }

    /// Starts a session over `input_ids` `[batch, len]` (encoder input for encoder-decoder models).
    #[pyo3(signature = (input_ids, attention_mask=None))]
    fn start(
        &self,
        py: Python<'_>,
        input_ids: PyReadonlyArray2<'_, i64>,
        attention_mask: Option<PyReadonlyArray2<'_, i64>>,
    ) -> PyResult<NativeSession> {
        let (batch, len) = input_ids.as_array().dim();
        let ids = ids_to_u32(&input_ids, "input_ids")?;
        let mask = mask_to_u8(attention_mask, (batch, len), "attention_mask")?;
        let model = self.model.clone();
        let session = run_interruptible(py, model.pool(), |interrupt| {
            model.start(&TokenBatch::new(ids, mask, batch, len)?.with_interrupt(interrupt.clone()))
        })?;
        Ok(NativeSession {
            session: Mutex::new(Some(session)),
            model,
        })
    }
}

#[pyclass(frozen, module = "fasttx._native")]
pub struct NativeSession {
    /// `None` once its rows have joined another session.
    session: Mutex<Option<Box<dyn Session>>>,
    /// Its model, whose threads run the steps while the caller watches for Ctrl-C.
    model: Arc<dyn Model>,
}

type Guard<'a> = MutexGuard<'a, Option<Box<dyn Session>>>;

/// The session a lock holds, or why it cannot be used.
fn usable<'g>(guard: &'g mut Guard<'_>) -> fasttx_core::Result<&'g mut dyn Session> {
    match guard.as_mut() {
        Some(session) => Ok(session.as_mut()),
        None => Err(Error::InvalidInput(
            "this session's rows have joined another session; use that one".into(),
        )),
    }
}

impl NativeSession {
    fn lock(&self) -> fasttx_core::Result<Guard<'_>> {
        self.session.lock().map_err(|_| {
            Error::InvalidInput(
                "this session failed earlier with an internal error; start a new one".into(),
            )
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut dyn Session) -> fasttx_core::Result<T>,
    ) -> fasttx_core::Result<T> {
        f(usable(&mut self.lock()?)?)
    }

    /// A property read under the lock (no native work: the GIL is kept).
    fn read<T>(&self, f: impl FnOnce(&dyn Session) -> T) -> PyResult<T> {
        self.with(|s| Ok(f(s))).map_err(to_pyerr)
    }
}

#[pymethods]
impl NativeSession {
    #[getter]
    fn rows(&self) -> PyResult<usize> {
        self.read(|s| s.rows())
    }

    #[getter]
    fn length(&self) -> PyResult<usize> {
        self.read(|s| s.len())
    }

    /// Bytes of self-attention cache one row takes per position (for sizing a request against
    /// the machine's memory before it starts).
    #[getter]
    fn cache_bytes_per_position(&self) -> PyResult<usize> {
        self.read(|s| s.cache_bytes_per_position())
    }

    /// Whether every logit of the last step was finite, where the step found out on its way
    /// (`None`: unknown, check the values).
    #[getter]
    fn logits_finite(&self) -> PyResult<Option<bool>> {
        self.read(|s| s.logits_finite())
    }

    /// Makes room for `positions` positions per row in the self-attention cache at once (a
    /// generation that knows its length; the room costs memory only as it fills).
    fn reserve(&self, py: Python<'_>, positions: usize) -> PyResult<()> {
        run_native(py, || self.with(|s| s.reserve(positions)))
    }

    /// Feeds `tokens` `[rows, n]` (with an optional padding `mask` and `positions`); returns float32
    /// logits `[rows, vocab]` (`last_only`) or `[rows, n, vocab]`, as log-probabilities when
    /// `log_softmax` is set.
    #[pyo3(signature = (tokens, mask=None, positions=None, last_only=true, log_softmax=false))]
    fn step<'py>(
        &self,
        py: Python<'py>,
        tokens: PyReadonlyArray2<'py, i64>,
        mask: Option<PyReadonlyArray2<'py, i64>>,
        positions: Option<PyReadonlyArray2<'py, i64>>,
        last_only: bool,
        log_softmax: bool,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let (rows, n) = tokens.as_array().dim();
        let ids = ids_to_u32(&tokens, "decoder_input_ids")?;
        let mask = mask_to_u8(mask, (rows, n), "decoder attention mask")?;
        let positions = match positions {
            Some(p) if p.as_array().dim() != (rows, n) => {
                return Err(PyValueError::new_err(
                    "position ids do not match the tokens' shape",
                ))
            }
            Some(p) => Some(ids_to_u32(&p, "position ids")?),
            None => None,
        };
        let want = Want {
            last_only,
            log_softmax,
        };
        let (logits, vocab) = run_interruptible(py, self.model.pool(), |interrupt| {
            self.with(|s| {
                let input = StepInput {
                    tokens: &ids,
                    n,
                    mask: mask.as_deref(),
                    positions: positions.as_deref(),
                    interrupt: Some(interrupt),
                };
                let mut out = Vec::new();
                s.step(&input, want, &mut out)?;
                let vocab = out.len() / if last_only { rows } else { rows * n };
                Ok((out, vocab))
            })
        })?;
        let shape = if last_only {
            vec![rows, vocab]
        } else {
            vec![rows, n, vocab]
        };
        logits.into_pyarray(py).reshape(shape)
    }

    /// Row `i` continues old row `source[i]` (beam reordering, or expanding inputs into beams).
    fn reorder(&self, py: Python<'_>, source: Vec<usize>) -> PyResult<()> {
        run_native(py, || self.with(|s| s.reorder(&source)))
    }

    /// Takes back every position from `length` on (draft tokens the model rejected), as if the
    /// steps had fed only the positions before it.
    fn rewind(&self, py: Python<'_>, length: usize) -> PyResult<()> {
        run_native(py, || self.with(|s| s.rewind(length)))
    }

    /// Appends `other`'s rows after this session's (continuous batching: a prefilled request
    /// joins the running batch between steps); `other` is left without rows, unusable. Each row's
    /// logits stay the bits it gives decoded alone.
    fn join(&self, py: Python<'_>, other: &Bound<'_, NativeSession>) -> PyResult<()> {
        let other = other.get();
        if std::ptr::eq(self, other) {
            // Checked before locking: the second lock of one mutex would wait forever.
            return Err(PyValueError::new_err("join: a session cannot join itself"));
        }
        run_native(py, || {
            // Two joins of the same pair in opposite directions lock in the same order.
            let (mut mine, mut theirs) = if (self as *const Self) < (other as *const Self) {
                let mine = self.lock()?;
                (mine, other.lock()?)
            } else {
                let theirs = other.lock()?;
                (self.lock()?, theirs)
            };
            usable(&mut mine)?.join(usable(&mut theirs)?)?;
            *theirs = None;
            Ok(())
        })
    }
}
