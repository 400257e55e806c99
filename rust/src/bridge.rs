//! Handing the native runtime's results to asyncio without taking the GIL on the I/O side.
//!
//! `pyo3_async_runtimes` delivers every result from a blocking-pool thread that takes the GIL,
//! builds the Python objects and calls `call_soon_threadsafe`: a thread hop and a GIL
//! hand-over per call, contended by the event loop's own thread (a profile of a busy client
//! shows those threads waiting for the GIL most of their time). Here a finished future only
//! pushes its result, still Rust values, on its event loop's completion queue and, when the
//! queue was empty, writes the loop's eventfd. The loop watches that fd (`add_reader`) and
//! drains the queue in its own thread: it converts and sets every result found, in one go.
//!
//! One queue per event loop (a weak map from loop to its `Completions`); a loop that cannot
//! watch a file descriptor, or cannot be weakly referenced, keeps the `pyo3_async_runtimes`
//! path. Cancelling the Python future aborts the Rust task.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;

/// A result on its way to Python: converted by the loop's thread, which holds the GIL anyway.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

struct Finished {
    future: Py<PyAny>,
    result: Convert,
}

struct Channel {
    finished: Mutex<Vec<Finished>>,
    /// The eventfd was written since the loop last drained: later results need no write.
    signalled: AtomicBool,
    fd: OwnedFd,
}

impl Channel {
    fn push(&self, item: Finished) {
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(item);
        if !self.signalled.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: an eventfd takes one 8-byte counter increment; it cannot overflow here
            // (the loop's read resets it) and a failed write only delays the wake-up to the
            // next result's.
            unsafe { libc::write(self.fd.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
        }
    }
}

/// One event loop's completion queue; the loop calls `drain` when `fd` is readable.
#[pyclass(module = "flowcraft_fast._core", frozen)]
pub struct Completions {
    channel: Arc<Channel>,
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        // SAFETY: eventfd takes no pointers; a negative return is an error, checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            return Err(PyOSError::new_err(format!("eventfd: {err}")));
        }
        Ok(Self {
            channel: Arc::new(Channel {
                finished: Mutex::new(Vec::new()),
                signalled: AtomicBool::new(false),
                // SAFETY: `fd` was just created and is owned by nothing else.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
            }),
        })
    }

    /// The eventfd the event loop watches.
    #[getter]
    fn fd(&self) -> RawFd {
        self.channel.fd.as_raw_fd()
    }

    /// Set the result (or exception) of every future that finished since the last call.
    fn drain(&self, py: Python<'_>) {
        let mut counter = 0u64;
        // SAFETY: reads the 8-byte counter into a local (EAGAIN when nothing was written).
        unsafe {
            libc::read(
                self.channel.fd.as_raw_fd(),
                std::ptr::from_mut(&mut counter).cast(),
                8,
            )
        };
        self.channel.signalled.store(false, Ordering::Release);
        let batch = std::mem::take(
            &mut *self
                .channel
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for item in batch {
            if let Err(e) = deliver(py, item) {
                e.write_unraisable(py, None);
            }
        }
    }
}

fn deliver(py: Python<'_>, item: Finished) -> PyResult<()> {
    let future = item.future.bind(py);
    if future.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(()); // cancelled: whoever awaited it gave up
    }
    match (item.result)(py) {
        Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
        Err(e) => future.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
    };
    Ok(())
}

/// Aborts the Rust task when its Python future is done (a no-op once the task finished).
#[pyclass(module = "flowcraft_fast._core", frozen)]
struct AbortTask(tokio::task::AbortHandle);

#[pymethods]
impl AbortTask {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        self.0.abort();
    }
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CHANNELS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The running loop and its completion queue (made and watched on first use); None when the
/// loop cannot watch an fd or be weakly referenced.
fn channel_of(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Option<Arc<Channel>>)> {
    let get_loop = GET_RUNNING_LOOP.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
    })?;
    let event_loop = get_loop.bind(py).call0()?;
    let channels = CHANNELS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("weakref")?
                    .getattr("WeakKeyDictionary")?
                    .call0()?
                    .unbind(),
            )
        })?
        .bind(py);
    let known = channels.call_method1(intern!(py, "get"), (&event_loop,))?;
    if !known.is_none() {
        return Ok((
            event_loop,
            known
                .cast::<Completions>()
                .ok()
                .map(|c| c.get().channel.clone()),
        ));
    }
    let completions = Bound::new(py, Completions::new()?)?;
    let watched = event_loop.call_method1(
        intern!(py, "add_reader"),
        (
            completions.get().fd(),
            completions.getattr(intern!(py, "drain"))?,
        ),
    );
    let entry = if watched.is_ok() {
        completions.clone().into_any()
    } else {
        false.into_bound_py_any(py)? // NotImplementedError and the like: the fallback
    };
    if channels.set_item(&event_loop, &entry).is_err() {
        if watched.is_ok() {
            event_loop.call_method1(intern!(py, "remove_reader"), (completions.get().fd(),))?;
        }
        return Ok((event_loop, None));
    }
    let channel = watched.is_ok().then(|| completions.get().channel.clone());
    Ok((event_loop, channel))
}

/// Run `fut` on the native runtime and return an asyncio future of its result, delivered
/// through the running loop's completion queue; None when that loop has none (the caller
/// then uses `pyo3_async_runtimes`).
pub fn spawn<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Result<Bound<'py, PyAny>, F>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let (event_loop, Some(channel)) = channel_of(py)? else {
        return Ok(Err(fut));
    };
    let future = event_loop.call_method0(intern!(py, "create_future"))?;
    let handle = future.clone().unbind();
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let out = AssertUnwindSafe(fut).catch_unwind().await;
        let result: Convert = match out {
            Ok(result) => Box::new(move |py| result.and_then(|v| v.into_py_any(py))),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Box::new(move |_| {
                    Err(PyRuntimeError::new_err(format!(
                        "native task panicked: {what}"
                    )))
                })
            }
        };
        channel.push(Finished {
            future: handle,
            result,
        });
    });
    future.call_method1(
        intern!(py, "add_done_callback"),
        (AbortTask(task.abort_handle()),),
    )?;
    Ok(Ok(future))
}
