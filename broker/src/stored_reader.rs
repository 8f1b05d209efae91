//! Bounds-checked reads of the hand-written layouts the coordinators store in their internal
//! topics (`groups/offsets_topic.rs`, `txn/log_format.rs`): Kafka's generated message framing
//! (i16/i32 lengths, and compact lengths with tagged fields for flexible versions). A record that
//! cannot be read is an error naming why, never a panic.
//!
//! Written by hand: kafka-protocol carries the client-facing messages only, not these record
//! schemas. Never: imports nothing of the broker (a leaf both coordinators share).

use bytes::{Buf, Bytes};

pub struct StoredReader(pub Bytes);

impl StoredReader {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!("record ends early: {n} bytes needed, {} left", self.0.remaining()));
        }
        Ok(())
    }
    pub fn i8(&mut self) -> Result<i8, String> {
        self.need(1)?;
        Ok(self.0.get_i8())
    }
    pub fn i16(&mut self) -> Result<i16, String> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    pub fn i32(&mut self) -> Result<i32, String> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    pub fn i64(&mut self) -> Result<i64, String> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    pub fn unsigned_varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.i8()? as u8;
            value |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }
    fn text(&mut self, length: usize) -> Result<String, String> {
        self.need(length)?;
        String::from_utf8(self.0.split_to(length).to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    /// A string that may be null: i16 length, -1 for null.
    pub fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        self.text(length as usize).map(Some)
    }
    /// A string: i16 length, or compact (unsigned varint length + 1) in a flexible version.
    pub fn string(&mut self, flexible: bool) -> Result<String, String> {
        let length = if flexible { self.unsigned_varint()? as i64 - 1 } else { self.i16()? as i64 };
        if length < 0 {
            return Err("null where a string is required".into());
        }
        self.text(length as usize)
    }
    /// Bytes with an i32 length; null reads as empty.
    pub fn bytes(&mut self) -> Result<Bytes, String> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(Bytes::new());
        }
        self.need(length as usize)?;
        Ok(self.0.split_to(length as usize))
    }
    /// An array length: i32, or compact in a flexible version; None for null.
    pub fn array_length(&mut self, flexible: bool) -> Result<Option<usize>, String> {
        let length = if flexible { self.unsigned_varint()? as i64 - 1 } else { self.i32()? as i64 };
        if length < 0 {
            return Ok(None);
        }
        // Each element takes at least one byte: a length past the record is corrupt.
        self.need(length as usize)?;
        Ok(Some(length as usize))
    }
    /// Tagged fields of a flexible struct: (tag, bytes).
    pub fn tagged_fields(&mut self) -> Result<Vec<(u64, Bytes)>, String> {
        let count = self.unsigned_varint()?;
        let mut fields = Vec::new();
        for _ in 0..count {
            let tag = self.unsigned_varint()?;
            let size = self.unsigned_varint()? as usize;
            self.need(size)?;
            fields.push((tag, self.0.split_to(size)));
        }
        Ok(fields)
    }
}
