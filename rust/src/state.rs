//! Run state: the hash `workflow:state:<runId>`, one field per context key, JSON text values.
//!
//! Values cross the Python/Rust line as JSON text already encoded and validated by Python;
//! this module only moves them, atomically where it matters. Every write also bumps the run's
//! state version (`sv` in its meta hash, as the commit script does), so a worker holding a
//! snapshot of the state knows it is stale.

use std::collections::HashMap;

use pyo3::prelude::*;

use crate::conn::{Connection, RedisConnection};
use crate::keys::{state_key, RunKeys};
use crate::vocabulary::STATE_VERSION;

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

    /// `name <the run's state key> args...`
    fn command(&self, name: &str, run_id: &str, args: &[String]) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(self.key(run_id)).arg(args);
        cmd
    }

    /// A write and the state-version bump, in one MULTI/EXEC; the write's reply (as `T`) goes
    /// to asyncio.
    fn write<'py, T>(
        &self,
        py: Python<'py>,
        cmd: redis::Cmd,
        run_id: &str,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        T: redis::FromRedisValue + for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let conn = self.conn.clone();
        let meta = RunKeys::new(&self.prefix).meta(run_id);
        crate::runtime::future_into_py(py, async move {
            let mut pipe = redis::pipe();
            pipe.atomic().add_command(cmd);
            pipe.hincr(&meta, STATE_VERSION, 1).ignore();
            let mut m = conn.manager().await?;
            let (reply,): (T,) = pipe.query_async(&mut m).await.map_err(|e| conn.error(&e))?;
            Ok(reply)
        })
    }

    /// Send one command on the native runtime; its reply (as `T`) goes to asyncio.
    fn query<'py, T>(&self, py: Python<'py>, cmd: redis::Cmd) -> PyResult<Bound<'py, PyAny>>
    where
        T: redis::FromRedisValue + for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            cmd.query_async::<T>(&mut m)
                .await
                .map_err(|e| conn.error(&e))
        })
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
        self.query::<Option<String>>(py, self.command("HGET", run_id, &[field]))
    }

    /// Write one field (JSON text).
    fn set<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        field: String,
        value: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.write::<()>(py, self.command("HSET", run_id, &[field, value]), run_id)
    }

    fn has<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        field: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.query::<bool>(py, self.command("HEXISTS", run_id, &[field]))
    }

    /// Remove one field; True when it existed.
    fn delete<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        field: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.write::<bool>(py, self.command("HDEL", run_id, &[field]), run_id)
    }

    /// Every field of the run's state as JSON text.
    fn get_all<'py>(&self, py: Python<'py>, run_id: &str) -> PyResult<Bound<'py, PyAny>> {
        self.query::<HashMap<String, String>>(py, self.command("HGETALL", run_id, &[]))
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
        let meta = RunKeys::new(&self.prefix).meta(run_id);
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
            pipe.hincr(&meta, STATE_VERSION, 1).ignore();
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StateStore>()
}
