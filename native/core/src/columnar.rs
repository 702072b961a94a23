//! The compact columnar storage encoding of v1 updates: a port of
//! `crdtsync._columnar` (`compact_encode` / `compact_decode`), byte for byte.
//! The layout and its rationale are documented there.
//!
//! Decoding treats its input as hostile and, unlike a rebuild-then-encode,
//! writes the v1 update while it reads the columns, counting its size: once
//! the size passes `max_update_bytes` nothing more is written (the rest is
//! still read and checked, so that the error reported is the one the Python
//! reference reports, and the refusal is an `UpdateLimitError`). A few
//! hundred bytes that reference one 64 KiB key a million times therefore
//! cost the column bytes, not gigabytes.

use std::collections::HashMap;

use crate::codec::{lzma_compress, lzma_decompress, zstd_compress, zstd_read};
use crate::error::{Error, ErrorKind, Result};
use crate::json::{is_valid_json, json_depth};
use crate::limits::Limits;
use crate::update::{
    encode_update_remapped, parse_update, skip_any, utf16_len, Content, Parent, ParsedUpdate, Span,
    Struct, CONTENT_ANY, CONTENT_BINARY, CONTENT_DELETED, CONTENT_DOC, CONTENT_EMBED,
    CONTENT_FORMAT, CONTENT_JSON, CONTENT_MASK, CONTENT_STRING, CONTENT_TYPE, HAS_ORIGIN,
    HAS_PARENT_SUB, HAS_RIGHT_ORIGIN, STRUCT_GC, STRUCT_SKIP, TYPE_XML_ELEMENT, TYPE_XML_HOOK,
    TYPE_XML_TEXT,
};
use crate::varint::{varuint_len, write_varuint};

/// Layout 1: the column block compressed as one stream (written for updates
/// under `PER_COLUMN_MIN` bytes); layout 2: a new key referred to as 0 (an
/// old one as its index + 1), and each column compressed on its own.
pub const VERSION_WHOLE: u8 = 1;
pub const VERSION_PER_COLUMN: u8 = 2;
const PER_COLUMN_MIN: usize = 1 << 13;
const ZSTD_SLACK: usize = 16;
/// `_columnar._ZSTD_COLUMN_LEVEL`.
const ZSTD_COLUMN_LEVEL: i32 = 16;
pub const CODEC_STORED: u8 = 0;
pub const CODEC_LZMA: u8 = 1;
pub const CODEC_ZSTD: u8 = 2;

const COL_CLIENTS: usize = 0;
const COL_BLOCKS: usize = 1;
const COL_INFO: usize = 2;
const COL_ORIGIN: usize = 3;
const COL_RIGHT: usize = 4;
const COL_PARENT: usize = 5;
const COL_KEYS: usize = 6;
const COL_LENGTHS: usize = 7;
const COL_TEXT: usize = 8;
const COL_MISC: usize = 9;
const COL_DELETES: usize = 10;
const N_COLUMNS: usize = 11;

const COLUMN_NAMES: [&str; N_COLUMNS] = [
    "clients", "blocks", "info", "origin", "right", "parent", "keys", "lengths", "text", "misc",
    "deletes",
];

const MRU: usize = 8;
const SEL_CONTINUE: u8 = 8;
const SEL_AFTER_ORIGIN: u8 = 8;
const SEL_EXPLICIT: u8 = 9;

const LZMA_MIN_DICT_LOG: u32 = 12;
const LZMA_MAX_DICT_LOG: u32 = 26;

/// IDs in the MRU lists: clocks may be -1 in the decoder (a zero-length
/// struct at clock 0, which the final re-parse refuses).
type Ref = (u64, i64);

/// `_columnar._remember`: updates the MRU lists after an item.
fn remember(
    mru: &mut Vec<Ref>,
    rmru: &mut Vec<Ref>,
    last: Ref,
    origin: Option<Ref>,
    right: Option<Ref>,
) {
    if let Some(i) = mru.iter().position(|x| *x == last) {
        mru.remove(i);
    }
    mru.insert(0, last);
    if let Some(o) = origin {
        if let Some(i) = mru.iter().position(|x| *x == o) {
            mru.remove(i);
        }
        // list.insert(1, x) appends to a shorter list.
        let at = mru.len().min(1);
        mru.insert(at, o);
    }
    mru.truncate(MRU);
    if let Some(r) = right {
        if let Some(i) = rmru.iter().position(|x| *x == r) {
            rmru.remove(i);
        }
        rmru.insert(0, r);
        rmru.truncate(MRU);
    }
}

fn zigzag(v: i64) -> u64 {
    if v >= 0 {
        (v as u64) * 2
    } else {
        (-(v as i128) * 2 - 1) as u64
    }
}

fn unzigzag(v: u64) -> i128 {
    if v & 1 == 0 {
        (v >> 1) as i128
    } else {
        -(((v as i128) + 1) >> 1)
    }
}

/// `_columnar._implied_deletes`: merged ranges of a client's GC/Deleted structs.
/// Input: (kind, clock, end) of every struct of the client, in order.
fn implied_deletes(structs: impl Iterator<Item = (u8, i64, i64)>) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let (mut start, mut end) = (-1i64, -1i64);
    for (kind, clock, s_end) in structs {
        if kind == STRUCT_GC || kind == CONTENT_DELETED {
            if clock == end {
                end = s_end;
            } else {
                if end >= 0 {
                    out.push((start, end - start));
                }
                start = clock;
                end = s_end;
            }
        }
    }
    if end >= 0 {
        out.push((start, end - start));
    }
    out
}

fn dict_log(size: usize) -> u32 {
    let bits = if size == 0 {
        1
    } else {
        usize::BITS - (size - 1).leading_zeros()
    };
    bits.clamp(LZMA_MIN_DICT_LOG, LZMA_MAX_DICT_LOG)
}

// --------------------------------------------------------------------------
// Encoding
// --------------------------------------------------------------------------

struct Encoder<'a> {
    data: &'a [u8],
    cols: [Vec<u8>; N_COLUMNS],
    client_index: HashMap<u64, u64>,
    key_index: HashMap<&'a [u8], u64>,
    last_clock: HashMap<u64, i64>,
    /// Layout 2's key references (`_Encoder.recent_keys`): 0 for a new key
    /// (the next in the table), else its index + 1 (a tree's 110,000 map
    /// entries each name a new key: 0 every time, instead of a growing index).
    recent_keys: bool,
}

impl<'a> Encoder<'a> {
    fn client(&mut self, col: usize, client: u64) {
        let next = self.client_index.len() as u64;
        let idx = *self.client_index.entry(client).or_insert_with(|| {
            write_varuint(&mut self.cols[COL_CLIENTS], client);
            next
        });
        write_varuint(&mut self.cols[col], idx);
    }

