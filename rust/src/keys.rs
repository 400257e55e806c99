//! Every Redis key shape of flowcraft-fast, in one place.
//!
//! Run state lives in `<prefix>workflow:state:<runId>` (one field per context key, JSON text
//! values), readable by the TypeScript Flowcraft when the prefix is empty.

use pyo3::prelude::*;

pub const STATE_PREFIX: &str = "workflow:state:";

/// The hash that holds one run's context.
pub fn state_key(prefix: &str, run_id: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + STATE_PREFIX.len() + run_id.len());
    key.push_str(prefix);
    key.push_str(STATE_PREFIX);
    key.push_str(run_id);
    key
}

/// Exposed so Python code and tests build keys the same way instead of spelling them again.
#[pyfunction(name = "state_key")]
fn py_state_key(prefix: &str, run_id: &str) -> String {
    state_key(prefix, run_id)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_state_key, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::state_key;

    #[test]
    fn state_key_matches_flowcraft_layout() {
        assert_eq!(state_key("", "run-1"), "workflow:state:run-1");
        assert_eq!(state_key("{q}:", "r"), "{q}:workflow:state:r");
    }
}
