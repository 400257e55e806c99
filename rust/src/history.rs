//! Run history: an optional, bounded Redis Stream per run (`<run prefix>workflow:history:<runId>`)
//! of what happened in it (node starts, finishes and errors with their inputs and outputs, every
//! context write), read back to replay a run's context or fork a run from a recorded point.
//!
//! Entries cross the Python/Rust line as (run id, type, JSON text) triples, encoded by Python
//! (python/flowcraft_fast/runtime/history.py); this module only moves them. Workers append the
//! entries of a whole commit batch in one pipeline, so history costs one round trip per batch,
//! never one per step.

use std::collections::HashSet;
use std::sync::Arc;

use pyo3::prelude::*;

use crate::queue::{Inner, Queue};

/// Entries of one run above this bound are trimmed exactly (`MAXLEN =`); above it approximately
/// (`MAXLEN ~`, whole stream nodes at a time, cheaper): Redis keeps up to ~100 entries per
/// stream node, so an approximate bound would never trim a small history.
const EXACT_TRIM_UP_TO: usize = 1000;

/// The stream field names of one entry.
const TYPE_FIELD: &str = "t";
const DATA_FIELD: &str = "d";

/// The history streams of one queue's (or partition's) runs, each bounded to `max_entries`.
#[pyclass(module = "flowcraft_fast._core", frozen)]
pub struct History {
    inner: Arc<Inner>,
    max_entries: usize,
}

#[pymethods]
impl History {
    #[new]
    fn new(queue: &Queue, max_entries: usize) -> PyResult<Self> {
        if max_entries == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "max_entries must be at least 1 (history off means no History object)",
            ));
        }
        Ok(Self {
            inner: queue.inner().clone(),
            max_entries,
        })
    }

    /// The most entries one run's stream keeps (the oldest go first).
    #[getter]
    fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The stream key of `run_id` (its partition's run prefix in front, so it shares the run's
    /// hash tag).
    fn key(&self, run_id: &str) -> String {
        self.inner.runs.history(run_id)
    }

    /// Append (run id, entry type, JSON data) entries, in order, in one pipeline; each run's
    /// stream is trimmed to `max_entries` and expires `state_ttl_s` after its last append (when
    /// the run ends, with its other keys).
    fn append<'py>(
        &self,
        py: Python<'py>,
        entries: Vec<(String, String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (inner, max) = (self.inner.clone(), self.max_entries);
        crate::runtime::future_into_py(py, async move {
            if entries.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            let mut seen = HashSet::new();
            let trim = if max <= EXACT_TRIM_UP_TO { "=" } else { "~" };
            for (run_id, kind, data) in &entries {
                let key = inner.runs.history(run_id);
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg(trim)
                    .arg(max)
                    .arg("*")
                    .arg(TYPE_FIELD)
                    .arg(kind)
                    .arg(DATA_FIELD)
                    .arg(data)
                    .ignore();
                seen.insert(run_id.as_str()); // each run's expiry is set once, below
            }
            for run_id in seen {
                pipe.cmd("EXPIRE")
                    .arg(inner.runs.history(run_id))
                    .arg(inner.state_ttl_s)
                    .ignore();
            }
            let mut m = inner.conn.manager().await?;
            let (): () = pipe
                .query_async(&mut m)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok(())
        })
    }

    /// Every entry of `run_id`'s history, oldest first: (entry id, type, JSON data); empty when
    /// it has none (history off, or expired).
    fn read<'py>(&self, py: Python<'py>, run_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let (inner, key) = (self.inner.clone(), self.key(run_id));
        crate::runtime::future_into_py(py, async move {
            let mut m = inner.conn.manager().await?;
            let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query_async(&mut m)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok(raw.into_iter().map(entry).collect::<Vec<_>>())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "History({}, max_entries={})",
            self.inner.q.base(),
            self.max_entries
        )
    }
}

/// One stream entry as (id, type, data): its fields are `t` and `d` (anything else is ignored).
fn entry((id, fields): (String, Vec<String>)) -> (String, String, String) {
    let (mut kind, mut data) = (String::new(), String::from("null"));
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            TYPE_FIELD => kind.clone_from(&pair[1]),
            DATA_FIELD => data.clone_from(&pair[1]),
            _ => {}
        }
    }
    (id, kind, data)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<History>()
}

#[cfg(test)]
mod tests {
    use super::entry;

    #[test]
    fn entry_reads_its_fields_in_any_order() {
        let raw = (
            "1-0".to_string(),
            vec![
                "d".into(),
                "{\"a\":1}".into(),
                "t".into(),
                "node:start".into(),
            ],
        );
        assert_eq!(
            entry(raw),
            ("1-0".into(), "node:start".into(), "{\"a\":1}".into())
        );
        assert_eq!(
            entry(("2-0".into(), vec![])),
            ("2-0".into(), String::new(), "null".into())
        );
    }
}
