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
    /// The concurrency group (digest) whose slot the commit that took this job acquired for
    /// it (commit.lua); "" when it holds none yet (a limited node's job is then admitted
    /// before it runs, limit.lua).
    pub held_limit: String,
}

#[pymethods]
impl ClaimedJob {
    /// A job this worker runs ahead of the commit that will claim it for it (speculative
    /// continuation, `distributed/worker.py`): its parent's commit takes it with `token` only
    /// when the prediction holds (commit.lua), else the run is discarded.
    #[new]
    #[pyo3(signature = (id, token, data, run_id, target_key, blueprint_id, blueprint_version, opts, input))]
    #[allow(clippy::too_many_arguments)]
    fn predicted(
        id: String,
        token: String,
        data: String,
        run_id: String,
        target_key: &str,
        blueprint_id: String,
        blueprint_version: String,
        opts: String,
        input: String,
    ) -> PyResult<Self> {
        let Some((iteration, node_id)) = target_key.split_once('|') else {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "target key {target_key:?} is not <iteration>|<node id>"
            )));
        };
        Ok(ClaimedJob {
            id,
            token,
            data,
            run_id,
            node_id: node_id.to_string(),
            iteration: iteration.to_string(),
            blueprint_id,
            blueprint_version,
            attempts_made: 0,
            attempts_started: 1,
            opts,
            input: Some(input),
            resume: None,
            slept: false,
            stalls: 0,
            held_limit: String::new(),
        })
    }

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
/// version, the W3C traceparent its client stored at start, its outstanding jobs or -1).
pub type ClaimedRuns = HashMap<String, (String, HashMap<String, String>, i64, Option<String>, i64)>;

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
    /// The successor's concurrency group (digest, name, limit) when it has one and this
    /// arrival's value is its input: a commit taking the job takes a slot for it or leaves
    /// it on the queue ("" digest: none).
    pub limit: (String, String, u32),
}

