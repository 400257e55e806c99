//! The `Queue` Python class: a BullMQ-layout queue of flowcraft node jobs, and its methods as
//! Python sees them. Each method is a thin wrapper: the work is in `hot_path` (claim, commit,
//! retry, renew), `runs` (run administration), `reads` (reads of runs and the queue); replies
//! are parsed in `replies`, and leases renewed by `leases` in a tokio task of their own.

use std::future::Future;
use std::sync::Arc;

use pyo3::prelude::*;
use redis::Value;

use crate::conn::{Connection, RedisConnection};
use crate::keys::{QueueKeys, RunKeys};
use crate::leases::Leases;
use crate::replies::{text, CommitRequest, StartRequest};
use crate::runs::Resume;
use crate::scripts::{eval_many, eval_one, Call, Scripts};
use crate::stops::Stops;
use crate::waits::Waits;
use crate::{hot_path, limits, reads, runs, survey, workers};

pub struct Inner {
    pub conn: Connection,
    /// A connection of its own for the blocking wait on the marker.
    pub blocking: Connection,
    pub q: QueueKeys,
    pub runs: RunKeys,
    pub scripts: Scripts,
    pub state_ttl_s: u64,
    pub keep_completed: i64,
    pub keep_failed: i64,
    /// Write BullMQ's events stream (for `QueueEvents` listeners) on every transition.
    pub job_events: bool,
    pub leases: Arc<Leases>,
    pub stops: Arc<Stops>,
    /// The shared subscription every `wait_result` of this queue uses.
    pub waits: Arc<Waits>,
    /// The name the blocking connection should carry (workers.rs), and whether it must be
    /// (re)sent before the next wait for work (set by each beat: a reconnect loses the name).
    pub blocking_name: std::sync::Mutex<(Option<String>, bool)>,
    /// Set when the worker stops waiting for work (`stop_waiting`): a wait still blocked in
    /// Redis that takes a marker then gives it back (hot_path.rs).
    pub stopped_waiting: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// One script call on the queue's connection, its error turned into a Python exception.
    /// Like every call, it retries LOADING, BUSY and connection failures until the deadline.
    pub async fn eval(&self, script: &redis::Script, call: Call) -> PyResult<Value> {
        Ok(self.eval_resent(script, call).await?.0)
    }

    /// `eval`, and whether the call was sent again after a failure that may have let it run
    /// (a lost reply): the reply may then come from its second run (see `retry`).
    pub async fn eval_resent(&self, script: &redis::Script, call: Call) -> PyResult<(Value, bool)> {
        let mut m = self.conn.manager().await?;
        let reply = eval_one(&mut m, script, call)
            .await
            .map_err(|e| self.conn.error(&e))?;
        Ok((reply, m.resent))
    }

    /// Many calls of one script in one round trip, each reply a word (or, if it is not one,
    /// its debug form, so an error reaches the caller as text).
    pub async fn eval_texts(
        &self,
        script: &redis::Script,
        calls: &[Call],
    ) -> PyResult<Vec<String>> {
        let mut m = self.conn.manager().await?;
        let replies = eval_many(&mut m, script, calls)
            .await
            .map_err(|e| self.conn.error(&e))?;
        Ok(replies
            .iter()
            .map(|v| text(v).unwrap_or_else(|| format!("{v:?}")))
            .collect())
    }
}

/// A BullMQ-layout queue of flowcraft node jobs.
#[pyclass(module = "flowcraft_fast._core", frozen)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// What the queue's other Rust modules share with it (its connection and key shapes).
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Run `work(inner)` on the native runtime and hand its result to asyncio.
    fn spawn<'py, F, T>(
        &self,
        py: Python<'py>,
        work: impl FnOnce(Arc<Inner>) -> F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = PyResult<T>> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        crate::runtime::future_into_py(py, work(self.inner.clone()))
    }
}

#[pymethods]
impl Queue {
    #[new]
    #[pyo3(signature = (connection, name, *, prefix="bull".to_string(), run_prefix=String::new(),
                        state_ttl_s=86_400, keep_completed=1000, keep_failed=5000,
                        job_events=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        connection: &RedisConnection,
        name: &str,
        prefix: String,
        run_prefix: String,
        state_ttl_s: u64,
        keep_completed: i64,
        keep_failed: i64,
        job_events: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: connection.conn.clone(),
                blocking: connection.conn.dedicated(),
                q: QueueKeys::new(&prefix, name),
                runs: RunKeys::new(&run_prefix),
                scripts: Scripts::new(),
                state_ttl_s,
                keep_completed,
                keep_failed,
                job_events,
                leases: Arc::new(Leases::default()),
                stops: Arc::new(Stops::default()),
                waits: Arc::default(),
                blocking_name: std::sync::Mutex::new((None, false)),
                stopped_waiting: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// `<prefix>:<queue>:`
    #[getter]
    fn key_base(&self) -> String {
        self.inner.q.base().to_string()
    }

