//! Flocker control plane, highly available.
#![forbid(unsafe_code)]

pub mod api;
pub mod ca;
pub mod model;
pub mod storage;
pub mod tls;
