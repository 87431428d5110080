//! The history: every client operation's invocation and completion, and every fault, as
//! JSON lines in the order they happened (`DIR/history.jsonl`).
//!
//! One line per event, in Jepsen's vocabulary:
//!
//! ```json
//! {"index":7,"type":"invoke","process":2,"f":"cas","value":{"base":"…"},"time":1234567,"node":"n3"}
//! {"index":9,"type":"fail","process":2,"f":"cas","value":{"base":"…","current":"…"},"time":1299000,"node":"n3","error":"precondition-failed"}
//! ```
//!
//! - `type` is `invoke`, then one of `ok` (it happened), `fail` (it certainly did not
//!   happen, or it is a definite observation such as a 412), or `info` (the outcome is
//!   unknown: a timeout, a 504, a connection lost after the request was sent).
//! - `process` is a client number; a client whose operation ended in `info` continues
//!   under a new number (its old operation may still be in flight). Faults are recorded
//!   with the process `"nemesis"`.
//! - `time` is nanoseconds since the start of the run (a monotonic clock).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Named(String),
}

impl Process {
    pub fn nemesis() -> Self {
        Process::Named("nemesis".into())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub process: Process,
    pub f: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    /// Nanoseconds since the start of the run.
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Records events with their time, in memory and to a JSON-lines file.
pub struct Recorder {
    inner: Mutex<Inner>,
}

struct Inner {
    start: Instant,
    events: Vec<Event>,
    file: Option<BufWriter<File>>,
}

/// What a caller gives [`Recorder::record`]; index and time are filled in.
#[derive(Debug, Clone)]
pub struct Note {
    pub kind: Kind,
    pub process: Process,
    pub f: String,
    pub value: Value,
    pub node: Option<String>,
    pub error: Option<String>,
}

impl Recorder {
    pub fn new(start: Instant, path: Option<&Path>) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => Some(BufWriter::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Recorder {
            inner: Mutex::new(Inner {
                start,
                events: Vec::new(),
                file,
            }),
        })
    }

    /// Nanoseconds since the start of the run.
    pub fn now(&self) -> u64 {
        let start = self.inner.lock().expect("recorder lock poisoned").start;
        nanos_since(start)
    }

    /// Make time zero now (when the workload starts), if nothing was recorded yet.
    pub fn restart_clock(&self) {
        let mut inner = self.inner.lock().expect("recorder lock poisoned");
        if inner.events.is_empty() {
            inner.start = Instant::now();
        }
    }

    /// Append an event; the time is taken under the lock, so indexes and times agree.
    pub fn record(&self, note: Note) -> Event {
        let mut inner = self.inner.lock().expect("recorder lock poisoned");
        let event = Event {
            index: inner.events.len() as u64,
            kind: note.kind,
            process: note.process,
            f: note.f,
            value: note.value,
            time: nanos_since(inner.start),
            node: note.node,
            error: note.error,
        };
        if let Some(file) = inner.file.as_mut() {
            let line = serde_json::to_string(&event).expect("events serialize");
            // A full disk must not stop the run; the in-memory history is what is checked.
            let _ = writeln!(file, "{line}");
        }
        inner.events.push(event.clone());
        event
    }

    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .expect("recorder lock poisoned")
            .events
            .clone()
    }

