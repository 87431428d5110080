//! The loopback backend (FLOCKER-SPEC 10.6): volumes are sparse files, attached with
//! `losetup`, formatted ext4 and mounted at `<mount_root>/<dataset_id>`. Needs root.
//!
//! ```text
//! root_path/unattached/<volume>                  a volume attached nowhere
//! root_path/attached/<compute_instance_id>/<volume>   attached to that instance
//! root_path/tmp/                                 volumes being created
//! root_path/instances/<node uuid>                a node's persisted instance id
//! ```
//!
//! Attaching moves the file into the instance's directory (a `rename`, atomic, so of two
//! agents racing for one volume exactly one wins) and binds a loop device to it;
//! detaching releases the loop device and moves the file back. Several agents sharing one
//! `root_path` therefore behave like nodes sharing a block storage service: a dataset
//! moves between them with its data. Which loop device holds which file is read from
//! sysfs (`/sys/block/loop*/loop/backing_file`), so a device lost in a crash or a reboot
//! is simply re-created by the next attach.
//!
//! Differences from Flocker: volume ids carry a random nonce instead of the size (the
//! size is the file's length), and the compute instance id is persisted per node rather
//! than random per start, so a restarted agent recognises its own volumes.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{
    canonical_dir, checked_volume, command_failed, dataset_of_volume, instance_id, io_error,
    list_dir, mount_table, new_volume_id, round_up, run, run_status, Backend, BackendError,
    MountEntry, Observation, ObservedVolume, VolumeState,
};
use crate::agent::dataset::config::LoopbackConfig;
use crate::agent::dataset::failpoint;

pub struct LoopbackBackend {
    root: PathBuf,
    mount_root: PathBuf,
    instance: String,
    allocation_unit: u64,
}

/// Where a volume's file is.
enum Location {
    Unattached(PathBuf),
    Here,
    Elsewhere(String),
    Missing,
}

impl LoopbackBackend {
    pub fn new(config: &LoopbackConfig, node: Uuid) -> Result<Self, BackendError> {
        let root = canonical_dir(&config.root_path)?;
        for sub in ["unattached", "attached", "tmp"] {
            canonical_dir(&root.join(sub))?;
        }
        let instance = instance_id(&root, config.compute_instance_id.as_deref(), node)?;
        canonical_dir(&root.join("attached").join(&instance))?;
        let mount_root = canonical_dir(&config.mount_root)?;
        Ok(LoopbackBackend {
            root,
            mount_root,
            instance,
            allocation_unit: config.allocation_unit,
        })
    }

    fn unattached(&self, volume: &str) -> PathBuf {
        self.root.join("unattached").join(volume)
    }

    fn attached_here(&self, volume: &str) -> PathBuf {
        self.root.join("attached").join(&self.instance).join(volume)
    }

    fn locate(&self, volume: &str) -> Result<Location, BackendError> {
        let unattached = self.unattached(volume);
        if unattached.exists() {
            return Ok(Location::Unattached(unattached));
        }
        let here = self.attached_here(volume);
        if here.exists() {
            return Ok(Location::Here);
        }
        for (instance, dir) in list_dir(&self.root.join("attached"))? {
            if dir.join(volume).exists() {
                return Ok(Location::Elsewhere(instance));
            }
        }
        Ok(Location::Missing)
    }

    /// The loop device of a volume attached here.
    fn device(&self, volume: &str, action: &'static str) -> Result<String, BackendError> {
        checked_volume(volume)?;
        loop_devices()?
            .remove(&self.attached_here(volume))
            .and_then(|devices| devices.into_iter().next())
            .ok_or_else(|| BackendError::Refused {
                action,
                volume: volume.to_owned(),
                reason: "it has no loop device on this node (not attached here)".into(),
            })
    }

    fn local_state(
        &self,
        dataset: Uuid,
        file: &Path,
        devices: &BTreeMap<PathBuf, Vec<String>>,
        mounts: &[MountEntry],
    ) -> Result<VolumeState, BackendError> {
        let Some(devs) = devices.get(file) else {
            return Ok(VolumeState::AttachedNoDevice);
        };
        let path = self.mount_path(dataset);
        if let Some(m) = mounts
            .iter()
            .find(|m| m.target == path && devs.contains(&m.source))
        {
            return Ok(VolumeState::Mounted {
                device: Some(m.source.clone()),
                path,
            });
        }
        let device = devs[0].clone();
        let mounted_elsewhere = mounts.iter().any(|m| m.source == device);
        Ok(if mounted_elsewhere || has_filesystem(&device)? {
            VolumeState::Attached {
                device: Some(device),
            }
        } else {
            VolumeState::AttachedNoFilesystem {
                device: Some(device),
            }
        })
    }

