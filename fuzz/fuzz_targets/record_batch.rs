//! Produced record batches: header and CRC checks, then record validation
//! (with decompression), and the cleaner's parsing of their records. The input's length and CRC fields are fixed up
//! first, so the fuzzer explores the contents rather than the checksum;
//! the unmodified input is checked as well.
#![no_main]

use kafscale_broker::partitions::record_validation::{validate, RecordLimits};
use kafscale_flusher::{batch, records};
use libfuzzer_sys::fuzz_target;

const LIMITS: RecordLimits = RecordLimits {
    max_uncompressed_bytes: 4 * 1024 * 1024,
    max_uncompressed_request_bytes: 32 * 1024 * 1024,
};

fn check(b: &[u8]) {
    if let Ok(batches) = batch::split_validated(&bytes::Bytes::copy_from_slice(b)) {
        for (h, bytes) in batches {
            // Both rules: plain topics, and compacted ones that need keys.
            let _ = validate(&h, &bytes, &LIMITS, false);
            let _ = validate(&h, &bytes, &LIMITS, true);
            // The cleaner's reading of stored batches' records.
            let limit = LIMITS.max_uncompressed_bytes as usize;
            if let Ok(plain) = records::decompress(&bytes, &h, limit) {
                let _ = records::parse(&plain, h.records_count);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= batch::BATCH_HEADER_LEN {
        let mut b = data.to_vec();
        let len = (b.len() - batch::LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        check(&b);
    }
});
