//! One Redis connection per `RedisConnection` object: URL parsing, TLS material, redaction,
//! lazy connect with timeouts, automatic reconnect (redis-rs `ConnectionManager`), and retries
//! of LOADING, BUSY and connection failures until a deadline (`retry`).
//!
//! Commands from many Python coroutines are multiplexed over the one connection, so a process
//! needs one `RedisConnection` per Redis, not one per task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use redis::{Client, ClientTlsConfig, TlsCertificates};
use tokio::sync::OnceCell;

use crate::errors;
use crate::retry::Retrying;
use crate::runtime::ensure_same_process;
use crate::topology::{self, Link, Target, Timeouts, Topology};

/// Shared, cheaply clonable handle to one (lazily opened) Redis connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// What every connection to the same Redis shares (`dedicated` copies share it too): where it
/// is, and what was found there on the first connect.
struct Shared {
    target: Target,
    tls: Option<TlsCertificates>,
    timeouts: Timeouts,
    topology: OnceCell<Topology>,
    server: String,
    /// How long one call retries transient failures (`retry`); zero: not at all.
    retry_deadline: Duration,
    /// `WAIT replicas timeout_ms` after every script pipeline (`scripts::send`), or None.
    replica_wait: Option<(u32, u64)>,
    /// Script pipelines whose WAIT came back with fewer replicas than asked (timed out).
    replica_wait_short: AtomicU64,
}

struct Inner {
    shared: Arc<Shared>,
    /// The open link and its generation (a sentinel-managed link is dropped and opened again
    /// to the new primary: `invalidate`).
    link: Mutex<Option<(u64, Link)>>,
    /// Held while a link is opened, so concurrent calls open one; counts the links opened.
    opening: tokio::sync::Mutex<u64>,
    /// For sentinel: the primary the last link went to (pub/sub connects there too).
    primary: Mutex<Option<Client>>,
}