    pub fn flush(&self) {
        if let Some(file) = self
            .inner
            .lock()
            .expect("recorder lock poisoned")
            .file
            .as_mut()
        {
            let _ = file.flush();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Read a history written by [`Recorder`].
pub fn load(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a history event", path.display(), n + 1))?;
        events.push(event);
    }
    Ok(events)
}

/// A client operation: an invocation paired with its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub process: u64,
    pub f: String,
    pub invoke_value: Value,
    /// The completion's value (`Null` for an operation that never completed).
    pub value: Value,
    /// `Ok`, `Fail` or `Info`.
    pub kind: Kind,
    pub invoke: u64,
    /// When the completion was recorded (for `info`, when the client gave up).
    pub complete: u64,
    pub node: Option<String>,
    pub error: Option<String>,
    /// Index of the invocation event.
    pub index: u64,
}

impl Op {
    pub fn latency_ms(&self) -> f64 {
        (self.complete.saturating_sub(self.invoke)) as f64 / 1e6
    }
}

/// Pair client invocations with their completions. An invocation without a completion
/// (the run was interrupted) counts as `info`.
pub fn pair(events: &[Event]) -> Vec<Op> {
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut ops: Vec<Op> = Vec::new();
    let end = events.last().map_or(0, |e| e.time);
    for event in events {
        let Process::Client(process) = event.process else {
            continue;
        };
        match event.kind {
            Kind::Invoke => {
                if let Some(previous) = open.insert(process, ops.len()) {
                    // A process invoked twice without completing: treat the first as lost.
                    ops[previous].kind = Kind::Info;
                }
                ops.push(Op {
                    process,
                    f: event.f.clone(),
                    invoke_value: event.value.clone(),
                    value: Value::Null,
                    kind: Kind::Info,
                    invoke: event.time,
                    complete: end,
                    node: event.node.clone(),
                    error: Some("never completed".into()),
                    index: event.index,
                });
            }
            kind => {
                if let Some(at) = open.remove(&process) {
                    let op = &mut ops[at];
                    op.kind = kind;
                    op.value = event.value.clone();
                    op.complete = event.time;
                    op.error = event.error.clone();
                }
            }
        }
    }
    ops
}

/// A fault as the nemesis recorded it: `start-*` then `stop-*` (or the end of the run).
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    pub kind: String,
    pub detail: Value,
    pub start_s: f64,
    pub end_s: f64,
}

/// Fault windows from the nemesis events: an `info` event `start-KIND` with `value.id`
/// opens one and `stop-KIND` with the same id closes it.
pub fn fault_windows(events: &[Event]) -> Vec<FaultWindow> {
    let end = events.last().map_or(0, |e| e.time);
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<FaultWindow> = Vec::new();
    for event in events {
        if event.process != Process::nemesis() {
            continue;
        }
        let id = event
            .value
            .get("id")
            .map(Value::to_string)
            .unwrap_or_default();
        if let Some(kind) = event.f.strip_prefix("start-") {
            open.insert(id, out.len());
            out.push(FaultWindow {
                kind: kind.to_owned(),
                detail: event.value.clone(),
                start_s: event.time as f64 / 1e9,
                end_s: end as f64 / 1e9,
            });
        } else if event.f.starts_with("stop-") {
            if let Some(at) = open.remove(&id) {
                out[at].end_s = event.time as f64 / 1e9;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn note(kind: Kind, process: u64, f: &str, value: Value) -> Note {
        Note {
            kind,
            process: Process::Client(process),
            f: f.into(),
            value,
            node: Some("n1".into()),
            error: None,
        }
    }

    #[test]
    fn events_round_trip_through_json_lines() {
        let dir = std::env::temp_dir().join(format!("fj-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        {
            let recorder = Recorder::new(Instant::now(), Some(&path)).unwrap();
            recorder.record(note(Kind::Invoke, 0, "read", Value::Null));
            recorder.record(note(Kind::Invoke, 1, "cas", json!({"base": "a"})));
            recorder.record(note(Kind::Ok, 0, "read", json!("a")));
            recorder.record(Note {
                kind: Kind::Info,
                process: Process::nemesis(),
                f: "start-kill".into(),
                value: json!({"id": 1}),
                node: None,
                error: None,
            });
            recorder.record(note(Kind::Info, 1, "cas", json!({"base": "a"})));
        }
        let events = load(&path).unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[3].process, Process::nemesis());
        let ops = pair(&events);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].f, "read");
        assert_eq!(ops[0].kind, Kind::Ok);
        assert_eq!(ops[0].value, json!("a"));
        assert_eq!(ops[1].kind, Kind::Info);
        let faults = fault_windows(&events);
        assert_eq!(faults.len(), 1);
        assert_eq!(faults[0].kind, "kill");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unfinished_operations_are_indeterminate() {
        let recorder = Recorder::new(Instant::now(), None).unwrap();
        recorder.record(note(Kind::Invoke, 3, "add", json!(1)));
        let ops = pair(&recorder.events());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].kind, Kind::Info);
    }
}
