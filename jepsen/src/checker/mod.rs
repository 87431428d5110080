//! Checkers: one per workload, each a pure function of the paired history.
//!
//! - [`register`]: the configuration tag as a compare-and-set register, checked for
//!   linearizability with [`crate::wgl`].
//! - [`leases`]: each lease as a mutex (acquire, renew, release, read), checked for
//!   linearizability per dataset, which also proves "never two holders at once".
//! - [`set`]: unique dataset creates; acknowledged creates must survive, nothing that
//!   certainly failed may appear, and reads must never go back in time.

pub mod leases;
pub mod register;
pub mod set;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::history::{Kind, Op};
use crate::wgl;

/// A checker's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker ran out of time or memory, or the history lacks what it needs.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    pub validity: Validity,
    pub checker: &'static str,
    #[serde(serialize_with = "as_seconds")]
    pub elapsed: Duration,
    /// Figures and anomalies, workload-specific.
    pub details: Value,
    /// What to print when the run is not valid: the anomalies and the smallest window.
    pub explanation: Vec<String>,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A short form of a 32-hex-digit tag for people: its last 8 digits.
pub fn short_tag(tag: &str) -> String {
    if tag.len() > 8 {
        format!("…{}", &tag[tag.len() - 8..])
    } else {
        tag.to_owned()
    }
}

/// One line describing an operation, for explanations.
pub fn describe(op: &Op) -> String {
    let kind = match op.kind {
        Kind::Ok => "ok",
        Kind::Fail => "fail",
        Kind::Info => "info",
        Kind::Invoke => "invoke",
    };
    let shorten = |v: &Value| -> String {
        match v {
            Value::Null => String::new(),
            Value::String(s) if s.len() == 32 => short_tag(s),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) if s.len() == 32 => format!("{k}={}", short_tag(s)),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => {
                let text = other.to_string();
                if text.len() > 60 {
                    format!("{}…", &text[..60])
                } else {
                    text
                }
            }
        }
    };
    format!(
        "p{:<3} {:<3} {:<8} {:>9.3}s → {:>9.3}s {:<4} in: {:<24} out: {}{}",
        op.process,
        op.node.as_deref().unwrap_or("-"),
        op.f,
        op.invoke as f64 / 1e9,
        op.complete as f64 / 1e9,
        kind,
        shorten(&op.invoke_value),
        if op.value == op.invoke_value {
            "same".to_owned()
        } else {
            shorten(&op.value)
        },
        op.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

/// Describe a WGL failure: where the search got stuck and the smallest window found.
pub fn explain_wgl<M: wgl::Model>(
    model: &M,
    entries: &[wgl::Entry<M::Op>],
    ops: &[Op],
    stuck: &wgl::Stuck,
    budget: Duration,
) -> (Vec<String>, Value) {
    let mut lines = Vec::new();
    let blocked = &ops[entries[stuck.blocked].id];
    lines.push(format!(
        "not linearizable: no order of the operations lets this one complete (state before it: {}):",
        stuck.state
    ));
    lines.push(format!("  {}", describe(blocked)));
    let window = wgl::smallest_window(model, entries, stuck, budget);
    let ids: Vec<usize> = window.entries.iter().map(|&i| entries[i].id).collect();
    if window.proven {
        lines.push(format!(
            "smallest non-linearizable window found ({} operations; not linearizable on its own, from any starting state):",
            ids.len()
        ));
    } else {
        lines.push(format!(
            "neighbourhood of the violation ({} operations: the last ones linearized, the pending ones, the blocked one):",
            ids.len()
        ));
    }
    for &id in &ids {
        lines.push(format!("  {}", describe(&ops[id])));
    }
    // The window's time span is that of its completed operations (indeterminate ones
    // from long before are kept only because they might land in it).
    let completed: Vec<usize> = ids
        .iter()
        .copied()
        .filter(|&i| ops[i].kind != Kind::Info)
        .collect();
    let span = if completed.is_empty() {
        &ids
    } else {
        &completed
    };
    let window_json = serde_json::json!({
        "proven": window.proven,
        "history_indexes": ids.iter().map(|&i| ops[i].index).collect::<Vec<_>>(),
        "start_s": span.iter().map(|&i| ops[i].invoke).min().unwrap_or(0) as f64 / 1e9,
        "end_s": span.iter().map(|&i| ops[i].complete).max().unwrap_or(0) as f64 / 1e9,
    });
    (lines, window_json)
}
