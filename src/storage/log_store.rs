//! Raft log store.