    fn losetup_attach(&self, file: &Path) -> Result<(), BackendError> {
        let file_arg = file.to_string_lossy();
        let args = ["--find", "--show", file_arg.as_ref()];
        let mut last = None;
        // Two agents may grab the same free device at once; losetup then fails and a
        // second try takes another one.
        for _ in 0..5 {
            let output = run_status("losetup", &args)?;
            if output.status.success() {
                return Ok(());
            }
            last = Some(command_failed("losetup", &args, &output));
            if loop_devices()?.contains_key(file) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(last.unwrap_or_else(|| BackendError::Config("losetup never ran".into())))
    }

    /// `losetup -d` returns before the kernel lets go of a device that is still open
    /// (it sets autoclear); wait for sysfs to stop naming the file, so the next node's
    /// attach never finds our stale device bound to it.
    fn wait_released(&self, file: &Path) -> Result<(), BackendError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while loop_devices()?.contains_key(file) {
            if Instant::now() > deadline {
                return Err(BackendError::Refused {
                    action: "detach",
                    volume: file.display().to_string(),
                    reason: "its loop device is still in use".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Backend for LoopbackBackend {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn compute_instance_id(&self) -> &str {
        &self.instance
    }

    fn mount_path(&self, dataset: Uuid) -> PathBuf {
        self.mount_root.join(dataset.to_string())
    }

    fn observe(&self) -> Result<Observation, BackendError> {
        let devices = loop_devices()?;
        let mounts = mount_table()?;
        let mut volumes = Vec::new();
        let mut add =
            |name: &str, file: &Path, state: &dyn Fn(Uuid) -> Result<VolumeState, BackendError>| {
                let Some(dataset_id) = dataset_of_volume(name) else {
                    return Ok::<(), BackendError>(());
                };
                // Another agent may move the file between listing and looking.
                let size = match std::fs::metadata(file) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(io_error(format!("inspecting {}", file.display()))(e)),
                };
                volumes.push(ObservedVolume {
                    volume_id: name.to_owned(),
                    dataset_id,
                    size,
                    state: state(dataset_id)?,
                });
                Ok(())
            };
        for (name, file) in list_dir(&self.root.join("unattached"))? {
            add(&name, &file, &|_| Ok(VolumeState::Unattached))?;
        }
        for (instance, dir) in list_dir(&self.root.join("attached"))? {
            for (name, file) in list_dir(&dir)? {
                if instance == self.instance {
                    add(&name, &file, &|d| {
                        self.local_state(d, &file, &devices, &mounts)
                    })?;
                } else {
                    let instance = instance.clone();
                    add(&name, &file, &move |_| {
                        Ok(VolumeState::AttachedElsewhere {
                            instance: instance.clone(),
                        })
                    })?;
                }
            }
        }
        Ok(Observation { volumes })
    }

    fn create_volume(&self, dataset: Uuid, size: u64) -> Result<String, BackendError> {
        let volume = new_volume_id(dataset);
        let temporary = self.root.join("tmp").join(&volume);
        let file = std::fs::File::create_new(&temporary)
            .map_err(io_error(format!("creating {}", temporary.display())))?;
        file.set_len(round_up(size, self.allocation_unit))
            .and_then(|()| file.sync_all())
            .map_err(io_error(format!("sizing {}", temporary.display())))?;
        // Appear whole or not at all: a crash before this leaves only a file in tmp/.
        let target = self.unattached(&volume);
        std::fs::rename(&temporary, &target).map_err(io_error(format!(
            "moving {} into place",
            temporary.display()
        )))?;
        Ok(volume)
    }

    fn attach(&self, volume: &str) -> Result<(), BackendError> {
        checked_volume(volume)?;
        let mine = self.attached_here(volume);
        if !mine.exists() {
            match std::fs::rename(self.unattached(volume), &mine) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => match self.locate(volume)? {
                    Location::Here => {}
                    Location::Elsewhere(instance) => {
                        return Err(BackendError::AttachedElsewhere {
                            volume: volume.to_owned(),
                            instance,
                        })
                    }
                    Location::Unattached(_) | Location::Missing => {
                        return Err(BackendError::NoSuchVolume(volume.to_owned()))
                    }
                },
                Err(e) => return Err(io_error(format!("attaching {volume}"))(e)),
            }
            failpoint("loopback-attach-moved");
        }
        if !loop_devices()?.contains_key(&mine) {
            self.losetup_attach(&mine)?;
        }
        Ok(())
    }

    fn create_filesystem(&self, volume: &str) -> Result<(), BackendError> {
        let device = self.device(volume, "format")?;
        if has_filesystem(&device)? {
            return Ok(());
        }
        // The lazy options skip zeroing inode tables and the journal: a new volume is a
        // sparse file that already reads as zeros, and a 75 GiB one would otherwise cost
        // half a gigabyte of real writes.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                &device,
            ],
        )?;
        Ok(())
    }

    fn mount(&self, volume: &str, dataset: Uuid) -> Result<(), BackendError> {
        let device = self.device(volume, "mount")?;
        let path = self.mount_path(dataset);
        let mounts = mount_table()?;
        if mounts
            .iter()
            .any(|m| m.target == path && m.source == device)
        {
            return Ok(());
        }
        if let Some(other) = mounts.iter().find(|m| m.target == path) {
            return Err(BackendError::Refused {
                action: "mount",
                volume: volume.to_owned(),
                reason: format!("{} is already mounted at {}", other.source, path.display()),
            });
        }
        std::fs::create_dir_all(&path).map_err(io_error(format!("creating {}", path.display())))?;
        std::fs::set_permissions(&self.mount_root, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!(
                "restricting {}",
                self.mount_root.display()
            )))?;
        let target = path.to_string_lossy();
        run("mount", &[&device, target.as_ref()])?;
        fresh_filesystem_setup(&path)
    }

    fn unmount(&self, volume: &str, dataset: Uuid) -> Result<(), BackendError> {
        checked_volume(volume)?;
        let path = self.mount_path(dataset);
        let devices = loop_devices()?
            .remove(&self.attached_here(volume))
            .unwrap_or_default();
        let mounts = mount_table()?;
        let ours = mounts
            .iter()
            .any(|m| m.target == path && devices.contains(&m.source));
        if ours {
            let target = path.to_string_lossy();
            run("umount", &[target.as_ref()])?;
        }
        // An empty mount point is all that is left; keep anything else.
        let _ = std::fs::remove_dir(&path);
        Ok(())
    }

    fn detach(&self, volume: &str) -> Result<(), BackendError> {
        checked_volume(volume)?;
        let mine = self.attached_here(volume);
        if !mine.exists() {
            return match self.locate(volume)? {
                Location::Elsewhere(instance) => Err(BackendError::AttachedElsewhere {
                    volume: volume.to_owned(),
                    instance,
                }),
                _ => Ok(()),
            };
        }
        let devices = loop_devices()?.remove(&mine).unwrap_or_default();
        let mounts = mount_table()?;
        if let Some(m) = mounts.iter().find(|m| devices.contains(&m.source)) {
            return Err(BackendError::Refused {
                action: "detach",
                volume: volume.to_owned(),
                reason: format!("{} is mounted at {}", m.source, m.target.display()),
            });
        }
        for device in &devices {
            run("losetup", &["--detach", device])?;
        }
        self.wait_released(&mine)?;
        failpoint("loopback-detach-released");
        std::fs::rename(&mine, self.unattached(volume))
            .map_err(io_error(format!("detaching {volume}")))?;
        Ok(())
    }

    fn destroy(&self, volume: &str) -> Result<(), BackendError> {
        checked_volume(volume)?;
        match self.locate(volume)? {
            Location::Unattached(file) => match std::fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_error(format!("destroying {volume}"))(e))
                }
                _ => Ok(()),
            },
            Location::Missing => Ok(()),
            Location::Here | Location::Elsewhere(_) => Err(BackendError::Refused {
                action: "destroy",
                volume: volume.to_owned(),
                reason: "it is attached".into(),
            }),
        }
    }
}