    // ---------------------------------------------------------------- the hot path

    /// Claim up to `max_jobs` ready jobs with a lease of `lease_ms` each, in one round trip.
    /// Returns (next delayed job due time in ms or 0, the jobs' runs, claimed jobs).
    fn claim<'py>(
        &self,
        py: Python<'py>,
        max_jobs: usize,
        lease_ms: u64,
        token_prefix: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| hot_path::claim(i, max_jobs, lease_ms, token_prefix))
    }

    /// Commit many finished nodes in one round trip; one `CommitReply` per node. Each commit
    /// may claim up to its request's `take` of the successor jobs it fires (local
    /// continuation); with `claim_max` > 0 the same round trip then claims up to that many
    /// ready jobs from the queue, so a busy worker needs one round trip per step.
    #[pyo3(signature = (batch, claim_max=0, lease_ms=30_000, token_prefix=String::new()))]
    fn commit<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<CommitRequest>,
        claim_max: usize,
        lease_ms: u64,
        token_prefix: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| {
            hot_path::commit(i, batch, claim_max, lease_ms, token_prefix)
        })
    }

    /// Send jobs back to the queue after a delay: (job id, token, delay ms, reason, why,
    /// stacktrace) each, `why` being "attempt" (a failed attempt), "sleep" (a sleep node parks
    /// itself) or "defer" (left for another worker); a failed attempt's traceback (or "") is
    /// appended to the job's `stacktrace`.
    fn retry<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<(String, String, u64, String, String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| hot_path::retry(i, batch))
    }

    /// Renew the leases of (job id, token, run id) jobs; per job the run's status or "lost".
    fn renew<'py>(
        &self,
        py: Python<'py>,
        jobs: Vec<(String, String, String)>,
        lease_ms: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| hot_path::renew(i, jobs, lease_ms))
    }

    /// Block (on a dedicated connection) until the queue's marker says work may be ready, at most
    /// `timeout_s` seconds. Returns True when woken by a marker.
    fn wait_for_work<'py>(&self, py: Python<'py>, timeout_s: f64) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| hot_path::wait_for_work(i, timeout_s))
    }

    /// The worker stops: a `wait_for_work` still blocked in Redis (its caller gone) that is
    /// woken by a marker raises it again, so the marker wakes a live worker, not a closed one.
    fn stop_waiting(&self) {
        self.inner
            .stopped_waiting
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    // ---------------------------------------------------------------- leases (local)

    /// Start renewing the leases of tracked jobs every `renew_ms` (0: `lease_ms / 3`), in Rust.
    #[pyo3(signature = (lease_ms, renew_ms = 0))]
    fn start_heartbeat(&self, lease_ms: u64, renew_ms: u64) {
        let i = &self.inner;
        let renew_ms = if renew_ms == 0 {
            lease_ms / 3
        } else {
            renew_ms
        };
        i.leases.start(
            i.conn.clone(),
            i.q.clone(),
            i.runs.clone(),
            lease_ms,
            renew_ms,
        );
    }

    fn stop_heartbeat(&self) {
        self.inner.leases.stop();
        self.inner.stops.stop();
    }

    /// Listen on the queue's stops channel for runs that ended early (failed, cancelled).
    fn listen_for_stops(&self) {
        let i = &self.inner;
        i.stops.start(i.conn.clone(), i.q.stops_channel());
    }

    /// Runs announced on the stops channel since the last call.
    fn stopped_runs(&self) -> Vec<String> {
        self.inner.stops.take()
    }

    /// Keep renewing this job's lease until `untrack`.
    fn track(&self, job_id: String, token: String, run_id: String) {
        self.inner.leases.track(job_id, token, run_id);
    }

    /// Stop renewing this claim's lease (a later claim of the same job keeps its own).
    fn untrack(&self, job_id: &str, token: &str) {
        self.inner.leases.untrack(job_id, token);
    }

    /// Claims to stop since the last call: (job id, lease token, "lost" or the status of their
    /// ended run).
    fn lease_events(&self) -> Vec<(String, String, String)> {
        self.inner.leases.take_events()
    }

    /// (tracked jobs, renew calls made, renew calls that failed: Redis unreachable or an error)
    fn lease_stats(&self) -> (usize, u64, u64) {
        let l = &self.inner.leases;
        (
            l.held(),
            l.renew_calls.load(std::sync::atomic::Ordering::Relaxed),
            l.renew_errors.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    // ---------------------------------------------------------------- live workers

    /// Write this worker's heartbeat record (`fields`; expires after `ttl_ms` unless beaten
    /// again) and name its connections the way BullMQ does (workers.rs). Returns (the ids of
    /// `served` blueprints the queue has not published, whether Redis accepted the name).
    fn beat<'py>(
        &self,
        py: Python<'py>,
        worker_id: String,
        fields: Vec<(String, String)>,
        ttl_ms: u64,
        served: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if ttl_ms == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "ttl_ms must be > 0 (leave() removes a record)",
            ));
        }
        self.spawn(py, |i| workers::beat(i, worker_id, fields, ttl_ms, served))
    }

    /// Remove this worker's heartbeat record at once (it stops).
    fn leave<'py>(&self, py: Python<'py>, worker_id: String) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| workers::leave(i, worker_id))
    }

    /// The heartbeat records of the queue's live workers, least recent beat first.
    fn live_workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, workers::live_workers)
    }

    // ---------------------------------------------------------------- flow control

    /// Admit claimed jobs of limited nodes, all in one round trip (limits.rs, limit.lua):
    /// ("ok" | "parked" | "delay" | "lost" | "error: ...", delay ms) each. A job is (job id,
    /// token, (digest, name, limit), (digest, name, max, window ms)); an empty digest for a
    /// limit the node does not set.
    #[allow(clippy::type_complexity)]
    fn admit_many<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<(
            String,
            String,
            (String, String, u32),
            (String, String, u32, u64),
        )>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batch = batch
            .into_iter()
            .map(|(job_id, token, concurrency, rate)| limits::Admission {
                job_id,
                token,
                concurrency,
                rate,
            })
            .collect();
        self.spawn(py, |i| limits::admit_many(i, batch))
    }

    /// Free the slots of jobs that left this worker (digest, job ids per group) and fill the
    /// groups' free slots from their waiters.
    fn release_limits<'py>(
        &self,
        py: Python<'py>,
        groups: Vec<(String, Vec<String>)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| limits::release(i, groups))
    }

    /// Promote waiters of up to `max_groups` groups whose holders died; groups looked at.
    fn sweep_limits<'py>(&self, py: Python<'py>, max_groups: u32) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, move |i| limits::sweep(i, max_groups))
    }

    /// The concurrency groups: (name, limit, holding, waiting) each.
    fn limit_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, limits::stats)
    }

    // ---------------------------------------------------------------- run administration

    /// Create runs and enqueue their start jobs, each run atomically, all in one round trip;
    /// one outcome per run: "ok", or (nothing changed) "exists", "unpublished", "stale".
    fn start_runs<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<StartRequest>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| runs::start_runs(i, batch))
    }

    /// End a live run as cancelled; "ok", the status it already had, or "missing".
    fn cancel_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        payload: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| runs::cancel_run(i, run_id, payload))
    }

    /// Give a waiting node its result: enqueue a job carrying it. "ok", "missing" or
    /// "not-awaiting".
    #[allow(clippy::too_many_arguments)]
    fn resume_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        node_key: String,
        job_id: String,
        data: String,
        opts: String,
        payload: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let resume = Resume {
            run_id,
            node_key,
            job_id,
            data,
            opts,
            payload,
        };
        self.spawn(py, |i| runs::resume_run(i, resume))
    }

    /// Deliver a named event to a run (event.lua): "delivered" (a node waited for it and is
    /// resumed by the job given), "buffered" (kept for the node that will wait for it),
    /// "duplicate" (this delivery id was taken), "missing", "ended", or "retry:<node key>"
    /// (another node waits than `node_key` says: read the run again and send again).
    #[allow(clippy::too_many_arguments)]
    fn send_event<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        name: String,
        payload: String,
        delivery: String,
        node_key: String,
        job_id: String,
        data: String,
        opts: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let event = runs::Event {
            run_id,
            name,
            payload,
            delivery,
            node_key,
            job_id,
            data,
            opts,
        };
        self.spawn(py, |i| runs::send_event(i, event))
    }

    /// Take over a run the TypeScript client protocol started (no run record; its state names
    /// a blueprint this worker serves): create its record once, with the start nodes fired as
    /// (node key, job id) pairs. Returns the run's status after ("running"), or "mismatch".
    fn adopt_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        blueprint_id: String,
        version: String,
        starts: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| {
            runs::adopt_run(i, run_id, blueprint_id, version, starts)
        })
    }

    /// Re-enqueue the fired-but-unfinished nodes of a live run whose jobs are gone or dead.
    /// Candidates: (node key, old job id, new job id, data, opts, rebuilt input or "").
    /// Returns the node keys enqueued.
    fn reconcile_run<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        candidates: Vec<(String, String, String, String, String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| runs::reconcile_run(i, run_id, candidates))
    }

    /// Return every job of active whose lease expired to wait, a slice of active per script
    /// call (one pass per `guard_ms` across workers; 0: unguarded). With `release_prefix`
    /// ("<name>@") and `own_prefix` ("<name>@<incarnation>:"), also the jobs whose lease an
    /// earlier incarnation of this named worker held. Returns the requeued ids.
    #[pyo3(signature = (guard_ms, release_prefix = String::new(), own_prefix = String::new()))]
    fn requeue_stalled<'py>(
        &self,
        py: Python<'py>,
        guard_ms: u64,
        release_prefix: String,
        own_prefix: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| {
            runs::requeue_stalled(i, guard_ms, (release_prefix, own_prefix))
        })
    }

    /// Runs of this queue without progress since `before_ms` (Redis time, ms), oldest first:
    /// up to `count` (run id, last progress ms) pairs starting at `offset`.
    fn stalled_runs<'py>(
        &self,
        py: Python<'py>,
        idle_ms: u64,
        offset: usize,
        count: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| runs::stalled_runs(i, idle_ms, offset, count))
    }

    /// One page of the reconciler's survey (survey.rs): the unfinished runs without progress
    /// for `threshold_ms` after `cursor` (opaque: "" at the start, then what the last call
    /// returned; it holds a score bound and the pass's cutoff), examined in two pipelines.
    /// Returns (next cursor or None, examined, forgotten, run ids to repair).
    fn survey_page<'py>(
        &self,
        py: Python<'py>,
        threshold_ms: u64,
        cursor: String,
        count: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| survey::survey_page(i, threshold_ms, cursor, count))
    }

    /// The SCAN mode of the survey: one SCAN step (`cursor` "" at the start) over the runs'
    /// meta keys, the runs found examined the same way; same reply as `survey_page`.
    fn survey_keys<'py>(
        &self,
        py: Python<'py>,
        threshold_ms: u64,
        cursor: String,
        count: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| survey::survey_keys(i, threshold_ms, cursor, count))
    }

    // ---------------------------------------------------------------- reads

    /// A run's join arrivals: "<node key>\x1f<predecessor>" -> value JSON ("\x01": skipped).
    fn run_joins<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| reads::run_joins(i, run_id))
    }

    /// The run's meta hash and its final status JSON (None while it runs).
    fn run_info<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| reads::run_info(i, run_id))
    }

    /// Wait until the run writes its status (terminal or awaiting), at most `timeout_s`:
    /// (status JSON, the run's state fields as JSON text), or None on timeout or when the
    /// subscription dropped (the caller waits again). Subscribes first, then reads, then waits:
    /// no race and no polling; the state is read with the status once a message woke it.
    fn wait_result<'py>(
        &self,
        py: Python<'py>,
        run_id: String,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| reads::wait_result(i, run_id, timeout_s))
    }

    /// Publish the blueprints this worker serves: (id, JSON) pairs, so clients can start runs
    /// by id and check them before anything is enqueued.
    fn publish_blueprints<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| reads::publish_blueprints(i, items))
    }

    /// The JSON of a published blueprint, or None.
    fn get_blueprint<'py>(
        &self,
        py: Python<'py>,
        blueprint_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, |i| reads::get_blueprint(i, blueprint_id))
    }

    /// Job counts by state, read the way BullMQ reads them.
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, reads::counts)
    }

    /// A listing page of runs, highest score first: ended runs (`ended`, scored by their end)
    /// or unfinished ones (scored by their last progress), scores from `since_ms` to
    /// `before_ms`, `count` from `offset`; (run id, score ms, meta's listed fields) each.
    #[pyo3(signature = (ended, since_ms=None, before_ms=None, offset=0, count=100))]
    fn list_runs<'py>(
        &self,
        py: Python<'py>,
        ended: bool,
        since_ms: Option<i64>,
        before_ms: Option<i64>,
        offset: usize,
        count: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.spawn(py, move |i| {
            reads::list_runs(i, ended, since_ms, before_ms, offset, count)
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Queue>()?;
    crate::replies::register(m)
}
