//! Rust errors turned into Python exceptions with messages a user can act on.
//!
//! Connection problems become `RedisConnectionError` (a `ConnectionError`), everything Redis
//! answered with an error becomes `RedisCommandError`. Messages name the server by its redacted
//! URL, never with its password.

use pyo3::exceptions::{PyConnectionError, PyRuntimeError};
use pyo3::prelude::*;
use redis::RedisError;

pyo3::create_exception!(
    _core,
    RedisConnectionError,
    PyConnectionError,
    "Redis could not be reached, or the connection broke."
);
pyo3::create_exception!(
    _core,
    RedisCommandError,
    PyRuntimeError,
    "Redis answered a command with an error."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add(
        "RedisConnectionError",
        py.get_type::<RedisConnectionError>(),
    )?;
    m.add("RedisCommandError", py.get_type::<RedisCommandError>())?;
    Ok(())
}

/// Convert a redis-rs error met while talking to `server` (a redacted URL) into a Python error.
/// An error a call retried until its deadline (`retry`) says how long and how often it tried.
pub fn to_py(err: &RedisError, server: &str) -> PyErr {
    if err.is_connection_refusal() {
        let note = crate::retry::note(err)
            .map(|n| format!("; {n}"))
            .unwrap_or_default();
        RedisConnectionError::new_err(format!(
            "cannot connect to Redis at {server}: connection refused (is redis-server running?){note}"
        ))
    } else if err.is_timeout() {
        RedisConnectionError::new_err(format!("Redis at {server} did not answer in time: {err}"))
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
        RedisConnectionError::new_err(format!("connection to Redis at {server} failed: {err}"))
    } else if let (Some(code), Some(detail)) = (err.code(), err.detail()) {
        // as Redis writes it: "LOADING Redis is loading the dataset in memory"
        RedisCommandError::new_err(format!(
            "Redis at {server} returned an error: {code} {detail}"
        ))
    } else {
        RedisCommandError::new_err(format!("Redis at {server} returned an error: {err}"))
    }
}
