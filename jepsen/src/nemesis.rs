//! The nemesis: faults on a seeded schedule.
//!
//! The schedule alternates quiet periods and fault periods (each about `--interval` and
//! `--hold` seconds, randomized by the seed). A fault period starts one fault, or with
//! probability 0.3 two of different kinds (a partition with a kill, say), holds them, then
//! heals them. Kinds:
//!
//! - `partition-leader`: the leader alone on one side;
//! - `partition-halves`: a random minority against the majority;
//! - `partition-ring` (5 nodes): every node sees a majority, but each a different one;
//!   with 3 nodes this is the same as a bridge;
//! - `partition-bridge`: two halves joined only through one node that sees both;
//! - `kill-random`, `kill-leader`: SIGKILL, restarted (same data) when healed;
//! - `pause-random`, `pause-leader`: SIGSTOP, SIGCONT when healed;
//! - `membership`: remove a node (the leader half the time; joint consensus), stop it
//!   and wipe its data; when healed, it comes back empty under a new Raft id, as a
//!   learner, then a voter.
//!
//! `partition`, `kill` and `pause` pick a variant at random each time; `all` is every
//! kind. Kills and pauses together never take down more than a minority; a membership
//! change runs alone. The seed fixes the schedule and the choices; which node is leader
//! when a fault starts depends on the run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster::{self, lock, Endpoints, Shared};
use crate::history::{Kind, Note, Process, Recorder};
use crate::netns::cuts_between;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    IsolateLeader,
    Halves,
    MajoritiesRing,
    Bridge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Random,
    Leader,
}

/// A kind of fault; `None` variants pick at random each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Partition(Option<PartitionKind>),
    Kill(Option<Target>),
    Pause(Option<Target>),
    Membership,
}

impl FaultKind {
    fn category(self) -> u8 {
        match self {
            FaultKind::Partition(_) => 0,
            FaultKind::Kill(_) | FaultKind::Pause(_) => 1,
            FaultKind::Membership => 2,
        }
    }
}

/// Parse `--nemesis` (comma-separated; `none` for no faults).
pub fn parse(list: &str) -> anyhow::Result<Vec<FaultKind>> {
    use FaultKind::*;
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kinds: &[FaultKind] = match name {
            "none" => &[],
            "partition" => &[Partition(None)],
            "partition-leader" => &[Partition(Some(PartitionKind::IsolateLeader))],
            "partition-halves" => &[Partition(Some(PartitionKind::Halves))],
            "partition-ring" => &[Partition(Some(PartitionKind::MajoritiesRing))],
            "partition-bridge" => &[Partition(Some(PartitionKind::Bridge))],
            "kill" => &[Kill(None)],
            "kill-random" => &[Kill(Some(Target::Random))],
            "kill-leader" => &[Kill(Some(Target::Leader))],
            "pause" => &[Pause(None)],
            "pause-random" => &[Pause(Some(Target::Random))],
            "pause-leader" => &[Pause(Some(Target::Leader))],
            "membership" => &[Membership],
            "all" => &[Partition(None), Kill(None), Pause(None), Membership],
            other => bail!(
                "unknown nemesis {other:?}: use partition[-leader|-halves|-ring|-bridge], \
                 kill[-random|-leader], pause[-random|-leader], membership, all or none"
            ),
        };
        for kind in kinds {
            if !out.contains(kind) {
                out.push(*kind);
            }
        }
    }
    Ok(out)
}

/// The groups of slots a partition of `kind` makes among `slots` (shuffled by `rng`),
/// and the links it cuts.
pub fn partition_plan(
    kind: PartitionKind,
    slots: usize,
    leader: Option<usize>,
    rng: &mut impl Rng,
) -> (Vec<Vec<usize>>, Vec<(usize, usize)>) {
    let mut order: Vec<usize> = (1..=slots).collect();
    order.shuffle(rng);
    let kind = if kind == PartitionKind::MajoritiesRing && slots < 5 {
        PartitionKind::Bridge
    } else {
        kind
    };
    match kind {
        PartitionKind::IsolateLeader => {
            let alone = leader.unwrap_or(order[0]);
            let rest: Vec<usize> = (1..=slots).filter(|&s| s != alone).collect();
            let groups = vec![vec![alone], rest];
            let cuts = cuts_between(&groups);
            (groups, cuts)
        }
        PartitionKind::Halves => {
            let (minority, majority) = order.split_at(slots / 2);
            let mut groups = vec![minority.to_vec(), majority.to_vec()];
            groups.iter_mut().for_each(|g| g.sort_unstable());
            let cuts = cuts_between(&groups);
            (groups, cuts)
        }
        PartitionKind::Bridge => {
            let half = slots / 2;
            let mut left = order[..half].to_vec();
            let bridge = order[half];
            let mut right = order[half + 1..].to_vec();
            left.sort_unstable();
            right.sort_unstable();
            let cuts = cuts_between(&[left.clone(), right.clone()]);
            (vec![left, vec![bridge], right], cuts)
        }
        PartitionKind::MajoritiesRing => {
            // Each node keeps its ring neighbours within `reach`: itself plus 2*reach
            // nodes is a majority, and no two nodes see the same set.
            let majority = slots / 2 + 1;
            let reach = majority / 2;
            let mut cuts = Vec::new();
            for i in 0..slots {
                for j in i + 1..slots {
                    let d = (j - i).min(slots - (j - i));
                    if d > reach {
                        let (a, b) = (order[i], order[j]);
                        cuts.push((a.min(b), a.max(b)));
                    }
                }
            }
            cuts.sort_unstable();
            let groups = order.iter().map(|&s| vec![s]).collect();
            (groups, cuts)
        }
    }
}

