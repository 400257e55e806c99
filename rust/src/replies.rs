//! What crosses to Python, and how script replies are read into it.
//!
//! The type aliases name the tuples the queue hands to Python (and takes from it); the parsers
//! turn a script's reply (`redis::Value`) into them, or into an error naming the script.

use std::collections::HashMap;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use redis::Value;

/// A claimed job: (id, lease token, data JSON, attempts made, attempts started, opts JSON,
/// input JSON carried by the job (None: resolve it), run id, resume payload JSON, slept flag).
pub type Claimed = (
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    String,
    Option<String>,
    bool,
);

/// The runs of claimed jobs, each once: run id -> (status, state fields as JSON text).
pub type ClaimedRuns = HashMap<String, (String, HashMap<String, String>)>;

/// What one claim returns: (next delayed job due time in ms or 0, runs, jobs).
pub type ClaimReply = (i64, ClaimedRuns, Vec<Claimed>);

/// One arrival of a finished node at a successor: (target node key, predecessor id, value JSON
/// or "\x01" for skipped, join strategy, all predecessor ids of the target, successor job id,
/// successor job data, successor job opts).
pub type Arrival = (
    String,
    String,
    String,
    String,
    Vec<String>,
    String,
    String,
    String,
);

/// One finished node: (job id, token, run id, node key, mode, job result text, status payload,
/// context sets, context deletes, route JSON, arrivals).
pub type Commit = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Vec<(String, String)>,
    Vec<String>,
    String,
    Vec<Arrival>,
);

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

fn parse_job(v: &Value) -> Option<Claimed> {
    let Value::Array(f) = v else { return None };
    if f.len() < 10 {
        return None;
    }
    Some((
        text(&f[0])?,
        text(&f[1])?,
        text(&f[2])?,
        int(&f[3]),
        int(&f[4]),
        text(&f[5]).unwrap_or_else(|| "{}".into()),
        text(&f[6]),
        text(&f[7])?,
        text(&f[8]),
        text(&f[9]).is_some(),
    ))
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
        for triple in flat.chunks(3) {
            if let [id, status, state] = triple {
                let id = text(id).ok_or_else(|| bad_reply("claim", reply))?;
                let state = parse_state(state).ok_or_else(|| bad_reply("claim", reply))?;
                runs.insert(id, (text(status).unwrap_or_default(), state));
            }
        }
    }
    let mut jobs = Vec::with_capacity(items.len().saturating_sub(2));
    for item in items.iter().skip(2) {
        jobs.push(parse_job(item).ok_or_else(|| bad_reply("claim", item))?);
    }
    Ok((next, runs, jobs))
}

/// A commit's reply: (code, detail, fired successor node keys separated by \x1f).
pub fn commit_reply(v: &Value) -> (String, String, String) {
    match v {
        Value::Array(items) if items.len() >= 2 => (
            text(&items[0]).unwrap_or_default(),
            text(&items[1]).unwrap_or_default(),
            items.get(2).and_then(text).unwrap_or_default(),
        ),
        Value::ServerError(e) => ("error".to_string(), format!("{e:?}"), String::new()),
        other => ("error".to_string(), format!("{other:?}"), String::new()),
    }
}
