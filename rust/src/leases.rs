//! Lease renewal in Rust: one tokio task per queue renews the leases of every job the process
//! has in flight, in one script call per heartbeat, whatever Python's event loop is doing.
//!
//! Jobs whose lease was lost, or whose run ended elsewhere (cancelled, failed), are reported
//! back through `take_events`, so the worker can stop their nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tokio::task::JoinHandle;

use crate::conn::Connection;
use crate::keys::{QueueKeys, RunKeys};
use crate::scripts::{eval_one, Call, Scripts};
use crate::vocabulary::is_live;

#[derive(Default)]
pub struct Leases {
    /// job id -> (token, run id)
    held: Mutex<HashMap<String, (String, String)>>,
    /// (job id, token, "lost" or the run's status) for claims that must stop
    events: Mutex<Vec<(String, String, String)>>,
    task: Mutex<Option<JoinHandle<()>>>,
    pub renew_calls: AtomicU64,
    /// Renew calls that failed (Redis unreachable, or it answered an error).
    pub renew_errors: AtomicU64,
}

impl Leases {
    pub fn track(&self, job_id: String, token: String, run_id: String) {
        self.held
            .lock()
            .expect("lease map")
            .insert(job_id, (token, run_id));
    }

    pub fn untrack(&self, job_id: &str, token: &str) {
        let mut held = self.held.lock().expect("lease map");
        if held.get(job_id).is_some_and(|(t, _)| t == token) {
            held.remove(job_id);
        }
    }

    pub fn take_events(&self) -> Vec<(String, String, String)> {
        std::mem::take(&mut *self.events.lock().expect("lease events"))
    }

    pub fn held(&self) -> usize {
        self.held.lock().expect("lease map").len()
    }

    pub fn stop(&self) {
        if let Some(task) = self.task.lock().expect("lease task").take() {
            task.abort();
        }
    }

    /// Start the heartbeat (once): every `renew_ms`, renew all held leases for `lease_ms`.
    pub fn start(
        self: &Arc<Self>,
        conn: Connection,
        q: QueueKeys,
        runs: RunKeys,
        lease_ms: u64,
        renew_ms: u64,
    ) {
        let mut slot = self.task.lock().expect("lease task");
        if slot.is_some() {
            return;
        }
        let leases = Arc::clone(self);
        let scripts = Scripts::new();
        let period = Duration::from_millis(renew_ms.max(10));
        *slot = Some(pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let jobs: Vec<(String, String, String)> = leases
                    .held
                    .lock()
                    .expect("lease map")
                    .iter()
                    .map(|(id, (token, run))| (id.clone(), token.clone(), run.clone()))
                    .collect();
                if jobs.is_empty() {
                    continue;
                }
                let mut args = vec![
                    q.base().to_string(),
                    lease_ms.to_string(),
                    runs.meta_prefix(),
                ];
                for (id, token, run) in &jobs {
                    args.extend([id.clone(), token.clone(), run.clone()]);
                }
                let Ok(mut m) = conn.manager().await else {
                    leases.renew_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                leases.renew_calls.fetch_add(1, Ordering::Relaxed);
                let Ok(Value::Array(replies)) =
                    eval_one(&mut m, &scripts.renew, Call { keys: vec![], args }).await
                else {
                    // Redis unreachable: try again next beat, the lease may survive
                    leases.renew_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut stop = Vec::new();
                for ((id, token, _), reply) in jobs.into_iter().zip(replies) {
                    let status = match reply {
                        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                        Value::SimpleString(s) => s,
                        _ => String::new(),
                    };
                    if !is_live(&status) {
                        stop.push((id, token, status));
                    }
                }
                if !stop.is_empty() {
                    // Only the claim that was renewed stops: the same job may have been claimed
                    // again (a re-delivered copy) while the renewal was on its way.
                    let mut held = leases.held.lock().expect("lease map");
                    for (id, token, _) in &stop {
                        if held.get(id).is_some_and(|(t, _)| t == token) {
                            held.remove(id);
                        }
                    }
                    drop(held);
                    leases.events.lock().expect("lease events").extend(stop);
                }
            }
        }));
    }
}
