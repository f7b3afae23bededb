//! The broker ⇄ flusher socket protocol: request and response frames.
#![no_main]

use bytes::Bytes;
use kafscale_flusher::protocol::{decode_request, decode_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(Bytes::copy_from_slice(data));
    let _ = decode_response(Bytes::copy_from_slice(data));
});
