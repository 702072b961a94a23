//! Strict parser and serializer of Yjs v1 updates: a port of
//! `crdtsync._yupdate.parse_update` / `encode_update` that must accept, refuse
//! and report error classes exactly like it (the Python module is the
//! reference; `scripts/fuzz_differential.py` checks the two agree).
//!
//! The parse keeps offsets into the input instead of copies: a [`Span`] names
//! the bytes of a string, a key or an Any payload, so [`encode_update`] writes
//! the very same bytes back. Nothing recurses on the input: Any values and
//! JSON texts are walked with explicit stacks.

use std::collections::HashSet;

use crate::error::{limit, malformed, Result};
use crate::json::{is_valid_json, json_depth};
use crate::limits::Limits;
use crate::varint::{read_varint, read_varuint, write_varuint};

pub const STRUCT_GC: u8 = 0;
pub const CONTENT_DELETED: u8 = 1;
pub const CONTENT_JSON: u8 = 2;
pub const CONTENT_BINARY: u8 = 3;
pub const CONTENT_STRING: u8 = 4;
pub const CONTENT_EMBED: u8 = 5;
pub const CONTENT_FORMAT: u8 = 6;
pub const CONTENT_TYPE: u8 = 7;
pub const CONTENT_ANY: u8 = 8;
pub const CONTENT_DOC: u8 = 9;
pub const STRUCT_SKIP: u8 = 10;

pub const HAS_ORIGIN: u8 = 0x80;
pub const HAS_RIGHT_ORIGIN: u8 = 0x40;
pub const HAS_PARENT_SUB: u8 = 0x20;
pub const CONTENT_MASK: u8 = 0x1F;

pub const TYPE_XML_ELEMENT: u64 = 3;
pub const TYPE_XML_HOOK: u64 = 5;
pub const TYPE_XML_TEXT: u64 = 6;

pub const ANY_UNDEFINED: u8 = 127;
pub const ANY_NULL: u8 = 126;
pub const ANY_VARINT: u8 = 125;
pub const ANY_FLOAT32: u8 = 124;
pub const ANY_FLOAT64: u8 = 123;
pub const ANY_BIGINT: u8 = 122;
pub const ANY_FALSE: u8 = 121;
pub const ANY_TRUE: u8 = 120;
pub const ANY_STRING: u8 = 119;
pub const ANY_OBJECT: u8 = 118;
pub const ANY_ARRAY: u8 = 117;
pub const ANY_BYTES: u8 = 116;

/// Name of a struct kind, as `_yupdate.CONTENT_NAMES`.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        STRUCT_GC => "GC",
        CONTENT_DELETED => "Deleted",
        CONTENT_JSON => "JSON",
        CONTENT_BINARY => "Binary",
        CONTENT_STRING => "String",
        CONTENT_EMBED => "Embed",
        CONTENT_FORMAT => "Format",
        CONTENT_TYPE => "Type",
        CONTENT_ANY => "Any",
        CONTENT_DOC => "Doc",
        STRUCT_SKIP => "Skip",
        _ => "?",
    }
}

/// A byte range of the parsed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    pub fn new(start: usize, end: usize) -> Self {
        // Inputs are at most max_update_bytes, refused above u32 by the parser.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    #[inline]
    pub fn get<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.start as usize..self.end as usize]
    }
    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// An ID: (client, clock).
pub type Id = (u64, u32);

/// Where an item's parent is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// Inherited from the origin / right origin (nothing written).
    Inherited,
    /// A root type, by name.
    Root(Span),
    /// The item holding the parent type.
    Item(Id),
}

/// The content of an item (GC, Skip and Deleted have `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    None,
    Json(Vec<Span>),
    Binary(Span),
    String(Span),
    Embed(Span),
    Format { key: Span, value: Span },
    Type { type_ref: u32, name: Option<Span> },
    Any { n: u32, raw: Span },
    Doc { guid: Span, options: Span },
}

/// One struct, as `_yupdate.Struct`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Struct {
    pub client: u64,
    pub clock: u32,
    pub length: u32,
    pub kind: u8,
    pub info: u8,
    pub origin: Option<Id>,
    pub right_origin: Option<Id>,
    pub parent: Parent,
    pub parent_sub: Option<Span>,
    pub content: Content,
}

impl Struct {
    #[inline]
    pub fn end(&self) -> u64 {
        self.clock as u64 + self.length as u64
    }
}

