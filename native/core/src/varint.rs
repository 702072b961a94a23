//! lib0 variable-length integers, with the exact rules of `crdtsync._yupdate`.
//!
//! `varuint`: little-endian base 128, high bit = more follows. Counts, lengths
//! and clocks are read as 32-bit values (yrs reads `u32`), client ids as 64-bit.
//! A non-canonical encoding (a final `0x00` byte after a continuation) is
//! refused: no lib0 writer emits one, and accepting it would break the
//! byte-exact round trip. `varint` (only inside Any values): first byte
//! bit 7 more, bit 6 sign, 6 bits of magnitude; magnitude at most 53 bits.

use crate::error::{malformed, Result};

/// lib0's readVarInt refuses magnitudes beyond 53 bits (JavaScript numbers).
pub const VARINT_MAX_BITS: u32 = 53;

/// Reads a canonical varuint of at most `bits` (32 or 64) bits at `pos`.
///
/// Returns the value and the offset after it. Errors name `what` and the
/// offset where the varuint starts.
#[inline]
pub fn read_varuint(data: &[u8], pos: usize, bits: u32, what: &str) -> Result<(u64, usize)> {
    // Fast path: one byte (always canonical, always in range).
    if let Some(&b) = data.get(pos) {
        if b < 0x80 {
            return Ok((b as u64, pos + 1));
        }
    }
    read_varuint_slow(data, pos, bits, what)
}

#[cold]
fn read_varuint_slow(data: &[u8], start: usize, bits: u32, what: &str) -> Result<(u64, usize)> {
    let mut pos = start;
    let mut value: u128 = 0;
    let mut shift: u32 = 0;
    loop {
        let Some(&b) = data.get(pos) else {
            return Err(malformed(format!("truncated varuint ({what})"), start));
        };
        pos += 1;
        value |= ((b & 0x7F) as u128) << shift;
        shift += 7;
        if b < 0x80 {
            if b == 0 && pos - start > 1 {
                return Err(malformed(format!("non-canonical varuint ({what})"), start));
            }
            if value >> bits != 0 {
                return Err(malformed(
                    format!("varuint overflows {bits} bits ({what})"),
                    start,
                ));
            }
            return Ok((value as u64, pos));
        }
        if shift >= bits + 7 {
            return Err(malformed(
                format!("varuint overflows {bits} bits ({what})"),
                start,
            ));
        }
    }
}

/// Reads a lib0 signed varint (magnitude at most 53 bits) at `pos`.
pub fn read_varint(data: &[u8], pos: usize) -> Result<(i64, usize)> {
    let start = pos;
    let mut pos = pos;
    let Some(&b) = data.get(pos) else {
        return Err(malformed("truncated varint", start));
    };
    pos += 1;
    let mut value: u64 = (b & 0x3F) as u64;
    let negative = b & 0x40 != 0;
    let mut shift: u32 = 6;
    let mut more = b & 0x80 != 0;
    while more {
        let Some(&b) = data.get(pos) else {
            return Err(malformed("truncated varint", start));
        };
        pos += 1;
        // shift stays <= 55 here (the check below stops at 62), so no overflow.
        value |= ((b & 0x7F) as u64) << shift;
        shift += 7;
        more = b & 0x80 != 0;
        if shift > VARINT_MAX_BITS + 7 {
            return Err(malformed("varint overflows 53 bits", start));
        }
    }
    if value >> VARINT_MAX_BITS != 0 {
        return Err(malformed("varint overflows 53 bits", start));
    }
    let v = value as i64;
    Ok((if negative { -v } else { v }, pos))
}

/// Appends `value` as a varuint.
#[inline]
pub fn write_varuint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Number of bytes `write_varuint` appends for `value`.
#[inline]
pub fn varuint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends a lib0 signed varint (magnitude must fit 53 bits for lib0 readers).
pub fn write_varint(out: &mut Vec<u8>, value: i64) {
    let negative = value < 0;
    let mut m = value.unsigned_abs();
    let mut first = (m & 0x3F) as u8;
    if negative {
        first |= 0x40;
    }
    m >>= 6;
    if m > 0 {
        first |= 0x80;
    }
    out.push(first);
    while m > 0 {
        let mut b = (m & 0x7F) as u8;
        m >>= 7;
        if m > 0 {
            b |= 0x80;
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_varuint(&mut out, v);
        out
    }

    #[test]
    fn round_trip_and_length() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            1 << 31,
            u32::MAX as u64,
            1 << 53,
            u64::MAX,
        ] {
            let b = enc(v);
            assert_eq!(b.len(), varuint_len(v), "{v}");
            assert_eq!(read_varuint(&b, 0, 64, "x").unwrap(), (v, b.len()));
        }
    }

    #[test]
    fn bounds_are_exact() {
        assert_eq!(
            read_varuint(&enc(u32::MAX as u64), 0, 32, "x").unwrap().0,
            u32::MAX as u64
        );
        assert_eq!(
            read_varuint(&enc(1 << 32), 0, 32, "x").unwrap_err().kind,
            ErrorKind::Malformed
        );
        // Six bytes are read for 32 bits before "overflow" (like _yupdate).
        let six = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(read_varuint(&six, 0, 32, "x")
            .unwrap_err()
            .message
            .contains("overflows"));
        let seven = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(read_varuint(&seven, 0, 32, "x")
            .unwrap_err()
            .message
            .contains("overflows"));
        let long64 = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert_eq!(read_varuint(&long64, 0, 64, "x").unwrap().0, u64::MAX);
        let over64 = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
        assert!(read_varuint(&over64, 0, 64, "x").is_err());
    }

    #[test]
    fn non_canonical_and_truncated() {
        let e = read_varuint(&[0x81, 0x00], 0, 32, "n").unwrap_err();
        assert!(e.message.contains("non-canonical"), "{}", e.message);
        assert_eq!(read_varuint(&[0x00], 0, 32, "n").unwrap(), (0, 1));
        let e = read_varuint(&[0x81], 0, 32, "n").unwrap_err();
        assert!(e.message.contains("truncated"));
        assert!(read_varuint(&[], 0, 32, "n").is_err());
    }

    #[test]
    fn signed_varints() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -63,
            64,
            -64,
            1 << 40,
            -(1 << 52),
            (1 << 53) - 1,
        ] {
            let mut b = Vec::new();
            write_varint(&mut b, v);
            assert_eq!(read_varint(&b, 0).unwrap(), (v, b.len()), "{v}");
        }
        let mut b = Vec::new();
        write_varint(&mut b, 1 << 53);
        assert!(read_varint(&b, 0).is_err());
        // -0 is accepted (lib0 writes it for negative zero... as a varint it reads 0).
        assert_eq!(read_varint(&[0x40], 0).unwrap(), (0, 1));
        // Eight continuation bytes: refused even if the last ends the varint.
        let long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert!(read_varint(&long, 0).is_err());
    }
}
