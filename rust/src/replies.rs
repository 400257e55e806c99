//! What crosses to Python, and how script replies are read into it.
//!
//! `ClaimedJob` is what a claim hands to Python; `CommitRequest` and `ArrivalRequest` are read
//! from Python objects with those attributes (`flowcraft_fast.distributed.wire`). The parsers
//! turn a script's reply (`redis::Value`) into them, or into an error naming the script.

use std::collections::HashMap;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use redis::Value;

/// A job handed to this worker by a claim (or by a commit that claimed a successor it fired),
/// with what its node needs to run. Fields of the job data are read once, by the claim script
/// (which decodes it anyway).
#[pyclass(module = "flowcraft_fast._core", frozen, get_all)]
#[derive(Clone)]
pub struct ClaimedJob {
    /// BullMQ job id.
    pub id: String,
    /// The lease token: the commit must present it (fencing).
    pub token: String,
    /// The job data as JSON text (`{runId, blueprintId, nodeId, iteration, blueprintVersion}`).
    pub data: String,
    pub run_id: String,
    pub node_id: String,
    /// The iteration as the data gives it ("0", "3", "1.2").
    pub iteration: String,
    pub blueprint_id: String,
    /// "" when the data has none (or null).
    pub blueprint_version: String,
    /// Failed attempts so far (BullMQ's `attemptsMade`).
    pub attempts_made: i64,
    /// Times the job was claimed, this claim included (BullMQ's `ats`).
    pub attempts_started: i64,
    pub opts: String,
    /// The value its incoming edges carried (JSON, or "\x01" for a skip token); None for a
    /// start node (its input is in the run's context).
    pub input: Option<String>,
    /// `{output, action}` JSON a client resumed a waiting node with.
    pub resume: Option<String>,
    /// A sleep node's delay has passed.
    pub slept: bool,
    /// How often the job's lease expired while a worker held it (its workers died): past the
    /// worker's stall limit its node fails without running (see stalled.lua).
    pub stalls: i64,
}

#[pymethods]
impl ClaimedJob {
    /// The key the run's ledger knows this activation by: `<iteration>|<node id>`.
    #[getter]
    fn node_key(&self) -> String {
        format!("{}|{}", self.iteration, self.node_id)
    }

    fn __repr__(&self) -> String {
        format!(
            "ClaimedJob({:?}, node {:?}, run {:?})",
            self.id, self.node_id, self.run_id
        )
    }
}

/// The runs of claimed jobs, each once: run id -> (status, state fields as JSON text, state
/// version).
pub type ClaimedRuns = HashMap<String, (String, HashMap<String, String>, i64)>;

/// What one claim returns: (next delayed job due time in ms or 0, runs, jobs, jobs it failed at
/// once as (id, reason): see claim.lua).
pub type ClaimReply = (i64, ClaimedRuns, Vec<ClaimedJob>, Vec<(String, String)>);

/// One arrival of a finished node at a successor activation, read from Python's
/// `flowcraft_fast.distributed.wire.ArrivalRequest` (any object with these attributes).
#[derive(FromPyObject)]
pub struct ArrivalRequest {
    /// `<iteration>|<node id>` of the successor activation.
    pub target_key: String,
    pub source: String,
    /// The value the edge carries (JSON), or "\x01" for a skipped edge.
    pub value: String,
    /// "all" or "any".
    pub strategy: String,
    /// The predecessors the successor's join waits for, as the committer knows them.
    pub predecessors: Vec<String>,
    /// The job that runs the successor if this arrival fires it, its data and opts.
    pub job_id: String,
    pub job_data: String,
    pub job_opts: String,
}

/// One finished node to commit, read from Python's
/// `flowcraft_fast.distributed.wire.CommitRequest`.
#[derive(FromPyObject)]
pub struct CommitRequest {
    pub job_id: String,
    pub token: String,
    pub run_id: String,
    pub node_key: String,
    /// "ok" (the node finished), "await" (it parks the run), "fail" (the run fails).
    pub mode: String,
    /// The job's result text (`returnvalue`, or `failedReason` when failing).
    pub result: String,
    /// The status payload written when this commit ends or parks the run ("" for the default).
    pub payload: String,
    pub sets: Vec<(String, String)>,
    pub deletes: Vec<String>,
    pub arrivals: Vec<ArrivalRequest>,
    /// How many fired successor jobs this worker claims at once (local continuation).
    pub take: usize,
    /// The committing job's blueprint id and version (the successors' too).
    pub blueprint_id: String,
    pub blueprint_version: String,
    /// The state version of the snapshot the node ran with (-1: unknown).
    pub known_version: i64,
    /// With "fail": the node's traceback, appended to the job's `stacktrace` ("" for none).
    pub stacktrace: String,
}

/// A run to start, read from Python's `flowcraft_fast.distributed.wire.StartRequest`.
#[derive(FromPyObject)]
pub struct StartRequest {
    pub run_id: String,
    pub blueprint_id: String,
    pub version: String,
    /// The initial context: (field, JSON) pairs.
    pub sets: Vec<(String, String)>,
    /// One (job id, node key, data, opts) per start node.
    pub jobs: Vec<(String, String, String, String)>,
}

/// What one commit did: `code` "ok", "dup", "terminal", "lost" or "error"; for "ok", `detail`
/// is the run's outstanding job count (or "failed"/"awaiting") and `fired` the node keys of the
/// successor jobs created (separated by \x1f). `taken` are the successor jobs the commit
/// claimed for this worker; `state` the run's state fields after the commit when it took any
/// and the request's `known_version` was stale (None: the snapshot plus the commit's writes is
/// the state); `version` the state version after the commit (-1 when not reported).
#[pyclass(module = "flowcraft_fast._core", frozen, get_all)]
pub struct CommitReply {
    pub code: String,
    pub detail: String,
    pub fired: String,
    pub taken: Vec<ClaimedJob>,
    pub state: Option<HashMap<String, String>>,
    pub version: i64,
}

