//! The directory backend: datasets are plain directories; no root, no block devices.
//!
//! ```text
//! root_path/volumes/<volume>/data     the dataset's files
//! root_path/volumes/<volume>/size     the size asked for at creation (bytes, decimal)
//! root_path/volumes/<volume>/holder   the compute instance id of the node holding it
//! root_path/tmp/, root_path/instances/<node uuid>
//! <mount_root>/<dataset_id>           a symbolic link to .../data on the holding node
//! ```
//!
//! "Attach" claims the volume by creating `holder` (first writer wins, atomically), "mount"
//! creates the symbolic link, "unmount" removes it, "detach" removes the claim. Agents
//! sharing `root_path` move datasets between them exactly as with the loopback backend;
//! the data itself never moves.
//!
//! What this backend cannot enforce, and does not pretend to:
//! - **sizes**: `maximum_size` is recorded and reported, but nothing stops a dataset
//!   from growing past it;
//! - **exclusive access**: the files stay readable and writable through `root_path` by
//!   anyone with permission, whichever node "holds" them; the claim only coordinates
//!   well-behaved agents;
//! - **mount semantics**: a symbolic link is not a mount point. Programs (and container
//!   runtimes) must follow it; "unmounting" cannot interrupt a process that already has
//!   files open in the dataset.

use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{
    canonical_dir, checked_volume, dataset_of_volume, instance_id, io_error, list_dir,
    new_volume_id, write_new_file, Backend, BackendError, Observation, ObservedVolume, VolumeState,
};
use crate::agent::dataset::config::DirectoryConfig;

pub struct DirectoryBackend {
    root: PathBuf,
    mount_root: PathBuf,
    instance: String,
}

impl DirectoryBackend {
    pub fn new(config: &DirectoryConfig, node: Uuid) -> Result<Self, BackendError> {
        let root = canonical_dir(&config.root_path)?;
        for sub in ["volumes", "tmp"] {
            canonical_dir(&root.join(sub))?;
        }
        let instance = instance_id(&root, config.compute_instance_id.as_deref(), node)?;
        let mount_root = canonical_dir(&config.mount_root)?;
        Ok(DirectoryBackend {
            root,
            mount_root,
            instance,
        })
    }

    fn volume_dir(&self, volume: &str) -> PathBuf {
        self.root.join("volumes").join(volume)
    }

    fn holder(&self, volume: &str) -> Result<Option<String>, BackendError> {
        let file = self.volume_dir(volume).join("holder");
        match std::fs::read_to_string(&file) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(format!("reading {}", file.display()))(e)),
        }
    }

    /// Whether the mount path is our link to this volume's data.
    fn linked(&self, volume: &str, dataset: Uuid) -> bool {
        std::fs::read_link(self.mount_path(dataset))
            .is_ok_and(|target| target == self.volume_dir(volume).join("data"))
    }

    fn require_held(&self, volume: &str, action: &'static str) -> Result<(), BackendError> {
        match self.holder(volume)? {
            Some(holder) if holder == self.instance => Ok(()),
            Some(instance) => Err(BackendError::AttachedElsewhere {
                volume: volume.to_owned(),
                instance,
            }),
            None => Err(BackendError::Refused {
                action,
                volume: volume.to_owned(),
                reason: "it is not attached here".into(),
            }),
        }
    }
}

impl Backend for DirectoryBackend {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn compute_instance_id(&self) -> &str {
        &self.instance
    }

    fn mount_path(&self, dataset: Uuid) -> PathBuf {
        self.mount_root.join(dataset.to_string())
    }

    fn observe(&self) -> Result<Observation, BackendError> {
        let mut volumes = Vec::new();
        for (name, dir) in list_dir(&self.root.join("volumes"))? {
            let Some(dataset_id) = dataset_of_volume(&name) else {
                continue;
            };
            let size = match std::fs::read_to_string(dir.join("size")) {
                Ok(text) => text.trim().parse().unwrap_or(0),
                // Destroyed meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(format!("reading {}", dir.display()))(e)),
            };
            let state = match self.holder(&name)? {
                None => VolumeState::Unattached,
                Some(holder) if holder != self.instance => {
                    VolumeState::AttachedElsewhere { instance: holder }
                }
                Some(_) if self.linked(&name, dataset_id) => VolumeState::Mounted {
                    device: None,
                    path: self.mount_path(dataset_id),
                },
                Some(_) => VolumeState::Attached { device: None },
            };
            volumes.push(ObservedVolume {
                volume_id: name,
                dataset_id,
                size,
                state,
            });
        }
        Ok(Observation { volumes })
    }

