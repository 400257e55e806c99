//! The one retry policy for every call to Redis: which failures are tried again, the backoff,
//! the deadline, and the error raised when the deadline passes.
//!
//! Retried: the server answering `LOADING` (it is loading its dataset after a restart) or
//! `BUSY` (a script or function has run past `busy-reply-threshold`), and connection failures:
//! refused, dropped (reset, broken pipe, end of stream), I/O errors of a broken link, timeouts.
//! Not retried: every other error (wrong type, NOPERM, a script's own error, a TLS certificate
//! refused...), which reaches the caller at once. Pauses grow from 50 ms, doubling, to 1 s, each
//! with jitter (half of it fixed, half random, so clients that failed together do not come
//! back together), until the connection's deadline (`RedisConnection(retry_deadline=...)`,
//! 30 s by default, counted from the start of the call; 0 turns retrying off). Then the last
//! error is raised as the usual exception, its message saying how long and how often it tried.
//!
//! Every entry point gets the policy the same way: `Connection::manager()` returns a
//! `Retrying`, a `ConnectionLike` wrapper around the connection, so every command, pipeline and
//! script call made through it (`query_async`, `AsyncCommands`, `scripts::eval_*`) retries,
//! with one deadline for the whole call it was made for; pub/sub connections and subscriptions
//! use `Retrying::settle` in their own loops.
//!
//! Sending again is safe:
//! - after `LOADING`, `BUSY` or a refused connection nothing ran;
//! - a pipeline is sent again whole only when every command in it was answered `LOADING`/`BUSY`;
//!   when only some were (the server became ready in the middle), `scripts::eval_mixed` sends
//!   those again and keeps the others' replies;
//! - after a broken connection or a timeout the request may have run and only its reply was
//!   lost. Reads may run twice, and so may every state write this crate makes: each script is
//!   safe to run again, as reasoned here script by script:
//!   - `start`: the run's meta records the start's token; run again it finds its own token and
//!     answers "ok" (a run with that id started by anyone else is still "exists"). So a start
//!     whose reply was lost creates one run and reports success, never a duplicate-run error.
//!   - `commit`, `retry`: they check the job's lease token, and the first run deleted the lock:
//!     run again they answer "lost" and change nothing; the node's effects happened once (the
//!     `done:` marker would stop a second commit anyway). Jobs the first run claimed for this
//!     worker (local continuation) return to the queue when their lease lapses.
//!   - `claim`: run again it claims other jobs; the jobs of the lost reply stay in `active`
//!     with a lease that expires, and the stalled check returns them to the queue (counted as
//!     a stall, as after a worker crash).
//!   - `renew`: extends the same leases again.
//!   - `stalled`: its guard key (SET NX PX) makes a second run within the interval a no-op.
//!   - `cancel`: run again it finds the run ended and answers "cancelled"; after a resend that
//!     answer counts as this call's "ok" (`runs::cancel_run`).
//!   - `resume`: the waiting marker is gone, so run again it answers "not-awaiting" and
//!     enqueues nothing; after a resend the call checks that the job it created exists and
//!     then answers "ok" (`runs::resume_run`).
//!   - `reconcile`: a node re-enqueued by the first run now has a live job (or a new `fired:`
//!     entry), so it is left alone: the reply lists fewer nodes, nothing is enqueued twice.
//!   - state writes (`StateStore`): the same fields get the same values again; the state
//!     version is bumped once more, which only makes a worker's snapshot count as stale.
//!   - `publish_blueprints`, `forget_run`, BZPOPMIN on the ready marker: idempotent or a hint.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::conn::Connection;
use crate::topology::Link;

/// The first pause; each next one doubles, up to `MAX_PAUSE`.
pub const FIRST_PAUSE: Duration = Duration::from_millis(50);
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Server error codes meaning "not now": nothing was done, and later it will be.
const TRANSIENT_CODES: [&str; 2] = ["LOADING", "BUSY"];

/// The words that start the part of a message saying how long a call retried.
const GAVE_UP: &str = "gave up after";

/// Why a failed request may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transient {
    /// It did not run (LOADING, BUSY, connection refused).
    NotRun,
    /// The connection broke or timed out after it may have been sent: it may have run.
    MaybeRan,
}

fn transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// A reply that is a LOADING or BUSY error.
pub fn transient_reply(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if transient_code(e.code()))
}

