//! The reconciler's survey: which unfinished runs need repair, a page at a time, in pipelines.
//!
//! A run needs repair when it is live, made no progress since the pass's cutoff, and one of its
//! fired nodes that is neither done nor waiting has no pending job: a job is pending when its
//! hash exists (`timestamp`) and it has not finished (`finishedOn`): O(1) per node, whatever the
//! queue's length. The same rule is `job_pending` in `scripts/lib.lua`, which `reconcile.lua`
//! applies atomically before it re-enqueues anything; `tests/integration/test_reconciler.py`
//! (`test_survey_and_reconcile_agree`) checks both copies agree on every job state.
//!
//! Plain commands in pipelines, not a script: Redis spends ~3 µs per healthy run this way
//! against ~8 µs for the same reads made from Lua, and a pipeline does not hold the server the
//! way one long script does. Runs that ended or expired leave the index here (ZREM of a run
//! that is not live is safe without a script: a run never becomes live again).
//!
//! A cursor is "<position>|<cutoff ms>" ("" at the start of a pass): the position is a score
//! bound in the index (never an offset) or SCAN's cursor; the cutoff is fixed by the first call
//! of a pass, so a run it repairs (stamped after the cutoff) is not examined again.

use std::collections::HashSet;
use std::sync::Arc;

use pyo3::prelude::*;
use redis::aio::ConnectionLike;
use redis::{FromRedisValue, Value};

use crate::queue::Inner;
use crate::vocabulary::{is_live, AWAIT, DONE, FIRED};

/// (next cursor or None after the last page, runs examined, runs that left the index, runs to
/// repair).
pub type Survey = (Option<String>, u64, u64, Vec<String>);

fn split_cursor(cursor: &str) -> (&str, Option<u64>) {
    match cursor.split_once('|') {
        Some((position, cutoff)) => (position, cutoff.parse().ok()),
        None => (cursor, None),
    }
}

async fn redis_now_ms(inner: &Inner, m: &mut (impl ConnectionLike + Send)) -> PyResult<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    Ok(secs * 1000 + micros / 1000)
}

/// One page of the index: unfinished runs stamped after the cursor and no later than the
/// cutoff, oldest first. A page ends on a millisecond boundary (runs stamped in the same
/// millisecond are examined together), so the next page can start at a score bound.
pub async fn survey_page(
    inner: Arc<Inner>,
    threshold_ms: u64,
    cursor: String,
    count: usize,
) -> PyResult<Survey> {
    let mut m = inner.conn.manager().await?;
    let (position, cutoff) = split_cursor(&cursor);
    let cutoff = match cutoff {
        Some(c) => c,
        None => redis_now_ms(&inner, &mut m)
            .await?
            .saturating_sub(threshold_ms),
    };
    let index = inner.q.active_runs();
    let min = if position.is_empty() {
        "-inf"
    } else {
        position
    };
    let page: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
        .arg(&index)
        .arg(min)
        .arg(cutoff)
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(count.max(1))
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    let (runs, next) = match (page.first(), page.last()) {
        (Some(&(_, first)), Some(&(_, last))) if page.len() >= count.max(1) => {
            if first < last {
                // the last millisecond may go on past the page: the next page starts at it
                let kept = page.into_iter().filter(|(_, s)| *s < last);
                (kept.map(|(r, _)| r).collect(), Some(format!("{last}")))
            } else {
                // one millisecond fills the page: take all of it, the next page starts after
                let all: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(&index)
                    .arg(last)
                    .arg(last)
                    .query_async(&mut m)
                    .await
                    .map_err(|e| inner.conn.error(&e))?;
                (all, Some(format!("({last}")))
            }
        }
        _ => (page.into_iter().map(|(r, _)| r).collect(), None),
    };
    let (examined, forgotten, repair) = examine(&inner, &mut m, runs, None).await?;
    let next = next.map(|n| format!("{n}|{cutoff}"));
    Ok((next, examined, forgotten, repair))
}

/// The SCAN mode: one SCAN step over the runs' meta keys (every run this engine runs has one;
/// the state hash does not exist while a run's context is empty), the runs found examined the
/// same way. A live run missing from the index is put back in it, stamped now.
pub async fn survey_keys(
    inner: Arc<Inner>,
    threshold_ms: u64,
    cursor: String,
    count: usize,
) -> PyResult<Survey> {
    let mut m = inner.conn.manager().await?;
    let (position, cutoff) = split_cursor(&cursor);
    let now = redis_now_ms(&inner, &mut m).await?;
    let cutoff = cutoff.unwrap_or_else(|| now.saturating_sub(threshold_ms));
    let prefix = inner.runs.meta_prefix();
    let position = if position.is_empty() { "0" } else { position };
    let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(position)
        .arg("MATCH")
        .arg(format!("{}*", glob_escape(&prefix)))
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    let runs: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let (examined, forgotten, repair) = examine(&inner, &mut m, runs, Some((cutoff, now))).await?;
    let next = (next != "0").then(|| format!("{next}|{cutoff}"));
    Ok((next, examined, forgotten, repair))
}