#[pymethods]
impl CommitReply {
    fn __repr__(&self) -> String {
        format!(
            "CommitReply({:?}, {:?}, taken={})",
            self.code,
            self.detail,
            self.taken.len()
        )
    }
}

pub fn bad_reply(what: &str, v: &Value) -> PyErr {
    PyRuntimeError::new_err(format!("unexpected reply from the {what} script: {v:?}"))
}

pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => text(other).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

fn parse_job(v: &Value) -> Option<ClaimedJob> {
    let Value::Array(f) = v else { return None };
    if f.len() < 14 {
        return None;
    }
    Some(ClaimedJob {
        id: text(&f[0])?,
        token: text(&f[1])?,
        data: text(&f[2])?,
        attempts_made: int(&f[3]),
        attempts_started: int(&f[4]),
        opts: text(&f[5]).unwrap_or_else(|| "{}".into()),
        input: text(&f[6]),
        run_id: text(&f[7])?,
        resume: text(&f[8]),
        slept: text(&f[9]).is_some(),
        node_id: text(&f[10])?,
        iteration: text(&f[11]).unwrap_or_else(|| "0".into()),
        blueprint_id: text(&f[12]).unwrap_or_default(),
        blueprint_version: text(&f[13]).unwrap_or_default(),
        stalls: f.get(14).map_or(0, int),
    })
}

fn parse_state(v: &Value) -> Option<HashMap<String, String>> {
    let mut state = HashMap::new();
    if let Value::Array(flat) = v {
        for pair in flat.chunks(2) {
            if let [k, v] = pair {
                state.insert(text(k)?, text(v)?);
            }
        }
    }
    Some(state)
}

pub fn parse_claim(reply: &Value) -> PyResult<ClaimReply> {
    let Value::Array(items) = reply else {
        return Err(bad_reply("claim", reply));
    };
    let next = items.first().map_or(0, int);
    let mut runs = HashMap::new();
    if let Some(Value::Array(flat)) = items.get(1) {
        for run in flat.chunks(4) {
            if let [id, status, state, version] = run {
                let id = text(id).ok_or_else(|| bad_reply("claim", reply))?;
                let state = parse_state(state).ok_or_else(|| bad_reply("claim", reply))?;
                runs.insert(id, (text(status).unwrap_or_default(), state, int(version)));
            }
        }
    }
    let mut rejected = Vec::new();
    if let Some(Value::Array(flat)) = items.get(2) {
        for pair in flat.chunks(2) {
            if let [id, reason] = pair {
                rejected.push((
                    text(id).unwrap_or_default(),
                    text(reason).unwrap_or_default(),
                ));
            }
        }
    }
    let mut jobs = Vec::with_capacity(items.len().saturating_sub(3));
    for item in items.iter().skip(3) {
        jobs.push(parse_job(item).ok_or_else(|| bad_reply("claim", item))?);
    }
    Ok((next, runs, jobs, rejected))
}

fn error_reply(detail: String) -> CommitReply {
    CommitReply {
        code: "error".to_string(),
        detail,
        fired: String::new(),
        taken: Vec::new(),
        state: None,
        version: -1,
    }
}

/// A commit's reply: {code, detail, fired, taken, state} (see commit.lua); the jobs it took are
/// built from the request's arrivals, which carry their ids, data and options.
pub fn commit_reply(v: &Value, request: &CommitRequest) -> CommitReply {
    let items = match v {
        Value::Array(items) if items.len() >= 2 => items,
        Value::ServerError(e) => return error_reply(format!("{e:?}")),
        other => return error_reply(format!("{other:?}")),
    };
    let mut taken = Vec::new();
    if let Some(Value::Array(entries)) = items.get(3) {
        for entry in entries {
            match taken_job(entry, request) {
                Some(job) => taken.push(job),
                None => return error_reply(format!("unexpected taken job {entry:?}")),
            }
        }
    }
    CommitReply {
        code: text(&items[0]).unwrap_or_default(),
        detail: text(&items[1]).unwrap_or_default(),
        fired: items.get(2).and_then(text).unwrap_or_default(),
        state: match items.get(4) {
            Some(Value::Array(_)) if !taken.is_empty() => items.get(4).and_then(parse_state),
            _ => None,
        },
        version: items.get(5).map_or(-1, int),
        taken,
    }
}

fn taken_job(entry: &Value, c: &CommitRequest) -> Option<ClaimedJob> {
    let Value::Array(f) = entry else { return None };
    let arrival = c.arrivals.get(usize::try_from(int(f.first()?)).ok()?)?;
    let (iteration, node_id) = arrival.target_key.split_once('|')?;
    Some(ClaimedJob {
        id: arrival.job_id.clone(),
        token: text(f.get(1)?)?,
        data: arrival.job_data.clone(),
        run_id: c.run_id.clone(),
        node_id: node_id.to_string(),
        iteration: iteration.to_string(),
        blueprint_id: c.blueprint_id.clone(),
        blueprint_version: c.blueprint_version.clone(),
        attempts_made: 0,
        attempts_started: 1,
        opts: arrival.job_opts.clone(),
        input: f.get(2).and_then(text),
        resume: None,
        slept: false,
        stalls: 0,
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ClaimedJob>()?;
    m.add_class::<CommitReply>()
}
