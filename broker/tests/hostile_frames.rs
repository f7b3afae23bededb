//! Request frames with hostile lengths: every API and version the broker
//! serves is decoded with huge array, string and byte lengths at every early
//! position of its body. Decoding must refuse them without ever asking the
//! allocator for more than a small multiple of the frame (a failed allocation
//! aborts the process, which no unwind guard can catch).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafscale_broker::kafka::connection::{decode_frame, DecodedFrame, Refusal};
use kafscale_broker::kafka::handlers::SUPPORTED_APIS;

/// Records the largest single allocation asked for.
struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

fn header(api: ApiKey, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("probe")))
        .encode(&mut buf, api.request_header_version(version))
        .expect("header encodes");
    buf
}

/// Bodies that put a huge length (as i32, i16 and unsigned varint) at each of
/// the first `positions` bytes, zeros around it.
fn hostile_bodies(positions: usize) -> Vec<Vec<u8>> {
    let huge: [&[u8]; 4] = [
        &[0x7f, 0xff, 0xff, 0xff],
        &[0x7f, 0xff],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0xff, 0xff, 0xff, 0x7f],
    ];
    let mut out = Vec::new();
    for at in 0..positions {
        for h in huge {
            let mut body = vec![0u8; at];
            body.extend_from_slice(h);
            body.extend_from_slice(&[0u8; 12]);
            out.push(body);
            // The same length repeated: arrays nested in arrays.
            let mut nested = vec![0u8; at];
            for _ in 0..4 {
                nested.extend_from_slice(h);
            }
            out.push(nested);
        }
    }
    out
}

#[test]
fn the_reported_metadata_frame_is_refused() {
    // Metadata v1 claiming 2^31-1 topics (the frame without its length prefix).
    let frame =
        Bytes::from_static(b"\x00\x03\x00\x01\x00\x00\x00\x01\x00\x05probe\x7f\xff\xff\xff");
    match decode_frame(frame) {
        Err(Refusal::Malformed { detail, .. }) => {
            assert!(detail.contains("exceeds"), "{detail}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn no_frame_allocates_more_than_its_size_allows() {
    let bodies = hostile_bodies(48);
    let mut decoded = 0usize;
    let mut refused = 0usize;
    for (api, min, max) in SUPPORTED_APIS {
        for version in *min..=*max {
            for body in &bodies {
                let mut frame = header(*api, version);
                frame.put_slice(body);
                let frame_len = frame.len();
                LARGEST.store(0, Ordering::Relaxed);
                let result = decode_frame(frame.freeze());
                let largest = LARGEST.load(Ordering::Relaxed);
                // An element is at most a few hundred bytes in memory and at
                // least one on the wire; 4 KiB per frame byte is far above
                // any real ratio and far below the gigabytes a trusted length
                // asks for.
                assert!(
                    largest <= 4096 * frame_len.max(64),
                    "{api:?} v{version}: one allocation of {largest} bytes for a {frame_len}-byte frame"
                );
                match result {
                    Ok(DecodedFrame::Request { .. }) => decoded += 1,
                    Ok(DecodedFrame::UnsupportedApiVersions { .. }) => {
                        panic!("{api:?} v{version} is served")
                    }
                    Err(_) => refused += 1,
                }
            }
        }
    }
    // Hostile lengths that the few bytes after them cannot satisfy are
    // refused; zeros elsewhere decode as empty requests.
    assert!(
        refused > 0 && decoded > 0,
        "refused {refused}, decoded {decoded}"
    );
}
