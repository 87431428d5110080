//! Storage backends: what the dataset agent observes and the operations it performs.
//!
//! A backend holds *volumes*. Each volume belongs to one dataset (its id says which:
//! `flocker-<dataset_id>_<nonce>`) and is, from this node's point of view, in one
//! [`VolumeState`]. Every operation is idempotent: asking for the state a volume is
//! already in succeeds without doing anything, so an agent that crashed half-way through
//! an action simply runs it again. Operations refuse (rather than force) anything that
//! could lose data: detaching a mounted device, destroying an attached volume, formatting
//! a device that has a filesystem.
//!
//! The random nonce in volume ids is what makes the ownership registry meaningful: two
//! agents that each created a volume for the same dataset (a race, or two nodes that do
//! not share storage) hold two different ids, and the registry's first writer wins.
//!
//! - [`loopback`]: Flocker's loopback backend (sparse files, `losetup`, ext4, mounts).
//! - [`directory`]: plain directories and symbolic links, for users who are not root.

pub mod directory;
pub mod loopback;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use uuid::Uuid;

use super::config::{valid_instance_id, BackendConfig};

/// Size of a volume whose dataset has no `maximum_size` (FLOCKER-SPEC 9.4): 75 GiB.
pub const DEFAULT_SIZE: u64 = 75 * 1024 * 1024 * 1024;

/// Prefix of every volume id.
pub const VOLUME_PREFIX: &str = "flocker-";

/// A volume's state as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeState {
    /// Attached to no instance.
    Unattached,
    /// Attached to another node's instance.
    AttachedElsewhere { instance: String },
    /// Attached to this instance, but its device is missing (a loop device lost in a
    /// crash or a reboot); attaching again re-creates it.
    AttachedNoDevice,
    /// Attached here, the device holds no filesystem yet.
    AttachedNoFilesystem { device: Option<String> },
    /// Attached here with a filesystem, not mounted at the dataset's mount point.
    Attached { device: Option<String> },
    /// Attached here and mounted at `path` (`<mount_root>/<dataset_id>`).
    Mounted {
        device: Option<String>,
        path: PathBuf,
    },
}

impl VolumeState {
    /// Whether the volume is attached to this node (in any form).
    pub fn attached_here(&self) -> bool {
        !matches!(
            self,
            VolumeState::Unattached | VolumeState::AttachedElsewhere { .. }
        )
    }

    /// The block device, when there is one.
    pub fn device(&self) -> Option<&str> {
        match self {
            VolumeState::AttachedNoFilesystem { device }
            | VolumeState::Attached { device }
            | VolumeState::Mounted { device, .. } => device.as_deref(),
            _ => None,
        }
    }
}

/// One volume of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVolume {
    /// The backend's id, the one registered with the control service.
    pub volume_id: String,
    pub dataset_id: Uuid,
    /// The real size in bytes.
    pub size: u64,
    pub state: VolumeState,
}

/// Everything the backend shows this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub volumes: Vec<ObservedVolume>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("volume {volume} is attached to instance {instance}")]
    AttachedElsewhere { volume: String, instance: String },
    #[error("volume {0} does not exist")]
    NoSuchVolume(String),
    #[error("refusing to {action} volume {volume}: {reason}")]
    Refused {
        action: &'static str,
        volume: String,
        reason: String,
    },
    #[error("backend configuration: {0}")]
    Config(String),
}

/// Shorthand for I/O errors with a context sentence.
pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let context = context.into();
    move |source| BackendError::Io { context, source }
}

