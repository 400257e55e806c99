//! Run administration: start a run, cancel it, resume a waiting node, re-enqueue lost nodes,
//! return stalled jobs to the queue, and the index of unfinished runs the reconciler reads.
//! Each is one atomic script (or one command) in one round trip.

use std::sync::Arc;

use pyo3::prelude::*;
use redis::Value;

use crate::queue::Inner;
use crate::replies::{int, text, StartRequest};
use crate::scripts::Call;

fn start_call(inner: &Inner, r: StartRequest) -> Call {
    let q = &inner.q;
    let mut keys = vec![
        inner.runs.state(&r.run_id),
        inner.runs.meta(&r.run_id),
        q.active_runs(),
        q.key("wait"),
        q.key("marker"),
        q.blueprints(),
        q.singletons(),
    ];
    let mut args = vec![
        r.run_id,
        r.blueprint_id,
        r.version,
        r.traceparent,
        r.sets.len().to_string(),
    ];
    for (k, v) in r.sets {
        args.extend([k, v]);
    }
    args.push(r.jobs.len().to_string());
    for (id, key, data, opts) in r.jobs {
        keys.push(q.job(&id));
        args.extend([id, key, data, opts]);
    }
    args.push(r.priority.to_string());
    args.push(r.singleton);
    // This start's token, kept in the run's meta: sent again after a lost reply, the call
    // finds its own token and answers "ok" instead of "exists" (see start.lua and `retry`).
    args.push(crate::retry::token());
    Call { keys, args }
}

/// Create runs and enqueue their start jobs, each run atomically, all in one round trip; one
/// outcome per run ("ok", "exists", "unpublished", "stale": see start.lua). A start sent again
/// after a lost reply answers "ok" when the run is its own (its token), so it never reports
/// its own run as a duplicate.
pub async fn start_runs(inner: Arc<Inner>, batch: Vec<StartRequest>) -> PyResult<Vec<String>> {
    let calls: Vec<Call> = batch.into_iter().map(|r| start_call(&inner, r)).collect();
    inner.eval_texts(&inner.scripts.start, &calls).await
}

/// The status `cancel.lua` ends a run with.
const CANCELLED: &str = "cancelled";

/// End a live run as cancelled. Sent again after a lost reply, the script finds the run it
/// cancelled already ended ("cancelled"): that is this call's "ok".
pub async fn cancel_run(inner: Arc<Inner>, run_id: String, payload: String) -> PyResult<String> {
    let r = &inner.runs;
    let call = Call {
        keys: vec![
            r.state(&run_id),
            r.meta(&run_id),
            r.joins(&run_id),
            r.status(&run_id),
            inner.q.active_runs(),
            inner.q.ended_runs(),
        ],
        args: vec![
            run_id.clone(),
            inner.state_ttl_s.to_string(),
            payload,
            inner.q.stops_channel(),
        ],
    };
    let (reply, resent) = inner.eval_resent(&inner.scripts.cancel, call).await?;
    let outcome = text(&reply).unwrap_or_default();
    Ok(if resent && outcome == CANCELLED {
        "ok".to_string()
    } else {
        outcome
    })
}

/// A waiting node's result from outside, carried to a worker by a new job.
pub struct Resume {
    pub run_id: String,
    pub node_key: String,
    pub job_id: String,
    pub data: String,
    pub opts: String,
    pub payload: String,
}

/// Enqueue the job that carries a waiting node's result ("ok", "missing", "not-awaiting").
/// Sent again after a lost reply, the script finds the node no longer waiting: when the job
/// this call created (its id is this call's own) exists, that is this call's "ok".
pub async fn resume_run(inner: Arc<Inner>, r: Resume) -> PyResult<String> {
    let (runs, q) = (&inner.runs, &inner.q);
    let job = q.job(&r.job_id);
    let call = Call {
        keys: vec![
            runs.meta(&r.run_id),
            runs.status(&r.run_id),
            q.key("wait"),
            q.key("marker"),
            q.job(&r.job_id),
            q.active_runs(),
        ],
        args: vec![r.run_id, r.node_key, r.job_id, r.data, r.opts, r.payload],
    };
    let (reply, resent) = inner.eval_resent(&inner.scripts.resume, call).await?;
    let outcome = text(&reply).unwrap_or_default();
    if resent && outcome == "not-awaiting" {
        let mut m = inner.conn.manager().await?;
        let created: bool = redis::cmd("EXISTS")
            .arg(&job)
            .query_async(&mut m)
            .await
            .map_err(|e| inner.conn.error(&e))?;
        if created {
            return Ok("ok".to_string());
        }
    }
    Ok(outcome)
}

/// One event for a run (event.lua).
pub struct Event {
    pub run_id: String,
    pub name: String,
    pub payload: String,
    pub delivery: String,
    /// The waiting node's key as the caller read it, and its resume job (id, data, opts).
    pub node_key: String,
    pub job_id: String,
    pub data: String,
    pub opts: String,
}

