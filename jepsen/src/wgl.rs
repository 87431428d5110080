//! A linearizability checker: the Wing-Gong algorithm with Lowe's memoization, as
//! described by Horn and Kroening ("Faster linearizability checking via P-compositionality",
//! 2015), extended with indeterminate operations.
//!
//! The history is a list of [`Entry`]s: an operation, the time it was invoked and, if the
//! client learned its outcome, the time it completed. An entry without a completion time
//! (Jepsen's `info`: a timeout, a 504) may take effect at any moment after its invocation,
//! or never; the search may linearize it or leave it out.
//!
//! The search keeps the calls and returns in one doubly linked list ordered by time. It
//! linearizes the first call it can (the model accepts it from the current state, and the
//! pair "set of linearized entries, state" has not been seen before), removes the entry's
//! call and return from the list, and starts again from the head. Reaching a return whose
//! call is still in the list means that entry can no longer be placed: the search undoes
//! the last linearization and tries the next call after it. The history is linearizable
//! when no return is left; it is not when a return is reached with nothing left to undo.
//!
//! The memo holds a 128-bit Zobrist hash of the set of linearized entries (one random
//! value per entry, XOR-ed in and out) instead of the set itself, so a memo entry costs a
//! few dozen bytes whatever the history length. A collision would prune a branch wrongly;
//! with 128 bits and at most millions of entries its probability is below 2^-80.
//!
//! Models may keep context that depends on the set of linearized entries (the register
//! model remembers which tags were left behind): [`Model::commit`] and
//! [`Model::uncommit`] are called as entries are linearized and undone, and since the memo
//! key contains that set, memoization stays exact.
//!
//! When a history is not linearizable, [`smallest_window`] looks for a small part of it
//! that is not linearizable on its own (starting from any state), which is what a person
//! needs to read to understand the bug.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A sequential specification.
pub trait Model: Clone {
    type State: Clone + Eq + Hash + Debug;
    type Op: Clone + Debug;

    /// The state before the first operation of a whole history.
    fn init(&self) -> Self::State;

    /// A state standing for "any state", to check a window cut out of a history. It must
    /// accept at least everything any concrete state accepts.
    fn any(&self) -> Self::State {
        self.init()
    }

    /// The state after `op` takes effect in `state`, or `None` if it cannot.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    /// `op` was linearized (after a successful [`Model::step`]).
    fn commit(&mut self, _op: &Self::Op) {}

    /// The last committed `op` was undone.
    fn uncommit(&mut self, _op: &Self::Op) {}

    /// A state for people (reports); `Debug` by default.
    fn show(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }

    /// True for operations that only observe: leaving one out of a history can only make
    /// the history easier to linearize. Used to shrink a failing window soundly.
    fn is_observation(&self, op: &Self::Op) -> bool;
}

/// One operation of a history.
#[derive(Debug, Clone)]
pub struct Entry<O> {
    pub op: O,
    /// When the client sent it.
    pub invoke: u64,
    /// When the client learned its outcome; `None` if it never did (indeterminate).
    pub complete: Option<u64>,
    /// The caller's name for it (an index into the caller's operations), for reports.
    pub id: usize,
}

/// Bounds on one search.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Give up (verdict unknown) after memoizing this many configurations.
    pub max_states: usize,
    /// Give up when this much time has passed.
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_states: 20_000_000,
            max_time: Duration::from_secs(300),
        }
    }
}

/// Where the search got stuck for good: the deepest point it reached.
#[derive(Debug, Clone)]
pub struct Stuck {
    /// The entry (index into the checked slice) whose completion could not be reached.
    pub blocked: usize,
    /// How many entries were linearized at that point.
    pub linearized: usize,
    /// The last entries linearized before it, oldest first.
    pub linearized_tail: Vec<usize>,
    /// Entries invoked before the blocked one completed and not linearized then.
    pub pending: Vec<usize>,
    /// The model state at that point.
    pub state: String,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Box<Stuck>),
    /// The search ran out of its limits.
    Unknown(String),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::NotLinearizable(_))
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub verdict: Verdict,
    /// Configurations memoized.
    pub states: usize,
    pub elapsed: Duration,
}

const HEAD: usize = 0;
const TAIL: usize = 1;
const TAIL_LEN: usize = 8;
const PENDING_LEN: usize = 32;