    fn create_volume(&self, dataset: Uuid, size: u64) -> Result<String, BackendError> {
        let volume = new_volume_id(dataset);
        let temporary = self.root.join("tmp").join(&volume);
        std::fs::create_dir_all(temporary.join("data"))
            .and_then(|()| std::fs::write(temporary.join("size"), size.to_string()))
            .map_err(io_error(format!("creating {}", temporary.display())))?;
        std::fs::rename(&temporary, self.volume_dir(&volume)).map_err(io_error(format!(
            "moving {} into place",
            temporary.display()
        )))?;
        Ok(volume)
    }

    fn attach(&self, volume: &str) -> Result<(), BackendError> {
        checked_volume(volume)?;
        let dir = self.volume_dir(volume);
        if !dir.is_dir() {
            return Err(BackendError::NoSuchVolume(volume.to_owned()));
        }
        write_new_file(&dir, &dir.join("holder"), self.instance.as_bytes())?;
        self.require_held(volume, "attach")
    }

    fn create_filesystem(&self, _volume: &str) -> Result<(), BackendError> {
        // A directory is its own filesystem.
        Ok(())
    }

    fn mount(&self, volume: &str, dataset: Uuid) -> Result<(), BackendError> {
        checked_volume(volume)?;
        self.require_held(volume, "mount")?;
        if self.linked(volume, dataset) {
            return Ok(());
        }
        let path = self.mount_path(dataset);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&path)
                .map_err(io_error(format!("replacing {}", path.display())))?,
            Ok(_) => {
                return Err(BackendError::Refused {
                    action: "mount",
                    volume: volume.to_owned(),
                    reason: format!("{} exists and is not a link", path.display()),
                })
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(self.volume_dir(volume).join("data"), &path)
            .map_err(io_error(format!("linking {}", path.display())))
    }

    fn unmount(&self, volume: &str, dataset: Uuid) -> Result<(), BackendError> {
        checked_volume(volume)?;
        if self.linked(volume, dataset) {
            let path = self.mount_path(dataset);
            std::fs::remove_file(&path)
                .map_err(io_error(format!("unlinking {}", path.display())))?;
        }
        Ok(())
    }

    fn detach(&self, volume: &str) -> Result<(), BackendError> {
        let dataset = checked_volume(volume)?;
        match self.holder(volume)? {
            None => Ok(()),
            Some(holder) if holder != self.instance => Err(BackendError::AttachedElsewhere {
                volume: volume.to_owned(),
                instance: holder,
            }),
            Some(_) => {
                if self.linked(volume, dataset) {
                    return Err(BackendError::Refused {
                        action: "detach",
                        volume: volume.to_owned(),
                        reason: "it is mounted".into(),
                    });
                }
                let file = self.volume_dir(volume).join("holder");
                std::fs::remove_file(&file)
                    .map_err(io_error(format!("releasing {}", file.display())))
            }
        }
    }

    fn destroy(&self, volume: &str) -> Result<(), BackendError> {
        checked_volume(volume)?;
        let dir = self.volume_dir(volume);
        if !dir.exists() {
            return Ok(());
        }
        if self.holder(volume)?.is_some() {
            return Err(BackendError::Refused {
                action: "destroy",
                volume: volume.to_owned(),
                reason: "it is attached".into(),
            });
        }
        // Disappear at once (a rename), then delete at leisure.
        let trash = self
            .root
            .join("tmp")
            .join(format!("trash-{volume}-{}", Uuid::new_v4().simple()));
        std::fs::rename(&dir, &trash).map_err(io_error(format!("destroying {volume}")))?;
        remove_tree(&trash)
    }
}

fn remove_tree(path: &Path) -> Result<(), BackendError> {
    std::fs::remove_dir_all(path).map_err(io_error(format!("removing {}", path.display())))
}
