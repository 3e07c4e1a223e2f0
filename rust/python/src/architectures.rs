//! The architecture registry (`fasttx_core::models::registry`) as Python sees it: which model types
//! load, and the config.json a GGUF file stands for. Python keeps no list of its own.

use std::path::PathBuf;

use fasttx_core::formats::gguf::GgufFile;
use fasttx_core::models::registry::{self, ARCHITECTURES};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::run_native;

/// One dict per supported architecture: `model_type` (transformers' name), `encoder_decoder`, and
/// `gguf` (llama.cpp's `general.architecture` whose files load as it, or `None`).
#[pyfunction]
pub fn architectures(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    ARCHITECTURES
        .iter()
        .map(|a| {
            let d = PyDict::new(py);
            d.set_item("model_type", a.model_type)?;
            d.set_item("encoder_decoder", a.encoder_decoder)?;
            d.set_item("gguf", a.gguf.as_ref().map(|g| g.name))?;
            Ok(d)
        })
        .collect()
}

/// `(model_type, config)`: what the GGUF file at `path` loads as, and transformers' config.json
/// for it (hyper-parameters and special token ids from the file's metadata).
#[pyfunction]
pub fn gguf_config<'py>(py: Python<'py>, path: PathBuf) -> PyResult<(String, Bound<'py, PyAny>)> {
    let (model_type, json) = run_native(py, move || {
        let file = GgufFile::open(&path)?;
        let (model_type, config) = registry::gguf_config(&file)?;
        Ok((model_type.to_string(), config.to_string()))
    })?;
    let config = py.import("json")?.call_method1("loads", (json,))?;
    Ok((model_type, config))
}
