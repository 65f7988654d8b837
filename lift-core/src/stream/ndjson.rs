//! Newline-delimited JSON: one compact JSON value per line, each line ended by `\n`.
//!
//! Compact `serde_json` output never holds a raw line break (one inside a string is written
//! `\n`), so a line is always exactly one value.

use bytes::Bytes;
use serde::Serialize;

/// `value` as one NDJSON line: compact JSON followed by `\n`.
///
/// # Errors
/// The serializer's error when `value` cannot be written as JSON.
pub fn line<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, serde_json::Error> {
    let mut out = serde_json::to_vec(value)?;
    out.push(b'\n');
    Ok(Bytes::from(out))
}