fn call_node(entry: usize) -> usize {
    2 + 2 * entry
}

fn return_node(entry: usize) -> usize {
    3 + 2 * entry
}

/// The time-ordered list of calls and returns, with O(1) removal and reinsertion
/// (Knuth's dancing links).
struct Timeline {
    next: Vec<usize>,
    prev: Vec<usize>,
    has_return: Vec<bool>,
}

impl Timeline {
    fn new<O>(entries: &[Entry<O>]) -> Self {
        // (time, calls before returns at equal times, node)
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            events.push((e.invoke, 0, call_node(i)));
            if let Some(done) = e.complete {
                events.push((done.max(e.invoke), 1, return_node(i)));
            }
        }
        events.sort_unstable();
        let size = 2 + 2 * entries.len();
        let mut next = vec![TAIL; size];
        let mut prev = vec![HEAD; size];
        let mut last = HEAD;
        for &(_, _, node) in &events {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        next[last] = TAIL;
        prev[TAIL] = last;
        Timeline {
            next,
            prev,
            has_return: entries.iter().map(|e| e.complete.is_some()).collect(),
        }
    }

    fn remove(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn reinsert(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }

    fn lift(&mut self, entry: usize) {
        self.remove(call_node(entry));
        if self.has_return[entry] {
            self.remove(return_node(entry));
        }
    }

    fn unlift(&mut self, entry: usize) {
        if self.has_return[entry] {
            self.reinsert(return_node(entry));
        }
        self.reinsert(call_node(entry));
    }

    /// Calls still in the list before `node`.
    fn calls_before(&self, node: usize, limit: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = self.next[HEAD];
        while at != node && at != TAIL && out.len() < limit {
            if at.is_multiple_of(2) {
                out.push((at - 2) / 2);
            }
            at = self.next[at];
        }
        out
    }
}

/// Deterministic 128-bit values, one per entry (SplitMix64).
fn zobrist(n: usize) -> Vec<u128> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect()
}

/// Check `entries` against `model` from `model.init()`.
pub fn check<M: Model>(model: &M, entries: &[Entry<M::Op>], limits: Limits) -> Report {
    search(model, model.init(), entries, limits)
}

