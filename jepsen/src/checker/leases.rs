//! Leases as mutexes, one per dataset: checked for linearizability key by key.
//!
//! Several fake nodes acquire (`POST /v1/configuration/leases`, 201 new / 200 renewed,
//! 409 held by another node), release (`DELETE /v1/configuration/leases/<id>`, 200 with
//! the released lease / 404) and read (`GET /v1/configuration/leases`) the leases of a few
//! datasets. Leases are taken without expiry, so time plays no part. A lease is a mutex:
//! the model's state is its holder. "Never two holders at once" is part of what
//! linearizability means here: an acquire by `b` that succeeds while `a` holds the lease
//! cannot be placed anywhere.
//!
//! Leases of different datasets are independent objects, so each dataset's operations are
//! checked on their own (linearizability is compositional), which keeps searches small.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{explain_wgl, CheckOutcome, Validity};
use crate::history::{Kind, Op};
use crate::wgl::{self, Entry, Limits, Model, Verdict};

/// A fake node number; [`STRANGER`] for a node UUID the suite did not use.
pub type Node = u32;
pub const STRANGER: Node = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// Any holder (the start of a window cut out of a history).
    Unknown,
    Free,
    Held(Node),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    /// An acquire by `node`: `created` is `Some(true)` for 201, `Some(false)` for 200
    /// (renewed), `None` if the outcome is unknown.
    Acquire {
        node: Node,
        created: Option<bool>,
    },
    /// 409: another node held it.
    Refused {
        node: Node,
    },
    /// A release: `Some(holder)` it released, `None` for 404 (no lease).
    Release {
        released: Option<Node>,
    },
    /// A release whose outcome is unknown.
    ReleaseMaybe,
    Read(Option<Node>),
}

#[derive(Debug, Clone, Default)]
pub struct Lease;

impl Model for Lease {
    type State = Holder;
    type Op = LeaseOp;

    fn init(&self) -> Holder {
        Holder::Free
    }

    fn any(&self) -> Holder {
        Holder::Unknown
    }

    fn step(&self, state: &Holder, op: &LeaseOp) -> Option<Holder> {
        use Holder::*;
        use LeaseOp::*;
        match (*state, op) {
            (Unknown, Acquire { node, .. }) => Some(Held(*node)),
            (Free, Acquire { node, created }) => (*created != Some(false)).then_some(Held(*node)),
            (Held(h), Acquire { node, created }) => {
                (h == *node && *created != Some(true)).then_some(Held(h))
            }
            (Unknown, Refused { .. }) => Some(Unknown),
            (Held(h), Refused { node }) => (h != *node).then_some(Held(h)),
            (Free, Refused { .. }) => None,
            (Unknown, Release { .. } | ReleaseMaybe) => Some(Free),
            (Held(h), Release { released }) => (*released == Some(h)).then_some(Free),
            (Free, Release { released }) => released.is_none().then_some(Free),
            (Held(_), ReleaseMaybe) => Some(Free),
            (Free, ReleaseMaybe) => None,
            (Unknown, Read(seen)) => Some(seen.map_or(Free, Held)),
            (Held(h), Read(seen)) => (*seen == Some(h)).then_some(Held(h)),
            (Free, Read(seen)) => seen.is_none().then_some(Free),
        }
    }

    fn is_observation(&self, op: &LeaseOp) -> bool {
        matches!(
            op,
            LeaseOp::Read(_) | LeaseOp::Refused { .. } | LeaseOp::Release { released: None }
        )
    }
}

/// The holder in a history value: a node number, null, or anything else (a stranger).
fn holder(value: &Value) -> Option<Node> {
    match value {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .and_then(|n| Node::try_from(n).ok())
                .unwrap_or(STRANGER),
        ),
    }
}

/// The operations of a history grouped by lease key, as WGL entries (`id` = index into
/// `ops`).
pub fn entries_by_key(ops: &[Op]) -> BTreeMap<u64, Vec<Entry<LeaseOp>>> {
    let mut out: BTreeMap<u64, Vec<Entry<LeaseOp>>> = BTreeMap::new();
    for (id, op) in ops.iter().enumerate() {
        let Some(key) = op.invoke_value["key"].as_u64() else {
            continue;
        };
        let node = op.invoke_value["node"]
            .as_u64()
            .and_then(|n| Node::try_from(n).ok())
            .unwrap_or(STRANGER);
        let error = op.error.as_deref();
        let converted = match (op.f.as_str(), op.kind) {
            ("acquire", Kind::Ok) => Some(LeaseOp::Acquire {
                node,
                created: op.value["created"].as_bool(),
            }),
            ("acquire", Kind::Info) => Some(LeaseOp::Acquire {
                node,
                created: None,
            }),
            ("acquire", Kind::Fail) if error == Some("held") => Some(LeaseOp::Refused { node }),
            ("release", Kind::Ok) => Some(LeaseOp::Release {
                released: Some(holder(&op.value["holder"]).unwrap_or(STRANGER)),
            }),
            ("release", Kind::Info) => Some(LeaseOp::ReleaseMaybe),
            ("release", Kind::Fail) if error == Some("not-found") => {
                Some(LeaseOp::Release { released: None })
            }
            ("read", Kind::Ok) => Some(LeaseOp::Read(holder(&op.value["holder"]))),
            _ => None,
        };
        if let Some(converted) = converted {
            out.entry(key).or_default().push(Entry {
                op: converted,
                invoke: op.invoke,
                complete: (op.kind != Kind::Info).then_some(op.complete),
                id,
            });
        }
    }
    out
}

