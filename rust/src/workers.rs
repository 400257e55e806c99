//! Live workers: a worker process keeps a heartbeat record on its queue and names its Redis
//! connections the way BullMQ does, so `flowcraft-fast inspect`, `status` and BullMQ's own tools
//! (`Queue.getWorkers`, bull-board) see who consumes the queue.
//!
//! The worker beats from its stalled-check loop (worker.py), once per interval: no loop of its
//! own. Each beat names the connections again (CLIENT SETNAME; the blocking one at its next wait
//! for work, hot_path.rs), because redis-rs's connection
//! manager reconnects on its own without telling anyone and a new connection has no name: after
//! a reconnect the name is back within one interval.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use redis::{AsyncCommands, Value};

use crate::queue::Inner;
use crate::replies::text;
use crate::scripts::{eval_one, Call};

/// Write the worker's record (`fields`) expiring after `ttl_ms`, name its connections, and
/// return (the served blueprint ids the queue has not published, whether Redis accepted the main
/// connection's name: an ACL without `+client|setname` refuses it).
pub async fn beat(
    inner: Arc<Inner>,
    worker_id: String,
    fields: Vec<(String, String)>,
    ttl_ms: u64,
    served: Vec<String>,
) -> PyResult<(Vec<String>, bool)> {
    let (node_name, python_name) = inner.q.client_names(&worker_id);
    // the blocking connection is named by the next wait for work (hot_path.rs), again after
    // each beat: redis-rs reconnects without telling, and a new connection has no name
    *inner
        .blocking_name
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        (python_name.clone(), python_name.is_some());
    let mut m = inner.conn.manager().await?;
    let named = match node_name {
        Some(name) => redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .query_async::<()>(&mut m)
            .await
            .is_ok(),
        None => false,
    };
    let mut args = vec![
        worker_id.clone(),
        ttl_ms.to_string(),
        fields.len().to_string(),
    ];
    for (field, value) in fields {
        args.extend([field, value]);
    }
    args.extend(served);
    let reply = eval_one(
        &mut m,
        &inner.scripts.beat,
        worker_call(&inner, &worker_id, args),
    )
    .await
    .map_err(|e| inner.conn.error(&e))?;
    let missing = match reply {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    Ok((missing, named))
}

/// Delete the worker's record and clear its main connection's name: a worker that stops leaves
/// both listings at once. Its blocking connection is left alone (a command sent there would
/// queue behind a wait for work of up to 5 s and keep the connection open meanwhile): it closes
/// when the worker's queue is dropped, its process exits.
pub async fn leave(inner: Arc<Inner>, worker_id: String) -> PyResult<()> {
    let mut m = inner.conn.manager().await?;
    let _ = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("")
        .query_async::<()>(&mut m)
        .await;
    let args = vec![worker_id.clone(), "0".to_string(), "0".to_string()];
    eval_one(
        &mut m,
        &inner.scripts.beat,
        worker_call(&inner, &worker_id, args),
    )
    .await
    .map_err(|e| inner.conn.error(&e))?;
    Ok(())
}

/// The records of the queue's live workers (their heartbeat has not expired), in the order of
/// their last beat: two round trips, the index then one pipeline of HGETALLs.
pub async fn live_workers(inner: Arc<Inner>) -> PyResult<Vec<HashMap<String, String>>> {
    let mut m = inner.conn.manager().await?;
    let ids: Vec<String> = m
        .zrange(inner.q.workers(), 0, -1)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hgetall(inner.q.worker(id));
    }
    let records: Vec<HashMap<String, String>> = pipe
        .query_async(&mut m)
        .await
        .map_err(|e| inner.conn.error(&e))?;
    Ok(records.into_iter().filter(|r| !r.is_empty()).collect())
}

fn worker_call(inner: &Inner, worker_id: &str, args: Vec<String>) -> Call {
    let q = &inner.q;
    Call {
        keys: vec![q.worker(worker_id), q.workers(), q.blueprints()],
        args,
    }
}
