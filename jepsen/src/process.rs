//! Signals by PID (never by name).

use anyhow::bail;

/// Send `signal` to process `pid`.
pub fn signal(pid: i32, signal: i32) -> anyhow::Result<()> {
    if pid <= 0 {
        bail!("refusing to signal pid {pid}");
    }
    let rc = kill(pid, signal);
    if rc != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn kill(pid: i32, signal: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) }
}

/// True when this process runs as root (network namespaces and iptables need it).
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}
