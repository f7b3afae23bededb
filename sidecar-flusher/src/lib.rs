//! Kafscale's sidecar flusher: it turns the broker's record batches into
//! immutable objects in object storage (intake objects holding many
//! partitions, `.kfs`/`.index` segments holding one), and reads them back.
//!
//! The crate is both the flusher (service, socket server, object stores) and
//! the broker's client for it. Built without the `s3` feature it links no S3
//! client, which is how the broker depends on it.

pub mod batch;
pub mod claims;
pub mod client;
pub mod deadline;
pub mod fault_store;
pub mod intake;
pub mod intake_cache;
pub mod intake_index;
pub mod intake_summary;
pub mod intake_writer;
pub mod listing;
pub mod metrics;
pub mod object_store;
pub mod protocol;
#[cfg(feature = "s3")]
pub mod s3_store;
pub mod segment;
pub mod segment_facts;
pub mod segment_loader;
pub mod server;
pub mod service;
pub mod store_check;

pub use client::{FlusherClient, PartitionId};
pub use object_store::{LocalDirStore, ObjectStore, StoreError};
pub use service::{FlusherService, FlusherSettings};
