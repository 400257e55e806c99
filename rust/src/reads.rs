//! Reads of a run and of the queue: a run's record and result, its join arrivals, waiting for
//! its result, the published blueprints, the job counts. None changes anything but
//! `publish_blueprints`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use pyo3::prelude::*;
use redis::AsyncCommands;

use crate::queue::Inner;

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

/// Wait until the run writes its status: subscribe, then read, then wait (no race, no poll).
pub async fn wait_status(
    inner: Arc<Inner>,
    run_id: String,
    timeout_s: f64,
) -> PyResult<Option<String>> {
    let channel = inner.runs.status(&run_id);
    let mut pubsub = inner.conn.pubsub().await?;
    pubsub
        .subscribe(&channel)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    let mut m = inner.conn.manager().await?;
    let current: Option<String> = m.get(&channel).await.map_err(|e| inner.conn.error(&e))?;
    if current.is_some() {
        return Ok(current);
    }
    let mut messages = pubsub.on_message();
    let waited =
        tokio::time::timeout(Duration::from_secs_f64(timeout_s.max(0.0)), messages.next()).await;
    drop(messages);
    if waited.is_err() {
        return Ok(None);
    }
    m.get(&channel).await.map_err(|e| inner.conn.error(&e))
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
    let (wait, active, delayed, completed, failed): (i64, i64, i64, i64, i64) = redis::pipe()
        .llen(q.key("wait"))
        .llen(q.key("active"))
        .zcard(q.key("delayed"))
        .zcard(q.key("completed"))
        .zcard(q.key("failed"))
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    Ok(HashMap::from([
        ("wait", wait),
        ("active", active),
        ("delayed", delayed),
        ("completed", completed),
        ("failed", failed),
    ]))
}
