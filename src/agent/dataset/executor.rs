//! Runs the planner's actions: backend operations on a blocking thread, registrations
//! against the control service.
//!
//! Every action is idempotent (see [`super::backend`]), so running one twice, or again
//! after a crash, is harmless. A failed action is logged by the caller and retried on a
//! later iteration with backoff; nothing is ever destroyed because something failed.

use std::sync::Arc;

use uuid::Uuid;

use super::backend::{Backend, BackendError};
use super::connection::{ConnectionError, ControlConnection, Registration};
use super::failpoint;
use super::planner::Action;

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Control(#[from] ConnectionError),
    #[error(
        "volume {volume} is a duplicate: the registry names another volume for dataset {dataset}"
    )]
    Duplicate { dataset: Uuid, volume: String },
    #[error("the backend operation did not finish: {0}")]
    Interrupted(String),
}

/// What an action achieved, when the run loop needs to know more than "done".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    Done,
    /// The registry now (certainly) maps the dataset to this volume.
    Registered {
        dataset: Uuid,
        volume: String,
    },
}

pub struct Executor {
    backend: Arc<dyn Backend>,
    connection: Arc<ControlConnection>,
}

impl Executor {
    pub fn new(backend: Arc<dyn Backend>, connection: Arc<ControlConnection>) -> Self {
        Executor {
            backend,
            connection,
        }
    }

    pub async fn execute(&self, action: &Action) -> Result<Executed, ExecuteError> {
        if let Action::RegisterVolume {
            dataset_id,
            volume_id,
        } = action
        {
            return match self
                .connection
                .register_owner(*dataset_id, volume_id)
                .await?
            {
                Registration::Accepted => Ok(Executed::Registered {
                    dataset: *dataset_id,
                    volume: volume_id.clone(),
                }),
                Registration::Conflict => Err(ExecuteError::Duplicate {
                    dataset: *dataset_id,
                    volume: volume_id.clone(),
                }),
            };
        }
        let backend = self.backend.clone();
        let action = action.clone();
        tokio::task::spawn_blocking(move || {
            let result = run_on_backend(backend.as_ref(), &action);
            if result.is_ok() {
                failpoint(&format!("after-{}", action.name()));
            }
            result
        })
        .await
        .map_err(|e| ExecuteError::Interrupted(e.to_string()))?
        .map(|()| Executed::Done)
        .map_err(ExecuteError::from)
    }
}

fn run_on_backend(backend: &dyn Backend, action: &Action) -> Result<(), BackendError> {
    match action {
        Action::CreateVolume { dataset_id, size } => {
            let volume = backend.create_volume(*dataset_id, *size)?;
            tracing::info!(dataset = %dataset_id, %volume, size, "created volume");
            Ok(())
        }
        Action::AttachVolume { volume_id, .. } => backend.attach(volume_id),
        Action::CreateFilesystem { volume_id, .. } => backend.create_filesystem(volume_id),
        Action::Mount {
            dataset_id,
            volume_id,
        } => backend.mount(volume_id, *dataset_id),
        Action::Unmount {
            dataset_id,
            volume_id,
        } => backend.unmount(volume_id, *dataset_id),
        Action::DetachVolume { volume_id, .. } => backend.detach(volume_id),
        Action::DestroyVolume { volume_id, .. } => backend.destroy(volume_id),
        // Handled by the caller: it talks to the control service, not the backend.
        Action::RegisterVolume { .. } => Ok(()),
    }
}
