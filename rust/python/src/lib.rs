//! The `fasttx._native` extension module: PyO3 glue only. Errors are mapped in `errors.rs`, model
//! handles live in `model.rs`; every numeric routine is in the `fasttx-core` crate.

mod architectures;
mod constraint;
mod errors;
mod gguf;
mod interrupt;
mod machine;
mod model;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add(
        "ModelFormatError",
        m.py().get_type::<errors::ModelFormatError>(),
    )?;
    m.add_class::<model::NativeModel>()?;
    m.add_class::<gguf::GgufArray>()?;
    m.add_class::<constraint::NativeConstraintEnv>()?;
    m.add_class::<constraint::NativeConstraint>()?;
    m.add_class::<constraint::NativeConstraintRows>()?;
    m.add_class::<model::NativeSession>()?;
    m.add_function(wrap_pyfunction!(gguf::gguf_metadata, m)?)?;
    m.add_function(wrap_pyfunction!(architectures::architectures, m)?)?;
    m.add_function(wrap_pyfunction!(architectures::gguf_config, m)?)?;
    m.add_function(wrap_pyfunction!(machine::memory_bandwidth, m)?)?;
    m.add_function(wrap_pyfunction!(machine::instruction_set, m)?)?;
    m.add_function(wrap_pyfunction!(machine::matmul_rate, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
