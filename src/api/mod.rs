//! HTTP API.
pub mod schema;