/// A parsed update: client blocks and delete set, in encoding order. Spans
/// refer to the bytes it was parsed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedUpdate {
    pub clients: Vec<(u64, Vec<Struct>)>,
    pub delete_set: Vec<(u64, Vec<(u32, u32)>)>,
    /// Offset of the delete set in the bytes (`_yupdate.ParsedUpdate.ds_pos`).
    pub ds_pos: usize,
}

impl ParsedUpdate {
    pub fn struct_count(&self) -> usize {
        self.clients.iter().map(|(_, s)| s.len()).sum()
    }
}

const U32: u32 = 32;
const U64: u32 = 64;

/// Reads a length-prefixed UTF-8 string (`_yupdate._read_str`).
#[inline]
fn read_str(
    data: &[u8],
    pos: usize,
    max_bytes: u64,
    what: &str,
    limit_name: &str,
) -> Result<(Span, usize)> {
    let start = pos;
    let (n, pos) = read_varuint(data, pos, U32, &format_len(what))?;
    if n > max_bytes {
        return Err(limit(
            format!("{what} of {n} bytes exceeds {limit_name}={max_bytes}"),
            start,
        ));
    }
    let end = pos + n as usize;
    if end > data.len() {
        return Err(malformed(
            format!("truncated {what} ({n} bytes announced)"),
            start,
        ));
    }
    check_utf8(data, pos, end, what)?;
    Ok((Span::new(pos, end), end))
}

#[inline]
fn format_len(what: &str) -> String {
    // Only used in error messages of multi-byte varuints (the slow path
    // formats it again); cheap enough since it is a short literal.
    let mut s = String::with_capacity(what.len() + 7);
    s.push_str(what);
    s.push_str(" length");
    s
}

#[inline]
fn check_utf8(data: &[u8], pos: usize, end: usize, what: &str) -> Result<()> {
    match std::str::from_utf8(&data[pos..end]) {
        Ok(_) => Ok(()),
        Err(e) => Err(malformed(
            format!("invalid UTF-8 in {what}"),
            pos + e.valid_up_to(),
        )),
    }
}

/// Length of a UTF-8 string in UTF-16 code units.
#[inline]
pub fn utf16_len(s: &[u8]) -> u64 {
    // Every byte that is not a continuation byte starts a code point; those
    // starting with 0b11110xxx take two UTF-16 units.
    let mut n = 0u64;
    for &b in s {
        if b & 0xC0 != 0x80 {
            n += 1;
        }
        if b >= 0xF0 {
            n += 1;
        }
    }
    n
}

/// Validates `count` consecutive Any values at `pos`; returns their end
/// (`_yupdate._skip_any`). `any_values` is the update-wide value budget.
pub fn skip_any(
    data: &[u8],
    mut pos: usize,
    count: u64,
    limits: &Limits,
    any_values: &mut u64,
) -> Result<usize> {
    let n = data.len();
    let max_depth = limits.max_any_depth;
    // Per open container: values (or key/value pairs) still to read, is object.
    let mut stack: Vec<(u64, bool)> = vec![(count, false)];
    while let Some(top) = stack.last_mut() {
        if top.0 == 0 {
            stack.pop();
            continue;
        }
        top.0 -= 1;
        if top.1 {
            let (_, p) = read_str(
                data,
                pos,
                limits.max_key_bytes,
                "Any object key",
                "max_key_bytes",
            )?;
            pos = p;
        }
        *any_values += 1;
        if *any_values > limits.max_any_values {
            return Err(limit(
                format!(
                    "more than max_any_values={} Any values",
                    limits.max_any_values
                ),
                pos,
            ));
        }
        if pos >= n {
            return Err(malformed("truncated Any value", pos));
        }
        let tag = data[pos];
        let tag_pos = pos;
        pos += 1;
        match tag {
            ANY_STRING => {
                let (_, p) = read_str(
                    data,
                    pos,
                    limits.max_string_bytes,
                    "Any string",
                    "max_string_bytes",
                )?;
                pos = p;
            }
            ANY_FLOAT32 => pos += 4,
            ANY_FLOAT64 | ANY_BIGINT => pos += 8,
            ANY_VARINT => pos = read_varint(data, pos)?.1,
            ANY_NULL | ANY_UNDEFINED | ANY_TRUE | ANY_FALSE => {}
            ANY_BYTES => {
                let (ln, p) = read_varuint(data, pos, U32, "Any bytes length")?;
                if ln > limits.max_string_bytes {
                    return Err(limit(
                        format!(
                            "Any bytes of {ln} bytes exceeds max_string_bytes={}",
                            limits.max_string_bytes
                        ),
                        tag_pos,
                    ));
                }
                pos = p + ln as usize;
            }
            ANY_ARRAY | ANY_OBJECT => {
                let (ln, p) = read_varuint(data, pos, U32, "Any container length")?;
                pos = p;
                if stack.len() as u64 >= max_depth {
                    return Err(limit(
                        format!("Any value nested deeper than max_any_depth={max_depth}"),
                        tag_pos,
                    ));
                }
                if ln > (n - pos) as u64 {
                    return Err(malformed(
                        format!("Any container announces {ln} elements, more than the bytes left"),
                        tag_pos,
                    ));
                }
                stack.push((ln, tag == ANY_OBJECT));
            }
            _ => return Err(malformed(format!("unknown Any tag {tag}"), tag_pos)),
        }
        if pos > n {
            return Err(malformed("truncated Any value", tag_pos));
        }
    }
    Ok(pos)
}

