//! A grow-only set: unique dataset creates.
//!
//! Each `add` creates a dataset whose id encodes a unique element number. After the
//! faults are healed, every node is read (`final-read`). The checker requires:
//!
//! - every acknowledged add is in the final reads (nothing lost);
//! - nothing is in any read whose add certainly failed (503) or was never sent
//!   (indeterminate adds may or may not appear);
//! - every read (during the run too) contains every add acknowledged before the read was
//!   sent, and everything any read that finished before it saw (no stale reads);
//! - every final read agrees.
//!
//! Reads are recorded as ranges `[[first, last], ...]` of element numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::{json, Value};

use super::{describe, CheckOutcome, Validity};
use crate::history::{Kind, Op};

/// Ranges `[[a, b], ...]` (inclusive) to a set.
pub fn from_ranges(value: &Value) -> Option<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for range in value.as_array()? {
        let a = range.get(0)?.as_u64()?;
        let b = range.get(1)?.as_u64()?;
        out.extend(a..=b);
    }
    Some(out)
}

/// A set to ranges `[[a, b], ...]`.
pub fn to_ranges(set: &BTreeSet<u64>) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for &x in set {
        run = match run {
            Some((a, b)) if x == b + 1 => Some((a, x)),
            Some((a, b)) => {
                out.push(json!([a, b]));
                Some((x, x))
            }
            None => Some((x, x)),
        };
    }
    if let Some((a, b)) = run {
        out.push(json!([a, b]));
    }
    Value::Array(out)
}

fn sample(set: &BTreeSet<u64>) -> Value {
    json!(set.iter().take(20).collect::<Vec<_>>())
}

