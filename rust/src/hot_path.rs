//! The hot path: claim a batch of jobs, commit a batch of finished nodes (with the claim that
//! takes the slots they free), send jobs back for a retry, renew leases, wait for work. Each is
//! one Redis round trip (a pipeline of script calls) however many jobs it carries.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;
use redis::{AsyncCommands, Value};

use crate::limits::RESERVE_MS;
use crate::queue::Inner;
use crate::replies::{
    bad_reply, commit_reply, parse_claim, text, ClaimReply, CommitReply, CommitRequest,
};
use crate::scripts::{eval_mixed, Call};

/// The largest job `data` a claim accepts: flowcraft's own job data is a few hundred bytes (the
/// node's input travels in `fci`); a larger payload is a foreign or hostile job, failed with
/// the sizes in its reason.
pub const MAX_JOB_DATA_BYTES: usize = 1024 * 1024;

impl Inner {
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
                q.blueprints(),
            ],
            args: vec![
                q.base().to_string(),
                token_prefix,
                lease_ms.to_string(),
                max_jobs.to_string(),
                self.runs.state_prefix(),
                self.runs.meta_prefix(),
                MAX_JOB_DATA_BYTES.to_string(),
                self.runs.status_prefix(),
            ],
        }
    }

    fn commit_call(
        &self,
        c: &CommitRequest,
        claim_follows: bool,
        lease_ms: u64,
        token_prefix: &str,
    ) -> Call {
        let q = &self.q;
        let mut keys = vec![
            q.job(&c.job_id),
            q.lock(&c.job_id),
            q.key("active"),
            q.key("completed"),
            q.key("failed"),
            q.key("wait"),
            q.key("marker"),
            q.key("events"),
            self.runs.state(&c.run_id),
            self.runs.meta(&c.run_id),
            self.runs.joins(&c.run_id),
            self.runs.status(&c.run_id),
            q.active_runs(),
            q.key("meta"),
            q.ended_runs(),
            q.limits(),
            q.limits_waiting(),
        ];
        let mut args = vec![
            q.base().to_string(),
            c.job_id.clone(),
            c.token.clone(),
            c.node_key.clone(),
            c.mode.clone(),
            c.result.clone(),
            self.state_ttl_s.to_string(),
            self.keep_completed.to_string(),
            self.keep_failed.to_string(),
            c.run_id.clone(),
            c.payload.clone(),
            flag(claim_follows),
            q.stops_channel(),
            flag(self.job_events),
            c.take.to_string(),
            token_prefix.to_string(),
            lease_ms.to_string(),
            c.known_version.to_string(),
            c.held_limit.clone(),
            RESERVE_MS.to_string(),
            c.sets.len().to_string(),
        ];
        for (k, v) in &c.sets {
            args.push(k.clone());
            args.push(v.clone());
        }
        args.push(c.deletes.len().to_string());
        args.extend(c.deletes.iter().cloned());
        args.push(c.arrivals.len().to_string());
        for a in &c.arrivals {
            keys.push(q.job(&a.job_id));
            args.extend([
                a.target_key.clone(),
                a.source.clone(),
                a.value.clone(),
                a.strategy.clone(),
                a.predecessors.len().to_string(),
            ]);
            args.extend(a.predecessors.iter().cloned());
            let (digest, name, limit) = &a.limit;
            args.extend([
                a.job_id.clone(),
                a.job_data.clone(),
                a.job_opts.clone(),
                digest.clone(),
                name.clone(),
                limit.to_string(),
            ]);
        }
        args.push(c.stacktrace.clone()); // last: commit.lua reads it as its args' last
        Call { keys, args }
    }

    /// The script calls of a batch: each request that `follows` joins the call of the one
    /// before it (commit.lua's call format: the number of commits, each one's key and arg
    /// counts, then their args; their keys one after another). Returns the calls and how
    /// many commits each carries.
    fn commit_calls(
        &self,
        batch: &[CommitRequest],
        claim_follows: bool,
        lease_ms: u64,
        token_prefix: &str,
    ) -> (Vec<Call>, Vec<usize>) {
        let mut groups: Vec<Vec<Call>> = Vec::new();
        for c in batch {
            let call = self.commit_call(c, claim_follows, lease_ms, token_prefix);
            match groups.last_mut() {
                Some(group) if c.follows && group.len() < MAX_COMMITS_PER_CALL => group.push(call),
                _ => groups.push(vec![call]),
            }
        }
        let sizes = groups.iter().map(Vec::len).collect();
        let calls = groups
            .into_iter()
            .map(|group| {
                let mut args = Vec::with_capacity(
                    1 + 2 * group.len() + group.iter().map(|c| c.args.len()).sum::<usize>(),
                );
                args.push(group.len().to_string());
                for c in &group {
                    args.push(c.keys.len().to_string());
                    args.push(c.args.len().to_string());
                }
                let mut keys = Vec::new();
                for c in group {
                    keys.extend(c.keys);
                    args.extend(c.args);
                }
                Call { keys, args }
            })
            .collect();
        (calls, sizes)
    }
}

