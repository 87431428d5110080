//! The configuration tag as a compare-and-set register.
//!
//! The register's value is the configuration version, which clients see only as an opaque
//! tag. A read (`HEAD /v1/configuration/datasets`) returns the current tag. A write is a
//! dataset create conditional on a tag (`X-If-Configuration-Matches`): it succeeds only if
//! the tag is current, and then moves the register to a *new* tag the client does not
//! learn (the 201 body is the dataset). A 412 says the tag was not current and names the
//! current one, so it is an observation too.
//!
//! The model therefore has two kinds of state: `Known(tag)`, and `Fresh`, "a tag nobody
//! has seen yet" after a successful write, which becomes `Known` at the first read. What
//! makes this exact is the contract that a tag is never reused (it names a log index):
//! a tag left behind by a write can never be current again. The model keeps, as context
//! that depends only on the set of linearized operations, how many linearized writes
//! started from each tag ("retired" tags). So:
//!
//! - a read of a retired tag is a stale read;
//! - two successful writes from the same tag cannot both be linearized;
//! - a lost write shows up as a read of the tag it started from, or as a second write
//!   from that tag.
//!
//! Timed-out writes (`info`) may take effect at any time after they were sent, or never.
//! Failed reads and 503 writes say nothing and are left out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{explain_wgl, CheckOutcome, Validity};
use crate::history::{Kind, Op};
use crate::wgl::{self, Entry, Limits, Model, Verdict};

