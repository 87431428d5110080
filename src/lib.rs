//! Flocker control plane, highly available.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod ca;
pub mod client;
pub mod cluster_config;
pub mod control;
pub mod local_cluster;
pub mod model;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tls;
