//! `gguf_metadata(path)`: a GGUF file's metadata as a Python dict (tokenizer, chat template and
//! model hyper-parameters are read on the Python side from it).

use std::path::PathBuf;

use fasttx_core::formats::gguf::{GgufFile, MetaValue};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::IntoPyObjectExt;

use crate::errors::run_native;

fn to_py(py: Python<'_>, v: &MetaValue) -> PyResult<Py<PyAny>> {
    Ok(match v {
        MetaValue::U8(x) => x.into_py_any(py)?,
        MetaValue::I8(x) => x.into_py_any(py)?,
        MetaValue::U16(x) => x.into_py_any(py)?,
        MetaValue::I16(x) => x.into_py_any(py)?,
        MetaValue::U32(x) => x.into_py_any(py)?,
        MetaValue::I32(x) => x.into_py_any(py)?,
        MetaValue::U64(x) => x.into_py_any(py)?,
        MetaValue::I64(x) => x.into_py_any(py)?,
        MetaValue::F32(x) => x.into_py_any(py)?,
        MetaValue::F64(x) => x.into_py_any(py)?,
        MetaValue::Bool(x) => x.into_py_any(py)?,
        MetaValue::String(s) => s.into_py_any(py)?,
        MetaValue::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_py_any(py)?
        }
    })
}

/// The metadata of the GGUF file at `path` (keys as in the file; arrays become lists).
#[pyfunction]
pub fn gguf_metadata(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyDict>> {
    let file = run_native(py, move || GgufFile::open(&path))?;
    let dict = PyDict::new(py);
    for (key, value) in file.metadata() {
        dict.set_item(key, to_py(py, value)?)?;
    }
    Ok(dict.unbind())
}