/// Check `entries` against `model` starting from `start`.
pub fn search<M: Model>(
    model: &M,
    start: M::State,
    entries: &[Entry<M::Op>],
    limits: Limits,
) -> Report {
    let began = Instant::now();
    let mut model = model.clone();
    let mut timeline = Timeline::new(entries);
    let keys = zobrist(entries.len());
    let mut cache: HashSet<(u128, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = start;
    let mut linearized: u128 = 0;
    let mut deepest: Option<Stuck> = None;
    let mut node = timeline.next[HEAD];
    let mut steps: u64 = 0;
    let report = |verdict, cache: &HashSet<(u128, M::State)>| Report {
        verdict,
        states: cache.len(),
        elapsed: began.elapsed(),
    };
    loop {
        if node == TAIL {
            return report(Verdict::Linearizable, &cache);
        }
        steps += 1;
        if steps.is_multiple_of(1024) && began.elapsed() > limits.max_time {
            return report(
                Verdict::Unknown(format!("time limit {:?} reached", limits.max_time)),
                &cache,
            );
        }
        if node.is_multiple_of(2) {
            let entry = (node - 2) / 2;
            if let Some(after) = model.step(&state, &entries[entry].op) {
                let key = linearized ^ keys[entry];
                if cache.insert((key, after.clone())) {
                    if cache.len() > limits.max_states {
                        return report(
                            Verdict::Unknown(format!("{} states memoized", cache.len())),
                            &cache,
                        );
                    }
                    model.commit(&entries[entry].op);
                    stack.push((entry, std::mem::replace(&mut state, after)));
                    linearized = key;
                    timeline.lift(entry);
                    node = timeline.next[HEAD];
                    continue;
                }
            }
            node = timeline.next[node];
        } else {
            let blocked = (node - 3) / 2;
            if deepest.as_ref().is_none_or(|d| stack.len() > d.linearized) {
                let from = stack.len().saturating_sub(TAIL_LEN);
                deepest = Some(Stuck {
                    blocked,
                    linearized: stack.len(),
                    linearized_tail: stack[from..].iter().map(|(e, _)| *e).collect(),
                    pending: timeline.calls_before(node, PENDING_LEN),
                    state: model.show(&state),
                });
            }
            let Some((entry, before)) = stack.pop() else {
                let stuck = deepest.expect("recorded just above");
                return report(Verdict::NotLinearizable(Box::new(stuck)), &cache);
            };
            model.uncommit(&entries[entry].op);
            timeline.unlift(entry);
            linearized ^= keys[entry];
            state = before;
            node = timeline.next[call_node(entry)];
        }
    }
}

/// A part of a history that is not linearizable by itself.
#[derive(Debug, Clone)]
pub struct Window {
    /// Indices into the checked entries, by invocation time.
    pub entries: Vec<usize>,
    /// True when the window was checked on its own, from any state, and found not
    /// linearizable; false when it is only the neighbourhood of the place where the
    /// search of the whole history got stuck.
    pub proven: bool,
}

/// Segments of the completed entries separated by quiescent moments (no completed entry
/// in flight): each is a range of indices into `order` (completed entries by invocation).
fn segments<O>(entries: &[Entry<O>], order: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut reach = 0u64;
    for (k, &i) in order.iter().enumerate() {
        if k > start && entries[i].invoke > reach {
            out.push((start, k));
            start = k;
        }
        reach = reach.max(entries[i].complete.unwrap_or(u64::MAX));
    }
    if start < order.len() {
        out.push((start, order.len()));
    }
    out
}

/// Find a small window around the place where `stuck` was found that is not linearizable
/// on its own. A window is cut at quiescent moments (no completed operation in flight), so
/// everything before the cut is linearized before everything after it: a window that is
/// not linearizable from any start state proves the whole history is not. Indeterminate
/// operations invoked before the window's end are kept (they may take effect inside it).
/// The window is then shrunk by leaving out observations one at a time while it stays
/// non-linearizable. Gives up after `budget` and returns the neighbourhood of `stuck`.
pub fn smallest_window<M: Model>(
    model: &M,
    entries: &[Entry<M::Op>],
    stuck: &Stuck,
    budget: Duration,
) -> Window {
    let began = Instant::now();
    let fallback = || {
        let mut ids: Vec<usize> = stuck
            .linearized_tail
            .iter()
            .chain(&stuck.pending)
            .copied()
            .chain([stuck.blocked])
            .collect();
        ids.sort_by_key(|&i| (entries[i].invoke, i));
        ids.dedup();
        Window {
            entries: ids,
            proven: false,
        }
    };
    let mut order: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].complete.is_some())
        .collect();
    order.sort_by_key(|&i| (entries[i].invoke, i));
    let segs = segments(entries, &order);
    let Some(last) = segs
        .iter()
        .position(|&(a, b)| order[a..b].contains(&stuck.blocked))
    else {
        return fallback();
    };
    let window_of = |first: usize| -> Vec<usize> {
        let (a, _) = segs[first];
        let (_, b) = segs[last];
        let end = order[a..b]
            .iter()
            .filter_map(|&i| entries[i].complete)
            .max()
            .unwrap_or(0);
        let mut ids: Vec<usize> = order[a..b].to_vec();
        ids.extend(
            (0..entries.len())
                .filter(|&i| entries[i].complete.is_none() && entries[i].invoke <= end),
        );
        ids.sort_by_key(|&i| (entries[i].invoke, i));
        ids
    };
    let limits = |deadline: Instant| Limits {
        max_states: 2_000_000,
        max_time: deadline.saturating_duration_since(Instant::now()),
    };
    let deadline = began + budget;
    let fails = |ids: &[usize]| -> Option<bool> {
        if Instant::now() >= deadline {
            return None;
        }
        let sub: Vec<Entry<M::Op>> = ids.iter().map(|&i| entries[i].clone()).collect();
        match search(model, model.any(), &sub, limits(deadline)).verdict {
            Verdict::NotLinearizable(_) => Some(true),
            Verdict::Linearizable => Some(false),
            Verdict::Unknown(_) => None,
        }
    };
    // Grow the window backwards (1, 2, 4, ... segments), then bisect: a larger window
    // that contains a non-linearizable one is itself not linearizable.
    let mut good = None; // a number of extra segments known to be too few
    let mut extra = 0usize;
    let found = loop {
        let first = last.saturating_sub(extra);
        match fails(&window_of(first)) {
            Some(true) => break Some(extra),
            Some(false) if first == 0 => break None,
            Some(false) => {
                good = Some(extra);
                extra = if extra == 0 { 1 } else { extra * 2 };
            }
            None => break None,
        }
    };
    let Some(mut bad) = found else {
        return fallback();
    };
    let mut low = good.map_or(0, |g| g + 1);
    while low < bad {
        let mid = low + (bad - low) / 2;
        match fails(&window_of(last.saturating_sub(mid))) {
            Some(true) => bad = mid,
            Some(false) => low = mid + 1,
            None => break,
        }
    }
    let mut ids = window_of(last.saturating_sub(bad));
    // Shrink until nothing more can go: drop a suffix invoked after everything kept had
    // completed (such operations are linearized after all the kept ones), and drop
    // observations one at a time, each time only if what is left still fails.
    loop {
        let before = ids.len();
        let blocked_at = ids.iter().position(|&i| i == stuck.blocked).unwrap_or(0);
        for keep in blocked_at + 1..ids.len() {
            let reach = ids[..keep]
                .iter()
                .filter_map(|&i| entries[i].complete)
                .max()
                .unwrap_or(0);
            if ids[keep..].iter().all(|&i| entries[i].invoke > reach) {
                match fails(&ids[..keep]) {
                    Some(true) => {
                        ids.truncate(keep);
                        break;
                    }
                    Some(false) => {}
                    None => break,
                }
            }
        }
        let mut k = 0;
        while k < ids.len() {
            if model.is_observation(&entries[ids[k]].op) && ids[k] != stuck.blocked {
                let mut fewer = ids.clone();
                fewer.remove(k);
                match fails(&fewer) {
                    Some(true) => {
                        ids = fewer;
                        continue;
                    }
                    Some(false) => {}
                    None => break,
                }
            }
            k += 1;
        }
        if ids.len() == before || Instant::now() >= deadline {
            break;
        }
    }
    Window {
        entries: ids,
        proven: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain read/write/compare-and-set register of small integers, to test the search
    /// itself on the classic examples.
    #[derive(Clone)]
    struct Register;

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Read(u8),
        Write(u8),
        Cas(u8, u8),
    }

    /// `None` is "any value" (the start of a window).
    impl Model for Register {
        type State = Option<u8>;
        type Op = Op;
        fn init(&self) -> Option<u8> {
            Some(0)
        }
        fn any(&self) -> Option<u8> {
            None
        }
        fn step(&self, s: &Option<u8>, op: &Op) -> Option<Option<u8>> {
            match (*op, *s) {
                (Op::Read(v), None) => Some(Some(v)),
                (Op::Read(v), Some(now)) => (v == now).then_some(Some(now)),
                (Op::Write(v), _) => Some(Some(v)),
                (Op::Cas(_, to), None) => Some(Some(to)),
                (Op::Cas(from, to), Some(now)) => (from == now).then_some(Some(to)),
            }
        }
        fn is_observation(&self, op: &Op) -> bool {
            matches!(op, Op::Read(_))
        }
    }

    fn e(op: Op, invoke: u64, complete: Option<u64>) -> Entry<Op> {
        Entry {
            op,
            invoke,
            complete,
            id: 0,
        }
    }

    fn linearizable(entries: &[Entry<Op>]) -> bool {
        let report = check(&Register, entries, Limits::default());
        match report.verdict {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(_) => false,
            Verdict::Unknown(why) => panic!("unknown: {why}"),
        }
    }

    #[test]
    fn sequential_histories() {
        assert!(linearizable(&[]));
        assert!(linearizable(&[
            e(Op::Write(1), 0, Some(1)),
            e(Op::Read(1), 2, Some(3)),
            e(Op::Cas(1, 2), 4, Some(5)),
            e(Op::Read(2), 6, Some(7)),
        ]));
        assert!(!linearizable(&[
            e(Op::Write(1), 0, Some(1)),
            e(Op::Read(0), 2, Some(3)),
        ]));
    }

    #[test]
    fn concurrent_operations_may_be_reordered() {
        // The read overlaps the write: it may see either value.
        for seen in [0, 1] {
            assert!(linearizable(&[
                e(Op::Write(1), 0, Some(10)),
                e(Op::Read(seen), 5, Some(15)),
            ]));
        }
        // Two reads overlapping a write can see new then old only if... they cannot when
        // the first read finished before the second began.
        assert!(!linearizable(&[
            e(Op::Write(1), 0, Some(100)),
            e(Op::Read(1), 10, Some(20)),
            e(Op::Read(0), 30, Some(40)),
        ]));
        assert!(linearizable(&[
            e(Op::Write(1), 0, Some(100)),
            e(Op::Read(0), 10, Some(20)),
            e(Op::Read(1), 30, Some(40)),
        ]));
    }

    #[test]
    fn backtracking_finds_the_only_order() {
        // w1 and w2 overlap; the reads force w2 before w1 although w1 was invoked first.
        assert!(linearizable(&[
            e(Op::Write(1), 0, Some(50)),
            e(Op::Write(2), 1, Some(50)),
            e(Op::Read(2), 2, Some(10)),
            e(Op::Read(1), 60, Some(70)),
        ]));
        assert!(!linearizable(&[
            e(Op::Write(1), 0, Some(50)),
            e(Op::Write(2), 1, Some(50)),
            e(Op::Read(2), 2, Some(10)),
            e(Op::Read(1), 20, Some(30)),
            e(Op::Read(2), 60, Some(70)),
        ]));
    }

    #[test]
    fn indeterminate_operations_may_or_may_not_take_effect() {
        // An indeterminate write that took effect long after it was given up on.
        assert!(linearizable(&[
            e(Op::Write(1), 0, None),
            e(Op::Read(0), 10, Some(20)),
            e(Op::Read(1), 30, Some(40)),
        ]));
        // ... or never.
        assert!(linearizable(&[
            e(Op::Write(1), 0, None),
            e(Op::Read(0), 30, Some(40)),
        ]));
        // But not before it was invoked.
        assert!(!linearizable(&[
            e(Op::Read(1), 0, Some(10)),
            e(Op::Write(1), 20, None),
        ]));
        // And at most once.
        assert!(!linearizable(&[
            e(Op::Cas(0, 1), 0, None),
            e(Op::Read(1), 10, Some(20)),
            e(Op::Write(0), 30, Some(40)),
            e(Op::Read(0), 50, Some(60)),
            e(Op::Read(1), 70, Some(80)),
        ]));
    }

    #[test]
    fn compare_and_set_succeeds_once_per_value() {
        assert!(!linearizable(&[
            e(Op::Cas(0, 1), 0, Some(10)),
            e(Op::Cas(0, 2), 5, Some(15)),
        ]));
        assert!(linearizable(&[
            e(Op::Cas(0, 1), 0, Some(10)),
            e(Op::Cas(1, 2), 5, Some(15)),
        ]));
    }

    #[test]
    fn the_stuck_point_and_a_proven_window_are_reported() {
        // Lots of valid traffic, then one stale read after a quiescent point.
        let mut entries = Vec::new();
        let mut t = 0;
        for v in 1..=50u8 {
            entries.push(e(Op::Write(v), t, Some(t + 5)));
            entries.push(e(Op::Read(v), t + 6, Some(t + 8)));
            t += 10;
        }
        entries.push(e(Op::Write(99), t, Some(t + 5)));
        entries.push(e(Op::Read(50), t + 6, Some(t + 8)));
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.id = i;
        }
        let report = check(&Register, &entries, Limits::default());
        let Verdict::NotLinearizable(stuck) = report.verdict else {
            panic!("expected a violation");
        };
        assert_eq!(stuck.blocked, entries.len() - 1);
        let window = smallest_window(&Register, &entries, &stuck, Duration::from_secs(10));
        assert!(window.proven);
        // The write of 99 and the stale read are enough.
        assert_eq!(window.entries, vec![entries.len() - 2, entries.len() - 1]);
    }

    #[test]
    fn limits_give_unknown() {
        let mut entries = Vec::new();
        for i in 0..2000u64 {
            entries.push(e(Op::Write((i % 7) as u8), i, Some(i + 1)));
        }
        let limits = Limits {
            max_states: 10,
            max_time: Duration::from_secs(60),
        };
        assert!(matches!(
            check(&Register, &entries, limits).verdict,
            Verdict::Unknown(_)
        ));
    }
}
