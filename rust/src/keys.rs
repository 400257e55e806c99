//! Every Redis key shape of flowcraft-fast, in one place.
//!
//! Queue keys follow BullMQ: `<prefix>:<queue>:<suffix>` and one hash per job
//! `<prefix>:<queue>:<jobId>` (lock `<...>:<jobId>:lock`). Run keys follow the TypeScript
//! Flowcraft: `workflow:state:<runId>` holds the context (one JSON field per key) and
//! `workflow:status:<runId>` the final result; `workflow:run:<runId>` (status, pending jobs,
//! routing decisions, join counters) and `workflow:joins:<runId>` (join arrivals) are ours.
//! A deployment may put a key prefix in front of the run keys. For Redis Cluster, a queue name
//! and run ids carrying the same `{hash tag}` keep every key one script touches in one slot.

use pyo3::prelude::*;

pub const STATE_PREFIX: &str = "workflow:state:";
pub const RUN_PREFIX: &str = "workflow:run:";
pub const JOINS_PREFIX: &str = "workflow:joins:";
pub const STATUS_PREFIX: &str = "workflow:status:";

fn join(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        key.push_str(p);
    }
    key
}

/// The hash that holds one run's context.
pub fn state_key(prefix: &str, run_id: &str) -> String {
    join(&[prefix, STATE_PREFIX, run_id])
}

/// Keys of one run.
#[derive(Clone, Debug)]
pub struct RunKeys {
    prefix: String,
}

impl RunKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    pub fn state(&self, run_id: &str) -> String {
        join(&[&self.prefix, STATE_PREFIX, run_id])
    }
    pub fn meta(&self, run_id: &str) -> String {
        join(&[&self.prefix, RUN_PREFIX, run_id])
    }
    pub fn joins(&self, run_id: &str) -> String {
        join(&[&self.prefix, JOINS_PREFIX, run_id])
    }
    pub fn status(&self, run_id: &str) -> String {
        join(&[&self.prefix, STATUS_PREFIX, run_id])
    }
    pub fn state_prefix(&self) -> String {
        join(&[&self.prefix, STATE_PREFIX])
    }
    pub fn meta_prefix(&self) -> String {
        join(&[&self.prefix, RUN_PREFIX])
    }
}

/// Keys of one BullMQ queue.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    base: String,
}

impl QueueKeys {
    pub fn new(prefix: &str, queue: &str) -> Self {
        Self {
            base: join(&[prefix, ":", queue, ":"]),
        }
    }
    /// `<prefix>:<queue>:`, the prefix scripts build job keys from.
    pub fn base(&self) -> &str {
        &self.base
    }
    pub fn key(&self, suffix: &str) -> String {
        join(&[&self.base, suffix])
    }
    pub fn job(&self, job_id: &str) -> String {
        self.key(job_id)
    }
    pub fn lock(&self, job_id: &str) -> String {
        join(&[&self.base, job_id, ":lock"])
    }
    /// Hash of the blueprints served on this queue: id -> JSON, and `<id>\x1fversion` -> the
    /// version the workers serve (checked by the start script).
    pub fn blueprints(&self) -> String {
        self.key("flowcraft:blueprints")
    }
    /// Pub/sub channel announcing runs that ended early (failed, cancelled): workers stop their
    /// nodes at once.
    pub fn stops_channel(&self) -> String {
        self.key("flowcraft:stops")
    }
    /// Sorted set of this queue's unfinished runs, scored by their last progress (ms).
    pub fn active_runs(&self) -> String {
        self.key("flowcraft:runs")
    }
}

/// Exposed so Python code and tests build keys the same way instead of spelling them again.
#[pyfunction(name = "state_key")]
fn py_state_key(prefix: &str, run_id: &str) -> String {
    state_key(prefix, run_id)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_state_key, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{state_key, QueueKeys, RunKeys};

    #[test]
    fn state_key_matches_flowcraft_layout() {
        assert_eq!(state_key("", "run-1"), "workflow:state:run-1");
        assert_eq!(state_key("{q}:", "r"), "{q}:workflow:state:r");
    }

    #[test]
    fn queue_keys_match_bullmq_layout() {
        let q = QueueKeys::new("bull", "flows");
        assert_eq!(q.key("wait"), "bull:flows:wait");
        assert_eq!(q.job("7"), "bull:flows:7");
        assert_eq!(q.lock("7"), "bull:flows:7:lock");
        let r = RunKeys::new("");
        assert_eq!(r.status("x"), "workflow:status:x");
        assert_eq!(r.meta("x"), "workflow:run:x");
    }
}
