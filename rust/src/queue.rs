//! The queue hot path: claim a batch of jobs, commit a batch of finished nodes, renew leases,
//! requeue stalled jobs, start runs, wait for results. Each Python call is one Redis round trip
//! (a pipeline of script calls) however many jobs it carries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use redis::{AsyncCommands, Value};

use crate::conn::{Connection, RedisConnection};
use crate::keys::{QueueKeys, RunKeys};
use crate::leases::Leases;
use crate::scripts::{eval_many, eval_mixed, eval_one, Call, Scripts};
use crate::stops::Stops;

/// A claimed job: (id, lease token, data JSON, attempts made, attempts started, opts JSON,
/// input JSON carried by the job (None: resolve it), run id, resume payload JSON, slept flag).
type Claimed = (
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    String,
    Option<String>,
    bool,
);

/// The runs of claimed jobs, each once: run id -> (status, state fields as JSON text).
type ClaimedRuns = HashMap<String, (String, HashMap<String, String>)>;

/// What one claim returns: (next delayed job due time in ms or 0, runs, jobs).
type ClaimReply = (i64, ClaimedRuns, Vec<Claimed>);

/// One arrival of a finished node at a successor: (target node key, predecessor id, value JSON
/// or "\x01" for skipped, join strategy, all predecessor ids of the target, successor job id,
/// successor job data, successor job opts).
type Arrival = (
    String,
    String,
    String,
    String,
    Vec<String>,
    String,
    String,
    String,
);

/// One finished node: (job id, token, run id, node key, mode, job result text, status payload,
/// context sets, context deletes, route JSON, arrivals).
type Commit = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Vec<(String, String)>,
    Vec<String>,
    String,
    Vec<Arrival>,
);

struct Inner {
    conn: Connection,
    blocking: Connection,
    q: QueueKeys,
    runs: RunKeys,
    scripts: Scripts,
    state_ttl_s: u64,
    keep_completed: i64,
    keep_failed: i64,
    leases: Arc<Leases>,
    stops: Arc<Stops>,
}

/// A BullMQ-layout queue of flowcraft node jobs.
#[pyclass(module = "flowcraft_fast._core", frozen)]
pub struct Queue {
    inner: Arc<Inner>,
}

