//! One Redis connection per `RedisConnection` object: URL parsing, TLS material, redaction,
//! lazy connect with timeouts, automatic reconnect (redis-rs `ConnectionManager`), and retries
//! of LOADING, BUSY and connection failures until a deadline (`retry`).
//!
//! Commands from many Python coroutines are multiplexed over the one connection, so a process
//! needs one `RedisConnection` per Redis, not one per task.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ClientTlsConfig, TlsCertificates};
use tokio::sync::OnceCell;

use crate::errors;
use crate::retry::Retrying;
use crate::runtime::ensure_same_process;

/// Shared, cheaply clonable handle to one (lazily opened) Redis connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: ConnectionManagerConfig,
    manager: OnceCell<ConnectionManager>,
    server: String,
    /// How long one call retries transient failures (`retry`); zero: not at all.
    retry_deadline: Duration,
}

impl Connection {
    /// The connection for one call, opened on first use (retrying until the deadline; a
    /// failed open is not cached), wrapped so that everything sent through it retries LOADING,
    /// BUSY and connection failures until the deadline, counted from now (`retry`).
    pub async fn manager(&self) -> PyResult<Retrying> {
        let mut retrying = self.retrying();
        retrying.connect().await.map_err(|e| self.error(&e))?;
        Ok(retrying)
    }

    /// A retry state for one call, its deadline counted from now; nothing is opened yet.
    pub fn retrying(&self) -> Retrying {
        Retrying::new(self.clone(), self.inner.retry_deadline)
    }

    /// The same, with the deadline cut to `limit` when that is shorter (a bounded wait).
    pub fn retrying_within(&self, limit: Duration) -> Retrying {
        Retrying::new(self.clone(), self.inner.retry_deadline.min(limit))
    }

    /// The shared connection manager, opened on first use; one try (`Retrying` retries).
    pub(crate) async fn open(&self) -> redis::RedisResult<ConnectionManager> {
        let inner = &self.inner;
        let manager = inner
            .manager
            .get_or_try_init(|| async {
                inner
                    .client
                    .get_connection_manager_with_config(inner.config.clone())
                    .await
            })
            .await?;
        Ok(manager.clone())
    }

    /// The database number of the URL.
    pub fn db(&self) -> i64 {
        self.inner
            .client
            .get_connection_info()
            .redis_settings()
            .db()
    }

    /// A second, independent connection to the same server (for blocking commands).
    pub fn dedicated(&self) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                config: self.inner.config.clone(),
                manager: OnceCell::new(),
                server: self.inner.server.clone(),
                retry_deadline: self.inner.retry_deadline,
            }),
        }
    }

    /// A new pub/sub connection, retrying until the deadline (`retry`).
    pub async fn pubsub(&self) -> PyResult<redis::aio::PubSub> {
        self.pubsub_with(&mut self.retrying()).await
    }

    /// A new pub/sub connection, retrying within `retrying`'s deadline.
    pub async fn pubsub_with(&self, retrying: &mut Retrying) -> PyResult<redis::aio::PubSub> {
        loop {
            let result = self.inner.client.get_async_pubsub().await;
            if let Some(pubsub) = retrying.settle(result).await.map_err(|e| self.error(&e))? {
                return Ok(pubsub);
            }
        }
    }

    /// The server's URL with any password replaced by `***`, for messages and logs.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    pub fn error(&self, err: &redis::RedisError) -> PyErr {
        errors::to_py(err, &self.inner.server)
    }
}

