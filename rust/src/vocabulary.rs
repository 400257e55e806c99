//! The engine's vocabulary on the Rust side: the run statuses and field names Rust code reads.
//!
//! Its twins are `python/flowcraft_fast/runtime/vocabulary.py` and `rust/src/scripts/lib.lua`
//! (`tests/unit/test_vocabulary.py` checks those two agree; the values here are the same).

/// A run whose nodes still run and commit.
pub const RUNNING: &str = "running";
/// A run parked at a `wait` node (its other branches may still run).
pub const AWAITING: &str = "awaiting";

/// Run meta field: the version of the run's state, bumped by every write to it.
pub const STATE_VERSION: &str = "sv";

/// Run meta fields `<prefix><node key>`: the job that runs the node, that the node committed,
/// that it waits for a resume.
pub const FIRED: &str = "fired:";
pub const DONE: &str = "done:";
pub const AWAIT: &str = "await:";

/// Whether a run with this status still runs nodes.
pub fn is_live(status: &str) -> bool {
    status == RUNNING || status == AWAITING
}

#[cfg(test)]
mod tests {
    use super::is_live;

    #[test]
    fn live_statuses() {
        assert!(is_live("running") && is_live("awaiting"));
        assert!(!is_live("completed") && !is_live("failed") && !is_live(""));
    }
}
