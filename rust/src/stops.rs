//! Listening for runs that ended early: a tokio task subscribed to the queue's stops channel
//! collects their ids, and the worker takes them (`take`) to stop its nodes of those runs at
//! once instead of at the next lease renewal. Reconnects by itself; a message missed while it
//! reconnects is caught by the lease renewal, which reports run statuses too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::conn::Connection;

#[derive(Default)]
pub struct Stops {
    runs: Mutex<Vec<String>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Stops {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.runs.lock().expect("stopped runs"))
    }

    pub fn stop(&self) {
        if let Some(task) = self.task.lock().expect("stops task").take() {
            task.abort();
        }
    }

    /// Start listening (once).
    pub fn start(self: &Arc<Self>, conn: Connection, channel: String) {
        let mut slot = self.task.lock().expect("stops task");
        if slot.is_some() {
            return;
        }
        let stops = Arc::clone(self);
        *slot = Some(pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            loop {
                if let Ok(mut pubsub) = conn.pubsub().await {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            if let Ok(run_id) = message.get_payload::<String>() {
                                stops.runs.lock().expect("stopped runs").push(run_id);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await; // Redis away: try again
            }
        }));
    }
}
