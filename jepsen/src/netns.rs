//! Real isolation: one network namespace per control node, joined by a bridge that lives
//! in a namespace of its own, and one veth pair to the host so the clients (on the host)
//! can reach every node.
//!
//! ```text
//!  host: fj<ID>h 10.A.B.1/24 ──veth── fj-<ID>-sw: br0 ──veth── fj-<ID>-n1: eth0 10.A.B.11
//!                                                    ├──veth── fj-<ID>-n2: eth0 10.A.B.12
//!                                                    └── ...
//! ```
//!
//! Every name carries the run id (the suite's PID in hex), so runs never collide and a
//! later run can tell leftovers of a dead run (its PID no longer runs `flocker-jepsen`)
//! from those of a live one. The /24 is chosen among `10.231.0.0/16` so that it is not on
//! any host interface or route; the suite only ever sends traffic to the addresses it put
//! on its own namespaces.
//!
//! Partitions are `iptables -A INPUT -s <peer> -j DROP` rules inside a node's namespace
//! (dropping what arrives is enough to cut established TCP connections too, as in
//! Jepsen); healing flushes the INPUT chain of every node. The host's address is never
//! dropped: clients reach every node throughout.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

/// The prefix of every namespace, bridge and interface the suite creates.
pub const PREFIX: &str = "fj-";

/// Run a command; its stdout on success, an error with its stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Run a command for its effect during teardown: failures are only logged.
fn run_quiet(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        tracing::debug!("teardown: {e}");
    }
}

/// Names and addresses of one run (cheap to clone; creates nothing).
#[derive(Debug, Clone)]
pub struct Layout {
    pub run_id: String,
    /// The first three octets of the run's /24.
    pub subnet: [u8; 3],
    pub slots: usize,
}

/// The namespaces and links of one run; removed on drop.
#[derive(Debug)]
pub struct Network {
    pub layout: Layout,
    namespaces: Vec<String>,
    host_link: Option<String>,
    torn_down: bool,
}

impl Layout {
    pub fn switch_ns(&self) -> String {
        format!("{PREFIX}{}-sw", self.run_id)
    }

    pub fn node_ns(&self, slot: usize) -> String {
        format!("{PREFIX}{}-n{slot}", self.run_id)
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Node slots are numbered from 1.
    pub fn node_ip(&self, slot: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 10 + slot as u8)
    }

    /// Cut the links in `cuts` (pairs of slots): each side drops what the other sends.
    pub fn partition(&self, cuts: &[(usize, usize)]) -> anyhow::Result<()> {
        for &(a, b) in cuts {
            for (me, peer) in [(a, b), (b, a)] {
                let ns = self.node_ns(me);
                let source = self.node_ip(peer).to_string();
                run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "iptables", "-w", "-A", "INPUT", "-s", &source, "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Remove every partition rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        for slot in 1..=self.slots {
            let ns = self.node_ns(slot);
            run(
                "ip",
                &["netns", "exec", &ns, "iptables", "-w", "-F", "INPUT"],
            )?;
        }
        Ok(())
    }
}

fn host_link_name(run_id: &str) -> String {
    format!("fj{run_id}h")
}

impl Network {
    /// The run id for this process.
    pub fn own_run_id() -> String {
        format!("{:x}", std::process::id())
    }

    /// A /24 in 10.231.0.0/16 that no host address or route mentions.
    fn free_subnet(run_id: &str) -> anyhow::Result<[u8; 3]> {
        let used = run("ip", &["-4", "addr", "show"])? + &run("ip", &["-4", "route", "show"])?;
        let seed = u32::from_str_radix(run_id, 16).unwrap_or(0);
        for k in 0..250u32 {
            let third = ((seed + k) % 250 + 1) as u8;
            let net = format!("10.231.{third}.");
            if !used.contains(&net) {
                return Ok([10, 231, third]);
            }
        }
        bail!("no free /24 in 10.231.0.0/16 on this host")
    }

    /// Create the switch, the host link and `slots` node namespaces. On error, what was
    /// created so far is removed before the error is returned.
    pub fn create(slots: usize) -> anyhow::Result<Network> {
        let run_id = Self::own_run_id();
        let subnet = Self::free_subnet(&run_id)?;
        let mut net = Network {
            layout: Layout {
                run_id,
                subnet,
                slots,
            },
            namespaces: Vec::new(),
            host_link: None,
            torn_down: false,
        };
        // On error, dropping `net` removes what was created so far.
        net.build()?;
        Ok(net)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<()> {
        run("ip", &["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let layout = self.layout.clone();
        let sw = layout.switch_ns();
        self.add_ns(&sw)?;
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "br0", "up"])?;

        let host = host_link_name(&layout.run_id);
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &sw,
            ],
        )?;
        self.host_link = Some(host.clone());
        run("ip", &["-n", &sw, "link", "set", "host", "master", "br0"])?;
        run("ip", &["-n", &sw, "link", "set", "host", "up"])?;
        let host_cidr = format!("{}/24", layout.host_ip());
        run("ip", &["addr", "add", &host_cidr, "dev", &host])?;
        run("ip", &["link", "set", &host, "up"])?;