/// A storage backend. Operations block (they run commands and touch files): the agent
/// calls them from `spawn_blocking`.
pub trait Backend: Send + Sync + 'static {
    /// `loopback` or `directory`.
    fn name(&self) -> &'static str;
    /// This node's identity in the backend.
    fn compute_instance_id(&self) -> &str;
    /// Where a dataset is mounted on this node.
    fn mount_path(&self, dataset: Uuid) -> PathBuf;
    /// All volumes this node can see, with their states.
    fn observe(&self) -> Result<Observation, BackendError>;
    /// Create an unattached volume of at least `size` bytes; returns its id.
    fn create_volume(&self, dataset: Uuid, size: u64) -> Result<String, BackendError>;
    /// Attach to this instance (and make the device exist).
    fn attach(&self, volume: &str) -> Result<(), BackendError>;
    /// Make a filesystem on the attached device unless it has one.
    fn create_filesystem(&self, volume: &str) -> Result<(), BackendError>;
    /// Mount the attached volume at [`Backend::mount_path`].
    fn mount(&self, volume: &str, dataset: Uuid) -> Result<(), BackendError>;
    /// Undo [`Backend::mount`].
    fn unmount(&self, volume: &str, dataset: Uuid) -> Result<(), BackendError>;
    /// Detach from this instance; refuses while mounted.
    fn detach(&self, volume: &str) -> Result<(), BackendError>;
    /// Delete an unattached volume and its data.
    fn destroy(&self, volume: &str) -> Result<(), BackendError>;
}

/// Build the configured backend for node `node` (creating its directories).
pub fn build(config: &BackendConfig, node: Uuid) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(match config {
        BackendConfig::Loopback(c) => Arc::new(loopback::LoopbackBackend::new(c, node)?),
        BackendConfig::Directory(c) => Arc::new(directory::DirectoryBackend::new(c, node)?),
    })
}

/// `flocker-<dataset_id>_<12 random hex digits>`.
pub fn new_volume_id(dataset: Uuid) -> String {
    let nonce = Uuid::new_v4().simple().to_string();
    format!("{VOLUME_PREFIX}{dataset}_{}", &nonce[..12])
}

/// The dataset a volume id belongs to, or `None` for names that are not volume ids.
pub fn dataset_of_volume(volume: &str) -> Option<Uuid> {
    let rest = volume.strip_prefix(VOLUME_PREFIX)?;
    let (dataset, nonce) = rest.split_once('_')?;
    if nonce.is_empty() || !nonce.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let id = Uuid::parse_str(dataset).ok()?;
    // Only the canonical spelling: ids are compared as strings by the registry.
    (id.to_string() == dataset).then_some(id)
}

/// Check an id handed to an operation before it becomes part of a path.
pub(crate) fn checked_volume(volume: &str) -> Result<Uuid, BackendError> {
    dataset_of_volume(volume).ok_or_else(|| BackendError::NoSuchVolume(volume.to_owned()))
}

/// Round `size` up to a multiple of `unit`.
pub fn round_up(size: u64, unit: u64) -> u64 {
    let unit = unit.max(1);
    size.div_ceil(unit).saturating_mul(unit)
}

/// Create `dir` (and parents) and return its canonical path, so that paths compare
/// equal to what the kernel reports in `/proc/self/mounts` and sysfs.
pub(crate) fn canonical_dir(dir: &Path) -> Result<PathBuf, BackendError> {
    std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    dir.canonicalize()
        .map_err(io_error(format!("resolving {}", dir.display())))
}

/// The compute instance id: configured, or a random one persisted in
/// `root/instances/<node>` on first start (so restarts keep it).
pub(crate) fn instance_id(
    root: &Path,
    configured: Option<&str>,
    node: Uuid,
) -> Result<String, BackendError> {
    if let Some(id) = configured {
        return Ok(id.to_owned());
    }
    let dir = canonical_dir(&root.join("instances"))?;
    let file = dir.join(node.to_string());
    if !file.exists() {
        write_new_file(&dir, &file, Uuid::new_v4().to_string().as_bytes())?;
    }
    let id = std::fs::read_to_string(&file)
        .map_err(io_error(format!("reading {}", file.display())))?
        .trim()
        .to_owned();
    if valid_instance_id(&id) {
        Ok(id)
    } else {
        Err(BackendError::Config(format!(
            "{} holds {id:?}, not a compute instance id",
            file.display()
        )))
    }
}