fn kind_name(kind: PartitionKind) -> &'static str {
    match kind {
        PartitionKind::IsolateLeader => "isolate-leader",
        PartitionKind::Halves => "halves",
        PartitionKind::MajoritiesRing => "majorities-ring",
        PartitionKind::Bridge => "bridge",
    }
}

fn names(slots: &[usize]) -> Vec<String> {
    slots.iter().map(|&s| Endpoints::name(s)).collect()
}

/// A fault in force.
#[derive(Debug, Clone)]
enum Active {
    Partition { id: u64 },
    Killed { id: u64, slot: usize },
    Paused { id: u64, slot: usize },
    Removed { id: u64, slot: usize },
}

impl Active {
    fn slot(&self) -> Option<usize> {
        match self {
            Active::Partition { .. } => None,
            Active::Killed { slot, .. }
            | Active::Paused { slot, .. }
            | Active::Removed { slot, .. } => Some(*slot),
        }
    }
}

/// Timing of the schedule (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Mean quiet time between fault periods.
    pub interval: f64,
    /// Mean length of a fault period.
    pub hold: f64,
}

pub struct Nemesis {
    kinds: Vec<FaultKind>,
    schedule: Schedule,
    rng: ChaCha8Rng,
    cluster: Shared,
    recorder: Arc<Recorder>,
    active: Vec<Active>,
    next_id: u64,
}

