//! Native core of flowcraft-fast, imported by Python as `flowcraft_fast._core`.
//!
//! This file is only the table of contents: each module owns one concern.

use pyo3::prelude::*;

mod bridge; // results to asyncio through one eventfd per event loop, without the GIL
mod conn; // connections: URLs, TLS, ACL users, redis-py clients
mod errors; // the exceptions Python sees
mod history; // optional per-run history streams: append in batches, read, expire
mod hot_path; // claim, commit, retry, renew: one round trip per batch
mod keys; // every Redis key shape
mod leases; // lease renewal in a tokio task
mod limits; // flow control: per-key concurrency and rate limits
mod queue; // the Queue class (thin wrappers over hot_path, runs, reads)
mod reads; // reads of runs and of the queue
mod replies; // what crosses to Python, and parsing script replies into it
mod retry; // the one retry policy: LOADING, BUSY, broken connections, until a deadline
mod runs; // run administration: start, cancel, resume, reconcile, stalled jobs
mod runtime; // the tokio runtime and handing results to asyncio
mod scripts; // the Lua scripts and how they are sent
mod state; // the StateStore class (a run's state hash)
mod stops; // listening for runs that ended early
mod survey; // which unfinished runs the reconciler must repair
mod topology; // one server, a Redis Cluster, or the primary sentinels name
mod vocabulary; // run statuses and field names
mod waits; // waiting for run results on one shared subscription
mod workers; // live workers: heartbeat records and connection names BullMQ tools list

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
    state::register(m)?;
    queue::register(m)?;
    history::register(m)?;
    keys::register(m)?;
    scripts::register(m)?;
    Ok(())
}
