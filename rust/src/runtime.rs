//! The tokio runtime that carries all Redis I/O, created lazily once per process.
//!
//! A forked child must not reuse the parent's runtime (its threads did not survive the fork):
//! the process id is remembered and a use after `fork()` is refused with a clear error.

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

static CREATED_IN: OnceLock<u32> = OnceLock::new();

/// Check that the shared runtime belongs to this process, initialising it on first use.
pub fn ensure_same_process() -> PyResult<()> {
    let pid = std::process::id();
    let owner = *CREATED_IN.get_or_init(|| pid);
    if owner == pid {
        Ok(())
    } else {
        Err(PyRuntimeError::new_err(
            "flowcraft_fast._core was used before fork(); create connections in the child process",
        ))
    }
}

/// rustls needs one process-wide crypto provider; ring builds with only a C compiler.
pub fn install_tls_provider() {
    // An error means a provider is already installed (by us or the host), which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Configure the tokio runtime that carries all Redis I/O: one worker thread. Every Redis
/// connection of a process is multiplexed by a driver task, so one thread keeps each request's
/// hops (Python call -> our task -> connection driver -> reply) on one core instead of bouncing
/// between threads; a second core stays free for user code.
pub fn configure() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(1)
        .thread_name("flowcraft-io")
        .enable_all();
    pyo3_async_runtimes::tokio::init(builder);
}