impl Nemesis {
    pub fn new(
        kinds: Vec<FaultKind>,
        schedule: Schedule,
        seed: u64,
        cluster: Shared,
        recorder: Arc<Recorder>,
    ) -> Self {
        Nemesis {
            kinds,
            schedule,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300),
            cluster,
            recorder,
            active: Vec::new(),
            next_id: 1,
        }
    }

    fn endpoints(&self) -> Endpoints {
        lock(&self.cluster).endpoints.clone()
    }

    fn note(&self, f: &str, value: Value, node: Option<usize>, error: Option<String>) {
        if let Some(e) = &error {
            tracing::warn!("nemesis {f}: {e}");
        } else {
            tracing::info!("nemesis {f} {value}");
        }
        self.recorder.record(Note {
            kind: Kind::Info,
            process: Process::nemesis(),
            f: f.into(),
            value,
            node: node.map(Endpoints::name),
            error,
        });
    }

    fn around(&mut self, mean: f64) -> Duration {
        Duration::from_secs_f64(mean * self.rng.gen_range(0.5..1.5))
    }

    /// Inject faults until `until`; everything is healed when it returns.
    pub async fn run(&mut self, until: Instant) {
        if self.kinds.is_empty() {
            tokio::time::sleep_until(until).await;
            return;
        }
        loop {
            let quiet = self.around(self.schedule.interval);
            tokio::time::sleep_until(until.min(Instant::now() + quiet)).await;
            if Instant::now() >= until {
                break;
            }
            let first = *self.kinds.choose(&mut self.rng).expect("not empty");
            let mut chosen = vec![first];
            let others: Vec<FaultKind> = self
                .kinds
                .iter()
                .copied()
                .filter(|k| k.category() != first.category() && *k != FaultKind::Membership)
                .collect();
            if first != FaultKind::Membership && !others.is_empty() && self.rng.gen_bool(0.3) {
                chosen.push(*others.choose(&mut self.rng).expect("not empty"));
            }
            for kind in chosen {
                self.start(kind).await;
            }
            let hold = self.around(self.schedule.hold);
            tokio::time::sleep_until(until.min(Instant::now() + hold)).await;
            self.heal_all().await;
        }
        self.heal_all().await;
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// Slots that run, are members, and are not under a process fault.
    fn healthy_slots(&self) -> Vec<usize> {
        let mut c = lock(&self.cluster);
        let faulted: Vec<usize> = self.active.iter().filter_map(Active::slot).collect();
        (1..=c.nodes.len())
            .filter(|s| !faulted.contains(s) && c.node(*s).member && c.is_running(*s))
            .collect()
    }

    async fn target(&mut self, target: Option<Target>) -> Option<(usize, &'static str)> {
        let slots = lock(&self.cluster).nodes.len();
        let down = self.active.iter().filter_map(Active::slot).count();
        if down + 1 > (slots - 1) / 2 {
            return None; // would take down a majority
        }
        let healthy = self.healthy_slots();
        let target = target.unwrap_or(if self.rng.gen_bool(0.5) {
            Target::Leader
        } else {
            Target::Random
        });
        if target == Target::Leader {
            if let Some(leader) = self.endpoints().leader(Duration::from_secs(1)).await {
                if healthy.contains(&leader) {
                    return Some((leader, "leader"));
                }
            }
        }
        healthy.choose(&mut self.rng).map(|s| (*s, "random"))
    }

    async fn start(&mut self, kind: FaultKind) {
        match kind {
            FaultKind::Partition(which) => self.start_partition(which).await,
            FaultKind::Kill(target) => {
                let Some((slot, why)) = self.target(target).await else {
                    return;
                };
                let id = self.new_id();
                let raft_id = lock(&self.cluster).node(slot).raft_id;
                let cluster = self.cluster.clone();
                let result = tokio::task::spawn_blocking(move || lock(&cluster).kill(slot)).await;
                let value = json!({"id": id, "node": Endpoints::name(slot), "raft_id": raft_id, "target": why});
                match result {
                    Ok(Ok(())) => {
                        self.note("start-kill", value, Some(slot), None);
                        self.active.push(Active::Killed { id, slot });
                    }
                    other => self.note("start-kill", value, Some(slot), Some(format!("{other:?}"))),
                }
            }
            FaultKind::Pause(target) => {
                let Some((slot, why)) = self.target(target).await else {
                    return;
                };
                let id = self.new_id();
                let raft_id = lock(&self.cluster).node(slot).raft_id;
                let value = json!({"id": id, "node": Endpoints::name(slot), "raft_id": raft_id, "target": why});
                match lock(&self.cluster).pause(slot) {
                    Ok(()) => {
                        self.note("start-pause", value, Some(slot), None);
                        self.active.push(Active::Paused { id, slot });
                    }
                    Err(e) => self.note("start-pause", value, Some(slot), Some(e.to_string())),
                }
            }
            FaultKind::Membership => {
                if !self.active.is_empty() {
                    return;
                }
                // Half the time the leader: removing it while writes are in flight is
                // the hard case.
                let Some((slot, why)) = self.target(None).await else {
                    return;
                };
                let id = self.new_id();
                let raft_id = lock(&self.cluster).node(slot).raft_id;
                let value = json!({"id": id, "node": Endpoints::name(slot), "raft_id": raft_id, "action": "remove", "target": why});
                self.note("start-membership", value, Some(slot), None);
                match cluster::remove_member(&self.cluster, slot, Duration::from_secs(20)).await {
                    Ok(_) => self.active.push(Active::Removed { id, slot }),
                    Err(e) => self.note(
                        "stop-membership",
                        json!({"id": id, "node": Endpoints::name(slot)}),
                        Some(slot),
                        Some(format!("removal failed: {e:#}")),
                    ),
                }
            }
        }
    }

    async fn start_partition(&mut self, which: Option<PartitionKind>) {
        if self
            .active
            .iter()
            .any(|a| matches!(a, Active::Partition { .. }))
        {
            return;
        }
        let kind = which.unwrap_or_else(|| {
            *[
                PartitionKind::IsolateLeader,
                PartitionKind::Halves,
                PartitionKind::MajoritiesRing,
                PartitionKind::Bridge,
            ]
            .choose(&mut self.rng)
            .expect("not empty")
        });
        let endpoints = self.endpoints();
        let leader = if kind == PartitionKind::IsolateLeader {
            endpoints.leader(Duration::from_secs(1)).await
        } else {
            None
        };
        let (groups, cuts) = partition_plan(kind, endpoints.layout.slots, leader, &mut self.rng);
        let id = self.new_id();
        let value = json!({
            "id": id,
            "kind": kind_name(kind),
            "groups": groups.iter().map(|g| names(g)).collect::<Vec<_>>(),
            "cuts": cuts.iter().map(|&(a, b)| names(&[a, b])).collect::<Vec<_>>(),
        });
        let layout = endpoints.layout.clone();
        let applied = tokio::task::spawn_blocking(move || layout.partition(&cuts)).await;
        match applied {
            Ok(Ok(())) => {
                self.note("start-partition", value, None, None);
                self.active.push(Active::Partition { id });
            }
            other => {
                let layout = endpoints.layout.clone();
                let _ = tokio::task::spawn_blocking(move || layout.heal()).await;
                self.note("start-partition", value, None, Some(format!("{other:?}")));
            }
        }
    }

    /// Heal every active fault (newest first). Faults that could not be healed stay
    /// active. Returns how many are left.
    pub async fn heal_all(&mut self) -> usize {
        let mut left = Vec::new();
        while let Some(active) = self.active.pop() {
            if let Err(e) = self.heal(&active).await {
                tracing::warn!("healing {active:?}: {e:#}");
                left.push(active);
            }
        }
        left.reverse();
        let n = left.len();
        self.active = left;
        n
    }

    async fn heal(&mut self, active: &Active) -> anyhow::Result<()> {
        match *active {
            Active::Partition { id } => {
                let layout = self.endpoints().layout;
                tokio::task::spawn_blocking(move || layout.heal()).await??;
                self.note("stop-partition", json!({"id": id}), None, None);
            }
            Active::Killed { id, slot } => {
                lock(&self.cluster).start(slot)?;
                self.note(
                    "stop-kill",
                    json!({"id": id, "node": Endpoints::name(slot)}),
                    Some(slot),
                    None,
                );
            }
            Active::Paused { id, slot } => {
                lock(&self.cluster).resume(slot)?;
                self.note(
                    "stop-pause",
                    json!({"id": id, "node": Endpoints::name(slot)}),
                    Some(slot),
                    None,
                );
            }
            Active::Removed { id, slot } => {
                let raft_id =
                    cluster::add_member(&self.cluster, slot, Duration::from_secs(30)).await?;
                self.note(
                    "stop-membership",
                    json!({"id": id, "node": Endpoints::name(slot), "raft_id": raft_id, "action": "add"}),
                    Some(slot),
                    None,
                );
            }
        }
        Ok(())
    }

    /// The final heal phase: heal everything (retrying), restart any node that is down
    /// for any reason, and wait until the cluster is healthy.
    pub async fn final_heal(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        self.note("start-heal", json!({"id": 0}), None, None);
        while self.heal_all().await > 0 {
            if Instant::now() >= deadline {
                bail!("could not heal {:?}", self.active);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        {
            let mut c = lock(&self.cluster);
            for slot in 1..=c.nodes.len() {
                if c.node(slot).member && !c.is_running(slot) {
                    c.start(slot)?;
                }
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let leader = cluster::wait_healthy(&self.cluster, remaining).await?;
        self.note(
            "stop-heal",
            json!({"id": 0, "leader": Endpoints::name(leader)}),
            None,
            None,
        );
        Ok(leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(parse("none").unwrap(), vec![]);
        assert_eq!(
            parse("partition,kill,pause").unwrap(),
            vec![
                FaultKind::Partition(None),
                FaultKind::Kill(None),
                FaultKind::Pause(None)
            ]
        );
        assert_eq!(parse("all").unwrap().len(), 4);
        assert!(parse("flood").is_err());
    }

    fn connected(cuts: &[(usize, usize)], a: usize, b: usize) -> bool {
        a == b || !cuts.contains(&(a.min(b), a.max(b)))
    }

    #[test]
    fn partitions_have_the_promised_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for n in [3, 5] {
            let (groups, cuts) = partition_plan(PartitionKind::IsolateLeader, n, Some(2), &mut rng);
            assert_eq!(groups[0], vec![2]);
            assert_eq!(cuts.len(), n - 1);

            let (groups, _) = partition_plan(PartitionKind::Halves, n, None, &mut rng);
            assert_eq!(groups[0].len(), n / 2);
            assert_eq!(groups[1].len(), n - n / 2);

            let (groups, cuts) = partition_plan(PartitionKind::Bridge, n, None, &mut rng);
            let bridge = groups[1][0];
            for s in 1..=n {
                assert!(connected(&cuts, bridge, s), "the bridge sees everyone");
            }
            assert!(!connected(&cuts, groups[0][0], groups[2][0]));
        }
        // Majorities ring on 5: each node sees exactly 3 (itself included), all different.
        let (_, cuts) = partition_plan(PartitionKind::MajoritiesRing, 5, None, &mut rng);
        let mut views = Vec::new();
        for a in 1..=5 {
            let view: Vec<usize> = (1..=5).filter(|&b| connected(&cuts, a, b)).collect();
            assert_eq!(view.len(), 3, "{view:?}");
            views.push(view);
        }
        views.sort();
        views.dedup();
        assert_eq!(views.len(), 5);
    }
}
