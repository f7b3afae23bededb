//! Segment (`.kfs`), index (`.index`) and intake-object decoders, as read
//! back from object storage, and the batch walk over a segment body.
#![no_main]

use bytes::Bytes;
use kafscale_flusher::segment::{decode_footer, decode_header, SegmentIndex, VerifiedSegment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    let _ = decode_footer(data);
    if let Ok(index) = SegmentIndex::decode(data) {
        let _ = index.lookup(0);
        let _ = index.lookup(i64::MAX);
    }
    if let Ok(segment) = VerifiedSegment::decode(Bytes::copy_from_slice(data)) {
        let _ = segment.position_of(0);
        let _ = segment.position_of(i64::MAX);
        let _ = segment.batch_headers().count();
    }
    // An intake object's directory and its parts, as readers check them.
    let object = Bytes::copy_from_slice(data);
    let _ = kafscale_flusher::intake::decode_header(data);
    if let Ok(entries) = kafscale_flusher::intake::decode_directory(&object, data.len() as u64) {
        for e in entries {
            let r = e.range();
            let _ = e.verify(&data[r.start as usize..r.end as usize]);
        }
    }
    // The body walk alone, as cold reads do on a range.
    let _ = kafscale_flusher::batch::iter_headers(data).count();
});
