//! The Lua scripts (one state transition each, in `scripts/*.lua`) and how they are called:
//! EVALSHA in pipelines, with the script loaded again when Redis answers NOSCRIPT (after a
//! restart or SCRIPT FLUSH). A call that got NOSCRIPT did not run, so retrying it is safe.

use redis::aio::ConnectionManager;
use redis::{RedisResult, Script, Value};

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
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            claim: Script::new(include_str!("scripts/claim.lua")),
            commit: Script::new(include_str!("scripts/commit.lua")),
            retry: Script::new(include_str!("scripts/retry.lua")),
            renew: Script::new(include_str!("scripts/renew.lua")),
            stalled: Script::new(include_str!("scripts/stalled.lua")),
            start: Script::new(include_str!("scripts/start.lua")),
            cancel: Script::new(include_str!("scripts/cancel.lua")),
            resume: Script::new(include_str!("scripts/resume.lua")),
            reconcile: Script::new(include_str!("scripts/reconcile.lua")),
        }
    }
}

/// One script call: its keys and arguments.
pub struct Call {
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// Run many calls of one script in one round trip; one reply per call, errors included.
pub async fn eval_many(
    conn: &mut ConnectionManager,
    script: &Script,
    calls: &[Call],
) -> RedisResult<Vec<Value>> {
    let pairs: Vec<(&Script, &Call)> = calls.iter().map(|c| (script, c)).collect();
    Ok(eval_mixed(conn, &pairs).await?.0)
}

/// Run calls of several scripts in one round trip (a pipeline); one reply per call, and
/// whether some calls had to be sent again after loading their script (they then ran after
/// the calls that follow them in `calls`).
pub async fn eval_mixed(
    conn: &mut ConnectionManager,
    calls: &[(&Script, &Call)],
) -> RedisResult<(Vec<Value>, bool)> {
    if calls.is_empty() {
        return Ok((Vec::new(), false));
    }
    let mut replies = send(conn, calls.iter().copied()).await?;
    let missing: Vec<usize> = (0..replies.len())
        .filter(|&i| is_noscript(&replies[i]))
        .collect();
    if !missing.is_empty() {
        let mut loaded: Vec<&str> = Vec::new();
        for &i in &missing {
            let script = calls[i].0;
            if !loaded.contains(&script.get_hash()) {
                let _: String = script.prepare_invoke().load_async(conn).await?;
                loaded.push(script.get_hash());
            }
        }
        let again = send(conn, missing.iter().map(|&i| calls[i])).await?;
        for (i, reply) in missing.into_iter().zip(again) {
            replies[i] = reply;
        }
        return Ok((replies, true));
    }
    Ok((replies, false))
}

async fn send<'a>(
    conn: &mut ConnectionManager,
    calls: impl Iterator<Item = (&'a Script, &'a Call)>,
) -> RedisResult<Vec<Value>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (script, call) in calls {
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(call.keys.len())
            .arg(&call.keys)
            .arg(&call.args);
    }
    pipe.query_async(conn).await
}

/// One call, with its error (if any) turned into an `Err`.
pub async fn eval_one(
    conn: &mut ConnectionManager,
    script: &Script,
    call: Call,
) -> RedisResult<Value> {
    let mut replies = eval_many(conn, script, std::slice::from_ref(&call)).await?;
    replies.pop().unwrap_or(Value::Nil).extract_error()
}
