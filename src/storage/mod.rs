//! Storage.
pub mod log_store;