/// `_yupdate._check_json`: depth first (a limit), then strict JSON.
fn check_json(data: &[u8], span: Span, pos: usize, limits: &Limits, what: &str) -> Result<()> {
    let text = span.get(data);
    if json_depth(text) >= limits.max_any_depth {
        return Err(limit(
            format!(
                "{what} JSON nested deeper than max_any_depth={}",
                limits.max_any_depth
            ),
            pos,
        ));
    }
    if !is_valid_json(text, limits.int_max_str_digits) {
        return Err(malformed(format!("{what} is not valid JSON"), pos));
    }
    Ok(())
}

/// Parses a Yjs v1 update completely and strictly (`_yupdate.parse_update`).
pub fn parse_update(data: &[u8], limits: &Limits) -> Result<ParsedUpdate> {
    if data.len() as u64 > limits.max_update_bytes || data.len() > u32::MAX as usize {
        return Err(limit(
            format!(
                "update of {} bytes exceeds max_update_bytes={}",
                data.len(),
                limits.max_update_bytes
            ),
            0,
        ));
    }
    parse(data, limits)
}

fn parse(data: &[u8], limits: &Limits) -> Result<ParsedUpdate> {
    let n = data.len();
    let mut any_values: u64 = 0;
    let max_clock = limits.max_clock;
    let max_key = limits.max_key_bytes;
    let max_str = limits.max_string_bytes;
    let mut total_structs: u64 = 0;
    let (num_clients, mut pos) = read_varuint(data, 0, U32, "number of clients")?;
    if num_clients > limits.max_clients {
        return Err(limit(
            format!(
                "{num_clients} client blocks exceed max_clients={}",
                limits.max_clients
            ),
            0,
        ));
    }
    if num_clients * 4 > (n - pos) as u64 {
        return Err(malformed(
            format!("{num_clients} client blocks announced, more than the bytes left"),
            0,
        ));
    }
    let mut seen: HashSet<u64> = HashSet::with_capacity(num_clients as usize);
    let mut clients: Vec<(u64, Vec<Struct>)> = Vec::with_capacity(num_clients as usize);
    for _ in 0..num_clients {
        let block_pos = pos;
        let (num_structs, p) = read_varuint(data, pos, U32, "number of structs")?;
        let (client, p) = read_varuint(data, p, U64, "client id")?;
        let (clock0, p) = read_varuint(data, p, U32, "clock")?;
        pos = p;
        if num_structs == 0 {
            return Err(malformed(
                format!("client {client} has a block with no struct"),
                block_pos,
            ));
        }
        if !seen.insert(client) {
            return Err(malformed(
                format!("client {client} appears twice in the struct section"),
                block_pos,
            ));
        }
        total_structs += num_structs;
        if total_structs > limits.max_structs {
            return Err(limit(
                format!("more than max_structs={} structs", limits.max_structs),
                block_pos,
            ));
        }
        if num_structs * 2 > (n - pos) as u64 {
            return Err(malformed(
                format!("{num_structs} structs announced, more than the bytes left"),
                block_pos,
            ));
        }
        if clock0 > max_clock {
            return Err(limit(
                format!("clock {clock0} of client {client} exceeds max_clock={max_clock}"),
                block_pos,
            ));
        }
        let mut clock: u64 = clock0;
        let mut structs: Vec<Struct> = Vec::with_capacity(num_structs as usize);
        for _ in 0..num_structs {
            let spos = pos;
            if pos >= n {
                return Err(malformed("truncated struct", pos));
            }
            let info = data[pos];
            pos += 1;
            let st;
            if info == STRUCT_GC || info == STRUCT_SKIP {
                let (length, p) = read_varuint(data, pos, U32, "GC/Skip length")?;
                pos = p;
                if length == 0 {
                    return Err(malformed(format!("zero-length {}", kind_name(info)), spos));
                }
                st = Struct {
                    client,
                    clock: clock as u32,
                    length: length as u32,
                    kind: info,
                    info,
                    origin: None,
                    right_origin: None,
                    parent: Parent::Inherited,
                    parent_sub: None,
                    content: Content::None,
                };
            } else {
                let kind = info & CONTENT_MASK;
                if kind == STRUCT_GC || kind > CONTENT_DOC {
                    return Err(malformed(
                        format!("unknown content ref {kind} (info byte {info:#04x})"),
                        spos,
                    ));
                }
                let mut origin = None;
                let mut right_origin = None;
                let mut parent = Parent::Inherited;
                let mut parent_sub = None;
                if info & HAS_ORIGIN != 0 {
                    let (oc, p) = read_varuint(data, pos, U64, "origin client")?;
                    let (ok, p) = read_varuint(data, p, U32, "origin clock")?;
                    pos = p;
                    origin = Some((oc, ok as u32));
                }
                if info & HAS_RIGHT_ORIGIN != 0 {
                    let (rc, p) = read_varuint(data, pos, U64, "right origin client")?;
                    let (rk, p) = read_varuint(data, p, U32, "right origin clock")?;
                    pos = p;
                    right_origin = Some((rc, rk as u32));
                }
                if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                    let ppos = pos;
                    if pos >= n {
                        return Err(malformed("truncated parent info", pos));
                    }
                    let pflag = data[pos];
                    pos += 1;
                    if pflag == 1 {
                        let (name, p) =
                            read_str(data, pos, max_key, "root type name", "max_key_bytes")?;
                        pos = p;
                        parent = Parent::Root(name);
                    } else if pflag == 0 {
                        let (pc, p) = read_varuint(data, pos, U64, "parent client")?;
                        let (pk, p) = read_varuint(data, p, U32, "parent clock")?;
                        pos = p;
                        parent = Parent::Item((pc, pk as u32));
                    } else {
                        return Err(malformed(
                            format!("parent info flag must be 0 or 1, got {pflag}"),
                            ppos,
                        ));
                    }
                    if info & HAS_PARENT_SUB != 0 {
                        let (key, p) =
                            read_str(data, pos, max_key, "parent_sub key", "max_key_bytes")?;
                        pos = p;
                        parent_sub = Some(key);
                    }
                }
                let cpos = pos;
                let length: u64;
                let content: Content;
                match kind {
                    CONTENT_STRING => {
                        let (slen, p) = read_varuint(data, pos, U32, "string length")?;
                        pos = p;
                        if slen > max_str {
                            return Err(limit(
                                format!(
                                    "string of {slen} bytes exceeds max_string_bytes={max_str}"
                                ),
                                cpos,
                            ));
                        }
                        let end = pos + slen as usize;
                        if end > n {
                            return Err(malformed(
                                format!("truncated string ({slen} bytes announced)"),
                                cpos,
                            ));
                        }
                        check_utf8(data, pos, end, "string content")?;
                        length = utf16_len(&data[pos..end]);
                        content = Content::String(Span::new(pos, end));
                        pos = end;
                    }
                    CONTENT_DELETED => {
                        let (l, p) = read_varuint(data, pos, U32, "deleted length")?;
                        pos = p;
                        length = l;
                        content = Content::None;
                    }
                    CONTENT_ANY => {
                        let (l, p) = read_varuint(data, pos, U32, "Any count")?;
                        pos = p;
                        if l > (n - pos) as u64 {
                            return Err(malformed(
                                format!("{l} Any values announced, more than the bytes left"),
                                cpos,
                            ));
                        }
                        let apos = pos;
                        pos = skip_any(data, pos, l, limits, &mut any_values)?;
                        length = l;
                        content = Content::Any {
                            n: l as u32,
                            raw: Span::new(apos, pos),
                        };
                    }
                    CONTENT_TYPE => {
                        let (type_ref, p) = read_varuint(data, pos, U32, "type ref")?;
                        pos = p;
                        let mut name = None;
                        if type_ref == TYPE_XML_ELEMENT || type_ref == TYPE_XML_HOOK {
                            let (nm, p) =
                                read_str(data, pos, max_key, "XML node name", "max_key_bytes")?;
                            pos = p;
                            name = Some(nm);
                        } else if type_ref > TYPE_XML_TEXT {
                            return Err(malformed(format!("unknown type ref {type_ref}"), cpos));
                        }
                        content = Content::Type {
                            type_ref: type_ref as u32,
                            name,
                        };
                        length = 1;
                    }
                    CONTENT_BINARY => {
                        let (blen, p) = read_varuint(data, pos, U32, "binary length")?;
                        pos = p;
                        if blen > max_str {
                            return Err(limit(
                                format!(
                                    "binary of {blen} bytes exceeds max_string_bytes={max_str}"
                                ),
                                cpos,
                            ));
                        }
                        if pos + blen as usize > n {
                            return Err(malformed(
                                format!("truncated binary ({blen} bytes announced)"),
                                cpos,
                            ));
                        }
                        content = Content::Binary(Span::new(pos, pos + blen as usize));
                        pos += blen as usize;
                        length = 1;
                    }
                    CONTENT_FORMAT => {
                        let (key, p) = read_str(data, pos, max_key, "format key", "max_key_bytes")?;
                        let vpos = p;
                        let (value, p) =
                            read_str(data, p, max_str, "format value", "max_string_bytes")?;
                        pos = p;
                        check_json(data, value, vpos, limits, "format value")?;
                        content = Content::Format { key, value };
                        length = 1;
                    }
                    CONTENT_EMBED => {
                        let (text, p) = read_str(data, pos, max_str, "embed", "max_string_bytes")?;
                        pos = p;
                        check_json(data, text, cpos, limits, "embed")?;
                        content = Content::Embed(text);
                        length = 1;
                    }
                    CONTENT_JSON => {
                        let (l, p) = read_varuint(data, pos, U32, "JSON count")?;
                        pos = p;
                        if l > (n - pos) as u64 {
                            return Err(malformed(
                                format!("{l} JSON values announced, more than the bytes left"),
                                cpos,
                            ));
                        }
                        any_values += l;
                        if any_values > limits.max_any_values {
                            return Err(limit(
                                format!(
                                    "more than max_any_values={} Any values",
                                    limits.max_any_values
                                ),
                                cpos,
                            ));
                        }
                        let mut items = Vec::with_capacity(l as usize);
                        for _ in 0..l {
                            let jpos = pos;
                            let (jtext, p) =
                                read_str(data, pos, max_str, "JSON value", "max_string_bytes")?;
                            pos = p;
                            if jtext.get(data) != b"undefined" {
                                check_json(data, jtext, jpos, limits, "JSON content")?;
                            }
                            items.push(jtext);
                        }
                        content = Content::Json(items);
                        length = l;
                    }
                    _ => {
                        // CONTENT_DOC
                        let (guid, p) =
                            read_str(data, pos, max_key, "subdocument guid", "max_key_bytes")?;
                        let opos = p;
                        pos = skip_any(data, p, 1, limits, &mut any_values)?;
                        content = Content::Doc {
                            guid,
                            options: Span::new(opos, pos),
                        };
                        length = 1;
                    }
                }
                if length == 0 {
                    return Err(malformed(
                        format!("zero-length {} item", kind_name(kind)),
                        spos,
                    ));
                }
                st = Struct {
                    client,
                    clock: clock as u32,
                    length: length as u32,
                    kind,
                    info,
                    origin,
                    right_origin,
                    parent,
                    parent_sub,
                    content,
                };
            }
            clock += st.length as u64;
            if clock > max_clock {
                return Err(limit(
                    format!("clock of client {client} exceeds max_clock={max_clock}"),
                    spos,
                ));
            }
            structs.push(st);
        }
        clients.push((client, structs));
    }
    // Delete set.
    let ds_pos = pos;
    let (num_ds, p) = read_varuint(data, pos, U32, "number of delete-set clients")?;
    pos = p;
    if num_ds > limits.max_clients {
        return Err(limit(
            format!(
                "{num_ds} delete-set clients exceed max_clients={}",
                limits.max_clients
            ),
            ds_pos,
        ));
    }
    if num_ds * 2 > (n - pos) as u64 {
        return Err(malformed(
            format!("{num_ds} delete-set clients announced, more than the bytes left"),
            ds_pos,
        ));
    }
    let mut delete_set: Vec<(u64, Vec<(u32, u32)>)> = Vec::with_capacity(num_ds as usize);
    let mut ds_seen: HashSet<u64> = HashSet::with_capacity(num_ds as usize);
    let mut total_ranges: u64 = 0;
    for _ in 0..num_ds {
        let cpos = pos;
        let (client, p) = read_varuint(data, pos, U64, "delete-set client")?;
        let (nranges, p) = read_varuint(data, p, U32, "number of delete ranges")?;
        pos = p;
        if !ds_seen.insert(client) {
            return Err(malformed(
                format!("client {client} appears twice in the delete set"),
                cpos,
            ));
        }
        if nranges == 0 {
            return Err(malformed(
                format!("client {client} has no delete range"),
                cpos,
            ));
        }
        total_ranges += nranges;
        if total_ranges > limits.max_delete_ranges {
            return Err(limit(
                format!(
                    "more than max_delete_ranges={} delete ranges",
                    limits.max_delete_ranges
                ),
                cpos,
            ));
        }
        if nranges * 2 > (n - pos) as u64 {
            return Err(malformed(
                format!("{nranges} delete ranges announced, more than the bytes left"),
                cpos,
            ));
        }
        let mut ranges = Vec::with_capacity(nranges as usize);
        let mut prev_end: u64 = 0;
        let mut first = true;
        for _ in 0..nranges {
            let rpos = pos;
            let (rclock, p) = read_varuint(data, pos, U32, "delete range clock")?;
            let (rlen, p) = read_varuint(data, p, U32, "delete range length")?;
            pos = p;
            if rlen == 0 {
                return Err(malformed(
                    format!("empty delete range for client {client}"),
                    rpos,
                ));
            }
            if !first && rclock < prev_end {
                return Err(malformed(
                    format!("delete ranges of client {client} are unsorted or overlap"),
                    rpos,
                ));
            }
            first = false;
            prev_end = rclock + rlen;
            if prev_end > max_clock {
                return Err(limit(
                    format!("delete range of client {client} exceeds max_clock={max_clock}"),
                    rpos,
                ));
            }
            ranges.push((rclock as u32, rlen as u32));
        }
        delete_set.push((client, ranges));
    }
    if pos != n {
        return Err(malformed(
            format!("{} trailing bytes after the delete set", n - pos),
            pos,
        ));
    }
    Ok(ParsedUpdate {
        clients,
        delete_set,
        ds_pos,
    })
}

