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

/// A set of element numbers (dense small integers), as a bit set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bits(Vec<u64>);

/// Element numbers above this are not ours (and would make the bit sets huge).
const MAX_ELEMENT: u64 = 1 << 28;

impl Bits {
    pub fn insert(&mut self, e: u64) {
        let word = (e / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (e % 64);
    }

    pub fn contains(&self, e: u64) -> bool {
        self.0
            .get((e / 64) as usize)
            .is_some_and(|w| (w >> (e % 64)) & 1 == 1)
    }

    pub fn union_with(&mut self, other: &Bits) {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// `self` without `other`.
    pub fn minus(&self, other: &Bits) -> Bits {
        Bits(
            self.0
                .iter()
                .enumerate()
                .map(|(i, w)| w & !other.0.get(i).copied().unwrap_or(0))
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u64)
                .filter(move |b| (w >> b) & 1 == 1)
                .map(move |b| i as u64 * 64 + b)
        })
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// Ranges `[[a, b], ...]` (inclusive) to a set.
pub fn from_ranges(value: &Value) -> Option<Bits> {
    let mut out = Bits::default();
    for range in value.as_array()? {
        let a = range.get(0)?.as_u64()?;
        let b = range.get(1)?.as_u64()?;
        if b >= MAX_ELEMENT {
            return None;
        }
        for e in a..=b {
            out.insert(e);
        }
    }
    Some(out)
}

/// Ascending element numbers to ranges `[[a, b], ...]`.
pub fn to_ranges(sorted: impl IntoIterator<Item = u64>) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for x in sorted {
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

fn sample(set: impl IntoIterator<Item = u64>) -> Value {
    json!(set.into_iter().take(20).collect::<Vec<_>>())
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
    // When each element may first appear: once its add was sent, unless it failed.
    let mut may_appear_after: Vec<u64> = Vec::new();
    for (&e, add) in attempted.iter().filter(|(e, _)| **e < MAX_ELEMENT) {
        let e = e as usize;
        if e >= may_appear_after.len() {
            may_appear_after.resize(e + 1, u64::MAX);
        }
        if add.kind != Kind::Fail {
            may_appear_after[e] = add.invoke;
        }
    }
    let mut reads: Vec<(&Op, Bits)> = ops
        .iter()
        .filter(|o| (o.f == "read" || o.f == "final-read") && o.kind == Kind::Ok)
        .filter_map(|o| from_ranges(&o.value).map(|s| (o, s)))
        .collect();
    reads.sort_by_key(|(o, _)| o.complete);
    let mut explanation = Vec::new();

    // Stale reads: missing something acknowledged before the read began, or something an
    // earlier read (finished before this one began) saw. Reads are taken by invocation
    // time; what they must contain only grows, so it is built incrementally.
    let mut stale = 0usize;
    let mut by_invoke: Vec<&(&Op, Bits)> = reads.iter().collect();
    by_invoke.sort_by_key(|(o, _)| o.invoke);
    let mut acks: Vec<(u64, u64)> = acked.iter().map(|(e, add)| (add.complete, *e)).collect();
    acks.sort_unstable();
    let mut required = Bits::default();
    let (mut next_read, mut next_ack) = (0, 0);
    for (read, set) in &by_invoke {
        while next_read < reads.len() && reads[next_read].0.complete < read.invoke {
            required.union_with(&reads[next_read].1);
            next_read += 1;
        }
        while next_ack < acks.len() && acks[next_ack].0 < read.invoke {
            required.insert(acks[next_ack].1);
            next_ack += 1;
        }
        let missing = required.minus(set);
        if !missing.is_empty() {
            stale += 1;
            if stale <= 5 {
                explanation.push(format!(
                    "stale read: {} elements acknowledged or seen before it began are missing (e.g. {}):",
                    missing.len(),
                    sample(missing.iter())
                ));
                explanation.push(format!("  {}", describe(read)));
            }
        }
    }

    // Elements that appear although their add failed, was never sent, or was sent after
    // the read finished.
    let mut unexpected: BTreeSet<u64> = BTreeSet::new();
    for (read, set) in &reads {
        for e in set.iter() {
            let after = may_appear_after
                .get(e as usize)
                .copied()
                .unwrap_or(u64::MAX);
            if after >= read.complete {
                unexpected.insert(e);
            }
        }
    }
    if !unexpected.is_empty() {
        explanation.push(format!(
            "{} elements appeared whose create failed, was never sent, or was sent after the read (e.g. {}):",
            unexpected.len(),
            sample(unexpected.iter().copied())
        ));
        for e in unexpected.iter().take(5) {
            if let Some(add) = attempted.get(e) {
                explanation.push(format!("  {}", describe(add)));
            }
        }
    }

    let finals: Vec<&(&Op, Bits)> = reads.iter().filter(|(o, _)| o.f == "final-read").collect();
    // Final reads run one after another once everything is healed; each must hold every
    // acknowledged add. (A later one may hold more: an indeterminate add can land late.)
    let lost: BTreeSet<u64> = acked
        .keys()
        .filter(|e| finals.iter().any(|(_, s)| !s.contains(**e)))
        .copied()
        .collect();
    if finals.is_empty() {
        explanation.push("no final read succeeded: cannot tell what survived".into());
    }
    if !lost.is_empty() {
        explanation.push(format!(
            "{} acknowledged creates are missing from the final read (e.g. {}):",
            lost.len(),
            sample(lost.iter().copied())
        ));
        for e in lost.iter().take(5) {
            explanation.push(format!("  {}", describe(acked[e])));
        }
    }
    let final_set = finals.last().map(|(_, s)| s.clone()).unwrap_or_default();
    let recovered = maybe.keys().filter(|e| final_set.contains(**e)).count();
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
            "lost_sample": sample(lost.iter().copied()),
            "unexpected": unexpected.len(),
            "unexpected_sample": sample(unexpected.iter().copied()),
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
        op(f, Kind::Ok, Value::Null, to_ranges(set), t)
    }

    #[test]
    fn ranges_round_trip() {
        let set: BTreeSet<u64> = [1, 2, 3, 7, 9, 10].into_iter().collect();
        let ranges = to_ranges(set.iter().copied());
        assert_eq!(ranges, json!([[1, 3], [7, 7], [9, 10]]));
        let bits = from_ranges(&ranges).unwrap();
        assert_eq!(bits.iter().collect::<BTreeSet<u64>>(), set);
        assert_eq!(bits.len(), 6);
        assert!(bits.contains(9) && !bits.contains(8) && !bits.contains(1000));
        let mut more = Bits::default();
        more.insert(200);
        more.union_with(&bits);
        assert_eq!(more.minus(&bits).iter().collect::<Vec<_>>(), vec![200]);
        assert!(from_ranges(&json!([[0, u64::MAX]])).is_none());
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