/// Replace the password of a Redis URL (userinfo or `pass=` query parameter) with `***`.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(raw) else {
        // Not parseable: show only the scheme so no secret can leak.
        let scheme = match raw.split_once("://") {
            Some((s, _))
                if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') =>
            {
                s
            }
            _ => "?",
        };
        return format!("{scheme}://<unparseable url>");
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "pass" || k == "password" {
                    "***".to_string()
                } else {
                    v.into()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

fn read_pem(path: Option<&str>, what: &str) -> PyResult<Option<Vec<u8>>> {
    path.map(|p| {
        std::fs::read(p).map_err(|e| PyValueError::new_err(format!("cannot read {what} {p}: {e}")))
    })
    .transpose()
}

/// A connection to one Redis server, shared by the stores and queues built on it.
///
/// `url` is `redis://`, `rediss://` (TLS) or `unix://`, with an optional ACL user and password
/// (`redis://user:pass@host:6379/0`). `ca_certs`, `certfile` and `keyfile` are PEM files for TLS
/// with a private CA and client certificates. `retry_deadline` is how many seconds a call keeps
/// retrying when Redis answers LOADING or BUSY or the connection fails (0: no retries).
#[pyclass(module = "flowcraft_fast._core", frozen)]
pub struct RedisConnection {
    pub conn: Connection,
}

#[pymethods]
impl RedisConnection {
    #[new]
    #[pyo3(signature = (url, *, connect_timeout=5.0, response_timeout=30.0, retry_deadline=30.0, ca_certs=None, certfile=None, keyfile=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: &str,
        connect_timeout: f64,
        response_timeout: f64,
        retry_deadline: f64,
        ca_certs: Option<&str>,
        certfile: Option<&str>,
        keyfile: Option<&str>,
    ) -> PyResult<Self> {
        ensure_same_process()?;
        let server = redact_url(url);
        let bad = |e: redis::RedisError| {
            PyValueError::new_err(format!("invalid Redis URL {server}: {e}"))
        };
        let root_cert = read_pem(ca_certs, "CA certificate file")?;
        let client_tls = match (
            read_pem(certfile, "certificate file")?,
            read_pem(keyfile, "key file")?,
        ) {
            (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
                client_cert,
                client_key,
            }),
            (None, None) => None,
            _ => {
                return Err(PyValueError::new_err(
                    "certfile and keyfile must be given together",
                ))
            }
        };
        let client = if root_cert.is_some() || client_tls.is_some() {
            Client::build_with_tls(
                url,
                TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
            .map_err(bad)?
        } else {
            Client::open(url).map_err(bad)?
        };
        for (name, secs) in [
            ("connect_timeout", connect_timeout),
            ("response_timeout", response_timeout),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "{name} must be a positive number of seconds"
                )));
            }
        }
        if !(retry_deadline.is_finite() && retry_deadline >= 0.0) {
            return Err(PyValueError::new_err(
                "retry_deadline must be a number of seconds >= 0",
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs_f64(connect_timeout)))
            .set_response_timeout(Some(Duration::from_secs_f64(response_timeout)))
            // one try per (re)connect: `retry` decides when to try again, so there is one
            // retry policy, not two stacked
            .set_number_of_retries(0);
        Ok(Self {
            conn: Connection {
                inner: Arc::new(Inner {
                    client,
                    config,
                    manager: OnceCell::new(),
                    server,
                    retry_deadline: Duration::from_secs_f64(retry_deadline),
                }),
            },
        })
    }

    /// The URL with its password hidden.
    #[getter]
    fn server(&self) -> String {
        self.conn.server().to_string()
    }

    /// Seconds a call keeps retrying LOADING, BUSY and connection failures (0: no retries).
    #[getter]
    fn retry_deadline(&self) -> f64 {
        self.conn.inner.retry_deadline.as_secs_f64()
    }

    /// Open the connection if needed and round-trip a PING.
    fn ping<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut m)
                .await
                .map_err(|e| conn.error(&e))?;
            Ok(pong)
        })
    }

    /// `CONFIG GET name`: the value, or None when the server has no such parameter. Raises
    /// `RedisCommandError` when CONFIG is denied (ACL) or renamed.
    fn config_get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let pairs: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(&name)
                .query_async(&mut m)
                .await
                .map_err(|e| conn.error(&e))?;
            Ok(pairs
                .chunks(2)
                .find(|p| p.len() == 2 && p[0].eq_ignore_ascii_case(&name))
                .map(|p| p[1].clone()))
        })
    }

    /// `INFO section` as a dict of its `field:value` lines.
    fn info<'py>(&self, py: Python<'py>, section: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let text: String = redis::cmd("INFO")
                .arg(&section)
                .query_async(&mut m)
                .await
                .map_err(|e| conn.error(&e))?;
            let fields: std::collections::HashMap<String, String> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect();
            Ok(fields)
        })
    }

    fn __repr__(&self) -> String {
        format!("RedisConnection({:?})", self.conn.server())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RedisConnection>()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_password_in_userinfo_and_query() {
        assert_eq!(
            redact_url("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert!(!redact_url("unix:///tmp/r.sock?db=1&pass=secret").contains("secret"));
        assert_eq!(redact_url("redis://h:1/"), "redis://h:1/");
        assert!(!redact_url("not a url secret").contains("secret"));
    }
}