    fn key(&mut self, col: usize, key: &'a [u8]) {
        let next = self.key_index.len() as u64;
        let idx = *self.key_index.entry(key).or_insert_with(|| {
            let kc = &mut self.cols[COL_KEYS];
            write_varuint(kc, key.len() as u64);
            kc.extend_from_slice(key);
            next
        });
        let code = match (self.recent_keys, idx < next) {
            (false, _) => idx,
            (true, true) => idx + 1,
            (true, false) => 0,
        };
        write_varuint(&mut self.cols[col], code);
    }

    fn ref_clock(&mut self, col: usize, client: u64, clock: i64, expected: Option<i64>) {
        let expected = expected.unwrap_or_else(|| *self.last_clock.get(&client).unwrap_or(&0));
        write_varuint(&mut self.cols[col], zigzag(clock - expected));
        self.last_clock.insert(client, clock);
    }

    fn encode(mut self, parsed: &ParsedUpdate) -> [Vec<u8>; N_COLUMNS] {
        let data = self.data;
        let mut mru: Vec<Ref> = Vec::with_capacity(MRU + 2);
        let mut rmru: Vec<Ref> = Vec::with_capacity(MRU + 1);
        write_varuint(&mut self.cols[COL_BLOCKS], parsed.clients.len() as u64);
        for (client, structs) in &parsed.clients {
            let client = *client;
            self.client(COL_BLOCKS, client);
            write_varuint(&mut self.cols[COL_BLOCKS], structs.len() as u64);
            write_varuint(&mut self.cols[COL_BLOCKS], structs[0].clock as u64);
            for s in structs {
                self.cols[COL_INFO].push(s.info);
                if s.kind == STRUCT_GC || s.kind == STRUCT_SKIP {
                    write_varuint(&mut self.cols[COL_LENGTHS], s.length as u64);
                    continue;
                }
                let o = s.origin.map(|(c, k)| (c, k as i64));
                let r = s.right_origin.map(|(c, k)| (c, k as i64));
                if o.is_some() || r.is_some() {
                    let (mut osel, mut rsel) = (0u8, 0u8);
                    if let Some(o) = o {
                        if o.0 == client && o.1 == s.clock as i64 - 1 {
                            osel = SEL_CONTINUE;
                        } else if let Some(i) = mru.iter().position(|x| *x == o) {
                            osel = i as u8;
                        } else {
                            osel = SEL_EXPLICIT;
                            self.client(COL_ORIGIN, o.0);
                            self.ref_clock(COL_ORIGIN, o.0, o.1, None);
                        }
                    }
                    if let Some(r) = r {
                        if let Some(i) = rmru.iter().position(|x| *x == r) {
                            rsel = i as u8;
                        } else if o.is_some_and(|o| r.0 == o.0 && r.1 == o.1 + 1) {
                            rsel = SEL_AFTER_ORIGIN;
                        } else {
                            rsel = SEL_EXPLICIT;
                            self.client(COL_RIGHT, r.0);
                            let expected = o.filter(|o| o.0 == r.0).map(|o| o.1 + 1);
                            self.ref_clock(COL_RIGHT, r.0, r.1, expected);
                        }
                    }
                    self.cols[COL_INFO].push(osel * 10 + rsel);
                }
                remember(&mut mru, &mut rmru, (client, s.end() as i64 - 1), o, r);
                if s.info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                    match &s.parent {
                        Parent::Root(name) => {
                            self.cols[COL_PARENT].push(1);
                            self.key(COL_PARENT, name.get(data));
                        }
                        Parent::Item((c, k)) => {
                            self.cols[COL_PARENT].push(0);
                            self.client(COL_PARENT, *c);
                            self.ref_clock(COL_PARENT, *c, *k as i64, None);
                        }
                        Parent::Inherited => {
                            unreachable!("parsed items without origins have a parent")
                        }
                    }
                    if s.info & HAS_PARENT_SUB != 0 {
                        let key = s.parent_sub.expect("parent_sub flag with a key").get(data);
                        self.key(COL_PARENT, key);
                    }
                }
                self.content(s);
            }
        }
        // Delete set.
        write_varuint(&mut self.cols[COL_DELETES], parsed.delete_set.len() as u64);
        for (client, ranges) in &parsed.delete_set {
            self.client(COL_DELETES, *client);
            let implied = parsed
                .clients
                .iter()
                .find(|(c, _)| c == client)
                .map(|(_, structs)| {
                    implied_deletes(
                        structs
                            .iter()
                            .map(|s| (s.kind, s.clock as i64, s.end() as i64)),
                    )
                })
                .unwrap_or_default();
            let same = implied.len() == ranges.len()
                && implied
                    .iter()
                    .zip(ranges)
                    .all(|(a, b)| a.0 == b.0 as i64 && a.1 == b.1 as i64);
            let dcol = &mut self.cols[COL_DELETES];
            if same {
                dcol.push(0); // the deleted/GC structs' ranges, merged
                continue;
            }
            dcol.push(1);
            write_varuint(dcol, ranges.len() as u64);
            let mut end: u64 = 0;
            for &(clock, length) in ranges {
                write_varuint(dcol, clock as u64 - end); // sorted: never negative
                write_varuint(dcol, length as u64);
                end = clock as u64 + length as u64;
            }
        }
        self.cols
    }

    fn content(&mut self, s: &Struct) {
        let data = self.data;
        match &s.content {
            Content::String(t) => {
                let b = t.get(data);
                write_varuint(&mut self.cols[COL_LENGTHS], b.len() as u64);
                self.cols[COL_TEXT].extend_from_slice(b);
            }
            Content::None => {
                // Deleted (GC/Skip were handled by the caller)
                write_varuint(&mut self.cols[COL_LENGTHS], s.length as u64);
            }
            Content::Any { n, raw } => {
                let misc = &mut self.cols[COL_MISC];
                write_varuint(misc, *n as u64);
                misc.extend_from_slice(raw.get(data));
            }
            Content::Type { type_ref, name } => {
                write_varuint(&mut self.cols[COL_MISC], *type_ref as u64);
                if let Some(nm) = name {
                    self.key(COL_MISC, nm.get(data));
                }
            }
            Content::Binary(b) | Content::Embed(b) => {
                let b = b.get(data);
                let misc = &mut self.cols[COL_MISC];
                write_varuint(misc, b.len() as u64);
                misc.extend_from_slice(b);
            }
            Content::Format { key, value } => {
                self.key(COL_MISC, key.get(data));
                let v = value.get(data);
                let misc = &mut self.cols[COL_MISC];
                write_varuint(misc, v.len() as u64);
                misc.extend_from_slice(v);
            }
            Content::Json(items) => {
                let misc = &mut self.cols[COL_MISC];
                write_varuint(misc, items.len() as u64);
                for t in items {
                    let b = t.get(data);
                    write_varuint(misc, b.len() as u64);
                    misc.extend_from_slice(b);
                }
            }
            Content::Doc { guid, options } => {
                self.key(COL_MISC, guid.get(data));
                self.cols[COL_MISC].extend_from_slice(options.get(data));
            }
        }
    }
}

