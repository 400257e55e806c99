//! Reads of a run and of the queue: a run's record and result, its join arrivals, waiting for
//! its result, the published blueprints, the job counts. None changes anything but
//! `publish_blueprints`.

use pyo3::prelude::*;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;

use crate::queue::Inner;
use crate::waits::Ended;

/// A run's join arrivals: "<node key>\x1f<predecessor>" -> value JSON ("\x01": skipped).
pub async fn run_joins(inner: Arc<Inner>, run_id: String) -> PyResult<HashMap<String, String>> {
    let mut m = inner.conn.manager().await?;
    m.hgetall(inner.runs.joins(&run_id))
        .await
        .map_err(|e| inner.conn.error(&e))
}

/// The run's meta hash and its final status JSON (None while it runs).
pub async fn run_info(
    inner: Arc<Inner>,
    run_id: String,
) -> PyResult<(HashMap<String, String>, Option<String>)> {
    let mut m = inner.conn.manager().await?;
    redis::pipe()
        .hgetall(inner.runs.meta(&run_id))
        .get(inner.runs.status(&run_id))
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))
}

/// Wait until the run writes its status: subscribe (on the queue's shared subscriber), then
/// read, then wait (no race, no poll); see `waits`. The run's state fields come with it.
pub async fn wait_result(
    inner: Arc<Inner>,
    run_id: String,
    timeout_s: f64,
) -> PyResult<Option<Ended>> {
    let channel = inner.runs.status(&run_id);
    let state = inner.runs.state(&run_id);
    inner
        .waits
        .wait(&inner.conn, channel, timeout_s, state)
        .await
}

/// Publish (id, JSON) blueprints so clients can start runs by id and check them.
pub async fn publish_blueprints(inner: Arc<Inner>, items: Vec<(String, String)>) -> PyResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut m = inner.conn.manager().await?;
    m.hset_multiple(inner.q.blueprints(), &items)
        .await
        .map_err(|e| inner.conn.error(&e))
}

/// The JSON of a published blueprint, or None.
pub async fn get_blueprint(inner: Arc<Inner>, blueprint_id: String) -> PyResult<Option<String>> {
    let mut m = inner.conn.manager().await?;
    m.hget(inner.q.blueprints(), blueprint_id)
        .await
        .map_err(|e| inner.conn.error(&e))
}

/// Job counts by state, read the way BullMQ reads them.
pub async fn counts(inner: Arc<Inner>) -> PyResult<HashMap<&'static str, i64>> {
    let q = &inner.q;
    let mut m = inner.conn.manager().await?;
    let (wait, active, delayed, prioritized, completed, failed): (i64, i64, i64, i64, i64, i64) =
        redis::pipe()
            .llen(q.key("wait"))
            .llen(q.key("active"))
            .zcard(q.key("delayed"))
            .zcard(q.key("prioritized"))
            .zcard(q.key("completed"))
            .zcard(q.key("failed"))
            .query_async(&mut m)
            .await
            .map_err(|e| inner.conn.error(&e))?;
    Ok(HashMap::from([
        ("wait", wait),
        ("active", active),
        ("delayed", delayed),
        ("prioritized", prioritized),
        ("completed", completed),
        ("failed", failed),
    ]))
}

/// The run meta fields a listing shows.
const LISTED_FIELDS: [&str; 6] = [
    "status",
    "blueprintId",
    "blueprintVersion",
    "startedAt",
    "endedAt",
    "pending",
];

/// A listing page of runs (`flowcraft-fast runs`, the dashboard): from the ended-runs index
/// (`ended`: scored by the end, ms) or the unfinished-runs index (scored by the last progress),
/// highest score first, scores from `since_ms` to `before_ms` (None: no bound), `count` from
/// `offset`; each (run id, score, its meta's listed fields). Two round trips: the page, then
/// one pipeline of HMGETs. A run whose keys expired has no fields (the caller skips it).
pub async fn list_runs(
    inner: Arc<Inner>,
    ended: bool,
    since_ms: Option<i64>,
    before_ms: Option<i64>,
    offset: usize,
    count: usize,
) -> PyResult<Vec<(String, i64, HashMap<String, String>)>> {
    let mut m = inner.conn.manager().await?;
    let index = if ended {
        inner.q.ended_runs()
    } else {
        inner.q.active_runs()
    };
    let max = before_ms.map_or_else(|| "+inf".to_string(), |b| b.to_string());
    let min = since_ms.map_or_else(|| "-inf".to_string(), |s| s.to_string());
    // ZRANGE ... BYSCORE REV (Redis 6.2), not ZREVRANGEBYSCORE: the worker's ACL rules already
    // grant ZRANGE, so an operator may list runs as the worker user (docs/security.md)
    let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&index)
        .arg(max)
        .arg(min)
        .arg("BYSCORE")
        .arg("REV")
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(offset)
        .arg(count)
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (run_id, _) in &page {
        pipe.cmd("HMGET")
            .arg(inner.runs.meta(run_id))
            .arg(&LISTED_FIELDS[..]);
    }
    let metas: Vec<Vec<Option<String>>> = pipe
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    #[allow(clippy::cast_possible_truncation)]
    Ok(page
        .into_iter()
        .zip(metas)
        .map(|((run_id, score), values)| {
            let fields = LISTED_FIELDS
                .iter()
                .zip(values)
                .filter_map(|(name, v)| v.map(|v| ((*name).to_string(), v)))
                .collect();
            (run_id, score as i64, fields)
        })
        .collect())
}