/// Serializes a parsed update back to v1 bytes (`_yupdate.encode_update`);
/// `data` is the buffer its spans refer to.
pub fn encode_update(parsed: &ParsedUpdate, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    write_varuint(&mut out, parsed.clients.len() as u64);
    for (client, structs) in &parsed.clients {
        write_varuint(&mut out, structs.len() as u64);
        write_varuint(&mut out, *client);
        write_varuint(&mut out, structs.first().map_or(0, |s| s.clock as u64));
        for s in structs {
            encode_struct(&mut out, s, data);
        }
    }
    write_delete_set(&mut out, &parsed.delete_set);
    out
}

/// Like [`encode_update`], and the same update with its spans moved to the
/// returned bytes (for a parse whose spans refer to another buffer, such as
/// the compact decoder's column block). The parse is consumed and its spans
/// rewritten in place: a tree's load has 110,000 structs, and building a
/// second parse beside the first (then dropping the first) cost about a
/// fifth of the compact decoder's rebuild in allocation and page faults.
/// `size_hint` is the exact v1 size when the caller counted it (the compact
/// decoder does), else any estimate.
pub fn encode_update_remapped(
    mut parsed: ParsedUpdate,
    data: &[u8],
    size_hint: usize,
) -> (Vec<u8>, ParsedUpdate) {
    let mut out = Vec::with_capacity(size_hint);
    write_varuint(&mut out, parsed.clients.len() as u64);
    for (client, structs) in &mut parsed.clients {
        write_varuint(&mut out, structs.len() as u64);
        write_varuint(&mut out, *client);
        write_varuint(&mut out, structs.first().map_or(0, |s| s.clock as u64));
        for s in structs.iter_mut() {
            encode_struct_remapped(&mut out, s, data);
        }
    }
    parsed.ds_pos = out.len();
    write_delete_set(&mut out, &parsed.delete_set);
    (out, parsed)
}