/// The columns of a parsed update (`_columnar._Encoder.encode`).
fn encode_cols(parsed: &ParsedUpdate, data: &[u8], recent_keys: bool) -> [Vec<u8>; N_COLUMNS] {
    Encoder {
        data,
        cols: Default::default(),
        client_index: HashMap::new(),
        key_index: HashMap::new(),
        last_clock: HashMap::new(),
        recent_keys,
    }
    .encode(parsed)
}

/// The column block (`_columnar._join`): the number of columns, then each
/// one length-prefixed.
fn join(cols: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = cols.iter().map(|c| c.len() + 10).sum();
    let mut block = Vec::with_capacity(total + 10);
    write_varuint(&mut block, cols.len() as u64);
    for col in cols {
        write_varuint(&mut block, col.len() as u64);
        block.extend_from_slice(col);
    }
    block
}

/// Builds the column block of a parsed update.
pub fn encode_columns(parsed: &ParsedUpdate, data: &[u8]) -> Vec<u8> {
    join(&encode_cols(parsed, data, false))
}

/// `_columnar.compact_encode`: parses `v1` with `limits` (the Python
/// reference uses the default limits) and writes the compact format.
pub fn compact_encode(v1: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    let parsed = parse_update(v1, limits)?;
    if v1.len() >= PER_COLUMN_MIN {
        let cols = encode_cols(&parsed, v1, true);
        return Ok(encode_per_column(&join(&cols), &cols));
    }
    let block = join(&encode_cols(&parsed, v1, false));
    let dlog = dict_log(block.len());
    let lz = lzma_compress(&block, dlog);
    let mut codec = CODEC_STORED;
    let mut best: &[u8] = &block;
    if lz.len() < best.len() {
        codec = CODEC_LZMA | (dlog << 2) as u8;
        best = &lz;
    }
    let zs;
    if block.len() < 1 << 16 {
        // zstd only wins on small inputs (less framing)
        zs = zstd_compress(&block, 19);
        if zs.len() < best.len() {
            codec = CODEC_ZSTD;
            best = &zs;
        }
    }
    let mut out = Vec::with_capacity(best.len() + 12);
    out.push(VERSION_WHOLE);
    out.push(codec);
    write_varuint(&mut out, block.len() as u64);
    out.extend_from_slice(best);
    Ok(out)
}

/// Version 2 (`_columnar._encode_per_column`): each column compressed on
/// its own, by the codec that suits it.
fn encode_per_column(block: &[u8], cols: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() / 4 + 64);
    out.push(VERSION_PER_COLUMN);
    write_varuint(&mut out, block.len() as u64);
    for col in cols {
        let (codec, packed) = pack_column(col);
        out.push(codec);
        write_varuint(&mut out, col.len() as u64);
        write_varuint(&mut out, packed.len() as u64);
        out.extend_from_slice(&packed);
    }
    out
}

/// `_columnar._pack_column`: the smallest of stored, LZMA and zstd, but zstd
/// when it is within 1/`ZSTD_SLACK` of LZMA (it decodes nearly
/// incompressible columns 10-20 times faster for a few percent of size).
/// Ties go to the first of stored, LZMA, zstd, as Python's `min` does.
fn pack_column(col: &[u8]) -> (u8, Vec<u8>) {
    if col.is_empty() {
        return (CODEC_STORED, Vec::new());
    }
    let dlog = dict_log(col.len());
    let lz = lzma_compress(col, dlog);
    let zs = zstd_compress(col, ZSTD_COLUMN_LEVEL);
    if lz.len() < col.len() && zs.len() <= lz.len() + lz.len() / ZSTD_SLACK {
        return (CODEC_ZSTD, zs);
    }
    if col.len() <= lz.len() && col.len() <= zs.len() {
        (CODEC_STORED, col.to_vec())
    } else if lz.len() <= zs.len() {
        (CODEC_LZMA | (dlog << 2) as u8, lz)
    } else {
        (CODEC_ZSTD, zs)
    }
}

// --------------------------------------------------------------------------
// Decoding
// --------------------------------------------------------------------------

fn malformed(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Malformed, format!("compact update: {msg}"))
}

fn limit_error(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Limit, format!("compact update: {msg}"))
}

/// Bounds-checked reader over one column (`_columnar._Col`).
struct Col<'a> {
    data: &'a [u8],
    pos: usize,
    name: &'static str,
    /// Offset of `data` in the column block (spans are block offsets).
    base: usize,
}

impl<'a> Col<'a> {
    fn new(data: &'a [u8], name: &'static str, base: usize) -> Self {
        Col {
            data,
            pos: 0,
            name,
            base,
        }
    }

    /// The block span of `data[start..end]`.
    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.base + start, self.base + end)
    }

    /// The bytes of a block span inside this column.
    fn block_slice(&self, span: Span) -> &'a [u8] {
        &self.data[span.start as usize - self.base..span.end as usize - self.base]
    }

    /// `n` bytes of UTF-8 text, as a block span.
    fn text_span(&mut self, n: u64) -> Result<Span> {
        let start = self.pos;
        self.text(n)?;
        Ok(self.span(start, self.pos))
    }

    fn fail(&self, msg: impl std::fmt::Display) -> Error {
        malformed(format!("column {} at byte {}: {msg}", self.name, self.pos))
    }

    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    /// A varuint of at most `bits` bits (non-canonical forms accepted, as
    /// `_Col.uint` does).
    #[inline]
    fn uint(&mut self, bits: u32) -> Result<u64> {
        if let Some(&b) = self.data.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(b as u64);
            }
        }
        let mut pos = self.pos;
        let mut value: u128 = 0;
        let mut shift: u32 = 0;
        loop {
            let Some(&b) = self.data.get(pos) else {
                return Err(self.fail("truncated varuint"));
            };
            pos += 1;
            value |= ((b & 0x7F) as u128) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
            if shift > bits {
                return Err(self.fail("varuint too long"));
            }
        }
        if value >> bits != 0 {
            return Err(self.fail(format!("value exceeds {bits} bits")));
        }
        self.pos = pos;
        Ok(value as u64)
    }

    /// A count of elements that each need `min_each` bytes of `room` bytes.
    fn count_in(&mut self, min_each: u64, room: Option<usize>) -> Result<u64> {
        let n = self.uint(32)?;
        let left = room.unwrap_or_else(|| self.left());
        if n * min_each > left as u64 {
            return Err(self.fail(format!("count {n} exceeds the data left")));
        }
        Ok(n)
    }

    fn byte(&mut self) -> Result<u8> {
        let Some(&b) = self.data.get(self.pos) else {
            return Err(self.fail("truncated"));
        };
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.left() as u64 {
            return Err(self.fail(format!("{n} bytes announced, {} left", self.left())));
        }
        let b = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(b)
    }

    fn text(&mut self, n: u64) -> Result<&'a [u8]> {
        let start = self.pos;
        let b = self.take(n)?;
        if std::str::from_utf8(b).is_err() {
            self.pos = start;
            return Err(self.fail("invalid UTF-8"));
        }
        Ok(b)
    }
}