/// Whether (and how) a failure is worth another try; None: it is final.
pub fn classify(err: &RedisError) -> Option<Transient> {
    if let Some(items) = err.clone().into_server_errors() {
        let all = !items.is_empty() && items.iter().all(|(_, e)| transient_code(e.code()));
        return all.then_some(Transient::NotRun);
    }
    if err.is_connection_refusal() {
        Some(Transient::NotRun)
    } else if err.is_timeout() || err.is_connection_dropped() {
        Some(Transient::MaybeRan)
    } else {
        None
    }
}

/// `values` unless every one is a LOADING/BUSY error (then nothing ran: the first, as an error).
fn check_all(values: Vec<Value>) -> RedisResult<Vec<Value>> {
    if !values.is_empty() && values.iter().all(transient_reply) {
        let first = values.into_iter().next().unwrap_or(Value::Nil);
        return first.extract_error().map(|v| vec![v]);
    }
    Ok(values)
}

/// A random fraction in [0, 1): a fresh `RandomState` is seeded differently each time.
fn random_fraction() -> f64 {
    let bits = RandomState::new().build_hasher().finish() >> 11;
    #[allow(clippy::cast_precision_loss)]
    let fraction = bits as f64 / (1u64 << 53) as f64;
    fraction
}

/// A random token (128 bits, hex) naming one request, e.g. one start of a run.
pub fn token() -> String {
    let (a, b) = (
        RandomState::new().build_hasher().finish(),
        RandomState::new().build_hasher().finish(),
    );
    format!("{a:016x}{b:016x}")
}

/// `err` (the last failure) with how long and how often it was tried appended, keeping its kind
/// so `errors::to_py` picks the same exception.
fn gave_up(err: &RedisError, elapsed: Duration, attempts: u32, deadline: Duration) -> RedisError {
    let note = format!(
        "{GAVE_UP} {:.1} s and {attempts} attempts (retry deadline {} s)",
        elapsed.as_secs_f64(),
        deadline.as_secs_f64()
    );
    if let Some(code) = err.code() {
        let detail = err.detail().unwrap_or_default();
        return redis::make_extension_error(code.to_string(), Some(format!("{detail}; {note}")));
    }
    let kind = if err.is_connection_refusal() {
        io::ErrorKind::ConnectionRefused
    } else if err.is_timeout() {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::ConnectionReset
    };
    io::Error::new(kind, format!("{err}; {note}")).into()
}

/// The "gave up after ..." part of a message of a call that retried until its deadline.
pub fn note(err: &RedisError) -> Option<String> {
    let text = err.to_string();
    text.find(GAVE_UP).map(|at| text[at..].to_string())
}

/// One call's retry state over one connection; a `ConnectionLike`, so commands, pipelines and
/// scripts sent through it retry transient failures.
pub struct Retrying {
    conn: Connection,
    manager: Option<(u64, Link)>,
    started: Instant,
    deadline: Duration,
    attempts: u32,
    next_pause: Duration,
    /// Set when a request was sent again after a failure that may have let it run: its reply
    /// may then come from a second run (see the module comment).
    pub resent: bool,
}

impl Retrying {
    pub fn new(conn: Connection, deadline: Duration) -> Self {
        Self {
            conn,
            manager: None,
            started: Instant::now(),
            deadline,
            attempts: 0,
            next_pause: FIRST_PAUSE,
            resent: false,
        }
    }

    /// The connection this call goes through.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// After a failure: Ok(()) once the pause before the next try is over, or the error to
    /// give up with (a final one, or a transient one once the deadline has passed).
    pub async fn pause(&mut self, err: RedisError) -> RedisResult<()> {
        let failover = self.conn.follows_failover();
        // a primary demoted by a failover refuses writes (nothing ran): ask the sentinels again
        let demoted = failover && err.code() == Some("READONLY");
        let Some(why) = classify(&err).or(demoted.then_some(Transient::NotRun)) else {
            return Err(err);
        };
        if failover {
            if let Some((generation, _)) = self.manager.take() {
                self.conn.invalidate(generation);
            }
        }
        self.attempts += 1;
        if self.deadline.is_zero() {
            return Err(err);
        }
        let elapsed = self.started.elapsed();
        let Some(left) = self.deadline.checked_sub(elapsed).filter(|d| !d.is_zero()) else {
            return Err(gave_up(&err, elapsed, self.attempts, self.deadline));
        };
        let pause = self.next_pause.mul_f64(0.5 + 0.5 * random_fraction());
        self.next_pause = (self.next_pause * 2).min(MAX_PAUSE);
        tokio::time::sleep(pause.min(left)).await;
        if why == Transient::MaybeRan {
            self.resent = true;
        }
        Ok(())
    }