/// Writes `data[span]` length-prefixed; returns its span in `out`.
fn put_span(out: &mut Vec<u8>, span: Span, data: &[u8]) -> Span {
    let b = span.get(data);
    write_varuint(out, b.len() as u64);
    let start = out.len();
    out.extend_from_slice(b);
    Span::new(start, out.len())
}

/// Writes `data[span]` as is; returns its span in `out`.
fn put_raw(out: &mut Vec<u8>, span: Span, data: &[u8]) -> Span {
    let start = out.len();
    out.extend_from_slice(span.get(data));
    Span::new(start, out.len())
}

/// Writes one struct as v1 and moves its spans to `out`.
fn encode_struct_remapped(out: &mut Vec<u8>, s: &mut Struct, data: &[u8]) {
    out.push(s.info);
    if s.kind == STRUCT_GC || s.kind == STRUCT_SKIP {
        write_varuint(out, s.length as u64);
        return;
    }
    if let Some((c, k)) = s.origin {
        write_varuint(out, c);
        write_varuint(out, k as u64);
    }
    if let Some((c, k)) = s.right_origin {
        write_varuint(out, c);
        write_varuint(out, k as u64);
    }
    if s.info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        match &mut s.parent {
            Parent::Root(name) => {
                out.push(1);
                *name = put_span(out, *name, data);
            }
            Parent::Item((c, k)) => {
                out.push(0);
                write_varuint(out, *c);
                write_varuint(out, *k as u64);
            }
            Parent::Inherited => {}
        }
        if let Some(key) = &mut s.parent_sub {
            *key = put_span(out, *key, data);
        }
    } else {
        // Not written in v1 (the engine derives them from the origins).
        s.parent = Parent::Inherited;
        s.parent_sub = None;
    }
    match &mut s.content {
        Content::String(t) | Content::Embed(t) | Content::Binary(t) => {
            *t = put_span(out, *t, data);
        }
        Content::None => {
            if s.kind == CONTENT_DELETED {
                write_varuint(out, s.length as u64);
            }
        }
        Content::Any { n, raw } => {
            write_varuint(out, *n as u64);
            *raw = put_raw(out, *raw, data);
        }
        Content::Type { type_ref, name } => {
            write_varuint(out, *type_ref as u64);
            if let Some(nm) = name {
                *nm = put_span(out, *nm, data);
            }
        }
        Content::Format { key, value } => {
            *key = put_span(out, *key, data);
            *value = put_span(out, *value, data);
        }
        Content::Json(items) => {
            write_varuint(out, items.len() as u64);
            for t in items.iter_mut() {
                *t = put_span(out, *t, data);
            }
        }
        Content::Doc { guid, options } => {
            *guid = put_span(out, *guid, data);
            *options = put_raw(out, *options, data);
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_varuint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Writes one struct as v1.
pub fn encode_struct(out: &mut Vec<u8>, s: &Struct, data: &[u8]) {
    out.push(s.info);
    if s.kind == STRUCT_GC || s.kind == STRUCT_SKIP {
        write_varuint(out, s.length as u64);
        return;
    }
    if let Some((c, k)) = s.origin {
        write_varuint(out, c);
        write_varuint(out, k as u64);
    }
    if let Some((c, k)) = s.right_origin {
        write_varuint(out, c);
        write_varuint(out, k as u64);
    }
    if s.info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        match &s.parent {
            Parent::Root(name) => {
                out.push(1);
                put_bytes(out, name.get(data));
            }
            Parent::Item((c, k)) => {
                out.push(0);
                write_varuint(out, *c);
                write_varuint(out, *k as u64);
            }
            Parent::Inherited => {}
        }
        if let Some(key) = s.parent_sub {
            put_bytes(out, key.get(data));
        }
    }
    match &s.content {
        Content::String(t) | Content::Embed(t) | Content::Binary(t) => put_bytes(out, t.get(data)),
        Content::None => {
            if s.kind == CONTENT_DELETED {
                write_varuint(out, s.length as u64);
            }
        }
        Content::Any { n, raw } => {
            write_varuint(out, *n as u64);
            out.extend_from_slice(raw.get(data));
        }
        Content::Type { type_ref, name } => {
            write_varuint(out, *type_ref as u64);
            if let Some(nm) = name {
                put_bytes(out, nm.get(data));
            }
        }
        Content::Format { key, value } => {
            put_bytes(out, key.get(data));
            put_bytes(out, value.get(data));
        }
        Content::Json(items) => {
            write_varuint(out, items.len() as u64);
            for t in items {
                put_bytes(out, t.get(data));
            }
        }
        Content::Doc { guid, options } => {
            put_bytes(out, guid.get(data));
            out.extend_from_slice(options.get(data));
        }
    }
}

pub fn write_delete_set(out: &mut Vec<u8>, ds: &[(u64, Vec<(u32, u32)>)]) {
    write_varuint(out, ds.len() as u64);
    for (client, ranges) in ds {
        write_varuint(out, *client);
        write_varuint(out, ranges.len() as u64);
        for &(clock, len) in ranges {
            write_varuint(out, clock as u64);
            write_varuint(out, len as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// pycrdt 0.14.13: a map (an int and a nested Any), a text with an emoji,
    /// a format span and a deletion, an array with bytes and a nested map.
    const SAMPLE: &str = "010b07002801016d0178017c3f8000002801016d0179017601016175057c3f8000007c\
        402000007e78770173040101740168810702018107030184070407f09f988020796f46070204626f6c6404\
        74727565c60703070404626f6c64046e756c6c0801016101740362696e87070c012800070d016b01770176\
        0107010302";

    fn sample() -> Vec<u8> {
        (0..SAMPLE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&SAMPLE[i..i + 2], 16).unwrap())
            .collect()
    }

    fn kind_of(data: &[u8], limits: &Limits) -> Option<ErrorKind> {
        parse_update(data, limits).err().map(|e| e.kind)
    }

    #[test]
    fn parses_and_round_trips() {
        let data = sample();
        let p = parse_update(&data, &Limits::default()).unwrap();
        assert_eq!(p.clients.len(), 1);
        assert_eq!(p.clients[0].0, 7);
        assert_eq!(p.struct_count(), 11);
        assert_eq!(p.delete_set, vec![(7, vec![(3, 2)])]);
        // the emoji String counts 2 UTF-16 units
        let emoji = &p.clients[0].1.iter().find(|s| {
            matches!(s.content, Content::String(t) if t.get(&data).starts_with("\u{1F600}".as_bytes()))
        });
        assert_eq!(emoji.unwrap().length, 5);
        assert_eq!(encode_update(&p, &data), data);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let data = sample();
        for cut in 0..data.len() {
            assert_eq!(
                kind_of(&data[..cut], &Limits::default()),
                Some(ErrorKind::Malformed),
                "{cut}"
            );
        }
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(
            kind_of(&longer, &Limits::default()),
            Some(ErrorKind::Malformed)
        );
    }

    #[test]
    fn structural_rules() {
        let l = Limits::default();
        // a client block with no struct
        assert_eq!(kind_of(&[1, 0, 1, 0, 0, 0], &l), Some(ErrorKind::Malformed));
        // two blocks for client 1 (GC structs of length 1)
        assert_eq!(
            kind_of(&[2, 1, 1, 0, 0, 1, 1, 1, 5, 0, 1, 0], &l),
            Some(ErrorKind::Malformed)
        );
        // zero-length GC
        assert_eq!(
            kind_of(&[1, 1, 1, 0, 0, 0, 0], &l),
            Some(ErrorKind::Malformed)
        );
        // a valid GC, then an unsorted delete set
        assert_eq!(kind_of(&[1, 1, 1, 0, 0, 3, 0], &l), None);
        assert_eq!(
            kind_of(&[0, 1, 1, 2, 5, 1, 2, 1], &l),
            Some(ErrorKind::Malformed)
        );
        assert_eq!(kind_of(&[0, 1, 1, 2, 2, 1, 5, 1], &l), None);
        // content ref 0 with flags, and refs above 9
        assert_eq!(
            kind_of(&[1, 1, 1, 0, 0x20, 1, 0], &l),
            Some(ErrorKind::Malformed)
        );
        assert_eq!(
            kind_of(&[1, 1, 1, 0, 11, 1, 0], &l),
            Some(ErrorKind::Malformed)
        );
    }

    #[test]
    fn limits_are_limit_errors() {
        let data = sample();
        let tight = |f: fn(&mut Limits)| {
            let mut l = Limits::default();
            f(&mut l);
            kind_of(&data, &l)
        };
        assert_eq!(tight(|l| l.max_update_bytes = 10), Some(ErrorKind::Limit));
        assert_eq!(tight(|l| l.max_structs = 10), Some(ErrorKind::Limit));
        assert_eq!(tight(|l| l.max_key_bytes = 1), Some(ErrorKind::Limit));
        assert_eq!(tight(|l| l.max_any_depth = 2), Some(ErrorKind::Limit));
        assert_eq!(tight(|l| l.max_any_values = 3), Some(ErrorKind::Limit));
        assert_eq!(tight(|l| l.max_clock = 5), Some(ErrorKind::Limit));
        assert_eq!(tight(|l| l.max_string_bytes = 2), Some(ErrorKind::Limit));
        assert_eq!(tight(|l| l.max_structs = 11), None);
    }

    #[test]
    fn deep_any_is_a_limit_not_a_stack_overflow() {
        // an Any array nested 100,000 deep: [[[...]]]
        let depth = 100_000;
        let mut data = vec![1, 1, 1, 0, 8, 1, 1, b'a', 1];
        data.extend(std::iter::repeat([ANY_ARRAY, 1]).take(depth).flatten());
        data.push(ANY_NULL);
        data.push(0);
        assert_eq!(kind_of(&data, &Limits::default()), Some(ErrorKind::Limit));
        let mut l = Limits::default();
        l.max_any_depth = u64::MAX;
        assert_eq!(kind_of(&data, &l), None);
    }
}