fn decompress(codec_byte: u8, payload: &[u8], size: usize) -> Result<Vec<u8>> {
    let codec = codec_byte & 3;
    let dict_log = (codec_byte >> 2) as u32;
    if codec != CODEC_LZMA && dict_log != 0 {
        return Err(malformed(format!("bad codec byte {codec_byte}")));
    }
    let block = match codec {
        CODEC_STORED => payload.to_vec(),
        CODEC_LZMA => {
            if !(LZMA_MIN_DICT_LOG..=LZMA_MAX_DICT_LOG).contains(&dict_log) {
                return Err(malformed(format!("bad LZMA dictionary size 2**{dict_log}")));
            }
            return lzma_decompress(payload, dict_log, size);
        }
        CODEC_ZSTD => zstd_read(payload, size + 1, "compact update: corrupt zstd data")?,
        _ => return Err(malformed(format!("unknown codec {codec}"))),
    };
    if block.len() != size {
        return Err(malformed(format!(
            "{} bytes decompressed, {size} announced",
            block.len()
        )));
    }
    Ok(block)
}

/// `_columnar._decompress_columns`: the column block of a layout 2 payload,
/// never more than `size` bytes (each column's announced length is checked
/// against what is left before it is decompressed, and its codec never
/// produces more).
fn decompress_columns(head: &mut Col, size: usize) -> Result<Vec<u8>> {
    // Reserved up to what the payload can plausibly inflate to, never the
    // announced size alone: a few bytes announcing max_document_bytes must
    // not reserve it (the block grows past this if real data needs it).
    let plausible = head.left().saturating_mul(64).saturating_add(64);
    let mut block: Vec<u8> = Vec::with_capacity(size.min(plausible));
    write_varuint(&mut block, N_COLUMNS as u64);
    for name in COLUMN_NAMES {
        let codec = head.byte()?;
        let n = head.uint(64)?;
        let m = head.uint(64)?;
        let packed = head.take(m)?;
        if block.len() as u128 + vlen(n) as u128 + n as u128 > size as u128 {
            return Err(malformed(format!(
                "column {name} of {n} bytes exceeds the announced size"
            )));
        }
        let col = decompress(codec, packed, n as usize)?;
        write_varuint(&mut block, n);
        block.extend_from_slice(&col);
    }
    if head.left() != 0 {
        return Err(malformed("trailing bytes after the columns"));
    }
    if block.len() != size {
        return Err(malformed(format!(
            "{} bytes of columns, {size} announced",
            block.len()
        )));
    }
    Ok(block)
}

/// `_columnar.compact_decode`: the exact v1 update.
pub fn compact_decode(data: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    compact_decode_parsed(data, limits).map(|(v1, _)| v1)
}

/// `_columnar.compact_decode_parsed`: the exact v1 update and its parse (the
/// decoder's own: every rule of `parse_update` is checked while the columns
/// are read, in the order the Python reference checks them, and the size of
/// the v1 update is counted before it is written). The parse's spans refer
/// to the returned bytes.
pub fn compact_decode_parsed(data: &[u8], limits: &Limits) -> Result<(Vec<u8>, ParsedUpdate)> {
    let mut head = Col::new(data, "header", 0);
    let version = head.byte()?;
    if version != VERSION_WHOLE && version != VERSION_PER_COLUMN {
        return Err(malformed(format!("unknown version {version}")));
    }
    let codec = if version == VERSION_WHOLE {
        head.byte()?
    } else {
        0
    };
    let size = head.uint(64)?;
    if size > limits.max_update_bytes {
        return Err(limit_error(format!(
            "{size} bytes of columns exceed max_update_bytes={}",
            limits.max_update_bytes
        )));
    }
    if size > u32::MAX as u64 {
        // (spans are u32 offsets; no limit set in use comes near this)
        return Err(limit_error(format!("{size} bytes of columns exceed 4 GiB")));
    }
    let block = if version == VERSION_WHOLE {
        decompress(codec, &data[head.pos..], size as usize)?
    } else {
        decompress_columns(&mut head, size as usize)?
    };
    let mut top = Col::new(&block, "block", 0);
    let ncols = top.uint(32)?;
    if ncols != N_COLUMNS as u64 {
        return Err(malformed(format!("{ncols} columns, expected {N_COLUMNS}")));
    }
    let mut cols: Vec<Col> = Vec::with_capacity(N_COLUMNS);
    for name in COLUMN_NAMES {
        let n = top.uint(64)?;
        let base = top.pos;
        let slice = top.take(n)?;
        cols.push(Col::new(slice, name, base));
    }
    if top.left() != 0 {
        return Err(malformed("trailing bytes after the columns"));
    }
    let recent_keys = version == VERSION_PER_COLUMN;
    let (parsed, v1_size) = Rebuild::new(&block, cols, limits, recent_keys).run()?;
    // v1_size was counted against the limits while rebuilding: an exact capacity.
    let (out, parsed) = encode_update_remapped(parsed, &block, v1_size as usize);
    if out.len() as u64 != v1_size {
        return Err(malformed("size count does not match the encoding"));
    }
    Ok((out, parsed))
}

/// The v1 size of a varuint.
#[inline]
fn vlen(v: u64) -> u64 {
    varuint_len(v) as u64
}

/// Rebuilds the parsed update from the columns (`_columnar._rebuild`): the
/// same checks in the same order, so that an input breaking two rules is
/// refused with the same error class as the reference. Spans refer to the
/// column block.
struct Rebuild<'a, 'l> {
    cols: Vec<Col<'a>>,
    limits: &'l Limits,
    /// The client table: id, and the slot of `last_clock` that id uses.
    clients: Vec<(u64, u32)>,
    /// Slot of each distinct client id (looked up once per table entry; a
    /// hostile table may name one id twice, and both entries must share
    /// the reference's per-id state).
    slot_of: HashMap<u64, u32>,
    /// The key table: span in the block and v1 size (varuint length + bytes).
    keys: Vec<(Span, u64)>,
    /// Key references as layout 2 codes them (`Encoder::recent_keys`).
    recent_keys: bool,
    /// Last clock read per client slot (`last_clock` of `_rebuild`, which is
    /// keyed by client id): an index instead of a SipHash per reference,
    /// about 7% of a tree load's decoder.
    last_clock: Vec<i64>,
    /// v1 bytes of what has been rebuilt so far (`_Size`).
    size: u64,
    /// Any/JSON values so far (`_Budget`).
    any_values: u64,
}

/// MRU entries: IDs with clocks in range (checked as they are made).
type Mref = (u64, u32);

