//! Run state: the hash `workflow:state:<runId>`, one field per context key, JSON text values.
//!
//! Values cross the Python/Rust line as JSON text already encoded and validated by Python;
//! this module only moves them, atomically where it matters.

use std::collections::HashMap;

use pyo3::prelude::*;
use redis::AsyncCommands;

use crate::conn::{Connection, RedisConnection};
use crate::keys::state_key;

/// Reads and writes run-state hashes through one `RedisConnection`.
#[pyclass(module = "flowcraft_fast._core", frozen)]
pub struct StateStore {
    conn: Connection,
    prefix: String,
}

impl StateStore {
    fn key(&self, run_id: &str) -> String {
        state_key(&self.prefix, run_id)
    }
}

#[pymethods]
impl StateStore {
    #[new]
    #[pyo3(signature = (connection, *, key_prefix=String::new()))]
    fn new(connection: &RedisConnection, key_prefix: String) -> Self {
        Self {
            conn: connection.conn.clone(),
            prefix: key_prefix,
        }
    }

    /// JSON text of one field, or None when the field does not exist.
    fn get<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        field: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (conn, key) = (self.conn.clone(), self.key(run_id));
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let value: Option<String> = m.hget(key, field).await.map_err(|e| conn.error(&e))?;
            Ok(value)
        })
    }

    /// Write one field (JSON text).
    fn set<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        field: String,
        value: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (conn, key) = (self.conn.clone(), self.key(run_id));
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let (): () = m
                .hset(key, field, value)
                .await
                .map_err(|e| conn.error(&e))?;
            Ok(())
        })
    }

    fn has<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        field: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (conn, key) = (self.conn.clone(), self.key(run_id));
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let exists: bool = m.hexists(key, field).await.map_err(|e| conn.error(&e))?;
            Ok(exists)
        })
    }

    /// Remove one field; True when it existed.
    fn delete<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        field: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (conn, key) = (self.conn.clone(), self.key(run_id));
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let removed: u64 = m.hdel(key, field).await.map_err(|e| conn.error(&e))?;
            Ok(removed > 0)
        })
    }

    /// Every field of the run's state as JSON text.
    fn get_all<'py>(&self, py: Python<'py>, run_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let (conn, key) = (self.conn.clone(), self.key(run_id));
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let all: HashMap<String, String> = m.hgetall(key).await.map_err(|e| conn.error(&e))?;
            Ok(all)
        })
    }

    /// Apply sets and deletes in one MULTI/EXEC: a reader sees all of them or none.
    fn patch<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        sets: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (conn, key) = (self.conn.clone(), self.key(run_id));
        crate::runtime::future_into_py(py, async move {
            if sets.is_empty() && deletes.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            if !sets.is_empty() {
                pipe.hset_multiple(&key, &sets).ignore();
            }
            if !deletes.is_empty() {
                pipe.hdel(&key, &deletes).ignore();
            }
            let mut m = conn.manager().await?;
            let (): () = pipe.query_async(&mut m).await.map_err(|e| conn.error(&e))?;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "StateStore({:?}, key_prefix={:?})",
            self.conn.server(),
            self.prefix
        )
    }
}
