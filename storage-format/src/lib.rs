//! Kafscale's storage contract (segments as the project specification's
//! `storage-format.md` fixes them; intake objects as `docs/intake-objects.md`
//! describes them): Kafka record
//! batches as stored (`batch`) and, for the cleaner of compacted topics,
//! their records and codecs (`records`, `compression`), `.kfs`/`.index`
//! segments (`segment`), intake
//! objects holding many partitions' parts (`intake`) and the rule that
//! resolves overlapping parts (`claims`), with the field encodings they share
//! with the flusher protocol (`wire`). Pure formats: no I/O, no runtime, so
//! the broker, the flusher and the fuzz targets all depend on it.

pub mod batch;
pub mod claims;
pub mod compression;
pub mod intake;
pub mod records;
pub mod segment;
pub mod wire;