fn remember_id(
    mru: &mut Vec<Mref>,
    rmru: &mut Vec<Mref>,
    last: Mref,
    origin: Option<Mref>,
    right: Option<Mref>,
) {
    if let Some(i) = mru.iter().position(|x| *x == last) {
        mru.remove(i);
    }
    mru.insert(0, last);
    if let Some(o) = origin {
        if let Some(i) = mru.iter().position(|x| *x == o) {
            mru.remove(i);
        }
        let at = mru.len().min(1);
        mru.insert(at, o);
    }
    mru.truncate(MRU);
    if let Some(r) = right {
        if let Some(i) = rmru.iter().position(|x| *x == r) {
            rmru.remove(i);
        }
        rmru.insert(0, r);
        rmru.truncate(MRU);
    }
}

impl<'a, 'l> Rebuild<'a, 'l> {
    fn new(_block: &'a [u8], cols: Vec<Col<'a>>, limits: &'l Limits, recent_keys: bool) -> Self {
        Rebuild {
            recent_keys,
            cols,
            limits,
            clients: Vec::new(),
            slot_of: HashMap::new(),
            keys: Vec::new(),
            last_clock: Vec::new(),
            size: 0,
            any_values: 0,
        }
    }

    #[inline]
    fn add(&mut self, n: u64) -> Result<()> {
        self.size += n;
        if self.size > self.limits.max_update_bytes {
            return Err(limit_error(format!(
                "the v1 update would exceed max_update_bytes={}",
                self.limits.max_update_bytes
            )));
        }
        Ok(())
    }

    fn client(&mut self, col: usize) -> Result<u64> {
        Ok(self.client_slot(col)?.0)
    }

    /// A client reference: the id and its `last_clock` slot.
    #[inline]
    fn client_slot(&mut self, col: usize) -> Result<(u64, usize)> {
        let idx = self.cols[col].uint(32)?;
        while idx >= self.clients.len() as u64 {
            if idx > self.clients.len() as u64 {
                return Err(
                    self.cols[col].fail(format!("client index {idx} refers ahead of the table"))
                );
            }
            let c = self.cols[COL_CLIENTS].uint(64)?;
            let next = self.last_clock.len() as u32;
            let slot = *self.slot_of.entry(c).or_insert(next);
            if slot == next {
                self.last_clock.push(0);
            }
            self.clients.push((c, slot));
        }
        let (c, slot) = self.clients[idx as usize];
        Ok((c, slot as usize))
    }

    /// A key (read from the key table on first use); its v1 size is counted.
    fn key(&mut self, col: usize) -> Result<Span> {
        let mut idx = self.cols[col].uint(32)?;
        if self.recent_keys {
            let len = self.keys.len() as u64;
            if idx > len {
                return Err(self.cols[col].fail(format!("key reference {idx} beyond the table")));
            }
            idx = if idx == 0 { len } else { idx - 1 };
        }
        if idx == self.keys.len() as u64 {
            let n = self.cols[COL_KEYS].uint(32)?;
            if n > self.limits.max_key_bytes {
                return Err(limit_error(format!(
                    "key of {n} bytes exceeds max_key_bytes"
                )));
            }
            let span = self.cols[COL_KEYS].text_span(n)?;
            self.keys.push((span, vlen(n) + n));
        } else if idx > self.keys.len() as u64 {
            return Err(self.cols[col].fail(format!("key index {idx} refers ahead of the table")));
        }
        let (span, ksize) = self.keys[idx as usize];
        self.add(ksize)?;
        Ok(span)
    }

    fn ref_clock(&mut self, col: usize, slot: usize, expected: Option<i64>) -> Result<u32> {
        let expected = expected.unwrap_or(self.last_clock[slot]);
        let delta = unzigzag(self.cols[col].uint(64)?);
        let value = expected as i128 + delta;
        if !(0..(1i128 << 32)).contains(&value) {
            return Err(self.cols[col].fail(format!("clock {value} out of range")));
        }
        self.last_clock[slot] = value as i64;
        Ok(value as u32)
    }

    /// `text()` of `_rebuild`: the string limit, the size, then the bytes.
    fn text(&mut self, col: usize, n: u64, what: &str) -> Result<Span> {
        let max_str = self.limits.max_string_bytes;
        if n > max_str {
            return Err(limit_error(format!(
                "{what} of {n} bytes exceeds max_string_bytes={max_str}"
            )));
        }
        self.add(vlen(n) + n)?;
        self.cols[col].text_span(n)
    }

    fn check_json(&self, col: usize, span: Span, what: &str) -> Result<()> {
        let text = &self.cols[col].block_slice(span);
        if json_depth(text) >= self.limits.max_any_depth {
            return Err(limit_error(format!(
                "update exceeds a limit at byte 0: {what} JSON nested deeper than max_any_depth={}",
                self.limits.max_any_depth
            )));
        }
        if !is_valid_json(text, self.limits.int_max_str_digits) {
            return Err(malformed(format!(
                "malformed update at byte 0: {what} is not valid JSON"
            )));
        }
        Ok(())
    }

    /// End of `count` Any values at the misc column's position (as the parser
    /// validates them, sharing the update's value budget).
    fn skip_any_end(&mut self, count: u64) -> Result<usize> {
        let col = &self.cols[COL_MISC];
        skip_any(col.data, col.pos, count, self.limits, &mut self.any_values).map_err(|e| {
            Error::new(
                e.kind,
                format!("compact update: column misc: {}", e.message),
            )
        })
    }

    fn zero(&self, what: &str) -> Error {
        self.cols[COL_INFO].fail(format!("zero-length {what}"))
    }