fn bad_reply(what: &str, v: &Value) -> PyErr {
    PyRuntimeError::new_err(format!("unexpected reply from the {what} script: {v:?}"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => text(other).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

fn parse_job(v: &Value) -> Option<Claimed> {
    let Value::Array(f) = v else { return None };
    if f.len() < 10 {
        return None;
    }
    Some((
        text(&f[0])?,
        text(&f[1])?,
        text(&f[2])?,
        int(&f[3]),
        int(&f[4]),
        text(&f[5]).unwrap_or_else(|| "{}".into()),
        text(&f[6]),
        text(&f[7])?,
        text(&f[8]),
        text(&f[9]).is_some(),
    ))
}

fn parse_state(v: &Value) -> Option<HashMap<String, String>> {
    let mut state = HashMap::new();
    if let Value::Array(flat) = v {
        for pair in flat.chunks(2) {
            if let [k, v] = pair {
                state.insert(text(k)?, text(v)?);
            }
        }
    }
    Some(state)
}

fn parse_claim(reply: &Value) -> PyResult<ClaimReply> {
    let Value::Array(items) = reply else {
        return Err(bad_reply("claim", reply));
    };
    let next = items.first().map_or(0, int);
    let mut runs = HashMap::new();
    if let Some(Value::Array(flat)) = items.get(1) {
        for triple in flat.chunks(3) {
            if let [id, status, state] = triple {
                let id = text(id).ok_or_else(|| bad_reply("claim", reply))?;
                let state = parse_state(state).ok_or_else(|| bad_reply("claim", reply))?;
                runs.insert(id, (text(status).unwrap_or_default(), state));
            }
        }
    }
    let mut jobs = Vec::with_capacity(items.len().saturating_sub(2));
    for item in items.iter().skip(2) {
        jobs.push(parse_job(item).ok_or_else(|| bad_reply("claim", item))?);
    }
    Ok((next, runs, jobs))
}

impl Inner {
    /// One script call on the queue's connection, its error turned into a Python exception.
    async fn eval(&self, script: &redis::Script, call: Call) -> PyResult<Value> {
        let mut m = self.conn.manager().await?;
        eval_one(&mut m, script, call)
            .await
            .map_err(|e| self.conn.error(&e))
    }

    fn claim_call(&self, max_jobs: usize, lease_ms: u64, token_prefix: String) -> Call {
        let q = &self.q;
        Call {
            keys: vec![
                q.key("wait"),
                q.key("active"),
                q.key("delayed"),
                q.key("marker"),
                q.key("meta"),
                q.key("failed"),
                q.key("prioritized"),
                q.key("completed"),
            ],
            args: vec![
                q.base().to_string(),
                token_prefix,
                lease_ms.to_string(),
                max_jobs.to_string(),
                self.runs.state_prefix(),
                self.runs.meta_prefix(),
            ],
        }
    }

    fn commit_call(&self, c: &Commit, claim_follows: bool) -> Call {
        let (job_id, token, run_id, node_key, mode, result, payload, sets, dels, route, arrivals) =
            c;
        let q = &self.q;
        let mut keys = vec![
            q.job(job_id),
            q.lock(job_id),
            q.key("active"),
            q.key("completed"),
            q.key("failed"),
            q.key("wait"),
            q.key("marker"),
            q.key("events"),
            self.runs.state(run_id),
            self.runs.meta(run_id),
            self.runs.joins(run_id),
            self.runs.status(run_id),
            q.active_runs(),
        ];
        let mut args = vec![
            q.base().to_string(),
            job_id.clone(),
            token.clone(),
            node_key.clone(),
            mode.clone(),
            result.clone(),
            self.state_ttl_s.to_string(),
            self.keep_completed.to_string(),
            self.keep_failed.to_string(),
            run_id.clone(),
            payload.clone(),
            if claim_follows { "1" } else { "0" }.to_string(),
            q.stops_channel(),
            sets.len().to_string(),
        ];
        for (k, v) in sets {
            args.push(k.clone());
            args.push(v.clone());
        }
        args.push(dels.len().to_string());
        args.extend(dels.iter().cloned());
        args.push(route.clone());
        args.push(arrivals.len().to_string());
        for (target, pred, value, strategy, preds, succ_id, succ_data, succ_opts) in arrivals {
            keys.push(q.job(succ_id));
            args.extend([
                target.clone(),
                pred.clone(),
                value.clone(),
                strategy.clone(),
            ]);
            args.push(preds.len().to_string());
            args.extend(preds.iter().cloned());
            args.extend([succ_id.clone(), succ_data.clone(), succ_opts.clone()]);
        }
        Call { keys, args }
    }
}

#[pymethods]
impl Queue {
    #[new]
    #[pyo3(signature = (connection, name, *, prefix="bull".to_string(), run_prefix=String::new(),
                        state_ttl_s=86_400, keep_completed=1000, keep_failed=5000))]
    fn new(
        connection: &RedisConnection,
        name: &str,
        prefix: String,
        run_prefix: String,
        state_ttl_s: u64,
        keep_completed: i64,
        keep_failed: i64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: connection.conn.clone(),
                blocking: connection.conn.dedicated(),
                q: QueueKeys::new(&prefix, name),
                runs: RunKeys::new(&run_prefix),
                scripts: Scripts::new(),
                state_ttl_s,
                keep_completed,
                keep_failed,
                leases: Arc::new(Leases::default()),
                stops: Arc::new(Stops::default()),
            }),
        }
    }

    /// `<prefix>:<queue>:`
    #[getter]
    fn key_base(&self) -> String {
        self.inner.q.base().to_string()
    }

    /// Claim up to `max_jobs` ready jobs with a lease of `lease_ms` each, in one round trip.
    /// Returns (next delayed job due time in ms or 0, the jobs' runs, claimed jobs).
    fn claim<'py>(
        &self,
        py: Python<'py>,
        max_jobs: usize,
        lease_ms: u64,
        token_prefix: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let call = inner.claim_call(max_jobs, lease_ms, token_prefix);
            let reply = inner.eval(&inner.scripts.claim, call).await?;
            parse_claim(&reply)
        })
    }

    /// Start renewing the leases of tracked jobs every `lease_ms / 3`, in Rust.
    fn start_heartbeat(&self, lease_ms: u64) {
        let i = &self.inner;
        i.leases
            .start(i.conn.clone(), i.q.clone(), i.runs.clone(), lease_ms);
    }

    fn stop_heartbeat(&self) {
        self.inner.leases.stop();
        self.inner.stops.stop();
    }

    /// Listen on the queue's stops channel for runs that ended early (failed, cancelled).
    fn listen_for_stops(&self) {
        let i = &self.inner;
        i.stops.start(i.conn.clone(), i.q.stops_channel());
    }

    /// Runs announced on the stops channel since the last call.
    fn stopped_runs(&self) -> Vec<String> {
        self.inner.stops.take()
    }

    /// Keep renewing this job's lease until `untrack`.
    fn track(&self, job_id: String, token: String, run_id: String) {
        self.inner.leases.track(job_id, token, run_id);
    }

    /// Stop renewing this claim's lease (a later claim of the same job keeps its own).
    fn untrack(&self, job_id: &str, token: &str) {
        self.inner.leases.untrack(job_id, token);
    }

    /// Claims to stop since the last call: (job id, lease token, "lost" or the status of their
    /// ended run).
    fn lease_events(&self) -> Vec<(String, String, String)> {
        self.inner.leases.take_events()
    }

    /// (tracked jobs, renew calls made)
    fn lease_stats(&self) -> (usize, u64) {
        let l = &self.inner.leases;
        (
            l.held(),
            l.renew_calls.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Block (on a dedicated connection) until the queue's marker says work may be ready, at most
    /// `timeout_s` seconds. Returns True when woken by a marker.
    fn wait_for_work<'py>(&self, py: Python<'py>, timeout_s: f64) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = inner.blocking.manager().await?;
            let reply: Value = redis::cmd("BZPOPMIN")
                .arg(inner.q.key("marker"))
                .arg(timeout_s.max(0.001))
                .query_async(&mut m)
                .await
                .map_err(|e| inner.blocking.error(&e))?;
            Ok(!matches!(reply, Value::Nil))
        })
    }

    /// Commit many finished nodes in one round trip; one (code, detail, fired) per node. With
    /// `claim_max` > 0 the same round trip then claims up to that many ready jobs (the slots the
    /// committed nodes free), so a busy worker needs one round trip per step.
    #[pyo3(signature = (batch, claim_max=0, lease_ms=30_000, token_prefix=String::new()))]
    fn commit<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<Commit>,
        claim_max: usize,
        lease_ms: u64,
        token_prefix: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let mut calls: Vec<Call> = batch
                .iter()
                .map(|c| inner.commit_call(c, claim_max > 0))
                .collect();
            if claim_max > 0 {
                calls.push(inner.claim_call(claim_max, lease_ms, token_prefix));
            }
            let scripts = &inner.scripts;
            let pairs: Vec<(&redis::Script, &Call)> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        if i < batch.len() {
                            &scripts.commit
                        } else {
                            &scripts.claim
                        },
                        c,
                    )
                })
                .collect();
            let mut m = inner.conn.manager().await?;
            let (mut replies, reordered) = eval_mixed(&mut m, &pairs)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            if reordered && claim_max > 0 {
                // A commit ran after the claim that should have taken its new jobs (its script
                // had to be loaded first): raise the ready marker so they are claimed anyway.
                let (): () = m
                    .zadd(inner.q.key("marker"), "0", 0)
                    .await
                    .map_err(|e| inner.conn.error(&e))?;
            }
            let claimed = if claim_max > 0 {
                let reply = replies.pop().unwrap_or(Value::Nil).extract_error();
                Some(parse_claim(&reply.map_err(|e| inner.conn.error(&e))?)?)
            } else {
                None
            };
            Ok((
                replies.iter().map(commit_reply).collect::<Vec<_>>(),
                claimed,
            ))
        })
    }

    /// Send jobs back to the queue after a delay: (job id, token, delay ms, reason, why) each,
    /// `why` being "attempt" (a failed attempt), "sleep" (a sleep node parks itself) or "defer"
    /// (left for another worker).
    fn retry<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<(String, String, u64, String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let q = &inner.q;
            let calls: Vec<Call> = batch
                .into_iter()
                .map(|(id, token, delay, reason, why)| Call {
                    keys: vec![
                        q.job(&id),
                        q.lock(&id),
                        q.key("active"),
                        q.key("delayed"),
                        q.key("wait"),
                        q.key("marker"),
                        q.key("events"),
                    ],
                    args: vec![id, token, delay.to_string(), reason, why],
                })
                .collect();
            let mut m = inner.conn.manager().await?;
            let replies = eval_many(&mut m, &inner.scripts.retry, &calls)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok(replies
                .iter()
                .map(|v| text(v).unwrap_or_else(|| format!("{v:?}")))
                .collect::<Vec<_>>())
        })
    }

    /// Renew the leases of (job id, token, run id) jobs; per job the run's status or "lost".
    fn renew<'py>(
        &self,
        py: Python<'py>,
        jobs: Vec<(String, String, String)>,
        lease_ms: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            let mut args = vec![
                inner.q.base().to_string(),
                lease_ms.to_string(),
                inner.runs.meta_prefix(),
            ];
            for (id, token, run) in jobs {
                args.extend([id, token, run]);
            }
            let reply = inner
                .eval(&inner.scripts.renew, Call { keys: vec![], args })
                .await?;
            let Value::Array(items) = &reply else {
                return Err(bad_reply("renew", &reply));
            };
            Ok(items
                .iter()
                .map(|v| text(v).unwrap_or_default())
                .collect::<Vec<_>>())
        })
    }

    /// Return jobs whose lease expired to wait (at most once per `guard_ms` across workers).
    /// Returns (requeued ids, failed ids).
    fn requeue_stalled<'py>(
        &self,
        py: Python<'py>,
        max_stalls: u32,
        guard_ms: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let q = &inner.q;
            let call = Call {
                keys: vec![
                    q.key("active"),
                    q.key("wait"),
                    q.key("failed"),
                    q.key("marker"),
                    q.key("stalled-check"),
                    q.active_runs(),
                ],
                args: vec![
                    q.base().to_string(),
                    max_stalls.to_string(),
                    guard_ms.to_string(),
                    inner.runs.meta_prefix(),
                    inner.runs.status_prefix(),
                    inner.runs.state_prefix(),
                    inner.runs.joins_prefix(),
                    inner.state_ttl_s.to_string(),
                    q.stops_channel(),
                ],
            };
            let reply = inner.eval(&inner.scripts.stalled, call).await?;
            let Value::Array(items) = &reply else {
                return Ok((Vec::new(), Vec::new()));
            };
            let ids: Vec<String> = items.iter().filter_map(text).collect();
            let split = ids.iter().position(|s| s == "|").unwrap_or(ids.len());
            Ok((
                ids[..split].to_vec(),
                ids.get(split + 1..).unwrap_or_default().to_vec(),
            ))
        })
    }

    /// Create a run and enqueue its start jobs atomically; "ok" or "exists".
    fn start_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        blueprint_id: String,
        version: String,
        sets: Vec<(String, String)>,
        jobs: Vec<(String, String, String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let q = &inner.q;
            let mut keys = vec![
                inner.runs.state(&run_id),
                inner.runs.meta(&run_id),
                q.active_runs(),
                q.key("wait"),
                q.key("marker"),
                q.blueprints(),
            ];
            let mut args = vec![run_id, blueprint_id, version, sets.len().to_string()];
            for (k, v) in sets {
                args.extend([k, v]);
            }
            args.push(jobs.len().to_string());
            for (id, key, data, opts) in jobs {
                keys.push(q.job(&id));
                args.extend([id, key, data, opts]);
            }
            let reply = inner
                .eval(&inner.scripts.start, Call { keys, args })
                .await?;
            Ok(text(&reply).unwrap_or_default())
        })
    }

    /// End a live run as cancelled; "ok", the status it already had, or "missing".
    fn cancel_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        payload: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let r = &inner.runs;
            let call = Call {
                keys: vec![
                    r.state(&run_id),
                    r.meta(&run_id),
                    r.joins(&run_id),
                    r.status(&run_id),
                    inner.q.active_runs(),
                ],
                args: vec![
                    run_id.clone(),
                    inner.state_ttl_s.to_string(),
                    payload,
                    inner.q.stops_channel(),
                ],
            };
            let reply = inner.eval(&inner.scripts.cancel, call).await?;
            Ok(text(&reply).unwrap_or_default())
        })
    }

    /// Give a waiting node its result: enqueue a job carrying it. "ok", "missing" or
    /// "not-awaiting".
    #[allow(clippy::too_many_arguments)]
    fn resume_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        node_key: String,
        job_id: String,
        data: String,
        opts: String,
        payload: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let (r, q) = (&inner.runs, &inner.q);
            let call = Call {
                keys: vec![
                    r.meta(&run_id),
                    r.status(&run_id),
                    q.key("wait"),
                    q.key("marker"),
                    q.job(&job_id),
                    q.active_runs(),
                ],
                args: vec![run_id, node_key, job_id, data, opts, payload],
            };
            let reply = inner.eval(&inner.scripts.resume, call).await?;
            Ok(text(&reply).unwrap_or_default())
        })
    }

    /// Re-enqueue the fired-but-unfinished nodes of a live run whose jobs are gone or dead.
    /// Candidates: (node key, old job id, new job id, data, opts, rebuilt input or "").
    /// Returns the node keys enqueued.
    fn reconcile_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        candidates: Vec<(String, String, String, String, String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let q = &inner.q;
            let mut keys = vec![
                inner.runs.meta(&run_id),
                q.key("wait"),
                q.key("marker"),
                q.key("delayed"),
                q.active_runs(),
            ];
            let mut args = vec![run_id, candidates.len().to_string()];
            for (key, old, new, data, opts, input) in candidates {
                keys.extend([q.job(&old), q.lock(&old), q.job(&new)]);
                args.extend([key, old, new, data, opts, input]);
            }
            let reply = inner
                .eval(&inner.scripts.reconcile, Call { keys, args })
                .await?;
            let Value::Array(items) = &reply else {
                return Ok(Vec::new());
            };
            Ok(items.iter().filter_map(text).collect::<Vec<_>>())
        })
    }

    /// Runs of this queue without progress since `before_ms` (Redis time, ms), oldest first:
    /// up to `count` (run id, last progress ms) pairs starting at `offset`.
    fn stalled_runs<'py>(
        &self,
        py: Python<'py>,
        idle_ms: u64,
        offset: usize,
        count: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = inner.conn.manager().await?;
            let (secs, micros): (u64, u64) = redis::cmd("TIME")
                .query_async(&mut m)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            let now_ms = secs * 1000 + micros / 1000;
            let before = now_ms.saturating_sub(idle_ms);
            let found: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(inner.q.active_runs())
                .arg("-inf")
                .arg(before)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(count)
                .query_async(&mut m)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            #[allow(clippy::cast_possible_truncation)]
            Ok(found
                .into_iter()
                .map(|(id, score)| (id, score as i64))
                .collect::<Vec<_>>())
        })
    }

    /// Drop a run from the queue's index of unfinished runs (it ended or its keys are gone).
    fn forget_run<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = inner.conn.manager().await?;
            let (): () = m
                .zrem(inner.q.active_runs(), run_id)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok(())
        })
    }

    /// A run's join arrivals: "<node key>\x1f<predecessor>" -> value JSON ("\x01": skipped).
    fn run_joins<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = inner.conn.manager().await?;
            let all: HashMap<String, String> = m
                .hgetall(inner.runs.joins(&run_id))
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok(all)
        })
    }

    /// The run's meta hash and its final status JSON (None while it runs).
    fn run_info<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = inner.conn.manager().await?;
            let (meta, status): (HashMap<String, String>, Option<String>) = redis::pipe()
                .hgetall(inner.runs.meta(&run_id))
                .get(inner.runs.status(&run_id))
                .query_async(&mut m)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok((meta, status))
        })
    }

    /// Wait until the run writes its status (terminal or awaiting), at most `timeout_s`.
    /// Subscribes first, then reads, then waits: no race and no polling.
    fn wait_status<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let channel = inner.runs.status(&run_id);
            let mut pubsub = inner.conn.pubsub().await?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            let mut m = inner.conn.manager().await?;
            let current: Option<String> =
                m.get(&channel).await.map_err(|e| inner.conn.error(&e))?;
            if current.is_some() {
                return Ok(current);
            }
            let mut messages = pubsub.on_message();
            let waited =
                tokio::time::timeout(Duration::from_secs_f64(timeout_s.max(0.0)), messages.next())
                    .await;
            drop(messages);
            if waited.is_err() {
                return Ok(None);
            }
            let status: Option<String> = m.get(&channel).await.map_err(|e| inner.conn.error(&e))?;
            Ok(status)
        })
    }

    /// Publish the blueprints this worker serves: (id, JSON) pairs, so clients can start runs
    /// by id and check them before anything is enqueued.
    fn publish_blueprints<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            if items.is_empty() {
                return Ok(());
            }
            let mut m = inner.conn.manager().await?;
            let (): () = m
                .hset_multiple(inner.q.blueprints(), &items)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok(())
        })
    }

    /// The JSON of a published blueprint, or None.
    fn get_blueprint<'py>(
        &self,
        py: Python<'py>,
        blueprint_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = inner.conn.manager().await?;
            let found: Option<String> = m
                .hget(inner.q.blueprints(), blueprint_id)
                .await
                .map_err(|e| inner.conn.error(&e))?;
            Ok(found)
        })
    }

    /// Job counts by state, read the way BullMQ reads them.
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::runtime::future_into_py(py, async move {
            let q = &inner.q;
            let mut m = inner.conn.manager().await?;
            let (wait, active, delayed, completed, failed): (i64, i64, i64, i64, i64) =
                redis::pipe()
                    .llen(q.key("wait"))
                    .llen(q.key("active"))
                    .zcard(q.key("delayed"))
                    .zcard(q.key("completed"))
                    .zcard(q.key("failed"))
                    .query_async(&mut m)
                    .await
                    .map_err(|e| inner.conn.error(&e))?;
            let mut out = HashMap::new();
            out.insert("wait", wait);
            out.insert("active", active);
            out.insert("delayed", delayed);
            out.insert("completed", completed);
            out.insert("failed", failed);
            Ok(out)
        })
    }
}

/// A commit's reply: (code, detail, fired successor node keys separated by \x1f).
fn commit_reply(v: &Value) -> (String, String, String) {
    match v {
        Value::Array(items) if items.len() >= 2 => (
            text(&items[0]).unwrap_or_default(),
            text(&items[1]).unwrap_or_default(),
            items.get(2).and_then(text).unwrap_or_default(),
        ),
        Value::ServerError(e) => ("error".to_string(), format!("{e:?}"), String::new()),
        other => ("error".to_string(), format!("{other:?}"), String::new()),
    }
}
