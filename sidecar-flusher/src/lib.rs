//! Kafscale's sidecar flusher: it turns the broker's record batches into
//! immutable objects in object storage (intake objects holding many
//! partitions, `.kfs`/`.index` segments holding one), and reads them back.
//!
//! The formats it stores are `kafscale-storage-format`'s and the protocol
//! it serves is `kafscale-flusher-protocol`'s (re-exported here under their
//! old paths); this crate is the service, the socket server and the object
//! stores. Built without the `s3` feature it links no S3 client, which is how
//! the broker's dev mode embeds it.

pub use kafscale_flusher_protocol as protocol;
pub use kafscale_flusher_protocol::client;
pub use kafscale_storage_format::{batch, claims, compression, intake, records, segment};

pub mod cleaner;
pub mod deadline;
pub mod fault_store;
pub mod intake_cache;
pub mod intake_index;
pub mod intake_summary;
pub mod intake_writer;
pub mod listing;
pub mod metrics;
pub mod object_store;
#[cfg(feature = "s3")]
pub mod s3_store;
pub mod segment_facts;
pub mod segment_loader;
pub mod server;
pub mod service;
pub mod store_check;

pub use client::{FlusherClient, PartitionId};
pub use object_store::{LocalDirStore, ObjectStore, StoreError};
pub use service::{FlusherService, FlusherSettings};
