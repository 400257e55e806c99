//! Flow control in Redis (SPEC section 10): the worker admits a job of a limited node before
//! running it, frees slots promptly after its commits, and sweeps groups whose holders died.
//! The rules are in scripts/limit.lua; the groups are named by runtime/limits.py.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use redis::Value;

use crate::queue::Inner;
use crate::replies::text;
use crate::scripts::{eval_many, Call};

/// How long a slot stays reserved for a waiter sent back to the queue (ms): it is claimed and
/// admitted within that, or the slot is free for others again.
pub const RESERVE_MS: u64 = 10_000;

/// One job's groups: (concurrency digest, name, limit) and (rate digest, name, max, window ms);
/// an empty digest for a limit the node does not set.
pub struct Admission {
    pub job_id: String,
    pub token: String,
    pub concurrency: (String, String, u32),
    pub rate: (String, String, u32, u64),
}

/// `admit` (see limit.lua) for many jobs in one round trip (a pipeline of script calls, in
/// order): ("ok" | "parked" | "delay" | "lost", delay ms) each.
pub async fn admit_many(inner: Arc<Inner>, batch: Vec<Admission>) -> PyResult<Vec<(String, i64)>> {
    let calls: Vec<Call> = batch.into_iter().map(|a| admit_call(&inner, a)).collect();
    let mut m = inner.conn.manager().await?;
    let replies = eval_many(&mut m, &inner.scripts.limit, &calls)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    Ok(replies.iter().map(verdict).collect())
}

fn admit_call(inner: &Inner, a: Admission) -> Call {
    let q = &inner.q;
    let (c_digest, c_name, limit) = a.concurrency;
    let (r_digest, r_name, max, per_ms) = a.rate;
    let keys = vec![
        q.limit_holders(&c_digest),
        q.limit_waiting(&c_digest),
        q.limits(),
        q.limits_waiting(),
        q.lock(&a.job_id),
        q.key("active"),
        q.rate(&r_digest),
        q.key("wait"),
        q.key("marker"),
    ];
    let args = vec![
        "admit".to_string(),
        q.base().to_string(),
        RESERVE_MS.to_string(),
        a.job_id,
        a.token,
        c_digest,
        c_name,
        limit.to_string(),
        r_digest,
        r_name,
        max.to_string(),
        per_ms.to_string(),
    ];
    Call { keys, args }
}

/// One admit reply; an error or an unexpected reply becomes ("error: ...", 0): that job is
/// left to its lease (it returns to the queue), the others go on.
fn verdict(reply: &Value) -> (String, i64) {
    match reply {
        Value::Array(items) if items.len() == 2 => (
            text(&items[0]).unwrap_or_default(),
            match &items[1] {
                Value::Int(n) => *n,
                other => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
            },
        ),
        other => (format!("error: {other:?}"), 0),
    }
}

/// Free the slots of jobs that left this worker (per group: digest, job ids) and fill free
/// slots from the groups' waiters.
pub async fn release(inner: Arc<Inner>, groups: Vec<(String, Vec<String>)>) -> PyResult<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let q = &inner.q;
    let mut keys = vec![
        q.limits(),
        q.limits_waiting(),
        q.key("wait"),
        q.key("marker"),
    ];
    let mut args = vec![
        "release".to_string(),
        q.base().to_string(),
        RESERVE_MS.to_string(),
    ];
    for (digest, jobs) in groups {
        keys.extend([q.limit_holders(&digest), q.limit_waiting(&digest)]);
        args.push(digest);
        args.push(jobs.len().to_string());
        args.extend(jobs);
    }
    inner
        .eval(&inner.scripts.limit, Call { keys, args })
        .await?;
    Ok(())
}

/// Promote the waiters of up to `max_groups` groups whose holders may have died.
pub async fn sweep(inner: Arc<Inner>, max_groups: u32) -> PyResult<i64> {
    let q = &inner.q;
    let keys = vec![
        q.limits(),
        q.limits_waiting(),
        q.key("wait"),
        q.key("marker"),
    ];
    let args = vec![
        "sweep".to_string(),
        q.base().to_string(),
        RESERVE_MS.to_string(),
        max_groups.to_string(),
    ];
    match inner
        .eval(&inner.scripts.limit, Call { keys, args })
        .await?
    {
        Value::Int(n) => Ok(n),
        _ => Ok(0),
    }
}

/// Every concurrency group the queue knows: (name, limit, holders, waiting); rate groups are
/// left out. Two round trips: the limits hash, then one pipeline of ZCARD/LLEN.
pub async fn stats(inner: Arc<Inner>) -> PyResult<Vec<(String, i64, i64, i64)>> {
    let q = &inner.q;
    let mut m = inner.conn.manager().await?;
    let all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(q.limits())
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    // "<limit>\x1f<name>" per concurrency group ("r<max>/<ms>\x1f<name>": a rate group)
    let mut groups = Vec::new();
    for (digest, raw) in all {
        if let Some((limit, name)) = raw.split_once('\x1f') {
            if let Ok(limit) = limit.parse::<i64>() {
                groups.push((digest, name.to_string(), limit));
            }
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (digest, _, _) in &groups {
        pipe.zcard(q.limit_holders(digest))
            .llen(q.limit_waiting(digest));
    }
    let counts: Vec<i64> = pipe
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    Ok(groups
        .into_iter()
        .zip(counts.chunks(2))
        .map(|((_, name, limit), c)| (name, limit, c[0], c[1]))
        .collect())
}