/// The most commits one script call carries: a longer chain continues in the next call (its
/// job then goes through a lock and `active` as any taken job), so no call runs long.
const MAX_COMMITS_PER_CALL: usize = 64;

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

/// Claim up to `max_jobs` ready jobs with a lease of `lease_ms` each.
pub async fn claim(
    inner: Arc<Inner>,
    max_jobs: usize,
    lease_ms: u64,
    token_prefix: String,
) -> PyResult<ClaimReply> {
    let call = inner.claim_call(max_jobs, lease_ms, token_prefix);
    let reply = inner.eval(&inner.scripts.claim, call).await?;
    parse_claim(&reply)
}

/// Commit a batch; with `claim_max` > 0 the same pipeline then claims that many jobs.
pub async fn commit(
    inner: Arc<Inner>,
    batch: Vec<CommitRequest>,
    claim_max: usize,
    lease_ms: u64,
    token_prefix: String,
) -> PyResult<(Vec<CommitReply>, Option<ClaimReply>)> {
    let (mut calls, sizes) = inner.commit_calls(&batch, claim_max > 0, lease_ms, &token_prefix);
    let n_commit_calls = calls.len();
    if claim_max > 0 {
        calls.push(inner.claim_call(claim_max, lease_ms, token_prefix));
    }
    let scripts = &inner.scripts;
    let pairs: Vec<(&redis::Script, &Call)> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let script = if i < n_commit_calls {
                &scripts.commit
            } else {
                &scripts.claim
            };
            (script, c)
        })
        .collect();
    let mut m = inner.conn.manager().await?;
    let (mut replies, reordered) = eval_mixed(&mut m, &pairs)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    if reordered && claim_max > 0 {
        // A commit ran after the claim that should have taken its new jobs (its script had to
        // be loaded first): raise the ready marker so they are claimed anyway.
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
    let mut requests = batch.iter();
    let mut out = Vec::with_capacity(batch.len());
    for (reply, size) in replies.iter().zip(sizes) {
        // one reply per commit of the call; an error (the call failed) is every commit's
        let each: Vec<&Value> = match reply {
            Value::Array(items) => items.iter().collect(),
            other => vec![other; size],
        };
        for i in 0..size {
            let Some(c) = requests.next() else { break };
            out.push(match each.get(i) {
                Some(v) => commit_reply(v, c),
                None => commit_reply(reply, c),
            });
        }
    }
    Ok((out, claimed))
}

/// Send jobs back after a delay: (job id, token, delay ms, reason, why, stacktrace) each.
pub async fn retry(
    inner: Arc<Inner>,
    batch: Vec<(String, String, u64, String, String, String)>,
) -> PyResult<Vec<String>> {
    let q = &inner.q;
    let calls: Vec<Call> = batch
        .into_iter()
        .map(|(id, token, delay, reason, why, stack)| Call {
            keys: vec![
                q.job(&id),
                q.lock(&id),
                q.key("active"),
                q.key("delayed"),
                q.key("wait"),
                q.key("marker"),
                q.key("events"),
            ],
            args: vec![
                id,
                token,
                delay.to_string(),
                reason,
                why,
                flag(inner.job_events),
                stack,
            ],
        })
        .collect();
    inner.eval_texts(&inner.scripts.retry, &calls).await
}

/// Renew the leases of (job id, token, run id) jobs; per job the run's status or "lost".
pub async fn renew(
    inner: Arc<Inner>,
    jobs: Vec<(String, String, String)>,
    lease_ms: u64,
) -> PyResult<Vec<String>> {
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
    Ok(items.iter().map(|v| text(v).unwrap_or_default()).collect())
}

/// Block on the dedicated connection until the marker says work may be ready.
pub async fn wait_for_work(inner: Arc<Inner>, timeout_s: f64) -> PyResult<bool> {
    let mut m = inner.blocking.manager().await?;
    let rename = {
        let mut wanted = inner
            .blocking_name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = wanted.0.clone().filter(|_| wanted.1);
        wanted.1 = false;
        name
    };
    if let Some(name) = rename {
        // Named here, before the wait, not from the beat: a command queued behind a BZPOPMIN
        // would keep a closed worker's connection (and its wait, which may take the marker of
        // the next one) open for up to the wait's timeout. A refusal (ACL) is reported by the
        // main connection's name.
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .query_async::<()>(&mut m)
            .await;
    }
    let reply: Value = redis::cmd("BZPOPMIN")
        .arg(inner.q.key("marker"))
        .arg(timeout_s.max(0.001))
        .query_async(&mut m)
        .await
        .map_err(|e| inner.blocking.error(&e))?;
    let woken = !matches!(reply, Value::Nil);
    if woken && inner.stopped_waiting.load(Ordering::Relaxed) {
        // nobody will claim for this wake-up: hand the marker to the queue's other workers
        let mut main = inner.conn.manager().await?;
        let _: Result<(), _> = main.zadd(inner.q.key("marker"), "0", 0).await;
    }
    Ok(woken)
}
