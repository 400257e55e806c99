//! Native core of flowcraft-fast, imported by Python as `flowcraft_fast._core`.
//!
//! This file is only the table of contents: each module owns one concern.

use pyo3::prelude::*;

mod conn;
mod errors;
mod keys;
mod leases;
mod queue;
mod runtime;
mod scripts;
mod state;
mod stops;

/// The `flowcraft_fast._core` extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    runtime::install_tls_provider();
    runtime::configure();
    m.add_function(wrap_pyfunction!(runtime::settle_at_exit, m)?)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (m.getattr("settle_at_exit")?,))?;
    errors::register(m)?;
    conn::register(m)?;
    keys::register(m)?;
    scripts::register(m)?;
    Ok(())
}