pub fn check(ops: &[Op], limits: Limits) -> CheckOutcome {
    let began = Instant::now();
    let mut validity = Validity::Valid;
    let mut explanation = Vec::new();
    let mut per_key = serde_json::Map::new();
    for (key, entries) in entries_by_key(ops) {
        let report = wgl::check(&Lease, &entries, limits);
        let mut detail = json!({
            "operations_checked": entries.len(),
            "states_explored": report.states,
            "valid": report.verdict.is_linearizable(),
        });
        match &report.verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown(why) => {
                if validity == Validity::Valid {
                    validity = Validity::Unknown;
                }
                explanation.push(format!("lease {key}: linearizability unknown: {why}"));
            }
            Verdict::NotLinearizable(stuck) => {
                validity = Validity::Invalid;
                explanation.push(format!(
                    "lease {key}: two holders at once, or a lease that changed hands unseen:"
                ));
                let (lines, window) =
                    explain_wgl(&Lease, &entries, ops, stuck, Duration::from_secs(30));
                explanation.extend(lines);
                detail["window"] = window;
            }
        }
        per_key.insert(key.to_string(), detail);
    }
    CheckOutcome {
        validity,
        checker: "wgl-linearizable-lease-per-dataset",
        elapsed: began.elapsed(),
        details: json!({ "leases": per_key }),
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(Vec<Op>);

    impl H {
        fn new() -> Self {
            H(Vec::new())
        }
        #[allow(clippy::too_many_arguments)]
        fn op(
            mut self,
            f: &str,
            node: u64,
            kind: Kind,
            value: Value,
            error: Option<&str>,
            t: (u64, u64),
        ) -> Self {
            self.0.push(Op {
                process: node,
                f: f.into(),
                invoke_value: json!({"key": 0, "node": node}),
                value,
                kind,
                invoke: t.0,
                complete: t.1,
                node: None,
                error: error.map(str::to_owned),
                index: self.0.len() as u64,
            });
            self
        }
        fn acquire(self, node: u64, created: bool, t: (u64, u64)) -> Self {
            self.op(
                "acquire",
                node,
                Kind::Ok,
                json!({"created": created}),
                None,
                t,
            )
        }
        fn refused(self, node: u64, t: (u64, u64)) -> Self {
            self.op("acquire", node, Kind::Fail, Value::Null, Some("held"), t)
        }
        fn release(self, node: u64, holder: Option<u64>, t: (u64, u64)) -> Self {
            match holder {
                Some(h) => self.op("release", node, Kind::Ok, json!({"holder": h}), None, t),
                None => self.op(
                    "release",
                    node,
                    Kind::Fail,
                    Value::Null,
                    Some("not-found"),
                    t,
                ),
            }
        }
        fn read(self, node: u64, holder: Option<u64>, t: (u64, u64)) -> Self {
            self.op("read", node, Kind::Ok, json!({"holder": holder}), None, t)
        }
        fn validity(&self) -> Validity {
            check(&self.0, Limits::default()).validity
        }
    }

    #[test]
    fn a_mutex_history_is_linearizable() {
        let h = H::new()
            .acquire(1, true, (0, 1))
            .refused(2, (2, 3))
            .acquire(1, false, (4, 5))
            .read(2, Some(1), (6, 7))
            .release(1, Some(1), (8, 9))
            .release(1, None, (10, 11))
            .acquire(2, true, (12, 13))
            .read(1, Some(2), (14, 15));
        assert_eq!(h.validity(), Validity::Valid);
    }

    #[test]
    fn two_holders_at_once_are_rejected() {
        let h = H::new().acquire(1, true, (0, 1)).acquire(2, true, (2, 3));
        assert_eq!(h.validity(), Validity::Invalid);
        // Even when both acquires overlap: only one can have created the lease.
        let h = H::new().acquire(1, true, (0, 10)).acquire(2, true, (1, 9));
        assert_eq!(h.validity(), Validity::Invalid);
    }

    #[test]
    fn racing_acquires_one_wins() {
        let h = H::new()
            .acquire(1, true, (0, 10))
            .refused(2, (1, 9))
            .read(3, Some(1), (11, 12));
        assert_eq!(h.validity(), Validity::Valid);
    }

    #[test]
    fn a_refusal_without_a_holder_is_rejected() {
        let h = H::new().refused(2, (0, 1));
        assert_eq!(h.validity(), Validity::Invalid);
    }

    #[test]
    fn a_lost_release_is_rejected() {
        let h = H::new()
            .acquire(1, true, (0, 1))
            .release(1, Some(1), (2, 3))
            .read(2, Some(1), (4, 5));
        assert_eq!(h.validity(), Validity::Invalid);
    }

    #[test]
    fn indeterminate_acquire_may_hold_the_lease() {
        let h = H::new()
            .op(
                "acquire",
                1,
                Kind::Info,
                Value::Null,
                Some("timeout"),
                (0, 5),
            )
            .refused(2, (6, 7))
            .release(2, Some(1), (8, 9));
        assert_eq!(h.validity(), Validity::Valid);
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut ops = H::new().acquire(1, true, (0, 1)).acquire(2, true, (2, 3)).0;
        ops[1].invoke_value["key"] = json!(1);
        assert_eq!(check(&ops, Limits::default()).validity, Validity::Valid);
    }
}
