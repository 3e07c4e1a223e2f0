//! `gguf_metadata(path)`: a GGUF file's metadata as a Python dict (tokenizer, chat template and
//! model hyper-parameters are read on the Python side from it).
//!
//! The dict is built without reading any array: each array value is a [`GgufArray`], a read-only
//! sequence over the file's mapping whose elements become Python objects only when asked for
//! (`len()` never decodes; numbers come out whole as a compact numpy array with `numpy.asarray`).
//! A file that is one huge array thus costs nothing until a caller reads that array, and the
//! tokenizer, which needs its token and merge lists, decodes exactly those.

use std::path::PathBuf;
use std::sync::Arc;

use fasttx_core::formats::gguf::{GgufFile, MetaArray, MetaValue};
use numpy::{Element, PyArray1};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice};
use pyo3::IntoPyObjectExt;

use crate::errors::run_native;

/// A scalar as its Python value; an array (only nested arrays reach here) as a list.
fn to_py(py: Python<'_>, v: MetaValue<'_>) -> PyResult<Py<PyAny>> {
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
        MetaValue::Array(a) => to_list(py, a)?.into_any().unbind(),
    })
}

fn to_list<'py>(py: Python<'py>, a: MetaArray<'_>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for item in a.iter() {
        list.append(to_py(py, item)?)?;
    }
    Ok(list)
}

/// `count` little-endian values of `W` bytes each as a 1-D numpy array (one compact copy).
fn numpy_array<'py, T: Element, const W: usize>(
    py: Python<'py>,
    bytes: &[u8],
    value: impl Fn([u8; W]) -> T,
) -> Bound<'py, PyAny> {
    let values: Vec<T> = bytes
        .chunks_exact(W)
        .map(|b| value(b.try_into().expect("chunks of W bytes")))
        .collect();
    PyArray1::from_vec(py, values).into_any()
}

/// One array of a GGUF file's metadata, read from the file when its elements are asked for.
/// Behaves as a read-only sequence (it is registered as a `collections.abc.Sequence`).
#[pyclass(frozen, module = "fasttx._native", sequence)]
pub struct GgufArray {
    file: Arc<GgufFile>,
    key: String,
}

impl GgufArray {
    fn array(&self) -> MetaArray<'_> {
        // Made only for keys whose value is an array, in a file that cannot change.
        self.file
            .get(&self.key)
            .and_then(MetaValue::as_array)
            .expect("GgufArray made for an array key")
    }
}

#[pymethods]
impl GgufArray {
    /// The elements' GGUF type: "u8", "i32", "f32", "bool", "string", "array", ...
    #[getter]
    fn r#type(&self) -> &'static str {
        self.array().elem_type_name()
    }

    fn __len__(&self) -> usize {
        self.array().len()
    }

    /// An element (int index) or a list of elements (slice). Numbers are read directly; strings
    /// and nested arrays are found by walking the elements before them.
    fn __getitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let a = self.array();
        if index.is_instance_of::<PySlice>() {
            // Slices are rare (tests, interactive use): decode the list and let Python slice it.
            return Ok(to_list(py, a)?.as_any().get_item(index)?.unbind());
        }
        let i: isize = index.extract()?;
        let at = if i < 0 { i + a.len() as isize } else { i };
        let item = usize::try_from(at)
            .ok()
            .and_then(|at| a.get(at))
            .ok_or_else(|| PyIndexError::new_err("GgufArray index out of range"))?;
        to_py(py, item)
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(to_list(py, self.array())?.try_iter()?.into_any().unbind())
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Ok(other) = other.cast::<GgufArray>() {
            return (self.array() == other.get().array()).into_py_any(py);
        }
        if !(other.is_instance_of::<PyList>() || other.is_instance_of::<pyo3::types::PyTuple>()) {
            return Ok(py.NotImplemented());
        }
        let mine = to_list(py, self.array())?;
        let theirs = PyList::new(py, other.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
        mine.eq(theirs)?.into_py_any(py)
    }

    /// Every element as a Python object (nested arrays as lists).
    fn tolist<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        to_list(py, self.array())
    }

    /// A numpy array of the elements, e.g. for `numpy.asarray`: compact for numbers and bools;
    /// strings and nested arrays become a one-dimensional array of Python objects.
    #[pyo3(signature = (dtype=None, copy=None))]
    fn __array__<'py>(
        &self,
        py: Python<'py>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = copy; // every call makes a new array
        let a = self.array();
        let Some((_, bytes)) = a.fixed_width() else {
            // One object per element, filled one by one so that nested arrays stay elements
            // (numpy would otherwise read a list of equal-length lists as a 2-D array).
            let items = to_list(py, a)?;
            let numpy = py.import("numpy")?;
            let objects = numpy.call_method1("empty", (items.len(), "object"))?;
            for (i, item) in items.iter().enumerate() {
                objects.set_item(i, item)?;
            }
            return match dtype {
                Some(dtype) => objects.call_method1("astype", (dtype,)),
                None => Ok(objects),
            };
        };
        let array = match a.elem_type() {
            0 => numpy_array(py, bytes, u8::from_le_bytes),
            1 => numpy_array(py, bytes, i8::from_le_bytes),
            2 => numpy_array(py, bytes, u16::from_le_bytes),
            3 => numpy_array(py, bytes, i16::from_le_bytes),
            4 => numpy_array(py, bytes, u32::from_le_bytes),
            5 => numpy_array(py, bytes, i32::from_le_bytes),
            6 => numpy_array(py, bytes, f32::from_le_bytes),
            7 => numpy_array(py, bytes, |[b]: [u8; 1]| b != 0),
            10 => numpy_array(py, bytes, u64::from_le_bytes),
            11 => numpy_array(py, bytes, i64::from_le_bytes),
            _ => numpy_array(py, bytes, f64::from_le_bytes),
        };
        match dtype {
            Some(dtype) => array.call_method1("astype", (dtype,)),
            None => Ok(array),
        }
    }

    /// Immutable, so copies are the array itself (as for tuples).
    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }

    fn __repr__(&self) -> String {
        let a = self.array();
        format!(
            "GgufArray({} {} elements of {})",
            a.len(),
            a.elem_type_name(),
            self.key
        )
    }
}

/// The metadata of the GGUF file at `path`: keys as in the file, scalars as Python values, arrays
/// as [`GgufArray`]s that read the file when asked for their elements.
#[pyfunction]
pub fn gguf_metadata(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyDict>> {
    let file = Arc::new(run_native(py, move || GgufFile::open(&path))?);
    let dict = PyDict::new(py);
    for (key, value) in file.metadata() {
        let value = match value {
            MetaValue::Array(_) => GgufArray {
                file: file.clone(),
                key: key.to_owned(),
            }
            .into_py_any(py)?,
            scalar => to_py(py, scalar)?,
        };
        dict.set_item(key, value)?;
    }
    Ok(dict.unbind())
}
