//! The Lua scripts (one state transition each, in `scripts/*.lua`) and how they are called:
//! EVALSHA in pipelines, with the script loaded again when Redis answers NOSCRIPT (after a
//! restart or SCRIPT FLUSH), and sent again after a pause when Redis answered LOADING or BUSY
//! (`retry`). A call that got NOSCRIPT, LOADING or BUSY did not run, so sending it again is
//! safe; why running each script again after a lost reply is safe too is in `retry`.

use std::sync::OnceLock;

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use redis::{RedisResult, Script, Value};

use crate::retry::{transient_reply, Retrying};

/// What every script shares (the vocabulary, `now_ms`, `end_run`), prepended to each.
const LIB: &str = include_str!("scripts/lib.lua");

/// The source of a script as Redis runs it: `lib.lua` followed by the script.
macro_rules! script_source {
    ($file:literal) => {
        concat!(
            include_str!("scripts/lib.lua"),
            include_str!(concat!("scripts/", $file, ".lua"))
        )
    };
}

/// (name, source) of every script, for `Scripts::new` and `script_source`.
const SOURCES: [(&str, &str); 13] = [
    ("claim", script_source!("claim")),
    ("commit", script_source!("commit")),
    ("retry", script_source!("retry")),
    ("renew", script_source!("renew")),
    ("stalled", script_source!("stalled")),
    ("start", script_source!("start")),
    ("cancel", script_source!("cancel")),
    ("resume", script_source!("resume")),
    ("reconcile", script_source!("reconcile")),
    ("adopt", script_source!("adopt")),
    ("beat", script_source!("beat")),
    ("limit", script_source!("limit")),
    ("event", script_source!("event")),
];

pub struct Scripts {
    pub claim: Script,
    pub commit: Script,
    pub retry: Script,
    pub renew: Script,
    pub stalled: Script,
    pub start: Script,
    pub cancel: Script,
    pub resume: Script,
    pub reconcile: Script,
    pub adopt: Script,
    pub beat: Script,
    pub limit: Script,
    pub event: Script,
}

fn source(name: &str) -> Option<&'static str> {
    if name == "lib" {
        return Some(LIB);
    }
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

impl Scripts {
    pub fn new() -> Self {
        let script = |name: &str| Script::new(source(name).expect("a script of SOURCES"));
        Self {
            claim: script("claim"),
            commit: script("commit"),
            retry: script("retry"),
            renew: script("renew"),
            stalled: script("stalled"),
            start: script("start"),
            cancel: script("cancel"),
            resume: script("resume"),
            reconcile: script("reconcile"),
            adopt: script("adopt"),
            beat: script("beat"),
            limit: script("limit"),
            event: script("event"),
        }
    }
}

/// The Lua source of one queue script exactly as it is sent to Redis (`lib.lua` included), or
/// of `lib` itself: tests run the scripts directly (the join rule's differential test).
#[pyfunction]
fn script_source(name: &str) -> PyResult<&'static str> {
    source(name).ok_or_else(|| PyKeyError::new_err(format!("no script named {name:?}")))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(script_source, m)?)?;
    Ok(())
}

/// One script call: its keys and arguments.
pub struct Call {
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// How often a call is sent again after its script was loaded (it may be flushed meanwhile).
const MAX_LOADS: u32 = 3;

/// Run many calls of one script in one round trip; one reply per call, errors included.
pub async fn eval_many(
    conn: &mut Retrying,
    script: &Script,
    calls: &[Call],
) -> RedisResult<Vec<Value>> {
    let pairs: Vec<(&Script, &Call)> = calls.iter().map(|c| (script, c)).collect();
    Ok(eval_mixed(conn, &pairs).await?.0)
}

/// Run calls of several scripts in one round trip (a pipeline); one reply per call, and
/// whether some calls had to be sent again (their script had to be loaded first, or Redis
/// answered them LOADING or BUSY while it ran the others): they then ran after the calls that
/// follow them in `calls`. A pipeline answered LOADING or BUSY as a whole is sent again whole by
/// `Retrying`; here only the calls answered so are.
pub async fn eval_mixed(
    conn: &mut Retrying,
    calls: &[(&Script, &Call)],
) -> RedisResult<(Vec<Value>, bool)> {
    if calls.is_empty() {
        return Ok((Vec::new(), false));
    }
    let mut replies = send(conn, calls.iter().copied()).await?;
    let mut loads = 0;
    let mut reordered = false;
    loop {
        let again: Vec<usize> = (0..replies.len())
            .filter(|&i| {
                (loads < MAX_LOADS && is_noscript(&replies[i])) || transient_reply(&replies[i])
            })
            .collect();
        if again.is_empty() {
            return Ok((replies, reordered));
        }
        if let Some(&i) = again.iter().find(|&&i| transient_reply(&replies[i])) {
            if let Err(err) = replies[i].clone().extract_error() {
                conn.pause(err).await?; // gives up (Err) once the deadline has passed
            }
        }
        let mut loaded: Vec<&str> = Vec::new();
        for &i in again.iter().filter(|&&i| is_noscript(&replies[i])) {
            let script = calls[i].0;
            if !loaded.contains(&script.get_hash()) {
                let _: String = script.prepare_invoke().load_async(conn).await?;
                loaded.push(script.get_hash());
            }
        }
        if !loaded.is_empty() {
            loads += 1;
        }
        let resent = send(conn, again.iter().map(|&i| calls[i])).await?;
        for (i, reply) in again.into_iter().zip(resent) {
            replies[i] = reply;
        }
        reordered = true;
    }
}

/// The scripts whose effects a caller is told are done (a run started, cancelled or resumed,
/// a node's commit or retry): with `wait_replicas` their pipelines wait for the replicas. The
/// others (claim, renew, stalled, ...) only move work around that a lost write gives back.
fn acknowledges(script: &Script) -> bool {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    HASHES
        .get_or_init(|| {
            ["commit", "retry", "start", "cancel", "resume", "event"]
                .iter()
                .map(|name| {
                    Script::new(source(name).expect("a script"))
                        .get_hash()
                        .to_string()
                })
                .collect()
        })
        .iter()
        .any(|h| h == script.get_hash())
}

/// Send script calls in one pipeline. With `RedisConnection(wait_replicas=N)` a pipeline that
/// carries an acknowledging call (`acknowledges`) ends with `WAIT N timeout`: its reply comes
/// once N replicas have the writes (or the timeout passed), so what a caller was told is done
/// survives a failover to one of them.
async fn send<'a>(
    conn: &mut Retrying,
    calls: impl Iterator<Item = (&'a Script, &'a Call)>,
) -> RedisResult<Vec<Value>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut durable = false;
    for (script, call) in calls {
        durable = durable || acknowledges(script);
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(call.keys.len())
            .arg(&call.keys)
            .arg(&call.args);
    }
    let wait = conn.connection().replica_wait().filter(|_| durable);
    if let Some((replicas, timeout_ms)) = wait {
        pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
    }
    let mut replies: Vec<Value> = pipe.query_async(conn).await?;
    if wait.is_some() {
        let acked = replies.pop();
        conn.connection().count_replica_wait(acked.as_ref());
    }
    Ok(replies)
}

/// One call, with its error (if any) turned into an `Err`.
pub async fn eval_one(conn: &mut Retrying, script: &Script, call: Call) -> RedisResult<Value> {
    let mut replies = eval_many(conn, script, std::slice::from_ref(&call)).await?;
    replies.pop().unwrap_or(Value::Nil).extract_error()
}
