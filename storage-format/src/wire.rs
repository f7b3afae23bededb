//! The field encodings that the flusher protocol and the intake object
//! format share: big-endian numbers, `u16`-prefixed strings, `u32`-prefixed
//! blobs and lists, and structs as their fields in order ([`wire_struct!`]).

pub use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// A field that could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("frame truncated while reading {0}")]
    Truncated(&'static str),
    #[error("string field is not UTF-8")]
    Utf8,
}

/// A field's encoding on the socket, big-endian throughout.
pub trait Wire: Sized {
    /// The fewest bytes one value takes: bounds what a count from the wire
    /// may allocate before the values are read.
    const MIN_LEN: usize;
    fn put(&self, b: &mut BytesMut);
    /// `what` names the field in a truncation error.
    fn get(b: &mut Bytes, what: &'static str) -> Result<Self, WireError>;
    /// Bytes `put` will write, to size the frame buffer once.
    fn wire_len(&self) -> usize {
        Self::MIN_LEN
    }
}

/// Fails with `Truncated(what)` unless `buf` holds `n` more bytes.
pub fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), WireError> {
    if buf.remaining() < n {
        Err(WireError::Truncated(what))
    } else {
        Ok(())
    }
}

macro_rules! wire_numbers {
    ($($ty:ty: $put:ident, $get:ident;)*) => {$(
        impl Wire for $ty {
            const MIN_LEN: usize = std::mem::size_of::<$ty>();
            fn put(&self, b: &mut BytesMut) {
                b.$put(*self);
            }
            fn get(b: &mut Bytes, what: &'static str) -> Result<Self, WireError> {
                need(b, Self::MIN_LEN, what)?;
                Ok(b.$get())
            }
        }
    )*};
}

wire_numbers! {
    u8: put_u8, get_u8;
    u16: put_u16, get_u16;
    i16: put_i16, get_i16;
    u32: put_u32, get_u32;
    i32: put_i32, get_i32;
    u64: put_u64, get_u64;
    i64: put_i64, get_i64;
}

/// `u16` length + UTF-8. Topic names are at most 249 bytes; longer text (an
/// error message) is cut to fit, at a character boundary.
impl Wire for String {
    const MIN_LEN: usize = 2;
    fn put(&self, b: &mut BytesMut) {
        let mut end = self.len().min(u16::MAX as usize);
        while !self.is_char_boundary(end) {
            end -= 1;
        }
        b.put_u16(end as u16);
        b.put_slice(&self.as_bytes()[..end]);
    }
    fn get(b: &mut Bytes, what: &'static str) -> Result<Self, WireError> {
        let n = u16::get(b, what)? as usize;
        need(b, n, what)?;
        String::from_utf8(b.split_to(n).to_vec()).map_err(|_| WireError::Utf8)
    }
    fn wire_len(&self) -> usize {
        2 + self.len().min(u16::MAX as usize)
    }
}

/// `u32` length + bytes; decoding shares the frame's buffer (no copy).
impl Wire for Bytes {
    const MIN_LEN: usize = 4;
    fn put(&self, b: &mut BytesMut) {
        b.put_u32(self.len() as u32);
        b.put_slice(self);
    }
    fn get(b: &mut Bytes, what: &'static str) -> Result<Self, WireError> {
        let n = u32::get(b, what)? as usize;
        need(b, n, what)?;
        Ok(b.split_to(n))
    }
    fn wire_len(&self) -> usize {
        4 + self.len()
    }
}

/// A topic id: 16 bytes as they are.
impl Wire for [u8; 16] {
    const MIN_LEN: usize = 16;
    fn put(&self, b: &mut BytesMut) {
        b.put_slice(self);
    }
    fn get(b: &mut Bytes, what: &'static str) -> Result<Self, WireError> {
        need(b, 16, what)?;
        let mut id = [0u8; 16];
        b.copy_to_slice(&mut id);
        Ok(id)
    }
}

/// `u32` count + the items.
impl<T: Wire> Wire for Vec<T> {
    const MIN_LEN: usize = 4;
    fn put(&self, b: &mut BytesMut) {
        b.put_u32(self.len() as u32);
        for item in self {
            item.put(b);
        }
    }
    fn get(b: &mut Bytes, what: &'static str) -> Result<Self, WireError> {
        let n = u32::get(b, what)? as usize;
        // Every item takes at least MIN_LEN bytes: a hostile count cannot
        // reserve more than the frame holds.
        let mut items = Vec::with_capacity(n.min(b.remaining() / T::MIN_LEN.max(1)));
        for _ in 0..n {
            items.push(T::get(b, what)?);
        }
        Ok(items)
    }
    fn wire_len(&self) -> usize {
        4 + self.iter().map(Wire::wire_len).sum::<usize>()
    }
}

/// Declares a plain struct whose wire form is its fields in order.
#[macro_export]
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }

        impl $crate::wire::Wire for $name {
            const MIN_LEN: usize = 0 $(+ <$ty as $crate::wire::Wire>::MIN_LEN)*;
            #[allow(unused_variables)] // a struct without fields
            fn put(&self, b: &mut $crate::wire::BytesMut) {
                $($crate::wire::Wire::put(&self.$field, b);)*
            }
            #[allow(unused_variables)]
            fn get(
                b: &mut $crate::wire::Bytes,
                _what: &'static str,
            ) -> Result<Self, $crate::wire::WireError> {
                Ok(Self { $($field: $crate::wire::Wire::get(b, stringify!($field))?,)* })
            }
            fn wire_len(&self) -> usize {
                0 $(+ $crate::wire::Wire::wire_len(&self.$field))*
            }
        }
    };
}