    fn run(mut self) -> Result<(ParsedUpdate, u64)> {
        let max_clock = self.limits.max_clock;
        let mut mru: Vec<Mref> = Vec::with_capacity(MRU + 2);
        let mut rmru: Vec<Mref> = Vec::with_capacity(MRU + 1);
        let info_left = self.cols[COL_INFO].left();
        let nblocks = self.cols[COL_BLOCKS].count_in(1, Some(info_left))?;
        if nblocks > self.limits.max_clients {
            return Err(limit_error(format!(
                "{nblocks} client blocks exceed max_clients={}",
                self.limits.max_clients
            )));
        }
        self.add(vlen(nblocks))?;
        let mut out: Vec<(u64, Vec<Struct>)> = Vec::with_capacity(nblocks as usize);
        let mut index_of: HashMap<u64, usize> = HashMap::with_capacity(nblocks as usize);
        let mut total: u64 = 0;
        for _ in 0..nblocks {
            let cl = self.client(COL_BLOCKS)?;
            let info_left = self.cols[COL_INFO].left();
            let nstructs = self.cols[COL_BLOCKS].count_in(1, Some(info_left))?;
            if nstructs == 0 {
                return Err(
                    self.cols[COL_BLOCKS].fail(format!("client {cl} has a block with no struct"))
                );
            }
            total += nstructs;
            if total > self.limits.max_structs {
                return Err(limit_error(format!(
                    "more than max_structs={} structs",
                    self.limits.max_structs
                )));
            }
            let clock0 = self.cols[COL_BLOCKS].uint(32)?;
            if clock0 > max_clock {
                return Err(limit_error(format!(
                    "clock {clock0} exceeds max_clock={max_clock}"
                )));
            }
            if index_of.contains_key(&cl) {
                return Err(self.cols[COL_BLOCKS].fail(format!("client {cl} appears twice")));
            }
            self.add(vlen(nstructs) + vlen(cl) + vlen(clock0))?;
            let mut clock: u64 = clock0;
            let mut structs: Vec<Struct> = Vec::with_capacity(nstructs as usize);
            for _ in 0..nstructs {
                let info = self.cols[COL_INFO].byte()?;
                if info == STRUCT_GC || info == STRUCT_SKIP {
                    let length = self.cols[COL_LENGTHS].uint(32)?;
                    if length == 0 {
                        return Err(self.zero(if info == STRUCT_GC { "GC" } else { "Skip" }));
                    }
                    self.add(1 + vlen(length))?;
                    structs.push(Struct {
                        client: cl,
                        clock: clock as u32,
                        length: length as u32,
                        kind: info,
                        info,
                        origin: None,
                        right_origin: None,
                        parent: Parent::Inherited,
                        parent_sub: None,
                        content: Content::None,
                    });
                    clock += length;
                    if clock > max_clock {
                        return Err(limit_error(format!("clock exceeds max_clock={max_clock}")));
                    }
                    continue;
                }
                let kind = info & CONTENT_MASK;
                if kind == STRUCT_GC || kind > CONTENT_DOC {
                    return Err(self.cols[COL_INFO].fail(format!(
                        "unknown content ref {kind} (info byte {info:#04x})"
                    )));
                }
                let mut origin: Option<Mref> = None;
                let mut right: Option<Mref> = None;
                let mut parent = Parent::Inherited;
                let mut parent_sub: Option<Span> = None;
                let mut n: u64 = 1; // the info byte
                if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) != 0 {
                    let sel = self.cols[COL_INFO].byte()?;
                    let (osel, rsel) = (sel / 10, sel % 10);
                    if osel > 9
                        || (osel != 0 && info & HAS_ORIGIN == 0)
                        || (rsel != 0 && info & HAS_RIGHT_ORIGIN == 0)
                    {
                        return Err(self.cols[COL_INFO]
                            .fail(format!("bad selector {sel} for info {info:#04x}")));
                    }
                    if info & HAS_ORIGIN != 0 {
                        let o = if osel == SEL_CONTINUE {
                            if clock == 0 {
                                return Err(self.cols[COL_INFO].fail("continuation at clock 0"));
                            }
                            (cl, (clock - 1) as u32)
                        } else if osel == SEL_EXPLICIT {
                            let (oc, slot) = self.client_slot(COL_ORIGIN)?;
                            (oc, self.ref_clock(COL_ORIGIN, slot, None)?)
                        } else if (osel as usize) < mru.len() {
                            mru[osel as usize]
                        } else {
                            return Err(self.cols[COL_INFO]
                                .fail(format!("origin selector {osel} beyond the MRU list")));
                        };
                        n += vlen(o.0) + vlen(o.1 as u64);
                        origin = Some(o);
                    }
                    if info & HAS_RIGHT_ORIGIN != 0 {
                        let r = if rsel == SEL_AFTER_ORIGIN {
                            let Some(o) = origin else {
                                return Err(
                                    self.cols[COL_INFO].fail("right origin after a missing origin")
                                );
                            };
                            if o.1 as u64 + 1 >= 1 << 32 {
                                return Err(
                                    self.cols[COL_INFO].fail("right origin clock out of range")
                                );
                            }
                            (o.0, o.1 + 1)
                        } else if rsel == SEL_EXPLICIT {
                            let (rc, slot) = self.client_slot(COL_RIGHT)?;
                            let expected = origin.filter(|o| o.0 == rc).map(|o| o.1 as i64 + 1);
                            (rc, self.ref_clock(COL_RIGHT, slot, expected)?)
                        } else if (rsel as usize) < rmru.len() {
                            rmru[rsel as usize]
                        } else {
                            return Err(self.cols[COL_INFO].fail(format!(
                                "right origin selector {rsel} beyond the MRU list"
                            )));
                        };
                        n += vlen(r.0) + vlen(r.1 as u64);
                        right = Some(r);
                    }
                }
                if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                    let flag = self.cols[COL_PARENT].byte()?;
                    n += 1;
                    if flag == 1 {
                        parent = Parent::Root(self.key(COL_PARENT)?);
                    } else if flag == 0 {
                        let (pc, slot) = self.client_slot(COL_PARENT)?;
                        let pk = self.ref_clock(COL_PARENT, slot, None)?;
                        n += vlen(pc) + vlen(pk as u64);
                        parent = Parent::Item((pc, pk));
                    } else {
                        return Err(self.cols[COL_PARENT].fail(format!("bad parent flag {flag}")));
                    }
                    if info & HAS_PARENT_SUB != 0 {
                        parent_sub = Some(self.key(COL_PARENT)?);
                    }
                }
                let (length, content, extra) = self.content(kind)?;
                n += extra;
                self.add(n)?;
                structs.push(Struct {
                    client: cl,
                    clock: clock as u32,
                    length: length as u32,
                    kind,
                    info,
                    origin,
                    right_origin: right,
                    parent,
                    parent_sub,
                    content,
                });
                clock += length;
                if clock > max_clock {
                    return Err(limit_error(format!("clock exceeds max_clock={max_clock}")));
                }
                remember_id(&mut mru, &mut rmru, (cl, (clock - 1) as u32), origin, right);
            }
            index_of.insert(cl, out.len());
            out.push((cl, structs));
        }
        // Delete set.
        let nds = self.cols[COL_DELETES].count_in(2, None)?; // client index + mode byte at least
        if nds > self.limits.max_clients {
            return Err(limit_error(format!(
                "{nds} delete-set clients exceed max_clients={}",
                self.limits.max_clients
            )));
        }
        self.add(vlen(nds))?;
        let mut delete_set: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut total_ranges: u64 = 0;
        for _ in 0..nds {
            let cl = self.client(COL_DELETES)?;
            if seen.contains(&cl) {
                return Err(self.cols[COL_DELETES].fail(format!("client {cl} appears twice")));
            }
            let mode = self.cols[COL_DELETES].byte()?;
            let ranges: Vec<(u32, u32)> = if mode == 0 {
                let implied = match index_of.get(&cl) {
                    Some(&i) => implied_deletes(
                        out[i]
                            .1
                            .iter()
                            .map(|s| (s.kind, s.clock as i64, s.end() as i64)),
                    ),
                    None => Vec::new(),
                };
                implied
                    .into_iter()
                    .map(|(a, b)| (a as u32, b as u32))
                    .collect()
            } else if mode == 1 {
                let count = self.cols[COL_DELETES].count_in(2, None)?;
                let mut ranges = Vec::with_capacity(count as usize);
                let mut end: u64 = 0;
                for _ in 0..count {
                    let clock = end + self.cols[COL_DELETES].uint(32)?;
                    let length = self.cols[COL_DELETES].uint(32)?;
                    if length == 0 {
                        return Err(self.cols[COL_DELETES]
                            .fail(format!("empty delete range for client {cl}")));
                    }
                    end = clock + length;
                    if end > max_clock {
                        return Err(limit_error(format!(
                            "delete range of client {cl} exceeds max_clock"
                        )));
                    }
                    ranges.push((clock as u32, length as u32));
                }
                ranges
            } else {
                return Err(self.cols[COL_DELETES].fail(format!("bad delete-set mode {mode}")));
            };
            if ranges.is_empty() {
                return Err(self.cols[COL_DELETES].fail(format!("client {cl} has no delete range")));
            }
            total_ranges += ranges.len() as u64;
            if total_ranges > self.limits.max_delete_ranges {
                return Err(limit_error(format!(
                    "more than max_delete_ranges={} ranges",
                    self.limits.max_delete_ranges
                )));
            }
            let mut n = vlen(cl) + vlen(ranges.len() as u64);
            for &(a, b) in &ranges {
                n += vlen(a as u64) + vlen(b as u64);
            }
            self.add(n)?;
            seen.insert(cl);
            delete_set.push((cl, ranges));
        }
        for col in &self.cols {
            if col.left() != 0 {
                return Err(col.fail("unused bytes"));
            }
        }
        Ok((
            ParsedUpdate {
                clients: out,
                delete_set,
                ds_pos: 0,
            },
            self.size,
        ))
    }

    /// Reads one item's content: (length, content, v1 bytes not counted yet).
    fn content(&mut self, kind: u8) -> Result<(u64, Content, u64)> {
        match kind {
            CONTENT_STRING => {
                let nbytes = self.cols[COL_LENGTHS].uint(32)?;
                if nbytes == 0 {
                    return Err(self.zero("String item"));
                }
                let span = self.text(COL_TEXT, nbytes, "string")?;
                let length = utf16_len(self.cols[COL_TEXT].block_slice(span));
                Ok((length, Content::String(span), 0))
            }
            CONTENT_DELETED => {
                let length = self.cols[COL_LENGTHS].uint(32)?;
                if length == 0 {
                    return Err(self.zero("Deleted item"));
                }
                Ok((length, Content::None, vlen(length)))
            }
            CONTENT_ANY => {
                let count = self.cols[COL_MISC].count_in(1, None)?;
                if count == 0 {
                    return Err(self.zero("Any item"));
                }
                let start = self.cols[COL_MISC].pos;
                let end = self.skip_any_end(count)?;
                let misc = &mut self.cols[COL_MISC];
                misc.pos = end;
                let raw = misc.span(start, end);
                Ok((
                    count,
                    Content::Any {
                        n: count as u32,
                        raw,
                    },
                    vlen(count) + (end - start) as u64,
                ))
            }
            CONTENT_TYPE => {
                let tr = self.cols[COL_MISC].uint(32)?;
                let extra = vlen(tr);
                let name = if tr == TYPE_XML_ELEMENT || tr == TYPE_XML_HOOK {
                    Some(self.key(COL_MISC)?)
                } else if tr > TYPE_XML_TEXT {
                    return Err(self.cols[COL_MISC].fail(format!("unknown type ref {tr}")));
                } else {
                    None
                };
                Ok((
                    1,
                    Content::Type {
                        type_ref: tr as u32,
                        name,
                    },
                    extra,
                ))
            }
            CONTENT_BINARY => {
                let blen = self.cols[COL_MISC].uint(32)?;
                if blen > self.limits.max_string_bytes {
                    return Err(limit_error(format!(
                        "binary of {blen} bytes exceeds max_string_bytes"
                    )));
                }
                let misc = &mut self.cols[COL_MISC];
                let start = misc.pos;
                misc.take(blen)?;
                let span = misc.span(start, misc.pos);
                Ok((1, Content::Binary(span), vlen(blen) + blen))
            }
            CONTENT_FORMAT => {
                let key = self.key(COL_MISC)?;
                let n = self.cols[COL_MISC].uint(32)?;
                let value = self.text(COL_MISC, n, "format value")?;
                self.check_json(COL_MISC, value, "format value")?;
                Ok((1, Content::Format { key, value }, 0))
            }
            CONTENT_EMBED => {
                let n = self.cols[COL_MISC].uint(32)?;
                let t = self.text(COL_MISC, n, "embed")?;
                self.check_json(COL_MISC, t, "embed")?;
                Ok((1, Content::Embed(t), 0))
            }
            CONTENT_JSON => {
                let count = self.cols[COL_MISC].count_in(1, None)?;
                if count == 0 {
                    return Err(self.zero("JSON item"));
                }
                self.any_values += count;
                if self.any_values > self.limits.max_any_values {
                    return Err(limit_error(format!(
                        "more than max_any_values={}",
                        self.limits.max_any_values
                    )));
                }
                let mut texts = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let n = self.cols[COL_MISC].uint(32)?;
                    let t = self.text(COL_MISC, n, "JSON value")?;
                    if self.cols[COL_MISC].block_slice(t) != b"undefined" {
                        self.check_json(COL_MISC, t, "JSON content")?;
                    }
                    texts.push(t);
                }
                Ok((count, Content::Json(texts), vlen(count)))
            }
            _ => {
                // CONTENT_DOC
                let guid = self.key(COL_MISC)?;
                let start = self.cols[COL_MISC].pos;
                let end = self.skip_any_end(1)?;
                let misc = &mut self.cols[COL_MISC];
                misc.pos = end;
                let options = misc.span(start, end);
                Ok((1, Content::Doc { guid, options }, (end - start) as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_update() -> Vec<u8> {
        // client 5: a root-map entry "k" = Any [1, "x"], a text root with
        // "héllo", a continuation, a Deleted item; a delete set.
        let mut u = vec![1, 4, 5, 0];
        u.extend([
            0x28,
            1,
            1,
            b'm',
            1,
            b'k',
            1,
            ANY_ARRAY_TAG,
            2,
            0x7d,
            1,
            0x77,
            1,
            b'x',
        ]);
        u.extend([4, 1, 1, b't', 6]);
        u.extend("héllo".as_bytes());
        u.extend([0x84, 5, 5, 2, b'!', b'?']);
        u.extend([0x81, 5, 7, 3]);
        u.extend([1, 5, 1, 8, 3]);
        u
    }

    const ANY_ARRAY_TAG: u8 = 117;

    #[test]
    fn round_trip() {
        let v1 = sample_update();
        let l = Limits::default();
        parse_update(&v1, &l).unwrap();
        let packed = compact_encode(&v1, &l).unwrap();
        assert_eq!(packed[0], VERSION_WHOLE);
        assert_eq!(compact_decode(&packed, &l).unwrap(), v1);
    }

    /// A text root typed into one character at a time, `n` items: a column
    /// block over `PER_COLUMN_MIN` for n in the thousands.
    fn typed_update(n: u32) -> Vec<u8> {
        let mut u = vec![1];
        write_varuint(&mut u, n as u64);
        u.extend([7, 0]);
        u.extend([4, 1, 1, b't', 1, b'a']);
        for i in 1..n {
            // String item with an origin (7, i - 1): "b".."z" by turn.
            u.extend([0x84, 7]);
            write_varuint(&mut u, (i - 1) as u64);
            u.extend([1, b'a' + (i % 26) as u8]);
        }
        u.push(0);
        u
    }

    #[test]
    fn layout_2_round_trip_and_choice() {
        let l = Limits::default();
        let v1 = typed_update(12_000);
        parse_update(&v1, &l).unwrap();
        let packed = compact_encode(&v1, &l).unwrap();
        assert_eq!(packed[0], VERSION_PER_COLUMN);
        assert_eq!(compact_decode(&packed, &l).unwrap(), v1);
        // stored, LZMA and zstd as the sizes say
        assert_eq!(pack_column(&[]).0, CODEC_STORED);
        assert_eq!(pack_column(&[1]).0, CODEC_STORED);
        // (the same bytes as test_columnar's: LZMA far ahead of zstd on them)
        let mut regular: Vec<u8> = (0..64).flat_map(|_| 0..=255u8).collect();
        regular.extend((0..20_000u32).map(|i| (i * 7 % 251) as u8));
        assert_eq!(pack_column(&regular).0 & 3, CODEC_LZMA);
    }

    #[test]
    fn layout_2_hostile_headers() {
        let l = Limits::default();
        let v1 = typed_update(12_000);
        let packed = compact_encode(&v1, &l).unwrap();
        // truncated anywhere: malformed, never a panic
        for cut in [1, 2, 5, packed.len() / 2, packed.len() - 1] {
            assert_eq!(
                compact_decode(&packed[..cut], &l).unwrap_err().kind,
                ErrorKind::Malformed
            );
        }
        let mut trailing = packed.clone();
        trailing.push(0);
        assert_eq!(
            compact_decode(&trailing, &l).unwrap_err().kind,
            ErrorKind::Malformed
        );
        // announcing more than the limit is refused before decompressing
        let tight = Limits {
            max_update_bytes: 1000,
            ..Limits::default()
        };
        assert_eq!(
            compact_decode(&packed, &tight).unwrap_err().kind,
            ErrorKind::Limit
        );
        // a column announcing more than the announced block
        let mut over = vec![VERSION_PER_COLUMN, 12];
        for i in 0..N_COLUMNS {
            over.extend([CODEC_STORED, if i == 0 { 100 } else { 0 }, 0]);
        }
        let err = compact_decode(&over, &l).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(
            err.message.contains("exceeds the announced size"),
            "{}",
            err.message
        );
    }

    #[test]
    fn implied_delete_set_costs_one_byte() {
        let ranges = implied_deletes(
            [
                (0u8, 0i64, 2i64),
                (1, 2, 5),
                (4, 5, 6),
                (1, 6, 7),
                (10, 7, 9),
                (1, 9, 10),
            ]
            .into_iter(),
        );
        assert_eq!(ranges, vec![(0, 5), (6, 1), (9, 1)]);
    }

    #[test]
    fn header_errors() {
        let l = Limits::default();
        assert_eq!(
            compact_decode(&[], &l).unwrap_err().kind,
            ErrorKind::Malformed
        );
        assert_eq!(
            compact_decode(&[2, 0, 0], &l).unwrap_err().kind,
            ErrorKind::Malformed
        );
        // codec 3, a dictionary size on a non-LZMA codec, a bad dictionary size
        for codec in [3u8, 4, 1 | (5 << 2), 1 | (27 << 2)] {
            assert_eq!(
                compact_decode(&[1, codec, 0], &l).unwrap_err().kind,
                ErrorKind::Malformed
            );
        }
        // a size above the limit is refused before anything else
        let mut big = vec![1, 0];
        write_varuint(&mut big, l.max_update_bytes + 1);
        assert_eq!(compact_decode(&big, &l).unwrap_err().kind, ErrorKind::Limit);
    }

    /// A column block whose `n` Deleted items all name one `key_len`-byte root.
    fn key_bomb(key_len: usize, n: usize) -> Vec<u8> {
        let mut cols: Vec<Vec<u8>> = vec![Vec::new(); N_COLUMNS];
        cols[COL_CLIENTS] = vec![1];
        cols[COL_BLOCKS] = vec![1, 0];
        write_varuint(&mut cols[COL_BLOCKS], n as u64);
        cols[COL_BLOCKS].push(0);
        cols[COL_INFO] = vec![CONTENT_DELETED; n];
        cols[COL_PARENT] = [1u8, 0].repeat(n);
        write_varuint(&mut cols[COL_KEYS], key_len as u64);
        cols[COL_KEYS].extend(std::iter::repeat(b'k').take(key_len));
        cols[COL_LENGTHS] = vec![1; n];
        cols[COL_DELETES] = vec![0];
        let mut block = vec![N_COLUMNS as u8];
        for c in &cols {
            write_varuint(&mut block, c.len() as u64);
            block.extend_from_slice(c);
        }
        let mut out = vec![VERSION_WHOLE, CODEC_STORED];
        write_varuint(&mut out, block.len() as u64);
        out.extend(block);
        out
    }

    #[test]
    fn key_bomb_is_refused_within_the_budget() {
        let mut l = Limits::default();
        // fits: decodes
        l.max_update_bytes = 1 << 20;
        let v1 = compact_decode(&key_bomb(100, 50), &l).unwrap();
        assert!(v1.len() > 5000);
        // 64 KiB x 2000 = 128 MiB of output against a 1 MiB budget
        let e = compact_decode(&key_bomb(65536, 2000), &l).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Limit);
        assert!(
            e.message.contains("would exceed max_update_bytes"),
            "{}",
            e.message
        );
    }

    #[test]
    fn negative_clock_from_the_mru_is_malformed() {
        // A zero-length String at clock 0 puts (client, -1) in the MRU list;
        // the next item's origin selects it: Python's encoder cannot write it.
        let mut cols: Vec<Vec<u8>> = vec![Vec::new(); N_COLUMNS];
        cols[COL_CLIENTS] = vec![1];
        cols[COL_BLOCKS] = vec![1, 0, 2, 0];
        cols[COL_INFO] = vec![CONTENT_STRING, 0x80 | CONTENT_STRING, 0];
        cols[COL_PARENT] = vec![1, 0];
        cols[COL_KEYS] = vec![1, b't'];
        cols[COL_LENGTHS] = vec![0, 1];
        cols[COL_TEXT] = vec![b'a'];
        cols[COL_DELETES] = vec![0];
        let mut block = vec![N_COLUMNS as u8];
        for c in &cols {
            write_varuint(&mut block, c.len() as u64);
            block.extend_from_slice(c);
        }
        let mut data = vec![VERSION_WHOLE, CODEC_STORED, block.len() as u8];
        data.extend(block);
        let e = compact_decode(&data, &Limits::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed);
    }
}
