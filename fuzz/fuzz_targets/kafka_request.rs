//! The Kafka request decoder, for every API and version the broker serves.
//! The first two bytes pick the API and version (so the fuzzer reaches all
//! of them), the rest is the header's correlation id onwards; a first byte
//! of 0xff passes the input through as a raw frame instead.
#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use kafscale_broker::kafka::connection::decode_frame;
use kafscale_broker::kafka::handlers::SUPPORTED_APIS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = match data {
        [0xff, raw @ ..] => Bytes::copy_from_slice(raw),
        [pick, version, rest @ ..] => {
            let (api, min, max) = SUPPORTED_APIS[*pick as usize % SUPPORTED_APIS.len()];
            let version = min + (*version as i16) % (max - min + 1);
            let mut f = BytesMut::with_capacity(4 + rest.len());
            f.put_i16(api as i16);
            f.put_i16(version);
            f.put_slice(rest);
            f.freeze()
        }
        _ => return,
    };
    let _ = decode_frame(frame);
});