/// One finished node to commit, read from Python's
/// `flowcraft_fast.distributed.wire.CommitRequest`.
#[derive(FromPyObject)]
#[cfg_attr(test, derive(Default))]
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
    /// The concurrency group (digest) whose slot the committing job holds ("" none): the
    /// commit frees it.
    pub held_limit: String,
    /// Sent in the same script call as the commit before it (a speculative job behind the
    /// commit that takes it: commit.lua then creates the job as it finishes it).
    pub follows: bool,
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
    /// The W3C traceparent of the client's start span ("" for none), kept in the run's meta.
    pub traceparent: String,
    /// BullMQ priority carried by every job of the run (0: none; lower runs first).
    pub priority: u32,
    /// The run's singleton key ("" for none): see start.lua.
    pub singleton: String,
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
        held_limit: String::new(),
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
        for run in flat.chunks(6) {
            if let [id, status, state, version, traceparent, pending] = run {
                let id = text(id).ok_or_else(|| bad_reply("claim", reply))?;
                let state = parse_state(state).ok_or_else(|| bad_reply("claim", reply))?;
                let status = text(status).unwrap_or_default();
                let runs_entry = (status, state, int(version), text(traceparent), int(pending));
                runs.insert(id, runs_entry);
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
        held_limit: arrival.limit.0.clone(),
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ClaimedJob>()?;
    m.add_class::<CommitReply>()
}

/// The decoders must never panic, whatever a script (or a broken server, a proxy, a future
/// script version) replies: they return an error or a best-effort value. Property tests feed
/// them arbitrary `redis::Value` trees, and reply-shaped trees with arbitrary leaves; concrete
/// replies as the scripts write them must decode to the expected values.
///
/// 2,048 cases per property by default; run longer with, e.g.,
/// `PROPTEST_CASES=200000 cargo test --lib replies` (a failure is minimized and saved under
/// `rust/src/proptest-regressions/`, replayed first by later runs).
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use redis::{PushKind, VerbatimFormat};

    fn config() -> ProptestConfig {
        let mut config = ProptestConfig::default(); // reads PROPTEST_CASES
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = 2048;
        }
        config
    }

    fn server_error(text: &str) -> Value {
        let line = format!("-{}\r\n", text.replace(['\r', '\n'], " "));
        redis::parse_redis_value(line.as_bytes()).unwrap_or(Value::Nil)
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn array(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    /// Any leaf a RESP2/RESP3 reply may hold; texts that read as numbers (or almost) often.
    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Nil),
            Just(Value::Okay),
            any::<i64>().prop_map(Value::Int),
            (-3i64..20).prop_map(Value::Int),
            vec(any::<u8>(), 0..24).prop_map(Value::BulkString),
            "-?[0-9]{0,20}|0\\|[a-z]{1,3}|\u{1}|".prop_map(|s| Value::BulkString(s.into_bytes())),
            any::<String>().prop_map(Value::SimpleString),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
            vec(any::<u8>(), 0..8).prop_map(Value::BigNumber),
            any::<String>().prop_map(|text| Value::VerbatimString {
                format: VerbatimFormat::Text,
                text
            }),
            "[A-Z]{1,8}( .{0,20})?".prop_map(|s| server_error(&s)),
        ]
    }

    /// Arbitrary trees: arrays (the scripts' replies), maps, sets, attributes, pushes.
    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 96, 20, |inner| {
            prop_oneof![
                4 => vec(inner.clone(), 0..20).prop_map(Value::Array),
                1 => vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
                1 => vec(inner.clone(), 0..4).prop_map(Value::Set),
                1 => (inner.clone(), vec((inner.clone(), inner.clone()), 0..3)).prop_map(
                    |(data, attributes)| Value::Attribute {
                        data: Box::new(data),
                        attributes
                    }
                ),
                1 => vec(inner, 0..4).prop_map(|data| Value::Push {
                    kind: PushKind::Other("x".into()),
                    data
                }),
            ]
        })
    }

    /// A claim reply's shape ({next, runs, rejected, job...}) with arbitrary pieces: runs as
    /// flat sextuples, jobs of 0-17 fields (the scripts send 15), leaves anywhere.
    fn claim_shaped() -> impl Strategy<Value = Value> {
        let run = (
            leaf(),
            leaf(),
            prop_oneof![value(), vec(leaf(), 0..8).prop_map(array)],
            leaf(),
            leaf(),
            leaf(),
        )
            .prop_map(|(id, status, state, version, traceparent, pending)| {
                vec![id, status, state, version, traceparent, pending]
            });
        let runs = vec(run, 0..3).prop_map(|runs| array(runs.concat()));
        let job = vec(prop_oneof![3 => leaf(), 1 => value()], 0..18).prop_map(array);
        (
            leaf(),
            prop_oneof![runs, value()],
            prop_oneof![vec(leaf(), 0..6).prop_map(array), value()],
            vec(prop_oneof![4 => job, 1 => value()], 0..4),
        )
            .prop_map(|(next, runs, rejected, jobs)| {
                let mut items = vec![next, runs, rejected];
                items.extend(jobs);
                array(items)
            })
    }

    /// A commit reply's shape ({code, detail, fired, taken, state, version}) with arbitrary
    /// pieces, the taken entries ({arrival index, token, input}) often pointing at an arrival.
    fn commit_shaped() -> impl Strategy<Value = Value> {
        let entry = vec(leaf(), 0..5).prop_map(array);
        (
            vec(leaf(), 0..3),
            prop_oneof![
                vec(prop_oneof![3 => entry, 1 => value()], 0..4).prop_map(array),
                value()
            ],
            vec(prop_oneof![leaf(), value()], 0..3),
        )
            .prop_map(|(head, taken, tail)| {
                let mut items = head;
                items.push(taken);
                items.extend(tail);
                array(items)
            })
    }

    fn arrival(target_key: &str, job_id: &str) -> ArrivalRequest {
        ArrivalRequest {
            target_key: target_key.into(),
            source: "a".into(),
            value: "1".into(),
            strategy: "all".into(),
            predecessors: vec!["a".into()],
            job_id: job_id.into(),
            job_data: format!("{{\"nodeId\":\"{job_id}\"}}"),
            job_opts: "{}".into(),
            limit: Default::default(),
        }
    }

    fn request() -> CommitRequest {
        CommitRequest {
            job_id: "r_a".into(),
            token: "t".into(),
            run_id: "r".into(),
            node_key: "0|a".into(),
            mode: "ok".into(),
            result: "1".into(),
            arrivals: vec![
                arrival("0|b", "r_b"),
                arrival("2.1|c", "r_c"),
                arrival("no separator", "r_d"),
            ],
            take: 2,
            blueprint_id: "bp".into(),
            blueprint_version: "v1".into(),
            known_version: 3,
            ..Default::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn claim_decoders_never_panic(v in prop_oneof![value(), claim_shaped()]) {
            let _ = parse_job(&v);
            let _ = parse_state(&v);
            if let Ok((_, _, jobs, _)) = parse_claim(&v) {
                let Value::Array(items) = &v else { panic!("decoded a non-array: {v:?}") };
                prop_assert_eq!(jobs.len(), items.len().saturating_sub(3));
            }
        }

        #[test]
        fn commit_decoder_never_panics(v in prop_oneof![value(), commit_shaped()]) {
            let req = request();
            let reply = commit_reply(&v, &req);
            if reply.code == "error" {
                prop_assert!(reply.taken.is_empty() && reply.state.is_none());
            }
            for job in &reply.taken {
                prop_assert!(req.arrivals.iter().any(|a| a.job_id == job.id));
                prop_assert_eq!(&job.run_id, "r");
            }
            prop_assert!(reply.state.is_none() || !reply.taken.is_empty());
        }

        #[test]
        fn text_and_int_never_panic(v in value()) {
            let _ = text(&v);
            let _ = int(&v);
            let _ = bad_reply("claim", &v);
        }
    }

    /// One job as claim.lua returns it: Lua `false` arrives as Nil; numbers as integers.
    fn job_reply(fields: usize) -> Value {
        let mut f = vec![
            bulk("r_b"),
            bulk("w@1:r_b:1"),
            bulk(r#"{"runId":"r","nodeId":"b"}"#),
            Value::Int(2),
            Value::Int(3),
            bulk(r#"{"attempts":3}"#),
            bulk("41"),
            bulk("r"),
            Value::Nil,
            bulk("1"),
            bulk("b"),
            bulk("1.2"),
            bulk("bp"),
            Value::Nil,
            Value::Int(1),
        ];
        f.truncate(fields);
        array(f)
    }

    #[test]
    fn a_claim_reply_decodes_to_its_runs_jobs_and_rejections() {
        let reply = array(vec![
            Value::Int(1_700_000_000_123),
            array(vec![
                bulk("r"),
                bulk("running"),
                array(vec![bulk("a"), bulk("1"), bulk("inputs:b"), bulk("\"x\"")]),
                Value::Int(7),
                bulk("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                Value::Int(1),
                bulk("r2"),
                bulk("awaiting"),
                array(vec![]),
                Value::Int(0),
                Value::Nil,
                Value::Int(-1),
            ]),
            array(vec![bulk("bad:1"), bulk("job data is not valid JSON")]),
            job_reply(15),
            job_reply(14), // `stalls` absent (a nil at the end of a Lua table ends it)
        ]);
        let (next, runs, jobs, rejected) = parse_claim(&reply).expect("a well-formed claim");
        assert_eq!(next, 1_700_000_000_123);
        let (status, state, version, traceparent, pending) = &runs["r"];
        assert_eq!(*pending, 1);
        assert_eq!(status, "running");
        assert_eq!(state.len(), 2);
        assert_eq!(state["inputs:b"], "\"x\"");
        assert_eq!(*version, 7);
        assert_eq!(
            traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(runs["r2"].0, "awaiting");
        assert_eq!((&runs["r2"].3, runs["r2"].4), (&None, -1));
        assert_eq!(
            rejected,
            vec![(
                "bad:1".to_string(),
                "job data is not valid JSON".to_string()
            )]
        );
        assert_eq!(jobs.len(), 2);
        let job = &jobs[0];
        assert_eq!((job.id.as_str(), job.token.as_str()), ("r_b", "w@1:r_b:1"));
        assert_eq!(job.data, r#"{"runId":"r","nodeId":"b"}"#);
        assert_eq!((job.attempts_made, job.attempts_started), (2, 3));
        assert_eq!(job.opts, r#"{"attempts":3}"#);
        assert_eq!(job.input.as_deref(), Some("41"));
        assert_eq!(job.run_id, "r");
        assert_eq!(job.resume, None);
        assert!(job.slept);
        assert_eq!((job.node_id.as_str(), job.iteration.as_str()), ("b", "1.2"));
        assert_eq!(job.node_key(), "1.2|b");
        assert_eq!(
            (job.blueprint_id.as_str(), job.blueprint_version.as_str()),
            ("bp", "")
        );
        assert_eq!((job.stalls, jobs[1].stalls), (1, 0));
    }

    #[test]
    fn an_empty_or_paused_claim_decodes_to_nothing() {
        for reply in [
            array(vec![Value::Int(0), array(vec![]), array(vec![])]),
            array(vec![Value::Int(0), array(vec![])]), // paused: no rejected list
        ] {
            let (next, runs, jobs, rejected) = parse_claim(&reply).expect("an empty claim");
            assert_eq!(next, 0);
            assert!(runs.is_empty() && jobs.is_empty() && rejected.is_empty());
        }
    }

    #[test]
    fn a_malformed_claim_reply_is_an_error() {
        let short_job = array(vec![
            Value::Int(0),
            array(vec![]),
            array(vec![]),
            job_reply(13),
        ]);
        let no_id = array(vec![
            Value::Int(0),
            array(vec![]),
            array(vec![]),
            array({
                let Value::Array(mut f) = job_reply(15) else {
                    unreachable!()
                };
                f[0] = Value::Nil;
                f
            }),
        ]);
        for reply in [Value::Nil, Value::Int(3), bulk("OK"), short_job, no_id] {
            assert!(parse_claim(&reply).is_err(), "{reply:?}");
        }
    }

    #[test]
    fn a_commit_reply_decodes_with_the_jobs_it_took() {
        let req = request();
        let reply = commit_reply(
            &array(vec![
                bulk("ok"),
                bulk("3"),
                bulk("0|b\u{1f}2.1|c"),
                array(vec![
                    array(vec![Value::Int(0), bulk("w@1:r_b:1"), bulk("41")]),
                    array(vec![Value::Int(1), bulk("w@1:r_c:1"), bulk("\u{1}")]),
                ]),
                Value::Nil, // Lua false: the worker's snapshot is current
                Value::Int(9),
            ]),
            &req,
        );
        assert_eq!((reply.code.as_str(), reply.detail.as_str()), ("ok", "3"));
        assert_eq!(reply.fired, "0|b\u{1f}2.1|c");
        assert_eq!((reply.state.is_none(), reply.version), (true, 9));
        assert_eq!(reply.taken.len(), 2);
        let (b, c) = (&reply.taken[0], &reply.taken[1]);
        assert_eq!((b.id.as_str(), b.token.as_str()), ("r_b", "w@1:r_b:1"));
        assert_eq!((b.node_id.as_str(), b.iteration.as_str()), ("b", "0"));
        assert_eq!(b.input.as_deref(), Some("41"));
        assert_eq!(b.data, r#"{"nodeId":"r_b"}"#);
        assert_eq!((b.run_id.as_str(), b.blueprint_id.as_str()), ("r", "bp"));
        assert_eq!(b.blueprint_version, "v1");
        assert_eq!((b.attempts_made, b.attempts_started), (0, 1));
        assert_eq!((c.node_id.as_str(), c.iteration.as_str()), ("c", "2.1"));
        assert_eq!(c.input.as_deref(), Some("\u{1}"));

        // a stale snapshot: the run's state comes back with the jobs taken
        let behind = commit_reply(
            &array(vec![
                bulk("ok"),
                bulk("1"),
                bulk("0|b"),
                array(vec![array(vec![Value::Int(0), bulk("tok")])]),
                array(vec![bulk("a"), bulk("1")]),
                Value::Int(4),
            ]),
            &req,
        );
        let state = behind.state.expect("the state of a stale snapshot");
        assert_eq!((state["a"].as_str(), behind.version), ("1", 4));
        assert_eq!(behind.taken[0].input, None);
    }

    #[test]
    fn short_and_failed_commit_replies_decode_to_their_codes() {
        let req = request();
        let lost = commit_reply(&array(vec![bulk("lost"), bulk("")]), &req);
        assert_eq!((lost.code.as_str(), lost.version), ("lost", -1));
        assert!(lost.taken.is_empty() && lost.fired.is_empty());
        let dup = commit_reply(&array(vec![bulk("dup"), bulk(""), Value::Nil]), &req);
        assert_eq!((dup.code.as_str(), dup.fired.as_str()), ("dup", ""));
        let failed = commit_reply(&server_error("ERR hash value is not an integer"), &req);
        assert_eq!(failed.code, "error");
        assert!(
            failed.detail.contains("hash value is not an integer"),
            "{}",
            failed.detail
        );
        for bad in [
            Value::Nil,
            array(vec![bulk("ok")]),
            // a taken entry naming no arrival, or an arrival without a node key
            array(vec![
                bulk("ok"),
                bulk("1"),
                bulk(""),
                array(vec![array(vec![Value::Int(7)])]),
            ]),
            array(vec![
                bulk("ok"),
                bulk("1"),
                bulk(""),
                array(vec![array(vec![Value::Int(2), bulk("tok")])]),
            ]),
        ] {
            let reply = commit_reply(&bad, &req);
            assert_eq!(reply.code, "error", "{bad:?}");
            assert!(reply.taken.is_empty());
        }
    }
}