pub fn check(ops: &[Op]) -> CheckOutcome {
    let began = Instant::now();
    let mut acked: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut maybe: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut failed: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut attempted: BTreeMap<u64, &Op> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.f == "add") {
        let Some(element) = op.invoke_value.as_u64() else {
            continue;
        };
        attempted.insert(element, op);
        match op.kind {
            Kind::Ok => acked.insert(element, op),
            Kind::Fail => failed.insert(element, op),
            _ => maybe.insert(element, op),
        };
    }
    let mut reads: Vec<(&Op, BTreeSet<u64>)> = ops
        .iter()
        .filter(|o| (o.f == "read" || o.f == "final-read") && o.kind == Kind::Ok)
        .filter_map(|o| from_ranges(&o.value).map(|s| (o, s)))
        .collect();
    reads.sort_by_key(|(o, _)| o.complete);
    let mut explanation = Vec::new();

    // Stale reads: missing something acknowledged before the read began, or something an
    // earlier read (finished before this one began) saw.
    let mut stale = 0usize;
    let mut by_invoke: Vec<&(&Op, BTreeSet<u64>)> = reads.iter().collect();
    by_invoke.sort_by_key(|(o, _)| o.invoke);
    let mut seen_before: BTreeSet<u64> = BTreeSet::new();
    let mut finished = 0;
    for (read, set) in &by_invoke {
        while finished < reads.len() && reads[finished].0.complete < read.invoke {
            seen_before.extend(reads[finished].1.iter().copied());
            finished += 1;
        }
        let acked_before: BTreeSet<u64> = acked
            .iter()
            .filter(|(_, add)| add.complete < read.invoke)
            .map(|(e, _)| *e)
            .collect();
        let missing: BTreeSet<u64> = acked_before
            .union(&seen_before)
            .filter(|e| !set.contains(e))
            .copied()
            .collect();
        if !missing.is_empty() {
            stale += 1;
            if stale <= 5 {
                explanation.push(format!(
                    "stale read: {} elements acknowledged or seen before it began are missing (e.g. {}):",
                    missing.len(),
                    sample(&missing)
                ));
                explanation.push(format!("  {}", describe(read)));
            }
        }
    }

    // Elements that appear although their add failed, was never sent, or was sent after
    // the read finished.
    let mut unexpected: BTreeSet<u64> = BTreeSet::new();
    for (read, set) in &reads {
        for e in set {
            let possible = attempted
                .get(e)
                .is_some_and(|add| add.kind != Kind::Fail && add.invoke < read.complete);
            if !possible {
                unexpected.insert(*e);
            }
        }
    }
    if !unexpected.is_empty() {
        explanation.push(format!(
            "{} elements appeared whose create failed, was never sent, or was sent after the read (e.g. {}):",
            unexpected.len(),
            sample(&unexpected)
        ));
        for e in unexpected.iter().take(5) {
            if let Some(add) = attempted.get(e) {
                explanation.push(format!("  {}", describe(add)));
            }
        }
    }

    let finals: Vec<&(&Op, BTreeSet<u64>)> =
        reads.iter().filter(|(o, _)| o.f == "final-read").collect();
    // Final reads run one after another once everything is healed; each must hold every
    // acknowledged add. (A later one may hold more: an indeterminate add can land late.)
    let lost: BTreeSet<u64> = acked
        .keys()
        .filter(|e| finals.iter().any(|(_, s)| !s.contains(e)))
        .copied()
        .collect();
    if finals.is_empty() {
        explanation.push("no final read succeeded: cannot tell what survived".into());
    }
    if !lost.is_empty() {
        explanation.push(format!(
            "{} acknowledged creates are missing from the final read (e.g. {}):",
            lost.len(),
            sample(&lost)
        ));
        for e in lost.iter().take(5) {
            explanation.push(format!("  {}", describe(acked[e])));
        }
    }
    let final_set = finals.last().map(|(_, s)| s.clone()).unwrap_or_default();
    let recovered = maybe.keys().filter(|e| final_set.contains(e)).count();
    let validity = if !lost.is_empty() || !unexpected.is_empty() || stale > 0 {
        Validity::Invalid
    } else if finals.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    CheckOutcome {
        validity,
        checker: "set",
        elapsed: began.elapsed(),
        details: json!({
            "attempted": attempted.len(),
            "acknowledged": acked.len(),
            "failed": failed.len(),
            "indeterminate": maybe.len(),
            "indeterminate_present": recovered,
            "final_reads": finals.len(),
            "final_size": final_set.len(),
            "lost": lost.len(),
            "lost_sample": sample(&lost),
            "unexpected": unexpected.len(),
            "unexpected_sample": sample(&unexpected),
            "stale_reads": stale,
            "reads": reads.len(),
        }),
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: &str, kind: Kind, inv: Value, out: Value, t: (u64, u64)) -> Op {
        Op {
            process: 0,
            f: f.into(),
            invoke_value: inv,
            value: out,
            kind,
            invoke: t.0,
            complete: t.1,
            node: None,
            error: None,
            index: 0,
        }
    }

    fn add(e: u64, kind: Kind, t: (u64, u64)) -> Op {
        op("add", kind, json!(e), Value::Null, t)
    }

    fn read(f: &str, set: &[u64], t: (u64, u64)) -> Op {
        let set: BTreeSet<u64> = set.iter().copied().collect();
        op(f, Kind::Ok, Value::Null, to_ranges(&set), t)
    }

    #[test]
    fn ranges_round_trip() {
        let set: BTreeSet<u64> = [1, 2, 3, 7, 9, 10].into_iter().collect();
        let ranges = to_ranges(&set);
        assert_eq!(ranges, json!([[1, 3], [7, 7], [9, 10]]));
        assert_eq!(from_ranges(&ranges).unwrap(), set);
    }

    #[test]
    fn everything_acknowledged_survives() {
        let ops = vec![
            add(1, Kind::Ok, (0, 1)),
            add(2, Kind::Info, (0, 5)),
            add(3, Kind::Fail, (0, 1)),
            read("read", &[1], (2, 3)),
            read("final-read", &[1, 2], (10, 11)),
            read("final-read", &[1, 2], (10, 12)),
        ];
        let outcome = check(&ops);
        assert_eq!(
            outcome.validity,
            Validity::Valid,
            "{:?}",
            outcome.explanation
        );
        assert_eq!(outcome.details["indeterminate_present"], 1);
    }

    #[test]
    fn a_lost_create_is_detected() {
        let ops = vec![add(1, Kind::Ok, (0, 1)), read("final-read", &[], (10, 11))];
        let outcome = check(&ops);
        assert_eq!(outcome.validity, Validity::Invalid);
        assert_eq!(outcome.details["lost"], 1);
    }

    #[test]
    fn a_failed_create_must_not_appear() {
        let ops = vec![
            add(1, Kind::Fail, (0, 1)),
            read("final-read", &[1], (10, 11)),
        ];
        assert_eq!(check(&ops).validity, Validity::Invalid);
        let ops = vec![read("final-read", &[42], (10, 11))];
        assert_eq!(check(&ops).validity, Validity::Invalid);
    }

    #[test]
    fn stale_reads_are_detected() {
        // Acknowledged before the read began, missing from it.
        let ops = vec![
            add(1, Kind::Ok, (0, 1)),
            read("read", &[], (2, 3)),
            read("final-read", &[1], (10, 11)),
        ];
        assert_eq!(check(&ops).validity, Validity::Invalid);
        // Seen by an earlier read, then gone (the add was indeterminate).
        let ops = vec![
            add(1, Kind::Info, (0, 1)),
            read("read", &[1], (2, 3)),
            read("read", &[], (4, 5)),
            read("final-read", &[1], (10, 11)),
        ];
        assert_eq!(check(&ops).validity, Validity::Invalid);
        // Concurrent with the add: either is fine.
        let ops = vec![
            add(1, Kind::Ok, (0, 10)),
            read("read", &[], (2, 3)),
            read("read", &[1], (4, 5)),
            read("final-read", &[1], (20, 21)),
        ];
        assert_eq!(check(&ops).validity, Validity::Valid);
    }

    #[test]
    fn without_a_final_read_the_verdict_is_unknown() {
        let ops = vec![add(1, Kind::Ok, (0, 1))];
        assert_eq!(check(&ops).validity, Validity::Unknown);
    }

    #[test]
    fn a_later_final_read_may_not_lose_what_an_earlier_one_saw() {
        let ops = vec![
            add(1, Kind::Info, (0, 1)),
            read("final-read", &[1], (10, 11)),
            read("final-read", &[], (12, 13)),
        ];
        assert_eq!(check(&ops).validity, Validity::Invalid);
        let ops = vec![
            add(1, Kind::Info, (0, 1)),
            read("final-read", &[], (10, 11)),
            read("final-read", &[1], (12, 13)),
        ];
        assert_eq!(check(&ops).validity, Validity::Valid);
    }
}