/// Create `file` with `content` unless it exists, atomically: readers never see it
/// half-written, and of two concurrent writers the first wins. Returns whether this call
/// created it.
pub(crate) fn write_new_file(
    dir: &Path,
    file: &Path,
    content: &[u8],
) -> Result<bool, BackendError> {
    let temporary = dir.join(format!(".tmp-{}", Uuid::new_v4().simple()));
    std::fs::write(&temporary, content)
        .map_err(io_error(format!("writing {}", temporary.display())))?;
    let linked = std::fs::hard_link(&temporary, file);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error(format!("creating {}", file.display()))(e)),
    }
}

/// One line of `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: PathBuf,
}

/// The mount table of this process's mount namespace.
pub fn mount_table() -> Result<Vec<MountEntry>, BackendError> {
    let text = std::fs::read_to_string("/proc/self/mounts")
        .map_err(io_error("reading /proc/self/mounts"))?;
    Ok(parse_mounts(&text))
}

pub(crate) fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let source = unescape_mount_field(fields.next()?);
            let target = unescape_mount_field(fields.next()?);
            Some(MountEntry {
                source,
                target: PathBuf::from(target),
            })
        })
        .collect()
}

/// `/proc/self/mounts` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Run a command to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, BackendError> {
    let output = run_status(program, args)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(command_failed(program, args, &output))
    }
}

/// Run a command and hand back its output whatever its exit status.
pub(crate) fn run_status(
    program: &str,
    args: &[&str],
) -> Result<std::process::Output, BackendError> {
    tracing::debug!(command = %format!("{program} {}", args.join(" ")), "running");
    Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| BackendError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: e.to_string(),
        })
}

pub(crate) fn command_failed(
    program: &str,
    args: &[&str],
    output: &std::process::Output,
) -> BackendError {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    BackendError::Command {
        command: format!("{program} {}", args.join(" ")),
        detail: format!("{} {stderr}", output.status),
    }
}

/// Entries of a directory that may not exist yet (then: none).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, BackendError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(format!("listing {}", dir.display()))(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids_name_their_dataset() {
        let d = Uuid::new_v4();
        let v = new_volume_id(d);
        assert_eq!(dataset_of_volume(&v), Some(d));
        assert_ne!(new_volume_id(d), v, "two volumes of one dataset differ");
        for bad in [
            "",
            "flocker-",
            "flocker-x_1",
            &format!("flocker-{d}"),
            &format!("flocker-{d}_"),
            &format!("flocker-{d}_zz"),
            &format!("block-{d}_1"),
            &format!("flocker-{}_1", d.to_string().to_uppercase()),
        ] {
            assert_eq!(dataset_of_volume(bad), None, "{bad}");
        }
    }

    #[test]
    fn mount_table_unescapes_paths() {
        let table =
            parse_mounts("/dev/loop3 /a\\040b/c\\134d ext4 rw 0 0\nproc /proc proc rw 0 0\n");
        assert_eq!(table[0].source, "/dev/loop3");
        assert_eq!(table[0].target, PathBuf::from("/a b/c\\d"));
        assert_eq!(table[1].target, PathBuf::from("/proc"));
    }

    #[test]
    fn sizes_round_up_to_the_allocation_unit() {
        assert_eq!(round_up(10, 1), 10);
        assert_eq!(round_up(10, 4), 12);
        assert_eq!(round_up(12, 4), 12);
        assert_eq!(round_up(0, 0), 0);
        assert_eq!(DEFAULT_SIZE, 80_530_636_800);
    }

    #[test]
    fn instance_id_is_stable_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let node = Uuid::new_v4();
        let first = instance_id(dir.path(), None, node).unwrap();
        assert_eq!(instance_id(dir.path(), None, node).unwrap(), first);
        assert_ne!(
            instance_id(dir.path(), None, Uuid::new_v4()).unwrap(),
            first
        );
        assert_eq!(
            instance_id(dir.path(), Some("fixed"), node).unwrap(),
            "fixed"
        );
    }
}
