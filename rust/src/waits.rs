//! Waiting for run results: every wait of a queue shares one subscriber connection.
//!
//! A wait subscribes to its run's status channel on that connection (the first waiter of a
//! channel sends `SUBSCRIBE`, and it returns once the server has confirmed it), then reads the
//! status (a run that ended before the subscription is seen by the read), then waits for a
//! message. A listener task hands each message to the waiters of its channel. When the
//! connection drops, every waiter is woken with "dropped" (its caller reads and subscribes
//! again) and the next wait opens a new connection. The last waiter of a channel unsubscribes.
//! So a client waiting on thousands of runs holds one connection, not one per run. Opening the
//! connection, subscribing and reading retry LOADING, BUSY and connection failures (`retry`)
//! within the connection's retry deadline or the wait's timeout, whichever is shorter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use pyo3::prelude::*;
use redis::aio::PubSubSink;
use redis::AsyncCommands;
use tokio::sync::oneshot;

use crate::conn::Connection;
use crate::retry::Retrying;

/// A key's value once set, with the fields of the hash asked for along with it.
pub type Ended = (String, HashMap<String, String>);

/// Why a waiter woke up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woken {
    Message,
    Dropped,
}

#[derive(Default)]
struct Shared {
    /// The subscriber connection's sink, while it is up.
    sink: Option<PubSubSink>,
    /// Bumped each time a connection is opened: a listener only clears its own.
    generation: u64,
    /// channel -> waiters (id, wake-up)
    waiters: HashMap<String, Vec<(u64, oneshot::Sender<Woken>)>>,
    next_id: u64,
}

#[derive(Default)]
pub struct Waits {
    shared: Arc<Mutex<Shared>>,
    /// Held while opening the connection and while deciding and sending a SUBSCRIBE or
    /// UNSUBSCRIBE, so they reach the server in the order they were decided (an unsubscribe
    /// of the last waiter never overtakes the subscribe of the next).
    control: tokio::sync::Mutex<()>,
}

impl Waits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("waits")
    }

    /// The sink of the live subscriber connection, opening one (and its listener) if needed.
    /// Called with `control` held.
    async fn sink(&self, conn: &Connection, retrying: &mut Retrying) -> PyResult<PubSubSink> {
        if let Some(sink) = self.lock().sink.clone() {
            return Ok(sink);
        }
        let (sink, mut stream) = conn.pubsub_with(retrying).await?.split();
        let generation = {
            let mut shared = self.lock();
            shared.generation += 1;
            shared.sink = Some(sink.clone());
            shared.generation
        };
        let shared = Arc::clone(&self.shared);
        pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            while let Some(message) = stream.next().await {
                let channel = message.get_channel_name().to_string();
                let woken = shared.lock().expect("waits").waiters.remove(&channel);
                for (_, wake) in woken.into_iter().flatten() {
                    let _ = wake.send(Woken::Message);
                }
            }
            // the connection dropped: wake everyone; the next wait opens a new one
            let mut state = shared.lock().expect("waits");
            if state.generation == generation {
                state.sink = None;
                for (_, wake) in state.waiters.drain().flat_map(|(_, w)| w) {
                    let _ = wake.send(Woken::Dropped);
                }
            }
        });
        Ok(sink)
    }

    /// Stop waiting on `channel` (waiter `id`); the last waiter of a channel unsubscribes.
    async fn leave(&self, sink: &mut PubSubSink, channel: &str, id: u64) {
        let _control = self.control.lock().await;
        let last = {
            let mut shared = self.lock();
            if let Some(list) = shared.waiters.get_mut(channel) {
                list.retain(|(other, _)| *other != id);
                if list.is_empty() {
                    shared.waiters.remove(channel);
                }
            }
            !shared.waiters.contains_key(channel)
        };
        if last {
            let _ = sink.unsubscribe(channel).await;
        }
    }

    /// The value of `channel` (a run's status key, also its channel) once it is set: now, or
    /// when a message arrives within `timeout_s`. None on timeout or when the subscriber
    /// connection dropped (the caller tries again).
    ///
    /// The waiter leaves its channel (the last one unsubscribes) in a task of its own, so the
    /// caller has its answer one round trip sooner. The fields of `hash` come with the value
    /// (the run's state: read with the status when a message woke the waiter).
    pub async fn wait(
        self: &Arc<Self>,
        conn: &Connection,
        channel: String,
        timeout_s: f64,
        hash: String,
    ) -> PyResult<Option<Ended>> {
        let (wake, woken) = oneshot::channel();
        let timeout = Duration::from_secs_f64(timeout_s.max(0.0));
        let mut retrying = conn.retrying_within(timeout);
        let (mut sink, id) = {
            let control = self.control.lock().await;
            let mut sink = self.sink(conn, &mut retrying).await?;
            let (id, first) = {
                let mut shared = self.lock();
                shared.next_id += 1;
                let id = shared.next_id;
                let list = shared.waiters.entry(channel.clone()).or_default();
                list.push((id, wake));
                (id, list.len() == 1)
            };
            if first {
                // BUSY, or a connection that just dropped (its listener then clears the sink
                // and the next try opens a new one): try again until the deadline.
                loop {
                    let result = sink.subscribe(&channel).await;
                    match retrying.settle(result).await {
                        Ok(Some(())) => break,
                        Ok(None) => match self.sink(conn, &mut retrying).await {
                            Ok(next) => sink = next,
                            Err(e) => {
                                drop(control);
                                self.leave(&mut sink, &channel, id).await;
                                return Err(e);
                            }
                        },
                        Err(e) => {
                            drop(control);
                            self.leave(&mut sink, &channel, id).await;
                            return Err(conn.error(&e));
                        }
                    }
                }
            }
            (sink, id)
        };
        let result = self
            .read_or_wait(conn, &channel, woken, timeout_s, &hash)
            .await;
        let waits = Arc::clone(self);
        pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            waits.leave(&mut sink, &channel, id).await;
        });
        result
    }

    async fn read_or_wait(
        &self,
        conn: &Connection,
        channel: &str,
        woken: oneshot::Receiver<Woken>,
        timeout_s: f64,
        hash: &str,
    ) -> PyResult<Option<Ended>> {
        let timeout = Duration::from_secs_f64(timeout_s.max(0.0));
        let mut m = conn.retrying_within(timeout);
        let current: Option<String> = m.get(channel).await.map_err(|e| conn.error(&e))?;
        if let Some(value) = current {
            // set before the wait began (rare): the hash in a round trip of its own
            let fields = m.hgetall(hash).await.map_err(|e| conn.error(&e))?;
            return Ok(Some((value, fields)));
        }
        match tokio::time::timeout(timeout, woken).await {
            Ok(Ok(Woken::Message)) => {
                let mut m = conn.retrying_within(timeout);
                let (value, fields): (Option<String>, HashMap<String, String>) = redis::pipe()
                    .get(channel)
                    .hgetall(hash)
                    .query_async(&mut m)
                    .await
                    .map_err(|e| conn.error(&e))?;
                Ok(value.map(|v| (v, fields)))
            }
            // timed out, or the connection dropped (the caller reads and waits again)
            _ => Ok(None),
        }
    }
}
