//! The compressors of the storage and wire formats, bounded for hostile input.
//!
//! Each function mirrors one Python call site exactly, so that both paths
//! accept the same bytes and produce the same output:
//!
//! * [`lzma_compress`] / [`lzma_decompress`]: `_columnar`'s raw LZMA2 stream
//!   (`lzma.compress(..., format=FORMAT_RAW, filters=...)` and
//!   `LZMADecompressor.decompress(payload, max_length=size)` with its
//!   `eof` / `needs_input` checks).
//! * [`zstd_compress`] / [`zstd_read`]: `_columnar`'s zstd codec
//!   (`ZstdCompressor(level=19).compress` and
//!   `stream_reader(payload).read(size + 1)`).
//! * [`zstd_unframe`]: `encoding._unzstd` / `sync.protocol._unzstd`: the
//!   frame must declare its content size, which is checked against the limit
//!   before anything is allocated.

use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream, PRESET_EXTREME};

use crate::error::{Error, ErrorKind, Result};

fn lzma_filters(dict_log: u32) -> std::result::Result<Filters, liblzma::stream::Error> {
    // lc=3/lp=0/pb=0: byte-oriented data with no 2- or 4-byte alignment.
    let mut opts = LzmaOptions::new_preset(9 | PRESET_EXTREME)?;
    opts.literal_context_bits(3)
        .literal_position_bits(0)
        .position_bits(0)
        .dict_size(1 << dict_log);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    Ok(filters)
}

/// Raw LZMA2 (preset 9e, lc=3 lp=0 pb=0, dictionary `2**dict_log`).
pub fn lzma_compress(data: &[u8], dict_log: u32) -> Vec<u8> {
    let filters = lzma_filters(dict_log).expect("valid LZMA2 preset");
    let mut stream = Stream::new_raw_encoder(&filters).expect("raw LZMA2 encoder");
    let mut out: Vec<u8> = Vec::with_capacity(data.len() / 2 + 64);
    let mut consumed = 0usize;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        let before = stream.total_in();
        let status = stream
            .process_vec(&data[consumed..], &mut out, Action::Finish)
            .expect("LZMA2 encoding of in-memory data");
        consumed += (stream.total_in() - before) as usize;
        if status == Status::StreamEnd {
            return out;
        }
    }
}

fn corrupt_lzma(e: impl std::fmt::Debug) -> Error {
    Error::new(
        ErrorKind::Malformed,
        format!("compact update: corrupt LZMA data: {e:?}"),
    )
}

/// Decodes a raw LZMA2 stream of exactly `size` bytes, never producing more.
///
/// Like CPython's `LZMADecompressor.decompress(payload, max_length=size)`
/// followed by `_columnar`'s checks: the stream must end (its end marker
/// read) having produced exactly `size` bytes; bytes after the end marker
/// are ignored. The output grows with what is actually decoded, up to
/// `size`, so a tiny payload announcing a large size allocates little.
pub fn lzma_decompress(payload: &[u8], dict_log: u32, size: usize) -> Result<Vec<u8>> {
    let filters = lzma_filters(dict_log).map_err(corrupt_lzma)?;
    let mut stream = Stream::new_raw_decoder(&filters).map_err(corrupt_lzma)?;
    // `out[..filled]` is decoded; `out` grows (never beyond `size`) as
    // CPython's output buffer does when it fills up.
    let mut out: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    let mut consumed = 0usize;
    let mut eof = false;
    loop {
        if filled == out.len() && out.len() < size {
            let new_len = size.min((out.len() * 2).max(1 << 15));
            out.resize(new_len, 0);
        }
        let (in0, out0) = (stream.total_in(), stream.total_out());
        let status = stream.process(&payload[consumed..], &mut out[filled..], Action::Run);
        consumed += (stream.total_in() - in0) as usize;
        filled += (stream.total_out() - out0) as usize;
        let avail_in = payload.len() - consumed;
        let room = out.len() - filled;
        let status = match status {
            // LZMA_BUF_ERROR with all input read and room left is no error
            // (CPython says so too); any other one is.
            Ok(Status::MemNeeded) if avail_in == 0 && room > 0 => Status::Ok,
            Ok(Status::MemNeeded) => return Err(corrupt_lzma("insufficient buffer space")),
            Ok(s) => s,
            Err(e) => return Err(corrupt_lzma(e)),
        };
        if status == Status::StreamEnd {
            eof = true;
            break;
        }
        if room == 0 {
            if filled == size {
                break;
            }
            continue; // grow
        }
        if avail_in == 0 {
            break;
        }
    }
    out.truncate(filled);
    if !eof && filled == size {
        return Err(Error::new(
            ErrorKind::Malformed,
            "compact update: more data than announced",
        ));
    }
    if filled != size {
        return Err(Error::new(
            ErrorKind::Malformed,
            format!("compact update: {filled} bytes decompressed, {size} announced"),
        ));
    }
    Ok(out)
}

/// `zstandard.ZstdCompressor(level=level).compress(data)`: one frame with
/// its content size, no checksum.
pub fn zstd_compress(data: &[u8], level: i32) -> Vec<u8> {
    let mut cctx = zstd_safe::CCtx::create();
    let mut out: Vec<u8> = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(level))
        .expect("zstd level");
    cctx.set_parameter(zstd_safe::CParameter::ContentSizeFlag(true))
        .expect("zstd content size flag");
    cctx.compress2(&mut out, data)
        .expect("zstd compression into a bound-sized buffer");
    out
}

fn zstd_error(prefix: &str, code: usize) -> Error {
    Error::new(
        ErrorKind::Malformed,
        format!("{prefix}: {}", zstd_safe::get_error_name(code)),
    )
}

