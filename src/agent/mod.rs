//! Agents and the agent protocol.
//!
//! [`protocol`] is the contract between control nodes and agents; [`control_side`] is its
//! server, mounted on every control node's agent port.

pub mod cli;
pub mod container;
pub mod control_side;
pub mod dataset;
pub mod protocol;