    /// `result` if it succeeded (Some), None after pausing for another try, or the error to
    /// give up with: the body of a retry loop (`loop { if let Some(v) = r.settle(..)? ... }`).
    pub async fn settle<T>(&mut self, result: RedisResult<T>) -> RedisResult<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err) => self.pause(err).await.map(|()| None),
        }
    }

    /// The link, opening the connection on first use (one try).
    async fn open(&mut self) -> RedisResult<&mut Link> {
        if self.manager.is_none() {
            self.manager = Some(self.conn.open().await?);
        }
        Ok(&mut self.manager.as_mut().expect("opened above").1)
    }

    /// Open the connection, retrying until the deadline.
    pub async fn connect(&mut self) -> RedisResult<()> {
        loop {
            let result = self.open().await.map(|_| ());
            if self.settle(result).await?.is_some() {
                return Ok(());
            }
        }
    }
}

impl Retrying {
    /// A READONLY reply from a primary a failover demoted (sentinel-managed links only).
    fn demoted_reply(&self, value: &Value) -> bool {
        matches!(value, Value::ServerError(e) if e.code() == "READONLY")
            && self.conn.follows_failover()
    }
}

impl ConnectionLike for Retrying {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            loop {
                let result = match self.open().await {
                    Ok(m) => m.req_packed_command(cmd).await,
                    Err(e) => Err(e),
                };
                let result = result.and_then(|v| {
                    if transient_reply(&v) || self.demoted_reply(&v) {
                        v.extract_error()
                    } else {
                        Ok(v)
                    }
                });
                if let Some(value) = self.settle(result).await? {
                    return Ok(value);
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            loop {
                let result = match self.open().await {
                    Ok(m) => m.req_packed_commands(pipeline, offset, count).await,
                    Err(e) => Err(e),
                };
                if let Some(values) = self.settle(result.and_then(check_all)).await? {
                    return Ok(values);
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.manager
            .as_ref()
            .map_or_else(|| self.conn.db(), |(_, link)| link.get_db())
    }
}

#[cfg(test)]
mod tests {
    use super::{classify, gave_up, note, transient_reply, Transient};
    use std::io;
    use std::time::Duration;

    #[test]
    fn classifies_what_is_retried() {
        let loading = redis::make_extension_error("LOADING".into(), Some("loading".into()));
        let busy = redis::make_extension_error("BUSY".into(), Some("script".into()));
        let wrong = redis::make_extension_error("WRONGTYPE".into(), None);
        assert_eq!(classify(&loading), Some(Transient::NotRun));
        assert_eq!(classify(&busy), Some(Transient::NotRun));
        assert_eq!(classify(&wrong), None);
        let refused: redis::RedisError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        let reset: redis::RedisError = io::Error::from(io::ErrorKind::ConnectionReset).into();
        let timeout: redis::RedisError = io::Error::from(io::ErrorKind::TimedOut).into();
        let bad_cert: redis::RedisError = io::Error::from(io::ErrorKind::InvalidData).into();
        assert_eq!(classify(&refused), Some(Transient::NotRun));
        assert_eq!(classify(&reset), Some(Transient::MaybeRan));
        assert_eq!(classify(&timeout), Some(Transient::MaybeRan));
        assert_eq!(classify(&bad_cert), None);
        assert!(!transient_reply(&redis::Value::Okay));
    }

    #[test]
    fn giving_up_keeps_the_kind_and_says_how_long() {
        let refused: redis::RedisError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        let err = gave_up(
            &refused,
            Duration::from_millis(2100),
            9,
            Duration::from_secs(2),
        );
        assert!(err.is_connection_refusal());
        assert_eq!(
            note(&err).as_deref(),
            Some("gave up after 2.1 s and 9 attempts (retry deadline 2 s)")
        );
        let loading = redis::make_extension_error("LOADING".into(), Some("loading".into()));
        let err = gave_up(&loading, Duration::from_secs(3), 5, Duration::from_secs(3));
        assert_eq!(err.code(), Some("LOADING"));
        assert!(err
            .detail()
            .unwrap_or_default()
            .starts_with("loading; gave up"));
    }
}
