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
pub const HISTORY_PREFIX: &str = "workflow:history:";

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
    /// The run's history stream (history.rs), when history is on: bounded, and expiring with
    /// the run's other keys.
    pub fn history(&self, run_id: &str) -> String {
        join(&[&self.prefix, HISTORY_PREFIX, run_id])
    }
    pub fn state_prefix(&self) -> String {
        join(&[&self.prefix, STATE_PREFIX])
    }
    pub fn meta_prefix(&self) -> String {
        join(&[&self.prefix, RUN_PREFIX])
    }
    pub fn status_prefix(&self) -> String {
        join(&[&self.prefix, STATUS_PREFIX])
    }
}

/// Keys of one BullMQ queue.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    base: String,
    prefix: String,
    name: String,
}

impl QueueKeys {
    pub fn new(prefix: &str, queue: &str) -> Self {
        Self {
            base: join(&[prefix, ":", queue, ":"]),
            prefix: prefix.to_string(),
            name: queue.to_string(),
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
    /// Sorted set of this queue's ended runs, scored by their end (ms): written by the script
    /// that ends a run (lib.lua `end_run`), bounded by `trim_ended` (runs whose keys expired
    /// leave it, and past 10,000 the oldest); what `flowcraft-fast runs` and the dashboard list.
    pub fn ended_runs(&self) -> String {
        self.key("flowcraft:runs:ended")
    }

    /// The queue's singleton runs (hash: singleton key -> run id), `client.start(...,
    /// singleton_key=K)`. lib.lua's `end_run` derives it from `active_runs` (+ ":singletons").
    pub fn singletons(&self) -> String {
        self.key("flowcraft:runs:singletons")
    }
}

/// Flow control (limits.rs, scripts/limit.lua): per group (a digest of its name, see
/// python/flowcraft_fast/runtime/limits.py) a holders zset and a waiting list; per queue the
/// groups' names and limits, and the set of groups with waiters. limit.lua's sweep derives the
/// two group keys from the digest the same way (`group_keys`).
impl QueueKeys {
    pub fn limit_holders(&self, digest: &str) -> String {
        join(&[&self.base, "flowcraft:limit:", digest])
    }
    pub fn limit_waiting(&self, digest: &str) -> String {
        join(&[&self.base, "flowcraft:limit:", digest, ":waiting"])
    }
    /// Hash: group digest -> "<limit>\x1f<name>" (a rate group: "r<max>/<ms>\x1f<name>").
    pub fn limits(&self) -> String {
        self.key("flowcraft:limits")
    }
    /// Set of the concurrency groups with waiting jobs (the stalled loop's sweep).
    pub fn limits_waiting(&self) -> String {
        self.key("flowcraft:limits:waiting")
    }
    /// A rate group's counter base: `<base>:<window index>` counts a window's starts.
    pub fn rate(&self, digest: &str) -> String {
        join(&[&self.base, "flowcraft:rate:", digest])
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

/// Live workers (workers.rs): each worker process's heartbeat record, and the index of them.
impl QueueKeys {
    /// Sorted set of the queue's worker ids, scored by their last heartbeat (Redis time, ms).
    pub fn workers(&self) -> String {
        self.key("flowcraft:workers")
    }
    /// One worker's heartbeat record: a hash (host, pid, version, blueprints served, in-flight,
    /// started, lastBeat...) that expires unless the worker beats again.
    pub fn worker(&self, worker_id: &str) -> String {
        join(&[&self.base, "flowcraft:worker:", worker_id])
    }

    /// The names a worker gives its Redis connections (CLIENT SETNAME) so that BullMQ tools
    /// list it: their `Queue.getWorkers` reads CLIENT LIST and keeps the clients named
    /// `<name>` or `<name>:w:<worker name>`, where `<name>` is, for BullMQ on Node (bull-board,
    /// Taskforce; bullmq 5.x `QueueBase.clientName`) `<prefix>:<queue name in base64>`, and for
    /// the Python `bullmq` package (3.x `RedisBackend.clientName`) `<prefix>:<queue name>`.
    /// A connection has one name, so a worker names its main connection the Node way and its
    /// blocking connection the Python way: each tool lists each worker process once. None for
    /// a name Redis would refuse (it allows only printable ASCII without spaces).
    pub fn client_names(&self, worker_id: &str) -> (Option<String>, Option<String>) {
        let valid = |name: String| name.bytes().all(|b| b.is_ascii_graphic()).then_some(name);
        let node = join(&[
            &self.prefix,
            ":",
            &base64(self.name.as_bytes()),
            ":w:",
            worker_id,
        ]);
        let python = join(&[&self.prefix, ":", &self.name, ":w:", worker_id]);
        (valid(node), valid(python))
    }
}

/// Standard base64 with padding (what Node's `Buffer.toString('base64')` gives).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{base64, state_key, QueueKeys, RunKeys};

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"flowcraft-queue"), "Zmxvd2NyYWZ0LXF1ZXVl");
        assert_eq!(base64("é?>".as_bytes()), "w6k/Pg==");
    }

    #[test]
    fn worker_keys_and_client_names() {
        let q = QueueKeys::new("bull", "flows");
        assert_eq!(q.workers(), "bull:flows:flowcraft:workers");
        assert_eq!(q.worker("w1@ab"), "bull:flows:flowcraft:worker:w1@ab");
        let (node, python) = q.client_names("w1@ab");
        assert_eq!(node.as_deref(), Some("bull:Zmxvd3M=:w:w1@ab"));
        assert_eq!(python.as_deref(), Some("bull:flows:w:w1@ab"));
        let spaced = QueueKeys::new("bull", "my flows");
        let (node, python) = spaced.client_names("w");
        assert_eq!(node.as_deref(), Some("bull:bXkgZmxvd3M=:w:w"));
        assert_eq!(python, None);
    }

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
        assert_eq!(q.ended_runs(), "bull:flows:flowcraft:runs:ended");
        assert_eq!(q.limit_holders("ab12"), "bull:flows:flowcraft:limit:ab12");
        assert_eq!(
            q.limit_waiting("ab12"),
            "bull:flows:flowcraft:limit:ab12:waiting"
        );
        assert_eq!(q.rate("ab12"), "bull:flows:flowcraft:rate:ab12");
        let r = RunKeys::new("");
        assert_eq!(r.status("x"), "workflow:status:x");
        assert_eq!(r.meta("x"), "workflow:run:x");
        assert_eq!(r.history("x"), "workflow:history:x");
        assert_eq!(RunKeys::new("{q}:").history("x"), "{q}:workflow:history:x");
    }
}
