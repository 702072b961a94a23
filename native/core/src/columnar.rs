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
use crate::limits::Limits;
use crate::update::{
    parse_update, skip_any, utf16_len, Content, Parent, ParsedUpdate, Struct, CONTENT_ANY,
    CONTENT_BINARY, CONTENT_DELETED, CONTENT_DOC, CONTENT_EMBED, CONTENT_FORMAT, CONTENT_JSON,
    CONTENT_STRING, CONTENT_TYPE, HAS_ORIGIN, HAS_PARENT_SUB, HAS_RIGHT_ORIGIN, STRUCT_GC,
    STRUCT_SKIP,
};
use crate::varint::{varuint_len, write_varuint};

pub const VERSION: u8 = 1;
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
        write_varuint(&mut self.cols[col], idx);
    }

    fn ref_clock(&mut self, col: usize, client: u64, clock: i64, expected: Option<i64>) {
        let expected = expected.unwrap_or_else(|| *self.last_clock.get(&client).unwrap_or(&0));
        write_varuint(&mut self.cols[col], zigzag(clock - expected));
        self.last_clock.insert(client, clock);
    }

    fn encode(mut self, parsed: &ParsedUpdate) -> Vec<u8> {
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
        let total: usize = self.cols.iter().map(|c| c.len() + 10).sum();
        let mut block = Vec::with_capacity(total + 1);
        write_varuint(&mut block, N_COLUMNS as u64);
        for col in &self.cols {
            write_varuint(&mut block, col.len() as u64);
            block.extend_from_slice(col);
        }
        block
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

/// Builds the column block of a parsed update (`_columnar._Encoder.encode`).
pub fn encode_columns(parsed: &ParsedUpdate, data: &[u8]) -> Vec<u8> {
    Encoder {
        data,
        cols: Default::default(),
        client_index: HashMap::new(),
        key_index: HashMap::new(),
        last_clock: HashMap::new(),
    }
    .encode(parsed)
}

/// `_columnar.compact_encode`: parses `v1` with `limits` (the Python
/// reference uses the default limits) and writes the compact format.
pub fn compact_encode(v1: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    let parsed = parse_update(v1, limits)?;
    let block = encode_columns(&parsed, v1);
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
    out.push(VERSION);
    out.push(codec);
    write_varuint(&mut out, block.len() as u64);
    out.extend_from_slice(best);
    Ok(out)
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
}

impl<'a> Col<'a> {
    fn new(data: &'a [u8], name: &'static str) -> Self {
        Col { data, pos: 0, name }
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

/// `_columnar.compact_decode`: the exact v1 update, re-parsed under `limits`.
pub fn compact_decode(data: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    let mut head = Col::new(data, "header");
    let version = head.byte()?;
    if version != VERSION {
        return Err(malformed(format!("unknown version {version}")));
    }
    let codec = head.byte()?;
    let size = head.uint(64)?;
    if size > limits.max_update_bytes {
        return Err(limit_error(format!(
            "{size} bytes of columns exceed max_update_bytes={}",
            limits.max_update_bytes
        )));
    }
    let block = decompress(codec, &data[head.pos..], size as usize)?;
    let mut top = Col::new(&block, "block");
    let ncols = top.uint(32)?;
    if ncols != N_COLUMNS as u64 {
        return Err(malformed(format!("{ncols} columns, expected {N_COLUMNS}")));
    }
    let mut slices: Vec<&[u8]> = Vec::with_capacity(N_COLUMNS);
    for _ in 0..N_COLUMNS {
        let n = top.uint(64)?;
        slices.push(top.take(n)?);
    }
    if top.left() != 0 {
        return Err(malformed("trailing bytes after the columns"));
    }
    let out = Rebuild::new(&slices, limits).run()?;
    // Re-parse: whatever we return is an update parse_update accepts under
    // the caller's limits (depth of Any values, keys, clocks...).
    parse_update(&out, limits)?;
    Ok(out)
}

/// The v1 output, written while the columns are read; sized but no longer
/// written once past the budget.
struct Out {
    buf: Vec<u8>,
    size: u64,
    cap: u64,
    /// A value the Python encoder cannot write (a negative clock): its
    /// `encode_update` raises, which `compact_decode` reports as malformed.
    unencodable: bool,
}

impl Out {
    /// Counts `n` more bytes; true if they are within the budget (and room
    /// for them is reserved, never more than the budget in all).
    #[inline]
    fn fits(&mut self, n: usize) -> bool {
        self.size += n as u64;
        if self.size > self.cap {
            return false;
        }
        let need = self.buf.len() + n;
        if need > self.buf.capacity() {
            // Grow by doubling like Vec would, but never past the budget.
            let want = (self.buf.capacity() * 2).max(need).min(self.cap as usize);
            self.buf.reserve_exact(want - self.buf.len());
        }
        true
    }
    #[inline]
    fn put(&mut self, v: u64) {
        if self.fits(varuint_len(v)) {
            write_varuint(&mut self.buf, v);
        }
    }
    #[inline]
    fn put_i(&mut self, v: i64) {
        if v < 0 {
            self.unencodable = true;
        } else {
            self.put(v as u64);
        }
    }
    #[inline]
    fn byte(&mut self, b: u8) {
        if self.fits(1) {
            self.buf.push(b);
        }
    }
    #[inline]
    fn raw(&mut self, b: &[u8]) {
        if self.fits(b.len()) {
            self.buf.extend_from_slice(b);
        }
    }
    #[inline]
    fn sized(&mut self, b: &[u8]) {
        self.put(b.len() as u64);
        self.raw(b);
    }
}

struct Rebuild<'a, 'l> {
    cols: Vec<Col<'a>>,
    limits: &'l Limits,
    clients: Vec<u64>,
    keys: Vec<&'a [u8]>,
    last_clock: HashMap<u64, i64>,
    out: Out,
}

impl<'a, 'l> Rebuild<'a, 'l> {
    fn new(slices: &[&'a [u8]], limits: &'l Limits) -> Self {
        let cols = slices
            .iter()
            .zip(COLUMN_NAMES)
            .map(|(s, name)| Col::new(s, name))
            .collect();
        let cap = limits.max_update_bytes;
        Rebuild {
            cols,
            limits,
            clients: Vec::new(),
            keys: Vec::new(),
            last_clock: HashMap::new(),
            out: Out {
                buf: Vec::with_capacity(
                    slices
                        .iter()
                        .map(|s| s.len())
                        .sum::<usize>()
                        .min(cap as usize),
                ),
                size: 0,
                cap,
                unencodable: false,
            },
        }
    }

    fn client(&mut self, col: usize) -> Result<u64> {
        let idx = self.cols[col].uint(32)?;
        while idx >= self.clients.len() as u64 {
            if idx > self.clients.len() as u64 {
                return Err(
                    self.cols[col].fail(format!("client index {idx} refers ahead of the table"))
                );
            }
            let c = self.cols[COL_CLIENTS].uint(64)?;
            self.clients.push(c);
        }
        Ok(self.clients[idx as usize])
    }

    fn key(&mut self, col: usize) -> Result<&'a [u8]> {
        let idx = self.cols[col].uint(32)?;
        if idx == self.keys.len() as u64 {
            let n = self.cols[COL_KEYS].uint(32)?;
            if n > self.limits.max_key_bytes {
                return Err(limit_error(format!(
                    "key of {n} bytes exceeds max_key_bytes"
                )));
            }
            let k = self.cols[COL_KEYS].text(n)?;
            self.keys.push(k);
        } else if idx > self.keys.len() as u64 {
            return Err(self.cols[col].fail(format!("key index {idx} refers ahead of the table")));
        }
        Ok(self.keys[idx as usize])
    }

    fn ref_clock(&mut self, col: usize, cl: u64, expected: Option<i64>) -> Result<i64> {
        let expected = expected.unwrap_or_else(|| *self.last_clock.get(&cl).unwrap_or(&0));
        let delta = unzigzag(self.cols[col].uint(64)?);
        let value = expected as i128 + delta;
        if !(0..(1i128 << 32)).contains(&value) {
            return Err(self.cols[col].fail(format!("clock {value} out of range")));
        }
        self.last_clock.insert(cl, value as i64);
        Ok(value as i64)
    }

    fn skip_any_end(&mut self, count: u64) -> Result<usize> {
        let col = &self.cols[COL_MISC];
        let mut budget = 0u64;
        skip_any(col.data, col.pos, count, self.limits, &mut budget).map_err(|e| {
            Error::new(
                ErrorKind::Malformed,
                format!("compact update: column misc: {}", e.message),
            )
        })
    }

    fn run(mut self) -> Result<Vec<u8>> {
        let mut mru: Vec<Ref> = Vec::with_capacity(MRU + 2);
        let mut rmru: Vec<Ref> = Vec::with_capacity(MRU + 1);
        // Per client with a block: (kind, clock, end) of its GC/Deleted
        // structs, for delete-set mode 0.
        let mut gc_deleted: HashMap<u64, Vec<(u8, i64, i64)>> = HashMap::new();
        let info_left = self.cols[COL_INFO].left();
        let nblocks = self.cols[COL_BLOCKS].count_in(1, Some(info_left))?;
        self.out.put(nblocks);
        let mut total: u64 = 0;
        for _ in 0..nblocks {
            let cl = self.client(COL_BLOCKS)?;
            let info_left = self.cols[COL_INFO].left();
            let nstructs = self.cols[COL_BLOCKS].count_in(1, Some(info_left))?;
            total += nstructs;
            if total > self.limits.max_structs {
                return Err(limit_error(format!(
                    "more than max_structs={} structs",
                    self.limits.max_structs
                )));
            }
            let mut clock = self.cols[COL_BLOCKS].uint(32)? as i64;
            if gc_deleted.contains_key(&cl) {
                return Err(self.cols[COL_BLOCKS].fail(format!("client {cl} appears twice")));
            }
            let mine = gc_deleted.entry(cl).or_default();
            let mut mine = std::mem::take(mine);
            self.out.put(nstructs);
            self.out.put(cl);
            self.out.put(if nstructs > 0 { clock as u64 } else { 0 });
            for _ in 0..nstructs {
                let info = self.cols[COL_INFO].byte()?;
                if info == STRUCT_GC || info == STRUCT_SKIP {
                    let length = self.cols[COL_LENGTHS].uint(32)? as i64;
                    self.out.byte(info);
                    self.out.put(length as u64);
                    if info == STRUCT_GC {
                        mine.push((STRUCT_GC, clock, clock + length));
                    }
                    clock += length;
                    continue;
                }
                let kind = info & 0x1F;
                let mut origin: Option<Ref> = None;
                let mut right: Option<Ref> = None;
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
                        origin = Some(if osel == SEL_CONTINUE {
                            if clock == 0 {
                                return Err(self.cols[COL_INFO].fail("continuation at clock 0"));
                            }
                            (cl, clock - 1)
                        } else if osel == SEL_EXPLICIT {
                            let oc = self.client(COL_ORIGIN)?;
                            (oc, self.ref_clock(COL_ORIGIN, oc, None)?)
                        } else if (osel as usize) < mru.len() {
                            mru[osel as usize]
                        } else {
                            return Err(self.cols[COL_INFO]
                                .fail(format!("origin selector {osel} beyond the MRU list")));
                        });
                    }
                    if info & HAS_RIGHT_ORIGIN != 0 {
                        right = Some(if rsel == SEL_AFTER_ORIGIN {
                            let Some(o) = origin else {
                                return Err(
                                    self.cols[COL_INFO].fail("right origin after a missing origin")
                                );
                            };
                            (o.0, o.1 + 1)
                        } else if rsel == SEL_EXPLICIT {
                            let rc = self.client(COL_RIGHT)?;
                            let expected = origin.filter(|o| o.0 == rc).map(|o| o.1 + 1);
                            (rc, self.ref_clock(COL_RIGHT, rc, expected)?)
                        } else if (rsel as usize) < rmru.len() {
                            rmru[rsel as usize]
                        } else {
                            return Err(self.cols[COL_INFO].fail(format!(
                                "right origin selector {rsel} beyond the MRU list"
                            )));
                        });
                    }
                }
                // v1: info, origin, right origin (what encode_update writes).
                self.out.byte(info);
                if let Some(o) = origin {
                    self.out.put(o.0);
                    self.out.put_i(o.1);
                }
                if let Some(r) = right {
                    self.out.put(r.0);
                    self.out.put_i(r.1);
                }
                if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                    let flag = self.cols[COL_PARENT].byte()?;
                    if flag == 1 {
                        let name = self.key(COL_PARENT)?;
                        self.out.byte(1);
                        self.out.sized(name);
                    } else if flag == 0 {
                        let pc = self.client(COL_PARENT)?;
                        let pk = self.ref_clock(COL_PARENT, pc, None)?;
                        self.out.byte(0);
                        self.out.put(pc);
                        self.out.put_i(pk);
                    } else {
                        return Err(self.cols[COL_PARENT].fail(format!("bad parent flag {flag}")));
                    }
                    if info & HAS_PARENT_SUB != 0 {
                        let key = self.key(COL_PARENT)?;
                        self.out.sized(key);
                    }
                }
                let length: i64 = self.content(kind)?;
                if kind == CONTENT_DELETED {
                    mine.push((CONTENT_DELETED, clock, clock + length));
                }
                clock += length;
                remember(&mut mru, &mut rmru, (cl, clock - 1), origin, right);
            }
            gc_deleted.insert(cl, mine);
        }
        // Delete set.
        let nds = self.cols[COL_DELETES].count_in(2, None)?; // client index + mode byte at least
        self.out.put(nds);
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for _ in 0..nds {
            let cl = self.client(COL_DELETES)?;
            let mode = self.cols[COL_DELETES].byte()?;
            if mode == 0 {
                if !seen.insert(cl) {
                    return Err(self.cols[COL_DELETES].fail(format!("client {cl} appears twice")));
                }
                let ranges = implied_deletes(
                    gc_deleted
                        .get(&cl)
                        .map(|v| v.iter().copied())
                        .into_iter()
                        .flatten(),
                );
                self.out.put(cl);
                self.out.put(ranges.len() as u64);
                for (clock, length) in ranges {
                    self.out.put_i(clock);
                    self.out.put_i(length);
                }
                continue;
            }
            if mode != 1 {
                return Err(self.cols[COL_DELETES].fail(format!("bad delete-set mode {mode}")));
            }
            let n = self.cols[COL_DELETES].count_in(2, None)?;
            self.out.put(cl);
            self.out.put(n);
            let mut end: i64 = 0;
            for _ in 0..n {
                let clock = end + self.cols[COL_DELETES].uint(32)? as i64;
                let length = self.cols[COL_DELETES].uint(32)? as i64;
                self.out.put_i(clock);
                self.out.put_i(length);
                end = clock + length;
            }
            if !seen.insert(cl) {
                return Err(self.cols[COL_DELETES].fail(format!("client {cl} appears twice")));
            }
        }
        for col in &self.cols {
            if col.left() != 0 {
                return Err(col.fail("unused bytes"));
            }
        }
        if self.out.unencodable {
            return Err(malformed("inconsistent data (a negative clock)"));
        }
        if self.out.size > self.limits.max_update_bytes {
            return Err(limit_error(format!(
                "rebuilt update exceeds max_update_bytes={}",
                self.limits.max_update_bytes
            )));
        }
        Ok(self.out.buf)
    }

    /// Reads one item's content and writes it; returns the item's length.
    fn content(&mut self, kind: u8) -> Result<i64> {
        match kind {
            CONTENT_STRING => {
                let n = self.cols[COL_LENGTHS].uint(32)?;
                let t = self.cols[COL_TEXT].text(n)?;
                self.out.sized(t);
                Ok(utf16_len(t) as i64)
            }
            CONTENT_DELETED => {
                let length = self.cols[COL_LENGTHS].uint(32)?;
                self.out.put(length);
                Ok(length as i64)
            }
            CONTENT_ANY => {
                let count = self.cols[COL_MISC].count_in(1, None)?;
                let start = self.cols[COL_MISC].pos;
                let end = self.skip_any_end(count)?;
                let misc = &mut self.cols[COL_MISC];
                misc.pos = end;
                let raw = &misc.data[start..end];
                self.out.put(count);
                self.out.raw(raw);
                Ok(count as i64)
            }
            CONTENT_TYPE => {
                let tr = self.cols[COL_MISC].uint(32)?;
                self.out.put(tr);
                if tr == 3 || tr == 5 {
                    let name = self.key(COL_MISC)?;
                    self.out.sized(name);
                }
                Ok(1)
            }
            CONTENT_BINARY => {
                let n = self.cols[COL_MISC].uint(32)?;
                let b = self.cols[COL_MISC].take(n)?;
                self.out.sized(b);
                Ok(1)
            }
            CONTENT_FORMAT => {
                let k = self.key(COL_MISC)?;
                let n = self.cols[COL_MISC].uint(32)?;
                let v = self.cols[COL_MISC].text(n)?;
                self.out.sized(k);
                self.out.sized(v);
                Ok(1)
            }
            CONTENT_EMBED => {
                let n = self.cols[COL_MISC].uint(32)?;
                let t = self.cols[COL_MISC].text(n)?;
                self.out.sized(t);
                Ok(1)
            }
            CONTENT_JSON => {
                let n = self.cols[COL_MISC].count_in(1, None)?;
                self.out.put(n);
                for _ in 0..n {
                    let len = self.cols[COL_MISC].uint(32)?;
                    let t = self.cols[COL_MISC].text(len)?;
                    self.out.sized(t);
                }
                Ok(n as i64)
            }
            CONTENT_DOC => {
                let guid = self.key(COL_MISC)?;
                let start = self.cols[COL_MISC].pos;
                let end = self.skip_any_end(1)?;
                let misc = &mut self.cols[COL_MISC];
                misc.pos = end;
                let raw = &misc.data[start..end];
                self.out.sized(guid);
                self.out.raw(raw);
                Ok(1)
            }
            _ => Err(self.cols[COL_INFO].fail(format!("unknown content ref {kind}"))),
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
        assert_eq!(packed[0], VERSION);
        assert_eq!(compact_decode(&packed, &l).unwrap(), v1);
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
        let mut out = vec![VERSION, CODEC_STORED];
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
            e.message.contains("rebuilt update exceeds"),
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
        let mut data = vec![VERSION, CODEC_STORED, block.len() as u8];
        data.extend(block);
        let e = compact_decode(&data, &Limits::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed);
    }
}