/// `zstandard.ZstdDecompressor().stream_reader(payload).read(n)`: decodes
/// what one streaming call gives, at most `n` bytes, stopping at the end of
/// the first frame. Errors are corrupt data (`prefix` starts the message).
pub fn zstd_read(payload: &[u8], n: usize, prefix: &str) -> Result<Vec<u8>> {
    let mut dctx = zstd_safe::DCtx::create();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let mut input = zstd_safe::InBuffer::around(payload);
    let mut output = zstd_safe::OutBuffer::around(&mut out);
    dctx.decompress_stream(&mut output, &mut input)
        .map_err(|code| zstd_error(prefix, code))?;
    Ok(out)
}

const ZSTD_MAGIC_SKIPPABLE_START: u32 = 0x184D_2A50;
const ZSTD_MAGIC_SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;

/// The content size a frame header declares (`zstandard.get_frame_parameters`
/// `.content_size`): `Ok(None)` when the header does not say.
fn frame_content_size(payload: &[u8]) -> Result<Option<u64>> {
    let bad = |what: &str| {
        Error::new(
            ErrorKind::Malformed,
            format!("corrupt compressed payload: {what}"),
        )
    };
    if payload.len() >= 4 {
        let magic = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        if magic & ZSTD_MAGIC_SKIPPABLE_MASK == ZSTD_MAGIC_SKIPPABLE_START {
            // A skippable frame's header reports its own length as the size.
            if payload.len() < 8 {
                return Err(bad("not enough data for frame parameters"));
            }
            let len = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
            return Ok(Some(len as u64));
        }
    }
    match zstd_safe::get_frame_content_size(payload) {
        Ok(size) => Ok(size),
        Err(_) => Err(bad("cannot get frame parameters")),
    }
}

/// `encoding._unzstd` / `sync.protocol._unzstd`: a single zstd frame that
/// declares its content size, at most `limit` bytes (refused before
/// allocating), decoding to exactly that size.
///
/// `limit_error` words the limit error; `malformed` is the error kind of
/// corrupt data (the envelope's is MalformedUpdateError).
pub fn zstd_unframe(payload: &[u8], limit: u64) -> Result<Vec<u8>> {
    let size = match frame_content_size(payload)? {
        Some(size) => size,
        None => {
            return Err(Error::new(
                ErrorKind::Malformed,
                "compressed payload does not declare its size",
            ))
        }
    };
    if size > limit {
        return Err(Error::new(
            ErrorKind::Limit,
            format!("payload would decompress to {size} bytes (limit {limit})"),
        ));
    }
    // ZstdDecompressor.decompress: a frame declaring 0 bytes is b"" as is.
    let skippable = payload.len() >= 4
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]])
            & ZSTD_MAGIC_SKIPPABLE_MASK
            == ZSTD_MAGIC_SKIPPABLE_START;
    if size == 0 || skippable {
        // (a skippable frame has no content: ZSTD_getFrameContentSize is 0)
        if size != 0 {
            return Err(Error::new(
                ErrorKind::Malformed,
                "compressed payload size does not match its header",
            ));
        }
        return Ok(Vec::new());
    }
    let size = size as usize;
    let mut dctx = zstd_safe::DCtx::create();
    let mut out: Vec<u8> = Vec::with_capacity(size);
    let mut input = zstd_safe::InBuffer::around(payload);
    let remaining = {
        let mut output = zstd_safe::OutBuffer::around(&mut out);
        dctx.decompress_stream(&mut output, &mut input)
            .map_err(|code| zstd_error("corrupt compressed payload", code))?
    };
    if remaining != 0 {
        return Err(Error::new(
            ErrorKind::Malformed,
            "corrupt compressed payload: did not decompress full frame",
        ));
    }
    if out.len() != size {
        return Err(Error::new(
            ErrorKind::Malformed,
            "compressed payload size does not match its header",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzma_round_trip_and_bounds() {
        let data: Vec<u8> = (0..50_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
            .collect();
        let packed = lzma_compress(&data, 16);
        assert!(packed.len() < data.len());
        assert_eq!(lzma_decompress(&packed, 16, data.len()).unwrap(), data);
        // Announcing less or more than the stream holds is refused.
        assert!(lzma_decompress(&packed, 16, data.len() - 1).is_err());
        assert!(lzma_decompress(&packed, 16, data.len() + 1).is_err());
        // Truncated or corrupt streams are refused, never a panic.
        assert!(lzma_decompress(&packed[..packed.len() / 2], 16, data.len()).is_err());
        let mut bad = packed.clone();
        bad[10] ^= 0xFF;
        let _ = lzma_decompress(&bad, 16, data.len());
    }

    #[test]
    fn zstd_round_trip_and_bounds() {
        let data = b"hello hello hello hello hello hello hello".repeat(100);
        let packed = zstd_compress(&data, 19);
        assert_eq!(zstd_read(&packed, data.len() + 1, "x").unwrap(), data);
        assert_eq!(zstd_read(&packed, 10, "x").unwrap(), &data[..10]);
        assert_eq!(zstd_unframe(&packed, data.len() as u64).unwrap(), data);
        let e = zstd_unframe(&packed, data.len() as u64 - 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Limit);
        assert_eq!(
            zstd_unframe(b"junk", 100).unwrap_err().kind,
            ErrorKind::Malformed
        );
        assert_eq!(
            zstd_unframe(&packed[..20], 1 << 20).unwrap_err().kind,
            ErrorKind::Malformed
        );
    }

    #[test]
    fn zstd_bomb_refused_before_decoding() {
        // A frame declaring 1 GiB: refused by size alone.
        let big = vec![0u8; 1 << 20];
        let packed = zstd_compress(&big, 3);
        let e = zstd_unframe(&packed, 1000).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Limit);
    }
}