impl Connection {
    fn with_shared(shared: Arc<Shared>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                link: Mutex::new(None),
                opening: tokio::sync::Mutex::new(0),
                primary: Mutex::new(None),
            }),
        }
    }

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
        Retrying::new(self.clone(), self.inner.shared.retry_deadline)
    }

    /// The same, with the deadline cut to `limit` when that is shorter (a bounded wait).
    pub fn retrying_within(&self, limit: Duration) -> Retrying {
        Retrying::new(self.clone(), self.inner.shared.retry_deadline.min(limit))
    }

    /// What the URL turned out to be, found on first use (one try; `Retrying` retries).
    async fn topology(&self) -> redis::RedisResult<&Topology> {
        let shared = &self.inner.shared;
        shared
            .topology
            .get_or_try_init(|| async {
                match &shared.target {
                    Target::Servers(seeds) => {
                        topology::discover(seeds, shared.tls.as_ref(), shared.timeouts).await
                    }
                    Target::Sentinel(_) => Ok(Topology::Sentinel),
                }
            })
            .await
    }

    /// Whether this connection goes to the primary Redis Sentinel names, and so opens a new
    /// link (asking the sentinels again) when the old one fails.
    pub fn follows_failover(&self) -> bool {
        matches!(self.inner.shared.target, Target::Sentinel(_))
    }

    /// Whether the URL named a Redis Cluster (known once connected).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.shared.topology.get(), Some(Topology::Cluster(_)))
    }

    /// The shared link and its generation, opened on first use; one try (`Retrying` retries).
    pub(crate) async fn open(&self) -> redis::RedisResult<(u64, Link)> {
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let mut generation = self.inner.opening.lock().await;
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let shared = &self.inner.shared;
        let topology = self.topology().await?;
        let client = match &shared.target {
            Target::Servers(seeds) => seeds[0].clone(),
            Target::Sentinel(sentinel) => {
                let client = sentinel.master(shared.timeouts).await?;
                *self.inner.primary.lock().expect("primary lock") = Some(client.clone());
                client
            }
        };
        let link = topology::open_link(topology, &client, shared.timeouts).await?;
        *generation += 1;
        let entry = (*generation, link);
        *self.inner.link.lock().expect("link lock") = Some(entry.clone());
        Ok(entry)
    }

    fn current(&self) -> Option<(u64, Link)> {
        self.inner.link.lock().expect("link lock").clone()
    }

    /// Drop the link of `generation` (if it is still the current one) so that the next call
    /// opens another: after a failover, to the new primary.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut link = self.inner.link.lock().expect("link lock");
        if link.as_ref().is_some_and(|(g, _)| *g == generation) {
            *link = None;
        }
    }

    /// `(replicas, timeout ms)` every script pipeline waits for, if any.
    pub fn replica_wait(&self) -> Option<(u32, u64)> {
        self.inner.shared.replica_wait
    }

    /// Count a WAIT reply that acknowledged fewer replicas than asked.
    pub fn count_replica_wait(&self, reply: Option<&redis::Value>) {
        let Some((replicas, _)) = self.inner.shared.replica_wait else {
            return;
        };
        let acked = match reply {
            Some(redis::Value::Int(n)) => *n,
            _ => -1,
        };
        if acked < i64::from(replicas) {
            self.inner
                .shared
                .replica_wait_short
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `cmd` on every master of a cluster (node address -> reply) or on the one server,
    /// retrying transient failures until the deadline.
    pub async fn on_every_master(&self, cmd: &redis::Cmd) -> PyResult<redis::Value> {
        let mut retrying = self.retrying();
        loop {
            let result = match self.open().await {
                Ok((generation, mut link)) => {
                    let result = link.on_every_master(cmd).await;
                    if result.is_err() && self.follows_failover() {
                        self.invalidate(generation); // the next try asks the sentinels
                    }
                    result
                }
                Err(e) => Err(e),
            };
            let result = result.and_then(redis::Value::extract_error);
            if let Some(v) = retrying.settle(result).await.map_err(|e| self.error(&e))? {
                return Ok(v);
            }
        }
    }

    /// The database number of the URL.
    pub fn db(&self) -> i64 {
        match &self.inner.shared.target {
            Target::Servers(seeds) => seeds[0].get_connection_info().redis_settings().db(),
            Target::Sentinel(s) => s.db(),
        }
    }

    /// A second, independent connection to the same server (for blocking commands).
    pub fn dedicated(&self) -> Self {
        Self::with_shared(self.inner.shared.clone())
    }

    /// A new pub/sub connection, retrying until the deadline (`retry`).
    pub async fn pubsub(&self) -> PyResult<redis::aio::PubSub> {
        self.pubsub_with(&mut self.retrying()).await
    }

    /// A new pub/sub connection, retrying within `retrying`'s deadline. In a cluster it goes
    /// to a seed node (published messages reach every node); with sentinels to the primary.
    pub async fn pubsub_with(&self, retrying: &mut Retrying) -> PyResult<redis::aio::PubSub> {
        let mut attempt = 0usize;
        loop {
            let result = self.open_pubsub(attempt).await;
            attempt += 1;
            if let Some(pubsub) = retrying.settle(result).await.map_err(|e| self.error(&e))? {
                return Ok(pubsub);
            }
        }
    }

    async fn open_pubsub(&self, attempt: usize) -> redis::RedisResult<redis::aio::PubSub> {
        let client = match &self.inner.shared.target {
            Target::Servers(seeds) => seeds[attempt % seeds.len()].clone(),
            Target::Sentinel(sentinel) => {
                let known = self.inner.primary.lock().expect("primary lock").clone();
                match known {
                    Some(client) if attempt == 0 => client,
                    _ => {
                        let client = sentinel.master(self.inner.shared.timeouts).await?;
                        *self.inner.primary.lock().expect("primary lock") = Some(client.clone());
                        client
                    }
                }
            }
        };
        client.get_async_pubsub().await
    }

    /// The server's URL with any password replaced by `***`, for messages and logs.
    pub fn server(&self) -> &str {
        &self.inner.shared.server
    }

    pub fn error(&self, err: &redis::RedisError) -> PyErr {
        errors::to_py(err, &self.inner.shared.server)
    }
}

/// Replace the passwords of a Redis URL (userinfo, `pass=`/`password=`/`sentinel_password=`
/// query parameters) with `***`; a comma-separated list of URLs and a sentinel URL
/// (`redis+sentinel://user:pass@h1:p1,h2:p2/name`) are redacted part by part.
pub fn redact_url(raw: &str) -> String {
    if let Some((scheme, rest)) = raw.split_once("://") {
        if scheme.ends_with("+sentinel") {
            return redact_sentinel_url(scheme, rest);
        }
    }
    if raw.contains(',') {
        return raw
            .split(',')
            .map(|u| redact_one(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(raw)
}

fn redact_sentinel_url(scheme: &str, rest: &str) -> String {
    let (rest, query) = rest
        .split_once('?')
        .map_or((rest, None), |(r, q)| (r, Some(q)));
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((auth, hosts)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{auth}@{hosts}"),
        },
        None => authority.to_string(),
    };
    let mut out = format!("{scheme}://{authority}");
    if let Some(path) = path {
        out.push('/');
        out.push_str(path);
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.ends_with("password") || k == "pass" => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn redact_one(raw: &str) -> String {
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

/// A connection to one Redis (a server, a cluster, or the primary sentinels name), shared by
/// the stores and queues built on it.
///
/// `url` is `redis://`, `rediss://` (TLS) or `unix://`, with an optional ACL user and password
/// (`redis://user:pass@host:6379/0`); a node of a Redis Cluster (found on connect), or several
/// nodes' URLs comma-separated; or `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master
/// name>[/<db>]` (`rediss+sentinel://` for TLS), see `topology`. `ca_certs`, `certfile` and
/// `keyfile` are PEM files for TLS with a private CA and client certificates. `retry_deadline` is how many seconds a call keeps
/// retrying when Redis answers LOADING or BUSY or the connection fails (0: no retries).
/// `wait_replicas` > 0 ends every script pipeline (start, claim, commit...) with `WAIT
/// wait_replicas wait_timeout`: a step is acknowledged once that many replicas hold it (or the
/// timeout passed, counted in `replica_wait_timeouts`), so a failover loses none.
#[pyclass(module = "flowcraft_fast._core", frozen)]
pub struct RedisConnection {
    pub conn: Connection,
}

#[pymethods]
impl RedisConnection {
    #[new]
    #[pyo3(signature = (url, *, connect_timeout=5.0, response_timeout=30.0, retry_deadline=30.0, ca_certs=None, certfile=None, keyfile=None, wait_replicas=0, wait_timeout=1.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: &str,
        connect_timeout: f64,
        response_timeout: f64,
        retry_deadline: f64,
        ca_certs: Option<&str>,
        certfile: Option<&str>,
        keyfile: Option<&str>,
        wait_replicas: u32,
        wait_timeout: f64,
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
        let tls = (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        });
        let target = topology::parse(url, tls.as_ref()).map_err(bad)?;
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
        if !(wait_timeout.is_finite() && wait_timeout > 0.0) {
            return Err(PyValueError::new_err(
                "wait_timeout must be a positive number of seconds",
            ));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let replica_wait = (wait_replicas > 0).then_some((
            wait_replicas,
            (wait_timeout * 1000.0).ceil().max(1.0) as u64,
        ));
        let shared = Shared {
            replica_wait,
            replica_wait_short: AtomicU64::new(0),
            target,
            tls,
            timeouts: Timeouts {
                connect: Duration::from_secs_f64(connect_timeout),
                response: Duration::from_secs_f64(response_timeout),
            },
            topology: OnceCell::new(),
            server,
            retry_deadline: Duration::from_secs_f64(retry_deadline),
        };
        Ok(Self {
            conn: Connection::with_shared(Arc::new(shared)),
        })
    }

    /// Replicas every script pipeline waits for (`WAIT`); 0: none.
    #[getter]
    fn wait_replicas(&self) -> u32 {
        self.conn.inner.shared.replica_wait.map_or(0, |(n, _)| n)
    }

    /// Script pipelines whose WAIT timed out before enough replicas acknowledged.
    #[getter]
    fn replica_wait_timeouts(&self) -> u64 {
        self.conn
            .inner
            .shared
            .replica_wait_short
            .load(Ordering::Relaxed)
    }

    /// The URL with its password hidden.
    #[getter]
    fn server(&self) -> String {
        self.conn.server().to_string()
    }

    /// Seconds a call keeps retrying LOADING, BUSY and connection failures (0: no retries).
    #[getter]
    fn retry_deadline(&self) -> f64 {
        self.conn.inner.shared.retry_deadline.as_secs_f64()
    }

    /// What the URL turned out to be, connecting if needed: "single" (one server),
    /// "cluster" (a Redis Cluster) or "sentinel" (the primary Redis Sentinel names).
    fn topology<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            conn.manager().await?;
            Ok(if conn.is_cluster() {
                "cluster"
            } else if conn.follows_failover() {
                "sentinel"
            } else {
                "single"
            })
        })
    }

    /// `GET key`: the value, or None (settings kept in plain keys: a queue's partition count).
    fn get<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let value: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut m)
                .await
                .map_err(|e| conn.error(&e))?;
            Ok(value)
        })
    }

    /// `SET key value NX`, then the key's value: `value` when it was absent, else what it
    /// held (so two writers agree on the first one's).
    fn set_if_absent<'py>(
        &self,
        py: Python<'py>,
        key: String,
        value: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let mut m = conn.manager().await?;
            let _: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("NX")
                .query_async(&mut m)
                .await
                .map_err(|e| conn.error(&e))?;
            let held: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut m)
                .await
                .map_err(|e| conn.error(&e))?;
            Ok(held.unwrap_or(value))
        })
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
    /// `RedisCommandError` when CONFIG is denied (ACL) or renamed. On a cluster every node is
    /// asked: one value when they agree, else `node=value` pairs, comma-separated.
    fn config_get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let reply = conn
                .on_every_master(redis::cmd("CONFIG").arg("GET").arg(&name))
                .await?;
            let mut values = Vec::new();
            for (node, value) in per_node(reply) {
                let pairs: Vec<String> =
                    redis::from_redis_value(value).map_err(|e| conn.error(&e.into()))?;
                let found = pairs
                    .chunks(2)
                    .find(|p| p.len() == 2 && p[0].eq_ignore_ascii_case(&name))
                    .map(|p| p[1].clone());
                values.push((node, found));
            }
            Ok(agreed(values))
        })
    }

    /// `INFO section` as a dict of its `field:value` lines. On a cluster every node is asked:
    /// a field's value when they agree, else `node=value` pairs, comma-separated.
    fn info<'py>(&self, py: Python<'py>, section: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        crate::runtime::future_into_py(py, async move {
            let reply = conn
                .on_every_master(redis::cmd("INFO").arg(&section))
                .await?;
            let mut nodes: Vec<(String, HashMap<String, String>)> = Vec::new();
            for (node, value) in per_node(reply) {
                let text: String =
                    redis::from_redis_value(value).map_err(|e| conn.error(&e.into()))?;
                let fields = text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                    .collect();
                nodes.push((node, fields));
            }
            let names: std::collections::BTreeSet<String> =
                nodes.iter().flat_map(|(_, f)| f.keys().cloned()).collect();
            let fields: HashMap<String, String> = names
                .into_iter()
                .filter_map(|name| {
                    let values = nodes
                        .iter()
                        .map(|(node, f)| (node.clone(), f.get(&name).cloned()))
                        .collect();
                    agreed(values).map(|v| (name, v))
                })
                .collect();
            Ok(fields)
        })
    }

    fn __repr__(&self) -> String {
        format!("RedisConnection({:?})", self.conn.server())
    }
}

/// A reply as (node, reply) pairs: a cluster's reply to a command sent to every node is a map
/// of node address -> reply; one server's is its reply (node "").
fn per_node(reply: redis::Value) -> Vec<(String, redis::Value)> {
    match reply {
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .map(|(node, v)| (redis::from_redis_value(node).unwrap_or_default(), v))
            .collect(),
        other => vec![(String::new(), other)],
    }
}

/// One value when every node gave the same, else `node=value` pairs (a node without it:
/// `node=`), comma-separated.
fn agreed(values: Vec<(String, Option<String>)>) -> Option<String> {
    let first = values.first()?.1.clone();
    if values.iter().all(|(_, v)| *v == first) {
        return first;
    }
    Some(
        values
            .into_iter()
            .map(|(node, v)| format!("{node}={}", v.unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
    )
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