/// Deliver (or buffer) an event: event.lua's answer. A resend after a lost reply that finds
/// its own delivery id answers "duplicate": taken as this call's "delivered"/"buffered" by
/// the caller only when it gave a delivery id (see client.py `send_event`).
pub async fn send_event(inner: Arc<Inner>, e: Event) -> PyResult<String> {
    let (runs, q) = (&inner.runs, &inner.q);
    // no job when the caller saw no waiter: a key it may touch stands in (event.lua does not)
    let job_hash = if e.job_id.is_empty() {
        q.key("wait")
    } else {
        q.job(&e.job_id)
    };
    let call = Call {
        keys: vec![
            runs.meta(&e.run_id),
            runs.status(&e.run_id),
            runs.state(&e.run_id),
            q.key("wait"),
            q.key("marker"),
            job_hash,
            q.active_runs(),
        ],
        args: vec![
            e.run_id, e.name, e.payload, e.delivery, e.node_key, e.job_id, e.data, e.opts,
        ],
    };
    let reply = inner.eval(&inner.scripts.event, call).await?;
    Ok(text(&reply).unwrap_or_default())
}

/// Take over a run started by the TypeScript client protocol (adopt.lua): its status after.
pub async fn adopt_run(
    inner: Arc<Inner>,
    run_id: String,
    blueprint_id: String,
    version: String,
    starts: Vec<(String, String)>,
) -> PyResult<String> {
    let mut args = vec![
        run_id.clone(),
        blueprint_id,
        version,
        starts.len().to_string(),
    ];
    for (key, job) in starts {
        args.extend([key, job]);
    }
    let call = Call {
        keys: vec![
            inner.runs.meta(&run_id),
            inner.runs.state(&run_id),
            inner.q.active_runs(),
        ],
        args,
    };
    Ok(text(&inner.eval(&inner.scripts.adopt, call).await?).unwrap_or_default())
}

/// Re-enqueue fired-but-unfinished nodes whose jobs are gone or dead; the node keys enqueued.
pub async fn reconcile_run(
    inner: Arc<Inner>,
    run_id: String,
    candidates: Vec<(String, String, String, String, String, String)>,
) -> PyResult<Vec<String>> {
    let q = &inner.q;
    let mut keys = vec![
        inner.runs.meta(&run_id),
        q.key("wait"),
        q.key("marker"),
        q.active_runs(),
    ];
    let mut args = vec![run_id, candidates.len().to_string()];
    for (key, old, new, data, opts, input) in candidates {
        keys.extend([q.job(&old), q.job(&new)]);
        args.extend([key, old, new, data, opts, input]);
    }
    let reply = inner
        .eval(&inner.scripts.reconcile, Call { keys, args })
        .await?;
    let Value::Array(items) = &reply else {
        return Ok(Vec::new());
    };
    Ok(items.iter().filter_map(text).collect())
}

/// Jobs of active looked at per script call of a stalled-jobs pass.
const STALLED_SLICE: usize = 1000;

/// Return every job of active whose lease expired to wait, a slice of active per call (at most
/// once per `guard_ms` across workers; 0: no guard); with `release` = ("<name>@", "<name>@<this
/// incarnation>:"), also the jobs whose lease an earlier incarnation of the worker held. The
/// requeued ids.
pub async fn requeue_stalled(
    inner: Arc<Inner>,
    guard_ms: u64,
    release: (String, String),
) -> PyResult<Vec<String>> {
    let q = &inner.q;
    let mut requeued = Vec::new();
    let mut first = 0usize;
    let mut guard = guard_ms;
    loop {
        let call = Call {
            keys: vec![
                q.key("active"),
                q.key("wait"),
                q.key("marker"),
                q.key("stalled-check"),
            ],
            args: vec![
                q.base().to_string(),
                guard.to_string(),
                first.to_string(),
                STALLED_SLICE.to_string(),
                release.0.clone(),
                release.1.clone(),
            ],
        };
        guard = 0; // the first slice took the guard for the whole pass
        let reply = inner.eval(&inner.scripts.stalled, call).await?;
        let Value::Array(items) = &reply else {
            return Ok(requeued);
        };
        let seen = items.first().map_or(-1, int);
        if seen < 0 {
            return Ok(requeued); // another worker does this interval's pass
        }
        let removed = items.get(1).map_or(0, int);
        requeued.extend(items.iter().skip(2).filter_map(text));
        if usize::try_from(seen).unwrap_or(0) < STALLED_SLICE {
            return Ok(requeued);
        }
        // entries removed at or before the slice moved the rest up: never skip one (at worst
        // a few are looked at twice, which finds them leased or already requeued)
        let removed = usize::try_from(removed).unwrap_or(0);
        first = (first + STALLED_SLICE).saturating_sub(removed);
    }
}

/// Unfinished runs without progress for `idle_ms` (Redis time), oldest first: up to `count`
/// (run id, last progress ms) pairs from `offset`.
pub async fn stalled_runs(
    inner: Arc<Inner>,
    idle_ms: u64,
    offset: usize,
    count: usize,
) -> PyResult<Vec<(String, i64)>> {
    let mut m = inner.conn.manager().await?;
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    let before = (secs * 1000 + micros / 1000).saturating_sub(idle_ms);
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
        .collect())
}
