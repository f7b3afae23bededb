//! Partitions: the topic cache and each partition's log with its durability
//! core, idempotent-producer state and batch validation, and the partition
//! service that the partition APIs call.

pub mod log;
pub mod producer_ids;
pub mod producer_state;
pub mod record_validation;
pub mod service;
pub mod topics;