/// A new ext4 filesystem holds only `lost+found`: remove it and open the root to
/// everyone, as Flocker does, so containers running as any user can write.
fn fresh_filesystem_setup(path: &Path) -> Result<(), BackendError> {
    let entries = list_dir(path)?;
    if entries.len() == 1 && entries[0].0 == "lost+found" {
        let _ = std::fs::remove_dir(&entries[0].1);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
            .map_err(io_error(format!("opening {}", path.display())))?;
    }
    Ok(())
}

/// Loop devices by backing file, read from sysfs.
pub fn loop_devices() -> Result<BTreeMap<PathBuf, Vec<String>>, BackendError> {
    let mut out: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for (name, dir) in list_dir(Path::new("/sys/block"))? {
        if !name.starts_with("loop") {
            continue;
        }
        let backing = match std::fs::read_to_string(dir.join("loop/backing_file")) {
            Ok(text) => text,
            // Unbound devices have no backing_file; devices may vanish meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(format!("reading {}", dir.display()))(e)),
        };
        let backing = backing.trim_end_matches('\n');
        if backing.ends_with(" (deleted)") {
            continue;
        }
        out.entry(PathBuf::from(backing))
            .or_default()
            .push(format!("/dev/{name}"));
    }
    Ok(out)
}

/// `blkid -p -u filesystem`: exit 0 when a filesystem is found, 2 when nothing is.
pub fn has_filesystem(device: &str) -> Result<bool, BackendError> {
    let args = ["-p", "-u", "filesystem", device];
    let output = run_status("blkid", &args)?;
    match output.status.code() {
        Some(0) => Ok(true),
        Some(2) => Ok(false),
        _ => Err(command_failed("blkid", &args, &output)),
    }
}