        for slot in 1..=layout.slots {
            let ns = layout.node_ns(slot);
            self.add_ns(&ns)?;
            let port = format!("n{slot}");
            run(
                "ip",
                &[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run("ip", &["-n", &sw, "link", "set", &port, "master", "br0"])?;
            run("ip", &["-n", &sw, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", layout.node_ip(slot));
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            // Fail early, with a clear message, if iptables cannot work here.
            run(
                "ip",
                &["netns", "exec", &ns, "iptables", "-w", "-F", "INPUT"],
            )
            .context("iptables inside a network namespace (apt-get install iptables)")?;
        }
        Ok(())
    }

    /// Remove everything this run created (idempotent, best effort). Processes still in
    /// the namespaces (only ours can be there) are killed by PID first.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for ns in &self.namespaces {
            kill_namespace_processes(ns);
        }
        if let Some(link) = self.host_link.take() {
            run_quiet("ip", &["link", "del", &link]);
        }
        for ns in self.namespaces.drain(..).rev() {
            run_quiet("ip", &["netns", "del", &ns]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGKILL every process inside namespace `ns` (found with `ip netns pids`).
fn kill_namespace_processes(ns: &str) {
    let Ok(pids) = run("ip", &["netns", "pids", ns]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = crate::process::signal(pid, libc::SIGKILL);
    }
}

/// True if `pid` is a running `flocker-jepsen`.
fn suite_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim() == "flocker-jepsen")
        .unwrap_or(false)
}

/// Remove namespaces and host links of earlier runs whose suite no longer runs. Returns
/// the run ids cleaned.
pub fn remove_leftovers() -> anyhow::Result<Vec<String>> {
    let listing = run("ip", &["netns", "list"])?;
    let mut by_run: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in listing.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((run_id, _)) = rest.split_once('-') else {
            continue;
        };
        if u32::from_str_radix(run_id, 16).is_ok() {
            by_run
                .entry(run_id.to_owned())
                .or_default()
                .push(name.to_owned());
        }
    }
    let mut cleaned = Vec::new();
    for (run_id, namespaces) in by_run {
        let pid = u32::from_str_radix(&run_id, 16).unwrap_or(0);
        if suite_alive(pid) {
            continue;
        }
        for ns in &namespaces {
            kill_namespace_processes(ns);
        }
        let link = host_link_name(&run_id);
        if run("ip", &["link", "show", &link]).is_ok() {
            run_quiet("ip", &["link", "del", &link]);
        }
        for ns in &namespaces {
            run_quiet("ip", &["netns", "del", ns]);
        }
        cleaned.push(run_id);
    }
    Ok(cleaned)
}

/// The links to cut so that each group in `groups` can talk only within itself (nodes in
/// no group keep every link).
pub fn cuts_between(groups: &[Vec<usize>]) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    for (i, a) in groups.iter().enumerate() {
        for b in &groups[i + 1..] {
            for &x in a {
                for &y in b {
                    cuts.push((x.min(y), x.max(y)));
                }
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_separate_groups_only() {
        assert_eq!(cuts_between(&[vec![1], vec![2, 3]]), vec![(1, 2), (1, 3)]);
        assert_eq!(
            cuts_between(&[vec![1, 2], vec![3, 4], vec![5]]),
            vec![
                (1, 3),
                (1, 4),
                (1, 5),
                (2, 3),
                (2, 4),
                (2, 5),
                (3, 5),
                (4, 5)
            ]
        );
    }

    /// Real namespaces (skipped unless root with iptables, as in CI): created, cut,
    /// healed and removed without leaving anything behind.
    #[test]
    fn namespaces_are_created_partitioned_and_removed() {
        if !crate::process::is_root() || run("iptables", &["--version"]).is_err() {
            eprintln!("skipped: needs root, ip and iptables");
            return;
        }
        let mut net = Network::create(2).unwrap();
        let layout = net.layout.clone();
        let listing = run("ip", &["netns", "list"]).unwrap();
        for ns in [layout.switch_ns(), layout.node_ns(1), layout.node_ns(2)] {
            assert!(listing.contains(&ns), "{ns} in {listing}");
        }
        let addr = run(
            "ip",
            &["-n", &layout.node_ns(2), "-4", "addr", "show", "eth0"],
        )
        .unwrap();
        assert!(addr.contains(&layout.node_ip(2).to_string()));
        let rules = |slot: usize| {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &layout.node_ns(slot),
                    "iptables",
                    "-w",
                    "-S",
                    "INPUT",
                ],
            )
            .unwrap()
        };
        layout.partition(&[(1, 2)]).unwrap();
        assert!(rules(1).contains(&format!("-s {}/32 -j DROP", layout.node_ip(2))));
        assert!(rules(2).contains(&format!("-s {}/32 -j DROP", layout.node_ip(1))));
        layout.heal().unwrap();
        assert!(!rules(1).contains("DROP") && !rules(2).contains("DROP"));
        net.teardown();
        let listing = run("ip", &["netns", "list"]).unwrap();
        assert!(!listing.contains(&format!("{PREFIX}{}-", layout.run_id)));
        assert!(run("ip", &["link", "show", &host_link_name(&layout.run_id)]).is_err());
    }

    #[test]
    fn names_fit_interface_limits() {
        // Linux interface names are at most 15 bytes; the largest PID is 2^22.
        let id = format!("{:x}", 4_194_304u32);
        assert!(host_link_name(&id).len() <= 15);
    }
}