pub type TagId = u32;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagState {
    Known(TagId),
    /// A tag not seen before; not any of these (tags a 412 said were not current).
    Fresh(Vec<TagId>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOp {
    Read(TagId),
    /// A conditional write from `base` that took effect (or, indeterminate, may have).
    Cas {
        base: TagId,
    },
    /// A 412: `base` was not current; `current` was, if the body said.
    CasFailed {
        base: TagId,
        current: Option<TagId>,
    },
}

/// The model, with the count of linearized writes per base tag.
#[derive(Debug, Clone, Default)]
pub struct TagRegister {
    retired: HashMap<TagId, u32>,
    /// The tags by id, for reports.
    names: std::sync::Arc<Vec<String>>,
}

impl TagRegister {
    fn retired(&self, tag: TagId) -> bool {
        self.retired.get(&tag).is_some_and(|n| *n > 0)
    }

    /// `tag` can be the value of a fresh state excluding `not`.
    fn can_be_fresh(&self, not: &[TagId], tag: TagId) -> bool {
        !self.retired(tag) && !not.contains(&tag)
    }
}

impl Model for TagRegister {
    type State = TagState;
    type Op = RegisterOp;

    fn init(&self) -> TagState {
        // The suite does not know the tag before its first read.
        TagState::Fresh(Vec::new())
    }

    fn step(&self, state: &TagState, op: &RegisterOp) -> Option<TagState> {
        use RegisterOp::*;
        use TagState::*;
        match (state, op) {
            (Known(now), Read(tag)) => (now == tag).then(|| state.clone()),
            (Fresh(not), Read(tag)) => self.can_be_fresh(not, *tag).then_some(Known(*tag)),
            (Known(now), Cas { base }) => (now == base).then(|| Fresh(Vec::new())),
            (Fresh(not), Cas { base }) => self.can_be_fresh(not, *base).then(|| Fresh(Vec::new())),
            (_, CasFailed { base, current }) if Some(*base) == *current => None,
            (Known(now), CasFailed { base, current }) => {
                (now != base && current.is_none_or(|c| c == *now)).then(|| state.clone())
            }
            (Fresh(not), CasFailed { base, current }) => match current {
                Some(c) => self.can_be_fresh(not, *c).then_some(Known(*c)),
                None if !self.can_be_fresh(not, *base) => Some(state.clone()),
                None => {
                    let mut not = not.clone();
                    not.push(*base);
                    not.sort_unstable();
                    Some(Fresh(not))
                }
            },
        }
    }

    fn show(&self, state: &TagState) -> String {
        let name = |id: &TagId| {
            self.names
                .get(*id as usize)
                .map_or_else(|| format!("#{id}"), |t| super::short_tag(t))
        };
        match state {
            TagState::Known(id) => format!("tag {}", name(id)),
            TagState::Fresh(not) if not.is_empty() => "a new tag, not read yet".into(),
            TagState::Fresh(not) => format!(
                "a new tag, not read yet, not {}",
                not.iter().map(name).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn commit(&mut self, op: &RegisterOp) {
        if let RegisterOp::Cas { base } = op {
            *self.retired.entry(*base).or_default() += 1;
        }
    }

    fn uncommit(&mut self, op: &RegisterOp) {
        if let RegisterOp::Cas { base } = op {
            if let Some(n) = self.retired.get_mut(base) {
                *n -= 1;
            }
        }
    }

    fn is_observation(&self, op: &RegisterOp) -> bool {
        !matches!(op, RegisterOp::Cas { .. })
    }
}

/// Tags to small numbers.
#[derive(Default)]
struct Tags(HashMap<String, TagId>);

impl Tags {
    fn id(&mut self, tag: &str) -> TagId {
        let next = self.0.len() as TagId;
        *self.0.entry(tag.to_owned()).or_insert(next)
    }
}

fn tag_of(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

/// The register operations of a history, as WGL entries (`id` = index into `ops`).
pub fn entries(ops: &[Op]) -> Vec<Entry<RegisterOp>> {
    entries_and_tags(ops).0
}

/// The entries, and the tags by id.
fn entries_and_tags(ops: &[Op]) -> (Vec<Entry<RegisterOp>>, Vec<String>) {
    let mut tags = Tags::default();
    let mut out = Vec::new();
    for (id, op) in ops.iter().enumerate() {
        let complete = (op.kind != Kind::Info).then_some(op.complete);
        let converted = match (op.f.as_str(), op.kind) {
            ("read", Kind::Ok) => tag_of(&op.value).map(|t| RegisterOp::Read(tags.id(t))),
            ("cas", Kind::Ok | Kind::Info) => {
                tag_of(&op.invoke_value["base"]).map(|base| RegisterOp::Cas {
                    base: tags.id(base),
                })
            }
            ("cas", Kind::Fail) if op.error.as_deref() == Some(PRECONDITION_FAILED) => {
                tag_of(&op.invoke_value["base"]).map(|base| RegisterOp::CasFailed {
                    base: tags.id(base),
                    current: tag_of(&op.value["current"]).map(|c| tags.id(c)),
                })
            }
            _ => None,
        };
        if let Some(converted) = converted {
            out.push(Entry {
                op: converted,
                invoke: op.invoke,
                complete,
                id,
            });
        }
    }
    let mut names = vec![String::new(); tags.0.len()];
    for (tag, id) in tags.0 {
        names[id as usize] = tag;
    }
    (out, names)
}

/// The error string of a 412 in the history.
pub const PRECONDITION_FAILED: &str = "precondition-failed";

/// Anomalies visible without a search: two acknowledged writes from one tag, and 412s
/// that name the required tag as current.
fn direct_anomalies(ops: &[Op]) -> Vec<String> {
    let mut by_base: HashMap<&str, Vec<&Op>> = HashMap::new();
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.f == "cas") {
        let Some(base) = tag_of(&op.invoke_value["base"]) else {
            continue;
        };
        if op.kind == Kind::Ok {
            by_base.entry(base).or_default().push(op);
        }
        if op.kind == Kind::Fail && tag_of(&op.value["current"]) == Some(base) {
            out.push(format!(
                "a 412 named the required tag as current: {}",
                super::describe(op)
            ));
        }
    }
    let mut duplicates: Vec<_> = by_base.into_iter().filter(|(_, v)| v.len() > 1).collect();
    duplicates.sort_by_key(|(_, v)| v[0].invoke);
    for (base, writes) in duplicates {
        out.push(format!(
            "{} successful conditional writes from the same tag {}:",
            writes.len(),
            super::short_tag(base)
        ));
        for w in writes {
            out.push(format!("  {}", super::describe(w)));
        }
    }
    out
}

/// Writes answered 503 during a window: the checker takes a 503 at its word ("not
/// applied"), so one that was applied after all shows up as a tag change nobody made.
fn suspects(ops: &[Op], window: &Value) -> Vec<String> {
    let to_ns = |key: &str| (window[key].as_f64().unwrap_or(0.0) * 1e9) as u64;
    let (start, end) = (to_ns("start_s"), to_ns("end_s"));
    let found: Vec<&Op> = ops
        .iter()
        .filter(|o| o.f == "cas" && o.kind == Kind::Fail)
        .filter(|o| {
            o.error
                .as_deref()
                .is_some_and(|e| e.starts_with(crate::workload::UNAVAILABLE))
        })
        .filter(|o| o.invoke <= end && o.complete >= start)
        .collect();
    if found.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "{} writes in that time were answered 503 (taken as not applied; one that was applied anyway would explain the violation):",
        found.len()
    )];
    lines.extend(
        found
            .iter()
            .take(10)
            .map(|o| format!("  {}", super::describe(o))),
    );
    lines
}

pub fn check(ops: &[Op], limits: Limits) -> CheckOutcome {
    let began = Instant::now();
    let (entries, names) = entries_and_tags(ops);
    let model = TagRegister {
        names: std::sync::Arc::new(names),
        ..TagRegister::default()
    };
    let report = wgl::check(&model, &entries, limits);
    let anomalies = direct_anomalies(ops);
    let anomaly_count = anomalies.len();
    let mut explanation = anomalies;
    let mut details = json!({
        "operations_checked": entries.len(),
        "indeterminate_writes": entries.iter().filter(|e| e.complete.is_none()).count(),
        "successful_writes": ops.iter().filter(|o| o.f == "cas" && o.kind == Kind::Ok).count(),
        "states_explored": report.states,
        "search_s": report.elapsed.as_secs_f64(),
    });
    let validity = match &report.verdict {
        Verdict::Linearizable => Validity::Valid,
        Verdict::Unknown(why) => {
            explanation.push(format!("linearizability unknown: {why}"));
            details["unknown"] = json!(why);
            Validity::Unknown
        }
        Verdict::NotLinearizable(stuck) => {
            let (lines, window) =
                explain_wgl(&model, &entries, ops, stuck, Duration::from_secs(60));
            explanation.extend(lines);
            explanation.extend(suspects(ops, &window));
            details["window"] = window;
            Validity::Invalid
        }
    };
    details["direct_anomalies"] = json!(anomaly_count);
    CheckOutcome {
        validity,
        checker: "wgl-linearizable-register",
        elapsed: began.elapsed(),
        details,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;
    use serde_json::Value;

    const T0: &str = "0123456789abcdef0000000000000001";
    const T1: &str = "0123456789abcdef0000000000000007";
    const T2: &str = "0123456789abcdef0000000000000009";

    /// A tiny history builder: times in milliseconds.
    struct H(Vec<Op>);

    impl H {
        fn new() -> Self {
            H(Vec::new())
        }
        fn op(
            mut self,
            process: u64,
            f: &str,
            inv: Value,
            kind: Kind,
            out: Value,
            t: (u64, u64),
        ) -> Self {
            let error = match (f, kind) {
                ("cas", Kind::Fail) => Some(PRECONDITION_FAILED.to_owned()),
                _ => None,
            };
            self.0.push(Op {
                process,
                f: f.into(),
                invoke_value: inv,
                value: out,
                kind,
                invoke: t.0 * 1_000_000,
                complete: t.1 * 1_000_000,
                node: Some("n1".into()),
                error,
                index: self.0.len() as u64,
            });
            self
        }
        fn read(self, p: u64, tag: &str, t: (u64, u64)) -> Self {
            self.op(p, "read", Value::Null, Kind::Ok, json!(tag), t)
        }
        fn cas(self, p: u64, base: &str, kind: Kind, t: (u64, u64)) -> Self {
            self.op(
                p,
                "cas",
                json!({"base": base}),
                kind,
                json!({"base": base}),
                t,
            )
        }
        fn cas_412(self, p: u64, base: &str, current: Option<&str>, t: (u64, u64)) -> Self {
            self.op(
                p,
                "cas",
                json!({"base": base}),
                Kind::Fail,
                json!({"base": base, "current": current}),
                t,
            )
        }
        fn validity(&self) -> Validity {
            check(&self.0, Limits::default()).validity
        }
    }

    #[test]
    fn a_clean_sequence_is_linearizable() {
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Ok, (2, 3))
            .read(1, T1, (4, 5))
            .cas(1, T1, Kind::Ok, (6, 7))
            .read(0, T2, (8, 9));
        assert_eq!(h.validity(), Validity::Valid);
    }

    #[test]
    fn racing_writers_one_wins_the_other_gets_412() {
        let h = H::new()
            .read(0, T0, (0, 1))
            .read(1, T0, (0, 1))
            .cas(0, T0, Kind::Ok, (2, 6))
            .cas_412(1, T0, Some(T1), (3, 7))
            .read(2, T1, (8, 9));
        assert_eq!(h.validity(), Validity::Valid);
    }

    #[test]
    fn concurrent_read_may_see_either_side_of_a_write() {
        for seen in [T0, T1] {
            let h = H::new()
                .read(0, T0, (0, 1))
                .cas(0, T0, Kind::Ok, (2, 10))
                .read(1, seen, (3, 9))
                .read(2, T1, (11, 12));
            assert_eq!(h.validity(), Validity::Valid, "concurrent read of {seen}");
        }
    }

    #[test]
    fn stale_read_is_rejected() {
        // The write from T0 was acknowledged before the read began; the read still
        // returned T0.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Ok, (2, 3))
            .read(1, T0, (4, 5));
        assert_eq!(h.validity(), Validity::Invalid);
        // Also when a newer tag was read in between (going back in time).
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Ok, (2, 3))
            .read(1, T1, (4, 5))
            .read(2, T0, (6, 7));
        assert_eq!(h.validity(), Validity::Invalid);
    }

    #[test]
    fn lost_write_is_rejected() {
        // An acknowledged write vanished: later reads show the tag it started from.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Ok, (2, 3))
            .read(1, T0, (10, 11))
            .read(2, T0, (12, 13));
        assert_eq!(h.validity(), Validity::Invalid);
        // ... or another write from the same tag succeeded later.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Ok, (2, 3))
            .read(1, T0, (0, 1))
            .cas(1, T0, Kind::Ok, (10, 11));
        assert_eq!(h.validity(), Validity::Invalid);
    }

    #[test]
    fn two_successful_writes_from_one_tag_are_rejected_even_when_concurrent() {
        let h = H::new()
            .read(0, T0, (0, 1))
            .read(1, T0, (0, 1))
            .cas(0, T0, Kind::Ok, (2, 10))
            .cas(1, T0, Kind::Ok, (3, 9));
        let outcome = check(&h.0, Limits::default());
        assert_eq!(outcome.validity, Validity::Invalid);
        assert!(outcome.explanation[0].contains("2 successful conditional writes"));
    }

    #[test]
    fn a_412_must_name_the_current_tag() {
        // 412 claims T0 is not current while nothing changed it.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas_412(0, T0, Some(T1), (2, 3))
            .read(1, T0, (4, 5));
        assert_eq!(h.validity(), Validity::Invalid);
        // 412 naming the base as current is self-contradictory.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas_412(0, T0, Some(T0), (2, 3));
        assert_eq!(h.validity(), Validity::Invalid);
        // 412 without a current tag excludes the base only.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(1, T0, Kind::Ok, (2, 3))
            .cas_412(0, T0, None, (4, 5))
            .read(0, T1, (6, 7));
        assert_eq!(h.validity(), Validity::Valid);
    }

    #[test]
    fn indeterminate_writes_may_take_effect_late_or_never() {
        // Timed out, then visible later: fine.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Info, (2, 5))
            .read(1, T0, (6, 7))
            .read(1, T1, (8, 9));
        assert_eq!(h.validity(), Validity::Valid);
        // Timed out and never visible: fine.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Info, (2, 5))
            .read(1, T0, (6, 7))
            .cas(1, T0, Kind::Ok, (8, 9))
            .read(1, T1, (10, 11));
        assert_eq!(h.validity(), Validity::Valid);
        // But it cannot take effect after its base tag was left behind by another write:
        // T0 -> (w1) T1 -> read T1 -> then T0's timed-out write cannot move T1.
        let h = H::new()
            .read(0, T0, (0, 1))
            .cas(0, T0, Kind::Info, (2, 5))
            .cas(1, T0, Kind::Ok, (3, 4))
            .read(1, T1, (6, 7))
            .read(1, T2, (8, 9));
        assert_eq!(h.validity(), Validity::Invalid);
    }

    #[test]
    fn failed_requests_and_failed_reads_are_ignored() {
        let h = H::new()
            .read(0, T0, (0, 1))
            .op(1, "read", Value::Null, Kind::Info, Value::Null, (2, 3))
            .op(
                2,
                "cas",
                json!({"base": T0}),
                Kind::Fail,
                json!({"base": T0}),
                (4, 5),
            );
        // The second op is a 503-style failure only if its error says so; rewrite it.
        let mut ops = h.0;
        ops[2].error = Some("unavailable".into());
        assert_eq!(check(&ops, Limits::default()).validity, Validity::Valid);
    }

    #[test]
    fn a_long_valid_history_with_contention_checks_quickly() {
        // 8 writers race from each tag: one wins, the rest get 412 naming the new tag.
        let mut h = H::new();
        let tags: Vec<String> = (0..400).map(|i| format!("{:032x}", i + 1)).collect();
        let mut t = 0;
        for w in 0..tags.len() - 1 {
            for p in 0..8 {
                h = h.read(p, &tags[w], (t, t + 2));
            }
            h = h.cas(0, &tags[w], Kind::Ok, (t + 3, t + 6));
            for p in 1..8 {
                h = h.cas_412(p, &tags[w], Some(&tags[w + 1]), (t + 3 + p % 2, t + 8));
            }
            t += 10;
        }
        let began = Instant::now();
        let outcome = check(&h.0, Limits::default());
        assert_eq!(outcome.validity, Validity::Valid);
        assert!(began.elapsed() < Duration::from_secs(20));
    }
}
