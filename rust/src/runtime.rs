//! The tokio runtime that carries all Redis I/O, created lazily once per process.
//!
//! A forked child must not reuse the parent's runtime (its threads did not survive the fork):
//! the process id is remembered and a use after `fork()` is refused with a clear error.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
    EPOCH.get_or_init(Instant::now);
}

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// When (µs after `EPOCH`) one of our futures last completed; 0: never.
static LAST_DONE_US: AtomicU64 = AtomicU64::new(0);
/// How long a completed future's result delivery may still be running on an I/O thread.
const SETTLE: Duration = Duration::from_millis(100);

fn now_us() -> u64 {
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Run `fut` on the native runtime; an asyncio future of its result.
///
/// Through the running loop's completion queue (`bridge`: no GIL on the I/O side), or, for a
/// loop that cannot have one, `pyo3_async_runtimes::tokio::future_into_py`, noting when the
/// future completes: handing a result to asyncio that way (`call_soon_threadsafe`) briefly
/// releases the GIL on an I/O thread; if the interpreter finalizes in that window the thread
/// cannot take the GIL back and the process aborts. `settle_at_exit` (registered with
/// `atexit`) waits that window out.
pub fn future_into_py<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let fut = match crate::bridge::spawn(py, fut)? {
        Ok(future) => return Ok(future),
        Err(fut) => fut,
    };
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let out = fut.await;
        LAST_DONE_US.store(now_us().max(1), Ordering::Relaxed);
        out
    })
}

/// Registered with `atexit`: if a result was handed to asyncio moments ago, give the I/O thread
/// the time to finish delivering it before the interpreter goes away.
#[pyfunction]
pub fn settle_at_exit(py: Python<'_>) {
    let last = LAST_DONE_US.load(Ordering::Relaxed);
    if last == 0 {
        return;
    }
    let since = Duration::from_micros(now_us().saturating_sub(last));
    if since < SETTLE {
        py.detach(|| std::thread::sleep(SETTLE.saturating_sub(since)));
    }
}
