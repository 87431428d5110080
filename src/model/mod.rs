//! The pure domain: configuration, cluster state, commands and the deterministic `apply`.
//!
//! Nothing here imports openraft, tokio, axum or sled: the state machine is a plain
//! function that tests can drive, fuzz and replay (see `tests` below and the property
//! tests against a reference model).

pub mod apply;
pub mod command;
pub mod tag;
pub mod types;

pub use apply::apply;
pub use command::{AgentReport, Command, Outcome, Precondition, Rejection};
pub use tag::TagFormat;
pub use types::*;