/// Read the runs' meta hashes (and, with `stamps` = (cutoff, now), their index stamps) in one
/// pipeline, then their frontier jobs in a second one that also drops ended runs from the
/// index (and re-indexes live runs it lacked). Returns (examined, forgotten, runs to repair).
async fn examine(
    inner: &Inner,
    m: &mut (impl ConnectionLike + Send),
    runs: Vec<String>,
    stamps: Option<(u64, u64)>,
) -> PyResult<(u64, u64, Vec<String>)> {
    if runs.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let index = inner.q.active_runs();
    let mut pipe = redis::pipe();
    for run in &runs {
        pipe.cmd("HGETALL").arg(inner.runs.meta(run));
        if stamps.is_some() {
            pipe.cmd("ZSCORE").arg(&index).arg(run);
        }
    }
    let mut replies: Vec<Value> = pipe
        .query_async(m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    let per_run = if stamps.is_some() { 2 } else { 1 };
    let mut forget: Vec<&str> = Vec::new();
    let mut reindex: Vec<&str> = Vec::new();
    let mut frontier: Vec<(usize, String)> = Vec::new(); // (run, job id)
    for (i, run) in runs.iter().enumerate() {
        let meta = take(&mut replies, i * per_run);
        let fields = match &meta {
            Value::Array(items) => items.as_slice(),
            Value::Map(_) | _ => &[],
        };
        if !field(fields, b"status").is_some_and(|s| is_live(&String::from_utf8_lossy(s))) {
            forget.push(run);
            continue;
        }
        if let Some((cutoff, _)) = stamps {
            let stamp: Option<f64> =
                FromRedisValue::from_redis_value(take(&mut replies, i * per_run + 1))
                    .unwrap_or(None);
            #[allow(clippy::cast_precision_loss)]
            match stamp {
                None => {
                    reindex.push(run);
                    continue;
                }
                Some(s) if s > cutoff as f64 => continue,
                Some(_) => {}
            }
        }
        frontier.extend(unsettled(fields).into_iter().map(|job| (i, job)));
    }
    let mut pipe = redis::pipe();
    for (_, job) in &frontier {
        pipe.cmd("HMGET")
            .arg(inner.q.job(job))
            .arg("timestamp")
            .arg("finishedOn");
    }
    for run in &forget {
        pipe.cmd("ZREM").arg(&index).arg(*run);
    }
    if let Some((_, now)) = stamps {
        for run in &reindex {
            pipe.cmd("ZADD").arg(&index).arg("NX").arg(now).arg(*run);
        }
    }
    let mut replies: Vec<Value> = if frontier.is_empty() && forget.is_empty() && reindex.is_empty()
    {
        Vec::new()
    } else {
        pipe.query_async(m)
            .await
            .map_err(|e| inner.conn.error(&e))?
    };
    let mut repair: Vec<String> = Vec::new();
    for ((i, _), reply) in frontier.iter().zip(replies.iter_mut().map(std::mem::take)) {
        let fields: (Option<String>, Option<String>) =
            FromRedisValue::from_redis_value(reply).unwrap_or((None, None));
        let pending = fields.0.is_some() && fields.1.is_none();
        if !pending && repair.last() != Some(&runs[*i]) {
            repair.push(runs[*i].clone());
        }
    }
    let forgotten = replies[frontier.len()..frontier.len() + forget.len()]
        .iter()
        .filter(|v| matches!(v, Value::Int(1)))
        .count();
    Ok((runs.len() as u64, forgotten as u64, repair))
}

/// The value of `name` in an HGETALL reply (field, value, field, value...).
fn field<'a>(fields: &'a [Value], name: &[u8]) -> Option<&'a [u8]> {
    fields.chunks_exact(2).find_map(|pair| match pair {
        [Value::BulkString(f), Value::BulkString(v)] if f == name => Some(v.as_slice()),
        _ => None,
    })
}

/// The jobs of the fired nodes that are neither done nor waiting, in an HGETALL reply.
fn unsettled(fields: &[Value]) -> Vec<String> {
    let pairs: Vec<(&[u8], &[u8])> = fields
        .chunks_exact(2)
        .filter_map(|pair| match pair {
            [Value::BulkString(f), Value::BulkString(v)] => Some((f.as_slice(), v.as_slice())),
            _ => None,
        })
        .collect();
    let settled: HashSet<&[u8]> = pairs
        .iter()
        .filter_map(|(f, _)| {
            f.strip_prefix(DONE.as_bytes())
                .or_else(|| f.strip_prefix(AWAIT.as_bytes()))
        })
        .collect();
    pairs
        .iter()
        .filter_map(|(f, job)| {
            let key = f.strip_prefix(FIRED.as_bytes())?;
            (!settled.contains(key)).then(|| String::from_utf8_lossy(job).into_owned())
        })
        .collect()
}

fn take(replies: &mut [Value], i: usize) -> Value {
    replies.get_mut(i).map_or(Value::Nil, std::mem::take)
}

/// `text` with the glob characters of SCAN's MATCH escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{glob_escape, split_cursor};

    #[test]
    fn cursors() {
        assert_eq!(split_cursor(""), ("", None));
        assert_eq!(split_cursor("(17|120"), ("(17", Some(120)));
        assert_eq!(split_cursor("0|5"), ("0", Some(5)));
    }

    #[test]
    fn glob() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
