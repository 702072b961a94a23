//! The document index: a port of `crdtsync.format.yupdate.DocIndex` and
//! `IndexUpdate` (the reference; read its docstrings for the design, the
//! rules S1-S12 and the invariants). It must accept, refuse (with the same
//! error class) and record exactly what the Python index does:
//! `scripts/fuzz_index.py` feeds both the same update sequences and compares
//! their snapshots.
//!
//! Layout (what makes it compact):
//!
//! * runs live in one arena (`Vec<Run>`, 40 bytes each, freed slots reused);
//!   links, lists and client references are `u32` indexes into tables, and a
//!   run's origin and right origin are (client number, clock) pairs of the
//!   interned client table, not 64-bit ids, their client numbers in 16 bits
//!   (larger ones in a side table, `wide_refs`);
//! * a run's end is not stored: a client's runs tile its clocks, so a run
//!   ends where the next one starts;
//! * per client: the first clocks of its runs and their arena indexes, sorted
//!   by clock (8 bytes a run: the first clocks make lookups bisect a
//!   contiguous table; bisecting through the arena instead saved 4 bytes a
//!   run and cost a third more time in a load's pass), its delete set, live
//!   type items, pending deletions and the clocks inside surrogate pairs;
//! * a run's order label (56 bits), content kind and type ref share two
//!   `u32` words;
//! * map keys are interned per container, and a key's number names its
//!   entry list: one hash lookup per map entry (keyed foldhash, `keyed.rs`).
//!
//! Everything an update creates before it is accepted (runs, clients, names,
//! lists, observed classes) is undone by `rollback`, so refused updates leave
//! nothing behind; only block splits and relabels stay, which change nothing.

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::error::{Error, ErrorKind, Result};
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::keyed::{KeyedMap, KeyedSet, KeyedState, PrehashedMap};
use crate::limits::Limits;
use crate::update::{
    parse_update, Content, Id, Parent, ParsedUpdate, Span, Struct, CONTENT_ANY, CONTENT_BINARY,
    CONTENT_DELETED, CONTENT_DOC, CONTENT_EMBED, CONTENT_FORMAT, CONTENT_JSON, CONTENT_STRING,
    CONTENT_TYPE, STRUCT_GC, STRUCT_SKIP,
};

/// "No run / no list / no client".
const NONE: u32 = u32::MAX;
/// The client of a reference whose client the index does not know (it holds
/// nothing and equals no stored reference).
const UNKNOWN: u32 = u32::MAX - 1;

/// Order labels are below `2**LABEL_BITS` (the rest of the `u64` holds the
/// kind and type ref).
const LABEL_BITS: u32 = 56;
const LABEL_END: i128 = 1 << LABEL_BITS;
/// Label step when a run is put at either end of a list.
const LABEL_STEP: i128 = 1 << 20;

const TYPE_XML_HOOK: u32 = 5;
/// `meta` code for "no type ref".
const NO_TYPE: u8 = 7;
/// Updates with at least this many structs (or runs) are "large": loads and
/// full-state imports, whose tables are sized exactly (`reserve_for`, `commit`).
const LARGE_UPDATE: usize = 4096;

/// Content classes (`_yupdate._NEUTRAL` / `_TEXTUAL` / `_VALUED`).
const NEUTRAL: u8 = 0;
const TEXTUAL: u8 = 1;
const VALUED: u8 = 2;
/// What a container of unknown type has shown besides TEXTUAL/VALUED (S11):
/// map entries, or a sequence holding only types (either class may follow).
const KEYED: u8 = 3;
const SEQUENCE: u8 = 4;
// Types that show values as the first thing a container of unknown type holds
// in its sequence: Array, Map, Text (type refs 0..=2; `_yupdate._LISTED_TYPES`).

fn content_class(kind: u8) -> u8 {
    match kind {
        CONTENT_STRING | CONTENT_FORMAT | CONTENT_EMBED => TEXTUAL,
        CONTENT_ANY | CONTENT_BINARY | CONTENT_DOC | CONTENT_JSON => VALUED,
        _ => NEUTRAL,
    }
}

/// What a container's sequence may hold (`_yupdate._seq_class`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SeqClass {
    /// Type unknown ("?").
    Unknown,
    /// Map / XmlHook: no sequence (None).
    NoSeq,
    Class(u8),
}

fn type_seq_class(type_ref: u8) -> SeqClass {
    match type_ref {
        0 | 3 | 4 => SeqClass::Class(VALUED),
        2 | 6 => SeqClass::Class(TEXTUAL),
        1 | 5 => SeqClass::NoSeq,
        _ => SeqClass::Unknown,
    }
}

/// S4 and S11 (`_yupdate._check_place`): whether an item fits the container
/// it lands in, given the container's sequence class and, for a container of
/// unknown type, what it has shown so far (`seen`).  Returns what such a
/// container shows from now on when that changes.
fn place_check(
    s: &Struct,
    seq: SeqClass,
    entry: bool,
    seen: Option<u8>,
    root: bool,
) -> Result<Option<u8>> {
    let cls = content_class(s.kind);
    if entry && cls == TEXTUAL {
        return Err(malformed(format!(
            "item {}:{}: {} content cannot be a map entry",
            s.client,
            s.clock,
            kind_name(s.kind)
        )));
    }
    if !entry && seq == SeqClass::NoSeq {
        if s.kind == CONTENT_TYPE {
            return Err(malformed(format!(
                "item {}:{}: a Map/XmlHook has no sequence to hold it",
                s.client, s.clock
            )));
        }
        if cls != NEUTRAL {
            return Err(malformed(format!(
                "item {}:{}: {} content in the sequence of a Map/XmlHook",
                s.client,
                s.clock,
                kind_name(s.kind)
            )));
        }
    }
    if root {
        return root_check(s, seq, entry, seen);
    }
    if entry || cls == NEUTRAL {
        return Ok(None);
    }
    let held = match seq {
        SeqClass::Unknown => match seen {
            None => return Ok(Some(cls)),
            Some(v) => v,
        },
        SeqClass::Class(c) => c,
        SeqClass::NoSeq => unreachable!("refused above"),
    };
    if held != cls {
        return Err(holding(s, held));
    }
    Ok(None)
}

fn holding(s: &Struct, held: u8) -> crate::error::Error {
    let what = if held == TEXTUAL { "text" } else { "values" };
    malformed(format!(
        "item {}:{}: {} content in a container holding {what}",
        s.client,
        s.clock,
        kind_name(s.kind)
    ))
}

/// S11 (`_yupdate._check_root`): a root shows one kind (map entries, text, or
/// values), whatever it was declared.  The model tells the kind of a root it
/// has not declared from its items and reads it so from then on.
fn root_check(s: &Struct, seq: SeqClass, entry: bool, seen: Option<u8>) -> Result<Option<u8>> {
    let shows = if entry {
        KEYED
    } else if let Content::Type { type_ref, .. } = s.content {
        if type_ref <= 2 {
            VALUED // an Array/Map/Text: read back as a list
        } else {
            SEQUENCE
        }
    } else {
        match content_class(s.kind) {
            NEUTRAL => return Ok(None), // deleted content shows nothing
            c => c,
        }
    };
    let unknown = seq == SeqClass::Unknown;
    // A declared root holds what its type does (a Map: entries).
    let held = match seq {
        SeqClass::Unknown => seen,
        SeqClass::NoSeq => Some(KEYED),
        SeqClass::Class(c) => Some(c),
    };
    let held = match held {
        None => return Ok(if unknown { Some(shows) } else { None }),
        Some(h) if h == shows => return Ok(None),
        Some(h) => h,
    };
    if held == KEYED {
        return Err(malformed(format!(
            "item {}:{}: {} content in the sequence of a root holding map entries",
            s.client,
            s.clock,
            kind_name(s.kind)
        )));
    }
    if shows == KEYED {
        return Err(malformed(format!(
            "item {}:{}: a map entry in a root holding a sequence",
            s.client, s.clock
        )));
    }
    if held == SEQUENCE {
        return Ok(if unknown { Some(shows) } else { None }); // the first text or values decide
    }
    if shows == SEQUENCE {
        return Ok(None);
    }
    Err(holding(s, held))
}

fn kind_name(kind: u8) -> &'static str {
    crate::update::kind_name(kind)
}

/// A reference to a clock: (client number, clock); client `NONE` is "none".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Ref {
    c: u32,
    k: u32,
}

impl Ref {
    const NIL: Ref = Ref { c: NONE, k: 0 };
    #[inline]
    fn is_none(self) -> bool {
        self.c == NONE
    }
}

/// A container: a root type (by interned name) or the type item at (client
/// number, clock).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Key {
    Root(u32),
    Item(u32, u32),
}

impl Key {
    /// The key as an interner scope (client numbers stay below `u32::MAX`).
    #[inline]
    fn scope(self) -> u64 {
        match self {
            Key::Root(n) => (u32::MAX as u64) << 32 | n as u64,
            Key::Item(c, k) => (c as u64) << 32 | k as u64,
        }
    }
}

/// A run of clocks `[clock, end)` of one client that sit together in one list
/// (`_yupdate._Node`): 40 bytes, 4-aligned. Its end is not stored: a client's
/// runs tile its clocks `[0, state)`, so a run ends where the next one starts
/// (`ClientData::starts`), the last one at the client's state.
#[derive(Clone, Copy, Debug)]
struct Run {
    clock: u32,
    client: u32,
    /// The list holding it; `NONE` once GC'd.
    list: u32,
    left: u32,
    right: u32,
    /// Origin of the first clock, and right origin: read and written
    /// through `DocIndex::origin_of` / `ro_of` / `new_run`.
    refs: Refs,
    /// label << 8 | type ref code << 4 | kind, as two words (low first) so
    /// that the run needs no 8-byte alignment.
    meta: [u32; 2],
}

/// A reference's client number in 16 bits: "none".
const NIL16: u16 = u16::MAX;
/// ... or "a number of 16 bits or more, in `DocIndex::wide_refs`".
const WIDE16: u16 = u16::MAX - 1;

/// A run's origin and right origin: clocks, and client numbers in 16 bits
/// (most documents have far fewer than 65,534 clients; a run referring to a
/// client numbered beyond keeps both numbers in a side table).
#[derive(Clone, Copy, Debug, Default)]
struct Refs {
    origin_k: u32,
    ro_k: u32,
    origin_c: u16,
    ro_c: u16,
}

/// A run's `meta` words for a kind and type ref (label 0).
#[inline]
fn meta_of(kind: u8, type_ref: Option<u8>) -> [u32; 2] {
    [kind as u32 | ((type_ref.unwrap_or(NO_TYPE) as u32) << 4), 0]
}

impl Run {
    #[inline]
    fn meta(&self) -> u64 {
        (self.meta[1] as u64) << 32 | self.meta[0] as u64
    }
    #[inline]
    fn set_meta(&mut self, m: u64) {
        self.meta = [m as u32, (m >> 32) as u32];
    }
    #[inline]
    fn kind(&self) -> u8 {
        (self.meta[0] & 0xF) as u8
    }
    #[inline]
    fn type_ref(&self) -> Option<u8> {
        let t = ((self.meta[0] >> 4) & 0xF) as u8;
        (t != NO_TYPE).then_some(t)
    }
    #[inline]
    fn label(&self) -> u64 {
        self.meta() >> 8
    }
    #[inline]
    fn set_kind(&mut self, kind: u8, type_ref: Option<u8>) {
        let t = type_ref.unwrap_or(NO_TYPE) as u32;
        self.meta[0] = (self.meta[0] & !0xFF) | (t << 4) | kind as u32;
    }
    #[inline]
    fn set_label(&mut self, label: u64) {
        self.set_meta((label << 8) | (self.meta() & 0xFF));
    }
}

/// One list (`_yupdate._Seq`): a container's sequence (`sub` NONE) or one map
/// key's entries.
#[derive(Clone, Copy, Debug)]
struct List {
    key: Key,
    sub: u32,
    start: u32,
}

/// What the index keeps per client.
#[derive(Default, Debug)]
struct ClientData {
    id: u64,
    /// Next clock (the state vector's entry).
    state: u32,
    /// First clocks of its runs, sorted (what lookups bisect: contiguous).
    starts: Vec<u32>,
    /// Arena indexes of those runs, covering `[0, state)`.
    runs: Vec<u32>,
    /// The delete set: sorted, disjoint, merged `(start, end)`.
    deleted: Vec<(u32, u32)>,
    /// Clocks of its live type items, sorted.
    types: Vec<u32>,
    /// Deletions of clocks beyond `state`, sorted `(start, end)`.
    pending: Vec<(u32, u32)>,
    /// S7: clocks between the two UTF-16 units of a non-BMP character.
    pair_splits: Vec<u32>,
}

/// An append-only table of strings, each within a scope, that can be cut
/// back (rollback). Root names have one scope; map keys are interned per
/// container (the scope is the container), so a key's number also names its
/// entry list (`list`): one lookup per map entry finds both. The strings are
/// stored once, end to end, and found by their keyed hash (computed once per
/// lookup; growing the table never hashes the strings again). Strings with
/// the same 64-bit hash are chained, newest first, so cutting back the newest
/// strings only ever removes chain heads.
#[derive(Debug)]
struct Interner {
    bytes: Vec<u8>,
    /// End of each string in `bytes`.
    ends: Vec<u32>,
    scopes: Vec<u64>,
    /// The list of each map key's entries (`NONE`: none now).
    list: Vec<u32>,
    /// The previous string with the same hash (`NONE`: the last).
    next: Vec<u32>,
    heads: PrehashedMap<u32>,
    hasher: KeyedState,
}

impl Interner {
    fn new(hasher: KeyedState) -> Self {
        Interner {
            bytes: Vec::new(),
            ends: Vec::new(),
            scopes: Vec::new(),
            list: Vec::new(),
            next: Vec::new(),
            heads: PrehashedMap::default(),
            hasher,
        }
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
    #[inline]
    fn get(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }
    fn intern(&mut self, scope: u64, s: &[u8]) -> u32 {
        let h = self.hasher.hash_one((scope, s));
        let head = self.heads.get(&h).copied().unwrap_or(NONE);
        let mut i = head;
        while i != NONE {
            if self.scopes[i as usize] == scope && self.get(i) == s {
                return i;
            }
            i = self.next[i as usize];
        }
        let id = self.ends.len() as u32;
        self.bytes.extend_from_slice(s);
        // Strings come from updates of at most max_update_bytes (u32 offsets
        // in the parser): a document's keys and names stay far below 4 GiB.
        let end = u32::try_from(self.bytes.len()).expect("interned strings exceed 4 GiB");
        self.ends.push(end);
        self.scopes.push(scope);
        self.list.push(NONE);
        self.next.push(head);
        self.heads.insert(h, id);
        id
    }
    /// The number of `s` in `scope`, if interned (nothing is added).
    fn lookup(&self, scope: u64, s: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one((scope, s));
        let mut i = self.heads.get(&h).copied().unwrap_or(NONE);
        while i != NONE {
            if self.scopes[i as usize] == scope && self.get(i) == s {
                return Some(i);
            }
            i = self.next[i as usize];
        }
        None
    }
    fn truncate(&mut self, len: usize) {
        while self.ends.len() > len {
            let id = (self.ends.len() - 1) as u32;
            let h = self
                .hasher
                .hash_one((self.scopes[id as usize], self.get(id)));
            match self.next.pop().expect("one per string") {
                NONE => self.heads.remove(&h),
                older => self.heads.insert(h, older),
            };
            self.ends.pop();
            self.scopes.pop();
            self.list.pop();
            self.bytes
                .truncate(self.ends.last().map_or(0, |&e| e as usize));
        }
    }
    fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + 4 * (self.ends.capacity() + self.next.capacity() + self.list.capacity())
            + 8 * self.scopes.capacity()
            + 13 * self.heads.capacity()
    }
}

/// A live map entry as the outside sees it (`DocIndex::map_entries`): its
/// key, the id of its last clock, its content kind and type ref.
pub type MapEntry = (Vec<u8>, u64, u32, u8, Option<u8>);

/// A container as the outside sees it (snapshots).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyView {
    Root(Vec<u8>),
    Item(u64, u32),
}

/// One run as the outside sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunView {
    pub client: u64,
    pub clock: u32,
    pub end: u32,
    pub kind: u8,
    pub origin: Option<Id>,
    pub right_origin: Option<Id>,
    /// The list holding it (container, map key), None once GC'd.
    pub list: Option<(KeyView, Option<Vec<u8>>)>,
    pub type_ref: Option<u8>,
}

/// Everything the index holds, in a canonical order (for the differential
/// fuzzer and the tests; `DocIndex.snapshot` in the Python reference).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub state: Vec<(u64, u32)>,
    pub runs: Vec<RunView>,
    pub lists: Vec<(KeyView, Option<Vec<u8>>, Vec<(u64, u32, u32)>)>,
    pub deleted: Vec<(u64, Vec<(u32, u32)>)>,
    pub pending: Vec<(u64, Vec<(u32, u32)>)>,
    pub types: Vec<(u64, Vec<u32>)>,
    pub observed: Vec<(KeyView, u8)>,
    pub pair_splits: Vec<(u64, Vec<u32>)>,
    pub root_types: Vec<(Vec<u8>, u8)>,
    pub formatting: bool,
}

/// The split of an update's delete set at what the document will hold after
/// its structs: ranges applicable now, and ranges of clocks still missing
/// (`crdtsync.model.doc._split_deletes`).
pub struct DeleteSplit {
    pub now: Vec<(u64, Vec<(u32, u32)>)>,
    pub later: Vec<(u64, Vec<(u32, u32)>)>,
}

impl DeleteSplit {
    pub fn later_ranges(&self) -> usize {
        self.later.iter().map(|(_, r)| r.len()).sum()
    }
}

/// The undo log and pending work of one update being integrated
/// (`_yupdate.IndexUpdate`).
struct Txn {
    strict: bool,
    max_pending: u64,
    /// S7 clocks of the update's own Strings, per client id (sorted).
    pairs: KeyedMap<u64, Vec<u32>>,
    /// Client numbers whose state moved, with their old state, in order.
    old_state: Vec<(u32, u32)>,
    moved: FxHashSet<u32>,
    old_observed: Vec<(Key, Option<u8>)>,
    new_lists: Vec<u32>,
    /// Ranges the structs delete at commit (client number, start, end).
    deletions: Vec<(u32, u32, u32)>,
    new_types: Vec<(u32, u32)>,
    doomed_types: KeyedSet<(u32, u32)>,
    formatting: bool,
    placed: KeyedSet<(Key, bool, u8)>,
    /// The last placement checked (consecutive items mostly share it).
    /// (as the container's scope and `entry << 4 | kind`; kind 0xFF: none).
    last_placed: (u64, u8),
    /// The last parent named by ID that was a live type, and its container
    /// (entries of one map name the same parent): a type item is a run of
    /// its own, and nothing deletes or GCs it before the commit.
    last_parent: Option<(Id, Key)>,
    /// The delete set applied at commit.
    delete_set: Vec<(u64, Vec<(u32, u32)>)>,
    /// Table sizes when the update began (everything past them is undone).
    n_clients: usize,
    /// Arena length when the update began (to trim after a large one).
    n_runs: usize,
    /// `reserve_for` reserved room for it (given back if it is undone).
    reserved: bool,
    n_names: usize,
    n_subs: usize,
    /// Per update client: its position and the clocks of its structs (for
    /// `find`), built on demand.
    starts: Option<KeyedMap<u64, (usize, Vec<u32>)>>,
}

fn malformed(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Malformed, msg)
}

fn missing(msg: impl Into<String>, client: u64, clock: u32, needs: Id) -> Error {
    Error::missing(msg, client, clock, needs)
}

fn fmt_id(r: Option<Id>) -> String {
    match r {
        None => "(none)".to_string(),
        Some((c, k)) => format!("{c}:{k}"),
    }
}

/// Label capacities: a window of `2**i` labels holds at most `cap(i)` runs
/// (density threshold `1.5**-i`, Bender et al. 2002).
fn label_cap(i: u32) -> u64 {
    (2.0f64 / 1.5).powi(i as i32) as u64
}

/// Up to this many clients, `client_num` compares ids instead of hashing.
const FEW_CLIENTS: usize = 4;

/// The index of one document.
pub struct DocIndex {
    runs: Vec<Run>,
    free_runs: Vec<u32>,
    /// Client numbers of the references of runs that refer to a client
    /// numbered 65,534 or more (see `Refs`), by arena index.
    wide_refs: FxHashMap<u32, [u32; 2]>,
    clients: Vec<ClientData>,
    client_of: KeyedMap<u64, u32>,
    names: Interner,
    subs: Interner,
    /// Declared root types, by interned name.
    root_types: KeyedMap<u32, u8>,
    lists: Vec<List>,
    free_lists: Vec<u32>,
    /// The sequence list of each container (map entry lists: `subs.list`).
    seq_of: KeyedMap<Key, u32>,
    lists_of: KeyedMap<Key, Vec<u32>>,
    /// What each container of unknown type has shown (TEXTUAL/VALUED; for a
    /// root also KEYED or SEQUENCE, rule S11), kept across updates.
    observed: KeyedMap<Key, u8>,
    /// Pending deletions in all (`pending_deletes`).
    pub pending_deletes: u64,
    /// Clients with pair splits.
    pair_clients: usize,
    /// A Format item was integrated (yrs may then delete formatting items).
    pub formatting: bool,
    last_diff: Option<Vec<u8>>,
    open: Option<Txn>,
    caps: Vec<u64>,
    /// The keyed hash of this index's tables (see keyed.rs).
    hasher: KeyedState,
}

impl Default for DocIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl DocIndex {
    pub fn new() -> Self {
        let hasher = KeyedState::new();
        DocIndex {
            runs: Vec::new(),
            free_runs: Vec::new(),
            wide_refs: FxHashMap::default(),
            clients: Vec::new(),
            client_of: KeyedMap::with_hasher(hasher.clone()),
            names: Interner::new(hasher.clone()),
            subs: Interner::new(hasher.clone()),
            root_types: KeyedMap::with_hasher(hasher.clone()),
            lists: Vec::new(),
            free_lists: Vec::new(),
            seq_of: KeyedMap::with_hasher(hasher.clone()),
            lists_of: KeyedMap::with_hasher(hasher.clone()),
            observed: KeyedMap::with_hasher(hasher.clone()),
            pending_deletes: 0,
            pair_clients: 0,
            formatting: false,
            last_diff: None,
            open: None,
            caps: (0..=LABEL_BITS).map(label_cap).collect(),
            hasher,
        }
    }

    // -- public queries --------------------------------------------------------

    /// Declares a root's type (keeps the first one, as `dict.setdefault`).
    pub fn set_root_type(&mut self, name: &[u8], type_ref: u8) {
        let id = self.names.intern(0, name);
        self.root_types.entry(id).or_insert(type_ref);
    }

    /// The state vector entry of `client` (0 if unknown).
    pub fn state_of(&self, client: u64) -> u32 {
        self.client_of
            .get(&client)
            .map_or(0, |&c| self.clients[c as usize].state)
    }

    /// The state vector: (client, next clock) for every client with clocks.
    pub fn state(&self) -> Vec<(u64, u32)> {
        self.clients
            .iter()
            .filter(|c| c.state > 0)
            .map(|c| (c.id, c.state))
            .collect()
    }

    /// How many runs the index holds.
    pub fn run_count(&self) -> usize {
        self.clients.iter().map(|c| c.runs.len()).sum()
    }

    /// Bytes held by the index's tables (capacity, not just length), for the
    /// memory report.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let mut n = self.runs.capacity() * size_of::<Run>()
            + self.free_runs.capacity() * 4
            + self.wide_refs.capacity() * 13
            + self.clients.capacity() * size_of::<ClientData>()
            + self.lists.capacity() * size_of::<List>()
            + self.free_lists.capacity() * 4;
        for c in &self.clients {
            n += c.runs.capacity() * 4
                + c.starts.capacity() * 4
                + c.deleted.capacity() * 8
                + c.types.capacity() * 4
                + c.pending.capacity() * 8
                + c.pair_splits.capacity() * 4;
        }
        // hash maps: about (key + value + 1 control byte) per bucket
        n += self.client_of.capacity() * 13
            + self.seq_of.capacity() * 17
            + self.lists_of.capacity() * 37
            + self.observed.capacity() * 14
            + self.root_types.capacity() * 6;
        n += self.names.heap_bytes() + self.subs.heap_bytes();
        for v in self.lists_of.values() {
            n += v.capacity() * 4;
        }
        n
    }

    /// Size of one run in the arena.
    pub const RUN_BYTES: usize = std::mem::size_of::<Run>();

    /// Whether every range is already deleted here (`DocIndex.covers`).
    pub fn covers(&self, delete_set: &[(u64, Vec<(u32, u32)>)]) -> bool {
        for (client, ranges) in delete_set {
            let mine = self
                .client_of
                .get(client)
                .map(|&c| &self.clients[c as usize].deleted);
            for &(clock, length) in ranges {
                let end = clock as u64 + length as u64;
                let Some(ds) = mine else { return false };
                if !ds_covers(ds, clock, end) {
                    return false;
                }
            }
        }
        true
    }

    /// `Doc.contains`: every struct within the known clocks and every deleted
    /// range already deleted.
    pub fn contains(&self, parsed: &ParsedUpdate) -> bool {
        for (client, structs) in &parsed.clients {
            let last = structs.last().expect("blocks are never empty");
            if last.end() > self.state_of(*client) as u64 {
                return false;
            }
        }
        self.covers(&parsed.delete_set)
    }

    /// The delete set cut at the clocks the document will hold after the
    /// update's structs (`doc._split_deletes`).
    pub fn split_deletes(&self, parsed: &ParsedUpdate) -> DeleteSplit {
        let mut now: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
        let mut later: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
        let at: HashMap<u64, usize> = if parsed.delete_set.is_empty() {
            HashMap::new()
        } else {
            parsed
                .clients
                .iter()
                .enumerate()
                .map(|(i, (c, _))| (*c, i))
                .collect()
        };
        for (client, ranges) in &parsed.delete_set {
            let mut have = self.state_of(*client) as u64;
            if let Some(structs) = at.get(client).map(|&i| &parsed.clients[i].1) {
                if let Some(s) = structs.iter().rev().find(|s| s.kind != STRUCT_SKIP) {
                    have = have.max(s.end());
                }
            }
            let mut n: Vec<(u32, u32)> = Vec::new();
            let mut l: Vec<(u32, u32)> = Vec::new();
            for &(clock, length) in ranges {
                let end = clock as u64 + length as u64;
                if end <= have {
                    n.push((clock, length));
                } else if clock as u64 >= have {
                    l.push((clock, length));
                } else {
                    n.push((clock, (have - clock as u64) as u32));
                    l.push((have as u32, (end - have) as u32));
                }
            }
            if !n.is_empty() {
                now.push((*client, n));
            }
            if !l.is_empty() {
                later.push((*client, l));
            }
        }
        DeleteSplit { now, later }
    }

    // -- recording -------------------------------------------------------------

    /// Whether an update is open (begun, neither committed nor rolled back).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Checks an update against the document and integrates its structs
    /// (`DocIndex.begin`). On refusal the index is unchanged; otherwise
    /// [`commit`](Self::commit) or [`rollback`](Self::rollback) must follow.
    /// `delete_set` replaces the update's own (the part applicable now).
    pub fn begin(
        &mut self,
        data: &[u8],
        parsed: &ParsedUpdate,
        delete_set: Option<Vec<(u64, Vec<(u32, u32)>)>>,
        limits: &Limits,
        strict: bool,
    ) -> Result<()> {
        if self.open.is_some() {
            return Err(malformed(
                "internal error: an index update is already open (commit or roll it back first)",
            ));
        }
        let mut txn = Txn {
            strict,
            max_pending: limits.max_pending_deletes,
            pairs: update_pair_splits(data, parsed, &self.hasher),
            old_state: Vec::new(),
            moved: FxHashSet::default(),
            old_observed: Vec::new(),
            new_lists: Vec::new(),
            deletions: Vec::new(),
            new_types: Vec::new(),
            doomed_types: KeyedSet::with_hasher(self.hasher.clone()),
            formatting: false,
            placed: KeyedSet::with_hasher(self.hasher.clone()),
            last_placed: (0, 0xFF),
            last_parent: None,
            delete_set: delete_set.unwrap_or_else(|| parsed.delete_set.clone()),
            n_clients: self.clients.len(),
            n_runs: self.runs.len(),
            reserved: false,
            n_names: self.names.len(),
            n_subs: self.subs.len(),
            starts: None,
        };
        let outcome = self.run_txn(&mut txn, data, parsed);
        match outcome {
            Ok(()) => {
                self.open = Some(txn);
                Ok(())
            }
            Err(e) => {
                self.undo(txn);
                Err(e)
            }
        }
    }

    /// Whether the open update integrated a Format item.
    pub fn open_formatting(&self) -> bool {
        self.open.as_ref().is_some_and(|t| t.formatting)
    }

    /// Records the open update's deletions, once the engine applied it
    /// (`IndexUpdate.commit`). Returns the clients whose clocks moved.
    pub fn commit(&mut self) -> Vec<u64> {
        let Some(txn) = self.open.take() else {
            return Vec::new();
        };
        let moved: Vec<u64> = txn
            .old_state
            .iter()
            .map(|&(c, _)| self.clients[c as usize].id)
            .collect();
        for &(c, k) in &txn.new_types {
            if let Some(r) = self.node_at(c, k) {
                let run = &self.runs[r as usize];
                if run.kind() == CONTENT_TYPE && run.list != NONE {
                    let types = &mut self.clients[c as usize].types;
                    let i = types.partition_point(|&x| x < k);
                    types.insert(i, k);
                }
            }
        }
        for (client, splits) in &txn.pairs {
            let c = self.intern_client(*client);
            let mine = &mut self.clients[c as usize].pair_splits;
            let was_empty = mine.is_empty();
            if mine.last().is_none_or(|&l| l < splits[0]) {
                mine.extend_from_slice(splits);
            } else {
                mine.extend_from_slice(splits);
                mine.sort_unstable();
                mine.dedup();
            }
            if was_empty && !mine.is_empty() {
                self.pair_clients += 1;
            }
        }
        if txn.formatting {
            self.formatting = true;
        }
        for &(c, a, b) in &txn.deletions {
            self.delete(c, a as u64, b as u64);
        }
        for (client, ranges) in &txn.delete_set {
            let c = self.intern_client(*client);
            for &(clock, length) in ranges {
                self.delete(c, clock as u64, clock as u64 + length as u64);
            }
        }
        if self.pending_deletes > 0 {
            for &(c, _) in &txn.old_state {
                self.release_pending(c);
            }
        }
        self.last_diff = None;
        // An update that made most of the arena (a load, a full-state import)
        // leaves the tables up to twice their length: give the slack back, once.
        let n = self.runs.len();
        if n >= LARGE_UPDATE && n - txn.n_runs.min(n) > n / 2 {
            self.runs.shrink_to_fit();
            for c in &mut self.clients {
                c.runs.shrink_to_fit();
                c.starts.shrink_to_fit();
                c.deleted.shrink_to_fit();
            }
        }
        moved
    }

    /// Undoes the open update (`IndexUpdate.rollback`).
    pub fn rollback(&mut self) {
        if let Some(txn) = self.open.take() {
            self.undo(txn);
        }
    }

    /// Records an update the engine has applied (its structs, then its
    /// deletions), with no checks of completeness (`DocIndex.record`).
    pub fn record(&mut self, data: &[u8], parsed: &ParsedUpdate) -> Result<Vec<u64>> {
        let limits = Limits {
            max_pending_deletes: 1 << 62,
            ..Limits::default()
        };
        self.begin(data, parsed, None, &limits, false)?;
        Ok(self.commit())
    }

    /// Records the document's own changes from a state-vector diff
    /// (`DocIndex.record_diff`).
    pub fn record_diff(&mut self, data: &[u8], limits: &Limits) -> Result<()> {
        if self.last_diff.as_deref() == Some(data) {
            return Ok(());
        }
        let mut l = *limits;
        l.max_update_bytes = l.max_update_bytes.max(data.len() as u64);
        let parsed = parse_update(data, &l)?;
        self.record(data, &parsed)?;
        self.last_diff = if parsed.clients.is_empty() {
            Some(data.to_vec())
        } else {
            None
        };
        Ok(())
    }

    /// Records deletions the engine applied (`DocIndex.record_deletes`).
    pub fn record_deletes(&mut self, delete_set: &[(u64, Vec<(u32, u32)>)]) {
        for (client, ranges) in delete_set {
            let c = self.intern_client(*client);
            for &(clock, length) in ranges {
                self.delete(c, clock as u64, clock as u64 + length as u64);
            }
        }
    }

    // -- internals: tables -----------------------------------------------------

    #[inline]
    fn client_num(&self, client: u64) -> Option<u32> {
        if self.clients.len() <= FEW_CLIENTS {
            // Most documents have a writer or two: comparing their ids costs
            // less than hashing one (client_of's keyed hash; see keyed.rs for
            // why it cannot be an unkeyed one). Same answer: `clients[c].id`
            // and `client_of` always agree.
            return self
                .clients
                .iter()
                .position(|cd| cd.id == client)
                .map(|c| c as u32);
        }
        self.client_of.get(&client).copied()
    }

    fn intern_client(&mut self, client: u64) -> u32 {
        if let Some(c) = self.client_num(client) {
            return c;
        }
        let c = self.clients.len() as u32;
        self.clients.push(ClientData {
            id: client,
            ..ClientData::default()
        });
        self.client_of.insert(client, c);
        c
    }

    #[inline]
    fn id_of(&self, r: Ref) -> Option<Id> {
        (!r.is_none()).then(|| (self.clients[r.c as usize].id, r.k))
    }

    /// Before a large update (a load, a full-state import): room for one run
    /// per struct in the arena and in each known client's tables, reserved
    /// exactly. Growing them by doubling instead would leave them up to twice
    /// their length (and the allocator the freed smaller copies) for the whole
    /// life of the document; a checked update makes at most one run per struct
    /// plus the splits of runs it inserts into, which grow the tables as usual.
    fn reserve_for(&mut self, parsed: &ParsedUpdate) -> bool {
        let n = parsed.struct_count();
        if n < LARGE_UPDATE {
            return false;
        }
        let spare = self.runs.capacity() - self.runs.len() + self.free_runs.len();
        if n > spare {
            self.runs.reserve_exact(n - self.free_runs.len());
        }
        for (client, structs) in &parsed.clients {
            if let Some(c) = self.client_num(*client) {
                let cd = &mut self.clients[c as usize];
                cd.runs.reserve_exact(structs.len());
                cd.starts.reserve_exact(structs.len());
            }
        }
        true
    }

    fn new_run(&mut self, run: Run, origin: Ref, ro: Ref) -> u32 {
        let n = if let Some(i) = self.free_runs.pop() {
            self.runs[i as usize] = run;
            i
        } else {
            self.runs.push(run);
            (self.runs.len() - 1) as u32
        };
        let narrow = |c: u32| match c {
            NONE => NIL16,
            c if c < WIDE16 as u32 => c as u16,
            _ => WIDE16,
        };
        let refs = Refs {
            origin_k: origin.k,
            ro_k: ro.k,
            origin_c: narrow(origin.c),
            ro_c: narrow(ro.c),
        };
        self.runs[n as usize].refs = refs;
        if refs.origin_c == WIDE16 || refs.ro_c == WIDE16 {
            self.wide_refs.insert(n, [origin.c, ro.c]);
        } else if !self.wide_refs.is_empty() {
            self.wide_refs.remove(&n); // a reused slot's
        }
        n
    }

    /// A run's origin.
    #[inline]
    fn origin_of(&self, n: u32) -> Ref {
        let r = &self.runs[n as usize].refs;
        let c = match r.origin_c {
            NIL16 => NONE,
            WIDE16 => self.wide_refs[&n][0],
            c => c as u32,
        };
        Ref { c, k: r.origin_k }
    }

    /// A run's right origin.
    #[inline]
    fn ro_of(&self, n: u32) -> Ref {
        let r = &self.runs[n as usize].refs;
        let c = match r.ro_c {
            NIL16 => NONE,
            WIDE16 => self.wide_refs[&n][1],
            c => c as u32,
        };
        Ref { c, k: r.ro_k }
    }

    /// The run holding `clock` of client number `c`.
    #[inline]
    fn node_at(&self, c: u32, clock: u32) -> Option<u32> {
        let cd = &self.clients[c as usize];
        if clock >= cd.state {
            return None;
        }
        let &last = cd.runs.last()?;
        if clock >= *cd.starts.last()? {
            // most references are to a client's latest run
            return Some(last);
        }
        // The runs tile [0, state) from clock 0: some run holds `clock`.
        let i = cd.starts.partition_point(|&k| k <= clock);
        Some(cd.runs[i - 1])
    }

    /// [`node_at`](Self::node_at) with the run's end (found on the way).
    #[inline]
    fn node_end_at(&self, c: u32, clock: u32) -> Option<(u32, u32)> {
        let cd = &self.clients[c as usize];
        if clock >= cd.state {
            return None;
        }
        let &last = cd.runs.last()?;
        if clock >= *cd.starts.last()? {
            return Some((last, cd.state));
        }
        let i = cd.starts.partition_point(|&k| k <= clock);
        Some((cd.runs[i - 1], cd.starts[i]))
    }

    /// The live run holding a reference's clock, with its end.
    #[inline]
    fn live_end_at_ref(&self, r: Ref) -> Option<(u32, u32)> {
        if r.c as usize >= self.clients.len() {
            return None;
        }
        let (n, end) = self.node_end_at(r.c, r.k)?;
        (self.runs[n as usize].list != NONE).then_some((n, end))
    }

    /// Where run `n` ends: where its client's next run starts, or at the
    /// client's state for its last run.
    #[inline]
    fn run_end(&self, n: u32) -> u32 {
        let r = &self.runs[n as usize];
        let cd = &self.clients[r.client as usize];
        if cd.runs.last() == Some(&n) {
            return cd.state;
        }
        let i = cd.starts.partition_point(|&k| k <= r.clock);
        cd.starts[i]
    }

    #[inline]
    fn node_at_id(&self, id: Id) -> Option<u32> {
        self.node_at(self.client_num(id.0)?, id.1)
    }

    /// The run holding `id` if a list holds it (None if GC'd or unknown).
    #[inline]
    fn live_at(&self, id: Id) -> Option<u32> {
        let r = self.node_at_id(id)?;
        (self.runs[r as usize].list != NONE).then_some(r)
    }

    /// The run holding a reference's clock (None: none, or an unknown client).
    #[inline]
    fn node_at_ref(&self, r: Ref) -> Option<u32> {
        if r.c as usize >= self.clients.len() {
            return None;
        }
        self.node_at(r.c, r.k)
    }

    #[inline]
    fn live_at_ref(&self, r: Ref) -> Option<u32> {
        let n = self.node_at_ref(r)?;
        (self.runs[n as usize].list != NONE).then_some(n)
    }

    /// The list of container `key`'s sequence (`sub` NONE) or of its map key
    /// `sub` (interned in `key`'s scope), made if new.
    fn list_for(&mut self, key: Key, sub: u32) -> (u32, bool) {
        let free = self.free_lists.last().copied();
        let slot = free.unwrap_or(self.lists.len() as u32);
        if sub != NONE {
            match self.subs.list[sub as usize] {
                NONE => self.subs.list[sub as usize] = slot,
                l => return (l, false),
            }
        } else {
            match self.seq_of.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => return (*e.get(), false),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(slot);
                }
            }
        }
        let list = List {
            key,
            sub,
            start: NONE,
        };
        let l = if free.is_some() {
            self.free_lists.pop();
            self.lists[slot as usize] = list;
            slot
        } else {
            self.lists.push(list);
            slot
        };
        self.lists_of.entry(key).or_default().push(l);
        (l, true)
    }

    /// Forgets which list is `key`'s sequence or map key `sub`.
    fn unfile_list(&mut self, key: Key, sub: u32) {
        if sub != NONE {
            self.subs.list[sub as usize] = NONE;
        } else {
            self.seq_of.remove(&key);
        }
    }

    /// The list filed as `key`'s sequence or map key `sub`, if any.
    fn filed_list(&self, key: Key, sub: u32) -> Option<u32> {
        if sub != NONE {
            let l = self.subs.list[sub as usize];
            (l != NONE && self.subs.scopes[sub as usize] == key.scope()).then_some(l)
        } else {
            self.seq_of.get(&key).copied()
        }
    }

    /// Every live list (its number and what it holds).
    fn live_lists(&self) -> impl Iterator<Item = (u32, List)> + '_ {
        self.lists_of
            .values()
            .flatten()
            .map(|&l| (l, self.lists[l as usize]))
    }

    fn remove_list(&mut self, l: u32) {
        let List { key, sub, .. } = self.lists[l as usize];
        self.unfile_list(key, sub);
        if let Some(v) = self.lists_of.get_mut(&key) {
            v.retain(|&x| x != l);
            if v.is_empty() {
                self.lists_of.remove(&key);
            }
        }
        self.free_lists.push(l);
    }

    /// Splits a run before clock `at`; returns the tail (linked right after).
    fn split(&mut self, node: u32, at: u32) -> u32 {
        let r = self.runs[node as usize];
        let tail = Run {
            clock: at,
            client: r.client,
            list: r.list,
            left: NONE,
            right: NONE,
            refs: Refs::default(),
            meta: meta_of(r.kind(), None),
        };
        let origin = Ref {
            c: r.client,
            k: at - 1,
        };
        let t = self.new_run(tail, origin, self.ro_of(node));
        {
            let cd = &mut self.clients[r.client as usize];
            let i = cd.starts.partition_point(|&k| k <= r.clock);
            cd.starts.insert(i, at);
            cd.runs.insert(i, t);
        }
        if r.list != NONE {
            let right = r.right;
            self.runs[t as usize].left = node;
            self.runs[t as usize].right = right;
            self.runs[node as usize].right = t;
            if right != NONE {
                self.runs[right as usize].left = t;
            }
            self.label_for(t);
        }
        t
    }

    /// The live run ending at `id` (split there), given the live run `node`
    /// holding it and its end; whether it was split.
    fn clean_end(&mut self, id: Id, node: u32, end: u32) -> bool {
        let split = id.1 + 1 < end;
        if split {
            self.split(node, id.1 + 1);
        }
        split
    }

    /// The live run starting at `id` (split there), or None if GC'd; `node`
    /// held it when looked up (with its end, unless a split since moved it).
    fn clean_start(&mut self, id: Id, node: Option<(u32, Option<u32>)>) -> Option<u32> {
        let holds = |ix: &Self, n: u32, end: Option<u32>| {
            ix.runs[n as usize].clock <= id.1 && id.1 < end.unwrap_or_else(|| ix.run_end(n))
        };
        let mut node = match node {
            Some((n, end)) if holds(self, n, end) => Some(n),
            _ => self.live_at(id),
        };
        if let Some(n) = node {
            if id.1 > self.runs[n as usize].clock {
                node = Some(self.split(n, id.1));
            }
        }
        node
    }

    /// Gives a freshly linked run a label between its neighbours'.
    fn label_for(&mut self, node: u32) {
        let Run { left, right, .. } = self.runs[node as usize];
        let lo: i128 = if left != NONE {
            self.runs[left as usize].label() as i128
        } else {
            -1
        };
        let hi: i128 = if right != NONE {
            self.runs[right as usize].label() as i128
        } else {
            LABEL_END
        };
        let gap = hi - lo;
        if gap > 1 {
            let label = if right == NONE {
                lo + (gap / 2).min(LABEL_STEP)
            } else if left == NONE {
                hi - (gap / 2).min(LABEL_STEP)
            } else {
                lo + gap / 2
            };
            self.runs[node as usize].set_label(label as u64);
            return;
        }
        // No room: relabel the smallest aligned window around the anchor
        // that is sparse enough, evenly.
        let anchor: u64 = if left != NONE { lo as u64 } else { hi as u64 };
        let (mut first, mut last) = (node, node);
        let mut count: u64 = 1;
        let mut i: u32 = 0;
        let (mut base, mut top): (u64, u128);
        loop {
            i += 1;
            base = (anchor >> i) << i;
            top = base as u128 + (1u128 << i);
            loop {
                let l = self.runs[first as usize].left;
                if l != NONE && self.runs[l as usize].label() >= base {
                    first = l;
                    count += 1;
                } else {
                    break;
                }
            }
            loop {
                let r = self.runs[last as usize].right;
                if r != NONE && (self.runs[r as usize].label() as u128) < top {
                    last = r;
                    count += 1;
                } else {
                    break;
                }
            }
            if count <= self.caps[i as usize] || i == LABEL_BITS {
                break;
            }
        }
        let step = (1u64 << i) / count;
        let mut label = base + step / 2;
        let mut n = first;
        loop {
            self.runs[n as usize].set_label(label);
            label += step;
            if n == last {
                break;
            }
            n = self.runs[n as usize].right;
        }
    }

    /// Deletes clocks `[start, end)` of client number `c` as yrs does.
    fn delete(&mut self, c: u32, start: u64, end: u64) {
        let known = self.clients[c as usize].state as u64;
        let mut end = end;
        if end > known {
            self.add_pending(c, start.max(known) as u32, end as u32);
            end = known;
        }
        if start >= end {
            return;
        }
        let (start, end) = (start as u32, end as u32);
        ds_add(&mut self.clients[c as usize].deleted, start, end);
        let types = &mut self.clients[c as usize].types;
        if types.is_empty() {
            return;
        }
        let i = types.partition_point(|&t| t < start);
        let j = i + types[i..].partition_point(|&t| t < end);
        if i < j {
            let doomed: Vec<u32> = types.drain(i..j).collect();
            for t in doomed {
                let n = self
                    .node_at(c, t)
                    .expect("a live type item is in the index");
                self.runs[n as usize].set_kind(CONTENT_DELETED, None);
                self.gc_inside(Key::Item(c, t));
            }
        }
    }

    /// Everything inside a deleted type becomes GC, recursively (`Item::gc`).
    fn gc_inside(&mut self, container: Key) {
        let mut stack = vec![container];
        while let Some(key) = stack.pop() {
            let Some(lists) = self.lists_of.remove(&key) else {
                continue;
            };
            for l in lists {
                let List { key, sub, start } = self.lists[l as usize];
                self.unfile_list(key, sub);
                self.lists[l as usize].start = NONE;
                self.free_lists.push(l);
                let mut node = start;
                while node != NONE {
                    let r = self.runs[node as usize];
                    let end = self.run_end(node);
                    let nxt = r.right;
                    {
                        let run = &mut self.runs[node as usize];
                        run.list = NONE;
                        run.left = NONE;
                        run.right = NONE;
                    }
                    if r.kind() == CONTENT_TYPE {
                        let types = &mut self.clients[r.client as usize].types;
                        if let Ok(k) = types.binary_search(&r.clock) {
                            types.remove(k);
                        }
                        stack.push(Key::Item(r.client, r.clock));
                    }
                    self.runs[node as usize].set_kind(STRUCT_GC, None);
                    ds_add(&mut self.clients[r.client as usize].deleted, r.clock, end);
                    node = nxt;
                }
            }
        }
    }

    fn add_pending(&mut self, c: u32, start: u32, end: u32) {
        let pending = &mut self.clients[c as usize].pending;
        let i = pending.partition_point(|&x| x <= (start, end));
        pending.insert(i, (start, end));
        self.pending_deletes += 1;
    }

    /// Applies the pending deletions of client number `c` its clocks now reach.
    fn release_pending(&mut self, c: u32) {
        let cd = &self.clients[c as usize];
        let Some(&(first, _)) = cd.pending.first() else {
            return;
        };
        if first >= cd.state {
            return;
        }
        let pending = std::mem::take(&mut self.clients[c as usize].pending);
        self.pending_deletes -= pending.len() as u64;
        for (s, e) in pending {
            self.delete(c, s as u64, e as u64);
        }
    }

    // -- internals: one update -------------------------------------------------

    fn run_txn(&mut self, txn: &mut Txn, data: &[u8], parsed: &ParsedUpdate) -> Result<()> {
        check_static(parsed)?;
        self.prepass(txn, parsed)?;
        txn.reserved = self.reserve_for(parsed);
        self.integrate_all(txn, data, parsed)?;
        self.check_delete_set(txn)
    }

    /// The update's struct holding `client:clock` (not a Skip), if any.
    fn find<'p>(
        &self,
        txn: &mut Txn,
        parsed: &'p ParsedUpdate,
        client: u64,
        clock: u32,
    ) -> Option<&'p Struct> {
        let starts = txn.starts.get_or_insert_with(|| {
            let mut m =
                KeyedMap::with_capacity_and_hasher(parsed.clients.len(), self.hasher.clone());
            for (i, (c, ss)) in parsed.clients.iter().enumerate() {
                m.insert(*c, (i, ss.iter().map(|s| s.clock).collect()));
            }
            m
        });
        let (at, st) = starts.get(&client)?;
        let i = st.partition_point(|&k| k <= clock);
        if i == 0 {
            return None;
        }
        let s = &parsed.clients[*at].1[i - 1];
        ((clock as u64) < s.end() && s.kind != STRUCT_SKIP).then_some(s)
    }

    /// S2 and S5: references point backwards on their client, and exist.
    fn prepass(&self, txn: &mut Txn, parsed: &ParsedUpdate) -> Result<()> {
        let strict = txn.strict;
        // Clocks the update provides per client: up to its end when it has
        // no Skip; else ask `find`.
        let mut ends: KeyedMap<u64, u64> =
            KeyedMap::with_capacity_and_hasher(parsed.clients.len(), self.hasher.clone());
        for (c, ss) in &parsed.clients {
            if ss.iter().all(|x| x.kind != STRUCT_SKIP) {
                let last = ss.last().expect("blocks are never empty");
                ends.insert(*c, last.end());
            }
        }
        for (client, structs) in &parsed.clients {
            let client = *client;
            let before = self.state_of(client);
            let mut known = before as u64;
            let my_end = ends.get(&client).copied();
            for s in structs {
                let send = s.end();
                if s.kind == STRUCT_SKIP {
                    if send > known && strict {
                        return Err(missing(
                            format!("Skip struct at {client}:{}: the update has a gap", s.clock),
                            client,
                            (s.clock as u64).max(known) as u32,
                            (client, (send - 1) as u32),
                        ));
                    }
                    continue;
                }
                if send <= known {
                    continue;
                }
                if s.clock as u64 > known {
                    if strict {
                        return Err(missing(
                            format!(
                                "client {client} starts at clock {} but the document has only \
                                 {known}: missing updates",
                                s.clock
                            ),
                            client,
                            known as u32,
                            (client, s.clock - 1),
                        ));
                    }
                    return Err(malformed(format!(
                        "client {client} has a clock gap before {} (the index has {known})",
                        s.clock
                    )));
                }
                let tail = (s.clock as u64) < known;
                known = send;
                if s.kind == STRUCT_GC {
                    continue;
                }
                let parent = match s.parent {
                    Parent::Item(p) => Some(p),
                    _ => None,
                };
                for (r, what) in [
                    (s.origin, "origin"),
                    (s.right_origin, "right origin"),
                    (parent, "parent"),
                ] {
                    let Some((rc, rk)) = r else { continue };
                    if rc == client && rk >= s.clock {
                        return Err(malformed(format!(
                            "item {client}:{} has {what} {rc}:{rk} that is not earlier on its \
                             own client",
                            s.clock
                        )));
                    }
                    let have = if rc == client {
                        before
                    } else {
                        self.state_of(rc)
                    };
                    if !(tail && what == "origin") && rk >= have {
                        let end = if rc == client {
                            my_end
                        } else {
                            ends.get(&rc).copied()
                        };
                        let found = match end {
                            Some(end) => (rk as u64) < end,
                            None => self.find(txn, parsed, rc, rk).is_some(),
                        };
                        if !found {
                            return Err(missing(
                                format!(
                                    "item {client}:{} depends on {what} {rc}:{rk}, which is \
                                     neither in the document nor in the update (missing updates)",
                                    s.clock
                                ),
                                rc,
                                rk,
                                (rc, rk),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The structs in the order of yrs's `BlockPicker`.
    fn integrate_all(&mut self, txn: &mut Txn, data: &[u8], parsed: &ParsedUpdate) -> Result<()> {
        let clients = &parsed.clients;
        if clients.len() == 1 {
            for s in &clients[0].1 {
                self.integrate(txn, data, s)?;
            }
            return Ok(());
        }
        // Position of each client in the update.
        let mut at: KeyedMap<u64, usize> =
            KeyedMap::with_capacity_and_hasher(clients.len(), self.hasher.clone());
        at.extend(clients.iter().enumerate().map(|(i, (c, _))| (*c, i)));
        // A stack of client positions: the highest client id on top.
        let mut order: Vec<usize> = (0..clients.len()).collect();
        order.sort_unstable_by_key(|&i| clients[i].0);
        let mut pos: Vec<usize> = vec![0; clients.len()];
        let mut taken: Vec<bool> = vec![false; clients.len()];
        let mut stack: Vec<(usize, usize)> = Vec::new(); // (client position, struct index)
                                                         // How many structs of each client wait on the stack (the reference
                                                         // scans the stack; a count answers the same in O(1)).
        let mut on_stack: Vec<u32> = vec![0; clients.len()];
        let mut latest: Option<usize> = None;
        loop {
            let (mut ci, mut si);
            if let Some((c, s)) = stack.pop() {
                on_stack[c] -= 1;
                ci = c;
                si = s;
            } else {
                loop {
                    if let Some(l) = latest {
                        if pos[l] < clients[l].1.len() {
                            break;
                        }
                    }
                    let Some(next) = order.pop() else {
                        return Ok(());
                    };
                    latest = Some(next);
                    taken[next] = true;
                }
                let l = latest.expect("set above");
                ci = l;
                si = pos[l];
                pos[l] += 1;
            }
            loop {
                let s = &clients[ci].1[si];
                // yrs's missing_dependency: the client of the first reference
                // not integrated yet (known clocks and GC/Skip need none).
                let mut missing_client: Option<u64> = None;
                if s.kind != STRUCT_GC && s.kind != STRUCT_SKIP {
                    let known = self.state_of(s.client) as u64;
                    if s.end() > known {
                        match s.origin {
                            Some((oc, ok))
                                if s.clock as u64 >= known && ok >= self.state_of(oc) =>
                            {
                                missing_client = Some(oc);
                            }
                            _ => match s.right_origin {
                                Some((rc, rk)) if rk >= self.state_of(rc) => {
                                    missing_client = Some(rc);
                                }
                                _ => {
                                    if let Parent::Item((pc, pk)) = s.parent {
                                        if pk >= self.state_of(pc) {
                                            missing_client = Some(pc);
                                        }
                                    }
                                }
                            },
                        }
                    }
                }
                let Some(mc) = missing_client else { break };
                stack.push((ci, si));
                on_stack[ci] += 1;
                let cycle = match at.get(&mc) {
                    None => true,
                    Some(&m) => taken[m] || pos[m] >= clients[m].1.len() || on_stack[m] > 0,
                };
                if cycle {
                    return Err(malformed(format!(
                        "item {}:{} is part of a dependency cycle in the update: yrs would \
                         leave it pending",
                        s.client, s.clock
                    )));
                }
                let m = at[&mc];
                ci = m;
                si = pos[m];
                pos[m] += 1;
            }
            self.integrate(txn, data, &clients[ci].1[si])?;
        }
    }

    /// Whether a split before `client:clock` falls inside a surrogate pair (S7).
    fn splits_pair(&self, txn: &Txn, client: u64, clock: u64) -> bool {
        if clock > u32::MAX as u64 {
            return false;
        }
        let clock = clock as u32;
        if let Some(mine) = txn.pairs.get(&client) {
            if mine.binary_search(&clock).is_ok() {
                return true;
            }
        }
        match self.client_num(client) {
            Some(c) => self.clients[c as usize]
                .pair_splits
                .binary_search(&clock)
                .is_ok(),
            None => false,
        }
    }

    fn set_state(&mut self, txn: &mut Txn, c: u32, end: u32) {
        if txn.moved.insert(c) {
            txn.old_state.push((c, self.clients[c as usize].state));
        }
        self.clients[c as usize].state = end;
    }

    /// An ID as a stored reference: its client's number when the index knows
    /// the client (`client`/`c` is the struct's own, known without a lookup),
    /// else a reference with the client `UNKNOWN`, which equals no stored one
    /// and holds nothing.
    #[inline]
    fn ref_for(&self, id: Id, client: u64, c: u32) -> Ref {
        let rc = if id.0 == client {
            c
        } else {
            self.client_num(id.0).unwrap_or(UNKNOWN)
        };
        Ref { c: rc, k: id.1 }
    }

    /// A reference ready to be stored (its client interned).
    #[inline]
    fn stored(&mut self, r: Ref, id: Id) -> Ref {
        if r.c == UNKNOWN {
            Ref {
                c: self.intern_client(id.0),
                k: r.k,
            }
        } else {
            r
        }
    }

    fn integrate(&mut self, txn: &mut Txn, data: &[u8], s: &Struct) -> Result<()> {
        let client = s.client;
        let c_known = self.client_num(client);
        let known = c_known.map_or(0, |c| self.clients[c as usize].state);
        let send = s.end();
        if send <= known as u64 || s.kind == STRUCT_SKIP {
            return Ok(()); // yrs already has these clocks (or nothing to carry)
        }
        let send = send as u32;
        let start = s.clock.max(known);
        if s.kind == STRUCT_GC {
            self.gc_run(txn, client, start, send);
            return Ok(());
        }
        let c = match c_known {
            Some(c) => c,
            None => self.intern_client(client),
        };
        let tail = s.clock < known;
        let origin: Option<Id> = if tail {
            Some((client, known - 1))
        } else {
            s.origin
        };
        let ro = s.right_origin;
        // S7: no split inside a surrogate pair.
        if (!txn.pairs.is_empty() || self.pair_clients > 0)
            && ((tail && self.splits_pair(txn, client, known as u64))
                || origin.is_some_and(|o| self.splits_pair(txn, o.0, o.1 as u64 + 1))
                || ro.is_some_and(|r| self.splits_pair(txn, r.0, r.1 as u64)))
        {
            let what = if tail {
                "overlaps the known clocks"
            } else {
                "has an origin or right origin"
            };
            return Err(malformed(format!(
                "item {client}:{} {what} inside a surrogate pair (a character outside the BMP)",
                s.clock
            )));
        }
        let origin_r: Option<Ref> = origin.map(|o| self.ref_for(o, client, c));
        let ro_r: Option<Ref> = ro.map(|r| self.ref_for(r, client, c));
        let nl_end = origin_r.and_then(|r| self.live_end_at_ref(r));
        let nr_end = ro_r.and_then(|r| self.live_end_at_ref(r));
        let nl = nl_end.map(|x| x.0);
        let nr = nr_end.map(|x| x.0);
        let lseq = nl.map(|n| self.runs[n as usize].list);
        let rseq = nr.map(|n| self.runs[n as usize].list);
        // The parent, as yrs's repair decides it.
        let explicit = !matches!(s.parent, Parent::Inherited);
        let key: Option<Key> = match s.parent {
            Parent::Root(name) => Some(Key::Root(self.names.intern(0, name.get(data)))),
            Parent::Item(p) if txn.last_parent.is_some_and(|(q, _)| q == p) => {
                txn.last_parent.map(|(_, k)| k)
            }
            Parent::Item(p) => {
                let pr = self.ref_for(p, client, c);
                match self.node_at_ref(pr) {
                    None => None,
                    Some(n) => {
                        let r = self.runs[n as usize];
                        if r.list == NONE || r.kind() == CONTENT_DELETED {
                            None // a GC'd or deleted parent: yrs turns the item into GC
                        } else if r.kind() != CONTENT_TYPE || r.clock != p.1 {
                            return Err(malformed(format!(
                                "item {client}:{} has parent {}:{} which is a {} item, not a type",
                                s.clock,
                                p.0,
                                p.1,
                                kind_name(r.kind())
                            )));
                        } else {
                            txn.last_parent = Some((p, Key::Item(r.client, p.1)));
                            Some(Key::Item(r.client, p.1))
                        }
                    }
                }
            }
            Parent::Inherited => {
                if let Some(l) = lseq {
                    Some(self.lists[l as usize].key)
                } else {
                    rseq.map(|l| self.lists[l as usize].key)
                }
            }
        };
        let Some(key) = key else {
            self.gc_run(txn, client, start, send);
            return Ok(());
        };
        // yrs takes the map key from a neighbour when one has it.
        let mut sub: u32 = match (explicit, s.parent_sub) {
            (true, Some(k)) => self.subs.intern(key.scope(), k.get(data)),
            _ => NONE,
        };
        if let Some(l) = rseq {
            if self.lists[l as usize].sub != NONE {
                sub = self.lists[l as usize].sub;
            }
        }
        if let Some(l) = lseq {
            if self.lists[l as usize].sub != NONE {
                sub = self.lists[l as usize].sub;
            }
        }
        // Neighbours that are not GC'd live in the list the item lands in.
        for (nseq, r, what) in [(lseq, origin, "origin"), (rseq, ro, "right origin")] {
            if let Some(l) = nseq {
                let list = self.lists[l as usize];
                if list.key != key || list.sub != sub {
                    return Err(malformed(format!(
                        "item {client}:{} has {what} {} in another container (or in another \
                         map entry list) than the one it lands in",
                        s.clock,
                        fmt_id(r)
                    )));
                }
            }
        }
        // S10: a map entry has no right origin.
        if sub != NONE {
            if let Some((rc, rk)) = ro {
                return Err(malformed(format!(
                    "item {client}:{} is an entry of a map key with a right origin {rc}:{rk} \
                     (map entries have none)",
                    s.clock
                )));
            }
        }
        // S8: the right origin lies after the origin in document order.
        let mut after = true;
        if let (Some(l), Some(r)) = (nl, nr) {
            let (o, rr) = (origin.expect("nl"), ro.expect("nr"));
            after = if l == r {
                rr.1 > o.1
            } else {
                self.runs[r as usize].label() > self.runs[l as usize].label()
            };
            if !after && !self.split_free(rr.1, r) {
                return Err(malformed(format!(
                    "item {client}:{} has right origin {}:{} that does not lie after its origin \
                     {}:{} in the document (replicas would place it differently)",
                    s.clock, rr.0, rr.1, o.0, o.1
                )));
            }
        }
        if after && (nl.is_some() || nr.is_some()) {
            self.check_known_between(s, origin, ro, origin_r, ro_r, nl, nr)?;
        }
        let kind = s.kind;
        let entry = sub != NONE;
        let placed = (key, entry, kind);
        let code = (key.scope(), (entry as u8) << 4 | kind);
        // (a type's place also depends on its type ref: S11)
        if kind == CONTENT_TYPE || (txn.last_placed != code && !txn.placed.contains(&placed)) {
            self.check_place(txn, s, key, entry)?;
            txn.placed.insert(placed);
        }
        txn.last_placed = code;
        if let (Some(o), Some(r)) = (origin, ro) {
            if nl.is_none() != nr.is_none() {
                self.check_gc_neighbours(s, o, r, nl.is_none())?;
            }
        }
        // Place it (Item::integrate).
        let mut split_left = false;
        let mut left = match (origin, nl_end) {
            (Some(o), Some((n, end))) => {
                split_left = self.clean_end(o, n, end);
                Some(n)
            }
            _ => None,
        };
        let right = match (ro, nr_end) {
            (Some(r), Some((n, end))) => {
                // a split of the same run has moved its end
                let end = (!(split_left && nl == Some(n))).then_some(end);
                self.clean_start(r, Some((n, end)))
            }
            _ => None,
        };
        let seq = if let Some(l) = lseq {
            l
        } else if let Some(r) = rseq {
            r
        } else {
            let (l, created) = self.list_for(key, sub);
            if created {
                txn.new_lists.push(l);
            }
            l
        };
        let right_n = right.unwrap_or(NONE);
        let conflict = match left {
            None => right.is_none() || self.runs[right_n as usize].left != NONE,
            Some(l) => self.runs[l as usize].right != right_n,
        };
        let origin_cmp = origin_r.unwrap_or(Ref::NIL);
        let ro_cmp = ro_r.unwrap_or(Ref::NIL);
        if conflict {
            let mut before: FxHashSet<u32> = FxHashSet::default();
            let mut conflicting: FxHashSet<u32> = FxHashSet::default();
            let mut o = match left {
                Some(l) => self.runs[l as usize].right,
                None => self.lists[seq as usize].start,
            };
            while o != NONE && o != right_n {
                before.insert(o);
                conflicting.insert(o);
                let on = self.runs[o as usize];
                let on_origin = self.origin_of(o);
                if origin_cmp == on_origin {
                    if self.clients[on.client as usize].id < client {
                        left = Some(o);
                        conflicting.clear();
                    } else if ro_cmp == self.ro_of(o) {
                        break;
                    }
                } else {
                    let ol = self.live_at_ref(on_origin);
                    match ol {
                        Some(ol) if before.contains(&ol) => {
                            if !conflicting.contains(&ol) {
                                left = Some(o);
                                conflicting.clear();
                            }
                        }
                        _ => break,
                    }
                }
                o = on.right;
            }
        }
        let origin_s = match (origin_r, origin) {
            (Some(r), Some(id)) => self.stored(r, id),
            _ => Ref::NIL,
        };
        let ro_s = match (ro_r, ro) {
            (Some(r), Some(id)) => self.stored(r, id),
            _ => Ref::NIL,
        };
        let squash = match left {
            Some(l) => {
                let lr = &self.runs[l as usize];
                sub == NONE
                    && lr.client == c
                    && self.run_end(l) == start
                    && lr.kind() == kind
                    && kind != CONTENT_TYPE
                    && self.ro_of(l) == ro_s
                    && start > 0
                    && origin_s == (Ref { c, k: start - 1 })
            }
            None => false,
        };
        let node = if squash {
            // typed on (yrs's try_squash): the run is its client's last, so
            // moving the client's state (below) extends it
            left.expect("squash has a left run")
        } else {
            let type_ref = match s.content {
                Content::Type { type_ref, .. } => Some(type_ref as u8),
                _ => None,
            };
            let run = Run {
                clock: start,
                client: c,
                list: seq,
                left: left.unwrap_or(NONE),
                right: NONE,
                refs: Refs::default(),
                meta: meta_of(kind, type_ref),
            };
            let n = self.new_run(run, origin_s, ro_s);
            let nxt = match left {
                Some(l) => {
                    let nxt = self.runs[l as usize].right;
                    self.runs[l as usize].right = n;
                    nxt
                }
                None => {
                    let nxt = self.lists[seq as usize].start;
                    self.lists[seq as usize].start = n;
                    nxt
                }
            };
            self.runs[n as usize].right = nxt;
            if nxt != NONE {
                self.runs[nxt as usize].left = n;
            }
            self.label_for(n);
            self.clients[c as usize].starts.push(start);
            self.clients[c as usize].runs.push(n);
            n
        };
        self.set_state(txn, c, send);
        match kind {
            CONTENT_DELETED => txn.deletions.push((c, start, send)),
            CONTENT_TYPE => txn.new_types.push((c, start)),
            CONTENT_FORMAT => txn.formatting = true,
            _ => {}
        }
        // Deletions yrs makes while integrating (Item::integrate / needs_deletion).
        if sub != NONE {
            let r = self.runs[node as usize];
            if r.right != NONE {
                self.doom(txn, c, start, send); // not the key's value: deleted at once
            } else if r.left != NONE {
                let prev = self.runs[r.left as usize]; // the key's previous value
                let prev_end = self.run_end(r.left);
                self.doom(txn, prev.client, prev.clock, prev_end);
            }
        }
        if let Key::Item(kc, kk) = key {
            if !txn.doomed_types.is_empty() && txn.doomed_types.contains(&(kc, kk)) {
                self.doom(txn, c, start, send);
            }
        }
        Ok(())
    }

    /// Whether no yrs replica can hold clock `clock` of run `nr` (the right
    /// origin) in one block with the clock before it.
    fn split_free(&self, clock: u32, nr: u32) -> bool {
        if clock == 0 {
            return true;
        }
        let r = self.runs[nr as usize];
        let prev_id = Ref {
            c: r.client,
            k: clock - 1,
        };
        let own = if clock == r.clock {
            self.origin_of(nr)
        } else {
            prev_id
        };
        if own != prev_id {
            return true;
        }
        match self.node_at(r.client, clock - 1) {
            Some(prev) => self.ro_of(prev) != self.ro_of(nr),
            None => false,
        }
    }

    /// Whether clock `a_clock` of run `a` lies at or before `b_clock` of run `b`.
    fn at_or_before(&self, a: u32, a_clock: u32, b: u32, b_clock: u32) -> bool {
        if a == b {
            return a_clock <= b_clock;
        }
        self.runs[a as usize].label() < self.runs[b as usize].label()
    }

    /// S9: nothing the writer provably knew lies between its origin and right origin.
    #[allow(clippy::too_many_arguments)]
    fn check_known_between(
        &self,
        s: &Struct,
        origin: Option<Id>,
        ro: Option<Id>,
        origin_r: Option<Ref>,
        ro_r: Option<Ref>,
        nl: Option<u32>,
        nr: Option<u32>,
    ) -> Result<()> {
        let seq = self.runs[nl.or(nr).expect("a neighbour") as usize].list;
        if let Some(r) = nr {
            if nl.is_some() || origin.is_none() {
                let rr = ro_r.expect("nr");
                let run = self.runs[r as usize];
                // the right origin's own origin
                let roo = if rr.k == run.clock {
                    self.origin_of(r)
                } else {
                    Ref {
                        c: run.client,
                        k: rr.k - 1,
                    }
                };
                if !roo.is_none() && Some(roo) != origin_r {
                    if let Some(q) = self.live_at_ref(roo) {
                        if self.runs[q as usize].list == seq
                            && match nl {
                                None => true,
                                Some(l) => !self.at_or_before(q, roo.k, l, origin_r.expect("nl").k),
                            }
                        {
                            let rid = ro.expect("nr");
                            let rooid = self.id_of(roo).expect("a stored reference");
                            return Err(malformed(format!(
                                "item {}:{}: the origin {}:{} of its right origin {}:{} lies \
                                 after its own origin {}, so its writer knew an item between \
                                 them",
                                s.client,
                                s.clock,
                                rooid.0,
                                rooid.1,
                                rid.0,
                                rid.1,
                                fmt_id(origin)
                            )));
                        }
                    }
                }
            }
        }
        if let Some(l) = nl {
            if nr.is_some() || ro.is_none() {
                let orr = self.ro_of(l);
                if !orr.is_none() && Some(orr) != ro_r {
                    if let Some(q) = self.live_at_ref(orr) {
                        if self.runs[q as usize].list == seq
                            && match nr {
                                None => true,
                                Some(r) => !self.at_or_before(r, ro_r.expect("nr").k, q, orr.k),
                            }
                        {
                            let o = origin.expect("nl");
                            let orrid = self.id_of(orr).expect("a stored reference");
                            return Err(malformed(format!(
                                "item {}:{}: the right origin {}:{} of its origin {}:{} lies \
                                 before its own right origin {}, so its writer knew an item \
                                 between them",
                                s.client,
                                s.clock,
                                orrid.0,
                                orrid.1,
                                o.0,
                                o.1,
                                fmt_id(ro)
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn doom(&mut self, txn: &mut Txn, c: u32, start: u32, end: u32) {
        txn.deletions.push((c, start, end));
        if let Some(n) = self.node_at(c, start) {
            if self.runs[n as usize].kind() == CONTENT_TYPE {
                txn.doomed_types.insert((c, start));
            }
        }
    }

    /// Clocks yrs stores as GC: no list holds them.
    fn gc_run(&mut self, txn: &mut Txn, client: u64, start: u32, end: u32) {
        let c = self.intern_client(client);
        let last = self.clients[c as usize].runs.last().copied();
        match last {
            Some(l) if self.runs[l as usize].list == NONE && self.run_end(l) == start => {
                // extended by moving the client's state (below)
            }
            _ => {
                let run = Run {
                    clock: start,
                    client: c,
                    list: NONE,
                    left: NONE,
                    right: NONE,
                    refs: Refs::default(),
                    meta: meta_of(STRUCT_GC, None),
                };
                let n = self.new_run(run, Ref::NIL, Ref::NIL);
                self.clients[c as usize].starts.push(start);
                self.clients[c as usize].runs.push(n);
            }
        }
        self.set_state(txn, c, end);
        txn.deletions.push((c, start, end));
    }

    fn seq_class(&self, key: Key) -> SeqClass {
        let tr = match key {
            Key::Root(name) => self.root_types.get(&name).copied(),
            Key::Item(c, k) => self
                .node_at(c, k)
                .and_then(|n| self.runs[n as usize].type_ref()),
        };
        match tr {
            None => SeqClass::Unknown,
            Some(t) => type_seq_class(t),
        }
    }

    /// S12 (`_yupdate.IndexUpdate._check_gc_neighbours`): an origin and a
    /// right origin are both garbage-collected, or neither.  Honest neighbours
    /// share a list, and yrs GCs only the items of a deleted type (all of a
    /// list or none); with one side GC'd yrs places the item from the other
    /// alone, and the document's export then breaks S9.
    fn check_gc_neighbours(&self, s: &Struct, origin: Id, ro: Id, origin_gc: bool) -> Result<()> {
        if self.state_of(origin.0) <= origin.1 || self.state_of(ro.0) <= ro.1 {
            return Ok(()); // not integrated (only when recording the document's own changes)
        }
        let (gc, live, gc_what, live_what) = if origin_gc {
            (origin, ro, "origin", "right origin")
        } else {
            (ro, origin, "right origin", "origin")
        };
        Err(malformed(format!(
            "item {}:{} has {gc_what} {}:{} garbage-collected (inside a deleted type) and \
             {live_what} {}:{} in a list: neighbours in different lists",
            s.client, s.clock, gc.0, gc.1, live.0, live.1
        )))
    }

    /// S4 and S11: the content fits the container (and list) it lands in.
    fn check_place(&mut self, txn: &mut Txn, s: &Struct, key: Key, entry: bool) -> Result<()> {
        let seen = self.observed.get(&key).copied();
        let root = matches!(key, Key::Root(_));
        if let Some(now) = place_check(s, self.seq_class(key), entry, seen, root)? {
            txn.old_observed.push((key, seen));
            self.observed.insert(key, now);
        }
        Ok(())
    }

    /// S7 for deletions, and the bound on deletions of clocks not integrated yet.
    fn check_delete_set(&self, txn: &Txn) -> Result<()> {
        let check_pairs = !txn.pairs.is_empty() || self.pair_clients > 0;
        let mut pending: u64 = 0;
        for (client, ranges) in &txn.delete_set {
            let known = self.state_of(*client) as u64;
            for &(clock, length) in ranges {
                let end = clock as u64 + length as u64;
                if check_pairs {
                    for at in [clock as u64, end] {
                        if self.splits_pair(txn, *client, at) {
                            return Err(malformed(format!(
                                "deletion {client}:{clock}+{length} splits a surrogate pair at \
                                 clock {at} (a character outside the BMP)"
                            )));
                        }
                    }
                }
                if end > known {
                    pending += 1;
                }
            }
        }
        let limit = txn.max_pending;
        if pending > 0 && self.pending_deletes + pending > limit {
            return Err(Error::new(
                ErrorKind::Limit,
                format!(
                    "the update deletes {pending} ranges of changes this document does not \
                     have, {} are waiting already: more than max_pending_deletes={limit}",
                    self.pending_deletes
                ),
            ));
        }
        Ok(())
    }

    /// Undoes what `run_txn` did.
    fn undo(&mut self, txn: Txn) {
        for &(c, old) in &txn.old_state {
            loop {
                let Some(&last) = self.clients[c as usize].runs.last() else {
                    break;
                };
                if self.runs[last as usize].clock < old {
                    break;
                }
                self.clients[c as usize].runs.pop();
                self.clients[c as usize].starts.pop();
                self.unlink(last);
                self.free_runs.push(last);
                if !self.wide_refs.is_empty() {
                    self.wide_refs.remove(&last);
                }
            }
            // (a squashed extension of the last run ends with the state)
            self.clients[c as usize].state = old;
        }
        for (key, was) in txn.old_observed.iter().rev() {
            match was {
                None => {
                    self.observed.remove(key);
                }
                Some(v) => {
                    self.observed.insert(*key, *v);
                }
            }
        }
        for &l in &txn.new_lists {
            if self.lists[l as usize].start == NONE {
                self.remove_list(l);
            }
        }
        // Clients, names and keys first seen in this update.
        while self.clients.len() > txn.n_clients {
            let cd = self.clients.pop().expect("non-empty");
            self.client_of.remove(&cd.id);
        }
        self.names.truncate(txn.n_names);
        self.subs.truncate(txn.n_subs);
        if txn.reserved {
            // A large update refused before it used its reservation: give it back.
            if self.runs.capacity() - self.runs.len() >= LARGE_UPDATE {
                self.runs.shrink_to_fit();
            }
            for c in &mut self.clients {
                if c.runs.capacity() - c.runs.len() >= LARGE_UPDATE {
                    c.runs.shrink_to_fit();
                    c.starts.shrink_to_fit();
                }
            }
        }
    }

    fn unlink(&mut self, node: u32) {
        let r = self.runs[node as usize];
        if r.list == NONE {
            return;
        }
        if r.left != NONE {
            self.runs[r.left as usize].right = r.right;
        } else {
            self.lists[r.list as usize].start = r.right;
        }
        if r.right != NONE {
            self.runs[r.right as usize].left = r.left;
        }
        self.runs[node as usize].left = NONE;
        self.runs[node as usize].right = NONE;
    }

    // -- views -----------------------------------------------------------------

    fn key_view(&self, key: Key) -> KeyView {
        match key {
            Key::Root(n) => KeyView::Root(self.names.get(n).to_vec()),
            Key::Item(c, k) => KeyView::Item(self.clients[c as usize].id, k),
        }
    }

    fn sub_view(&self, sub: u32) -> Option<Vec<u8>> {
        (sub != NONE).then(|| self.subs.get(sub).to_vec())
    }

    /// Everything the index holds (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            formatting: self.formatting,
            ..Snapshot::default()
        };
        let mut order: Vec<u32> = (0..self.clients.len() as u32).collect();
        order.sort_unstable_by_key(|&c| self.clients[c as usize].id);
        for &c in &order {
            let cd = &self.clients[c as usize];
            if cd.state > 0 {
                snap.state.push((cd.id, cd.state));
            }
            for &r in &cd.runs {
                let run = &self.runs[r as usize];
                snap.runs.push(RunView {
                    client: cd.id,
                    clock: run.clock,
                    end: self.run_end(r),
                    kind: run.kind(),
                    origin: self.id_of(self.origin_of(r)),
                    right_origin: self.id_of(self.ro_of(r)),
                    list: (run.list != NONE).then(|| {
                        let l = self.lists[run.list as usize];
                        (self.key_view(l.key), self.sub_view(l.sub))
                    }),
                    type_ref: run.type_ref(),
                });
            }
            if !cd.deleted.is_empty() {
                snap.deleted
                    .push((cd.id, cd.deleted.iter().map(|&(a, b)| (a, b - a)).collect()));
            }
            if !cd.pending.is_empty() {
                snap.pending.push((cd.id, cd.pending.clone()));
            }
            if !cd.types.is_empty() {
                snap.types.push((cd.id, cd.types.clone()));
            }
            if !cd.pair_splits.is_empty() {
                snap.pair_splits.push((cd.id, cd.pair_splits.clone()));
            }
        }
        for (l, List { key, sub, .. }) in self.live_lists() {
            let mut runs = Vec::new();
            let mut n = self.lists[l as usize].start;
            while n != NONE {
                let r = &self.runs[n as usize];
                runs.push((self.clients[r.client as usize].id, r.clock, self.run_end(n)));
                n = r.right;
            }
            snap.lists
                .push((self.key_view(key), self.sub_view(sub), runs));
        }
        snap.lists.sort();
        for (&key, &cls) in &self.observed {
            snap.observed.push((self.key_view(key), cls));
        }
        snap.observed.sort();
        for (&name, &tr) in &self.root_types {
            snap.root_types.push((self.names.get(name).to_vec(), tr));
        }
        snap.root_types.sort();
        snap
    }

    /// The container and map key of the list holding `client:clock` (None if
    /// the index does not have it or it is GC'd).
    pub fn where_of(&self, client: u64, clock: u32) -> Option<(KeyView, Option<Vec<u8>>)> {
        let n = self.live_at((client, clock))?;
        let l = self.lists[self.runs[n as usize].list as usize];
        Some((self.key_view(l.key), self.sub_view(l.sub)))
    }

    /// The live entries of a map container (a root by name, or the type item
    /// at `(client, clock)`): `(key, client, clock, kind, type ref)` of each
    /// key's current entry, in no particular order; `None` if the index knows
    /// no such container (no entry was ever filed in it).
    ///
    /// A key's current entry is the last item of its list (as yrs keeps it:
    /// integrating an entry deletes the ones to its left, and one that lands
    /// left of another is deleted at once); it is live unless its last clock
    /// is in the delete set or its content is Deleted. This answers what the
    /// engine's `Map.keys()` would, from the index alone, for a document
    /// whose engine has not applied its history yet (`Doc.load`, "Hydration"
    /// in `docs/TREE.md`).
    pub fn map_entries(&self, container: &KeyView) -> Option<Vec<MapEntry>> {
        let out = self
            .live_entries(container, true)?
            .map(|(sub, n, last)| {
                let run = &self.runs[n as usize];
                let id = self.clients[run.client as usize].id;
                (
                    self.subs.get(sub).to_vec(),
                    id,
                    last,
                    run.kind(),
                    run.type_ref(),
                )
            })
            .collect();
        Some(out)
    }

    /// The number of [`map_entries`](Self::map_entries), without building them.
    pub fn map_size(&self, container: &KeyView) -> Option<usize> {
        Some(self.live_entries(container, false)?.count())
    }

    /// The live entries of a map container: (interned key, run, last clock;
    /// without `clocks`, the clock is only found where deletions require it).
    fn live_entries(
        &self,
        container: &KeyView,
        clocks: bool,
    ) -> Option<impl Iterator<Item = (u32, u32, u32)> + '_> {
        let key = match container {
            KeyView::Root(name) => Key::Root(self.names.lookup(0, name)?),
            KeyView::Item(client, clock) => Key::Item(self.client_num(*client)?, *clock),
        };
        let lists = self.lists_of.get(&key)?;
        Some(lists.iter().filter_map(move |&l| {
            let list = self.lists[l as usize];
            if list.sub == NONE || list.start == NONE {
                return None; // the container's sequence, or an empty key
            }
            let mut n = list.start;
            while self.runs[n as usize].right != NONE {
                n = self.runs[n as usize].right;
            }
            let run = &self.runs[n as usize];
            if run.kind() == CONTENT_DELETED {
                return None;
            }
            let deleted = &self.clients[run.client as usize].deleted;
            if deleted.is_empty() && !clocks {
                return Some((list.sub, n, 0)); // (a client that deleted nothing)
            }
            let last = self.run_end(n) - 1;
            let dead = !deleted.is_empty() && ds_covers(deleted, last, last as u64 + 1);
            (!dead).then_some((list.sub, n, last))
        }))
    }

    /// The document's delete set as (clock, length) ranges per client.
    pub fn delete_set(&self) -> Vec<(u64, Vec<(u32, u32)>)> {
        self.clients
            .iter()
            .filter(|c| !c.deleted.is_empty())
            .map(|c| (c.id, c.deleted.iter().map(|&(a, b)| (a, b - a)).collect()))
            .collect()
    }

    /// Checks the invariants of the reference's docstring (O(document)).
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        for cd in &self.clients {
            let mut clock = 0u32;
            if cd.starts.len() != cd.runs.len() {
                return Err(format!("run starts of client {}", cd.id));
            }
            // Runs end where the next starts (the last at the state): they
            // tile [0, state) if they start at 0 and their starts increase.
            for (i, &r) in cd.runs.iter().enumerate() {
                let run = &self.runs[r as usize];
                if cd.starts[i] != run.clock {
                    return Err(format!("run start {}:{} not filed", cd.id, run.clock));
                }
                if (i == 0 && run.clock != 0) || (i > 0 && run.clock <= clock) {
                    return Err(format!("gap or overlap at {}:{}", cd.id, run.clock));
                }
                if self.clients[run.client as usize].id != cd.id {
                    return Err(format!(
                        "run {}:{} filed under another client",
                        cd.id, run.clock
                    ));
                }
                clock = run.clock;
            }
            if !cd.runs.is_empty() && clock >= cd.state || cd.runs.is_empty() && cd.state != 0 {
                return Err(format!("state of client {}", cd.id));
            }
            if cd.deleted.windows(2).any(|w| w[0].1 >= w[1].0) {
                return Err(format!("delete set of client {} not merged", cd.id));
            }
        }
        let mut in_lists = 0usize;
        for (l, list) in self.live_lists() {
            if self.filed_list(list.key, list.sub) != Some(l) {
                return Err(format!("list {l} filed under another key"));
            }
            let mut prev = NONE;
            let mut n = list.start;
            while n != NONE {
                let r = &self.runs[n as usize];
                if r.list != l {
                    return Err(format!("run in another list ({l})"));
                }
                if r.left != prev {
                    return Err(format!("broken left link in list {l}"));
                }
                if prev != NONE && self.runs[prev as usize].label() >= r.label() {
                    return Err(format!("labels do not increase in list {l}"));
                }
                in_lists += 1;
                prev = n;
                n = r.right;
            }
        }
        let live = self
            .clients
            .iter()
            .flat_map(|c| c.runs.iter())
            .filter(|&&r| self.runs[r as usize].list != NONE)
            .count();
        if live != in_lists {
            return Err(format!("{live} live runs but {in_lists} in lists"));
        }
        Ok(())
    }
}

/// `_DeleteSet.add`: merges `[start, end)` into sorted disjoint ranges.
fn ds_add(ds: &mut Vec<(u32, u32)>, start: u32, end: u32) {
    let i = ds.partition_point(|r| r.1 < start); // first range ending at or after start
    let j = ds.partition_point(|r| r.0 <= end); // ranges starting at or before end merge
    let (mut start, mut end) = (start, end);
    if i < j {
        if ds[i].0 <= start && ds[j - 1].1 >= end && j - i == 1 {
            return;
        }
        start = start.min(ds[i].0);
        end = end.max(ds[j - 1].1);
    }
    ds.splice(i..j, [(start, end)]);
}

/// `_DeleteSet.covers`.
fn ds_covers(ds: &[(u32, u32)], start: u32, end: u64) -> bool {
    let i = ds.partition_point(|r| r.0 <= start);
    i > 0 && ds[i - 1].1 as u64 >= end
}

/// S1 and S6: rules that need nothing but the update itself.
fn check_static(parsed: &ParsedUpdate) -> Result<()> {
    for (_, structs) in &parsed.clients {
        for s in structs {
            if s.kind == CONTENT_JSON {
                return Err(malformed(format!(
                    "item {}:{}: JSON content (ref 2) is obsolete and yrs decodes it \
                     differently from Yjs",
                    s.client, s.clock
                )));
            }
            if let Content::Type { type_ref, .. } = s.content {
                if type_ref == TYPE_XML_HOOK {
                    return Err(malformed(format!(
                        "item {}:{}: XmlHook type: Yjs writes its name, yrs 0.28 reads none and \
                         decodes the following bytes differently",
                        s.client, s.clock
                    )));
                }
            }
            if s.origin.is_some() && s.origin == s.right_origin {
                return Err(malformed(format!(
                    "item {}:{} has the same left and right origin {}",
                    s.client,
                    s.clock,
                    fmt_id(s.origin)
                )));
            }
        }
    }
    Ok(())
}

/// S7: clocks inside a surrogate pair of the update's Strings, per client.
fn update_pair_splits(
    data: &[u8],
    parsed: &ParsedUpdate,
    hasher: &KeyedState,
) -> KeyedMap<u64, Vec<u32>> {
    let mut out: KeyedMap<u64, Vec<u32>> = KeyedMap::with_hasher(hasher.clone());
    for (client, structs) in &parsed.clients {
        for s in structs {
            let Content::String(span) = s.content else {
                continue;
            };
            let bytes: &[u8] = Span::get(&span, data);
            // Only strings with a 4-byte UTF-8 sequence have pairs.
            if !bytes.iter().any(|&b| b >= 0xF0) {
                continue;
            }
            let v = out.entry(*client).or_default();
            let mut clock = s.clock;
            for &b in bytes {
                if b & 0xC0 == 0x80 {
                    continue; // a continuation byte
                }
                if b >= 0xF0 {
                    v.push(clock + 1);
                    clock += 2;
                } else {
                    clock += 1;
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: u8, content: Content) -> Struct {
        Struct {
            client: 1,
            clock: 0,
            length: 1,
            kind,
            info: 0,
            origin: None,
            right_origin: None,
            parent: Parent::Inherited,
            parent_sub: None,
            content,
        }
    }

    fn string() -> Struct {
        item(CONTENT_STRING, Content::String(Span { start: 0, end: 1 }))
    }

    fn any() -> Struct {
        item(
            CONTENT_ANY,
            Content::Any {
                n: 1,
                raw: Span { start: 0, end: 1 },
            },
        )
    }

    fn type_item(type_ref: u32) -> Struct {
        item(
            CONTENT_TYPE,
            Content::Type {
                type_ref,
                name: None,
            },
        )
    }

    /// Feeds items (struct, is a map entry) to a root, as the index does; the
    /// first refusal's position, or None.
    fn feed(seq: SeqClass, items: &[(Struct, bool)]) -> Option<usize> {
        let mut seen = None;
        for (i, (s, entry)) in items.iter().enumerate() {
            match place_check(s, seq, *entry, seen, true) {
                Ok(Some(now)) => seen = Some(now),
                Ok(None) => {}
                Err(_) => return Some(i),
            }
        }
        None
    }

    #[test]
    fn s11_a_root_of_unknown_type_keeps_its_first_kind() {
        let u = SeqClass::Unknown;
        assert_eq!(feed(u, &[(any(), true), (any(), false)]), Some(1));
        assert_eq!(feed(u, &[(any(), false), (any(), true)]), Some(1));
        assert_eq!(
            feed(u, &[(type_item(1), false), (string(), false)]),
            Some(1)
        );
        assert_eq!(
            feed(u, &[(string(), false), (type_item(0), false)]),
            Some(1)
        );
        assert_eq!(feed(u, &[(any(), true), (type_item(3), false)]), Some(1));
        // XML types go with either class; deleted items with anything.
        assert_eq!(feed(u, &[(type_item(6), false), (string(), false)]), None);
        assert_eq!(feed(u, &[(type_item(3), false), (any(), false)]), None);
        let deleted = item(CONTENT_DELETED, Content::None);
        assert_eq!(feed(u, &[(any(), true), (deleted, false)]), None);
        assert_eq!(feed(u, &[(any(), false), (type_item(1), false)]), None);
    }

    #[test]
    fn s11_a_declared_root_holds_its_own_kind() {
        let text = SeqClass::Class(TEXTUAL);
        assert_eq!(
            feed(text, &[(string(), false), (type_item(6), false)]),
            None
        );
        assert_eq!(feed(text, &[(type_item(1), false)]), Some(0));
        assert_eq!(feed(text, &[(any(), true)]), Some(0));
        let array = SeqClass::Class(VALUED);
        assert_eq!(feed(array, &[(type_item(2), false), (any(), false)]), None);
        assert_eq!(feed(array, &[(any(), true)]), Some(0));
        assert_eq!(feed(SeqClass::NoSeq, &[(any(), true), (any(), true)]), None);
        assert_eq!(feed(SeqClass::NoSeq, &[(any(), false)]), Some(0));
    }

    /// A v1 update of `n` clients (ids 1..=n), one character each, each
    /// typed after the previous client's: client `i + 1`'s origin is `i:0`.
    fn chain_update(n: u64) -> Vec<u8> {
        use crate::varint::write_varuint;
        let mut out = Vec::new();
        write_varuint(&mut out, n);
        for id in (1..=n).rev() {
            write_varuint(&mut out, 1); // structs
            write_varuint(&mut out, id);
            write_varuint(&mut out, 0); // clock
            if id == 1 {
                out.push(CONTENT_STRING);
                write_varuint(&mut out, 1); // parent: a root by name
                out.extend_from_slice(&[1, b't']);
            } else {
                out.push(CONTENT_STRING | 0x80);
                write_varuint(&mut out, id - 1);
                write_varuint(&mut out, 0);
            }
            out.extend_from_slice(&[1, b'a']);
        }
        out.push(0); // delete set
        out
    }

    #[test]
    fn map_entries_lists_each_keys_last_live_entry() {
        // Client 1 writes m.a = "x", overwrites it with "y" (origin: the
        // first), writes m.b = "z" and deletes it, and writes m.c as a map.
        let mut data = vec![1, 4, 1, 0];
        let any = |out: &mut Vec<u8>, v: u8| out.extend_from_slice(&[1, 119, 1, v]);
        data.extend_from_slice(&[CONTENT_ANY | 0x20, 1, 1, b'm', 1, b'a']);
        any(&mut data, b'x');
        data.extend_from_slice(&[CONTENT_ANY | 0x80, 1, 0]);
        any(&mut data, b'y');
        data.extend_from_slice(&[CONTENT_ANY | 0x20, 1, 1, b'm', 1, b'b']);
        any(&mut data, b'z');
        data.extend_from_slice(&[CONTENT_TYPE | 0x20, 1, 1, b'm', 1, b'c', 1]);
        data.extend_from_slice(&[1, 1, 1, 2, 1]); // delete set: 1:2
        let limits = Limits::default();
        let parsed = parse_update(&data, &limits).unwrap();
        let mut ix = DocIndex::new();
        ix.begin(&data, &parsed, None, &limits, true).unwrap();
        ix.commit();
        let root = KeyView::Root(b"m".to_vec());
        let mut got = ix.map_entries(&root).unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), 1, 1, CONTENT_ANY, None),
                (b"c".to_vec(), 1, 3, CONTENT_TYPE, Some(1)),
            ]
        );
        assert_eq!(ix.map_size(&root), Some(2));
        assert_eq!(ix.map_size(&KeyView::Item(1, 3)), None); // nothing filed in m.c
        assert_eq!(ix.map_entries(&KeyView::Root(b"n".to_vec())), None);
        assert_eq!(ix.map_size(&KeyView::Item(9, 0)), None);
    }

    #[test]
    fn references_to_clients_numbered_beyond_16_bits() {
        // Client numbers 65,534 and up do not fit a run's 16-bit reference
        // fields: they go to the side table and must read back the same.
        let n = 70_000u64;
        let data = chain_update(n);
        let limits = Limits {
            max_update_bytes: 1 << 30,
            max_clients: 1 << 20,
            ..Limits::default()
        };
        let parsed = parse_update(&data, &limits).unwrap();
        let mut ix = DocIndex::new();
        ix.begin(&data, &parsed, None, &limits, true).unwrap();
        ix.commit();
        assert!(!ix.wide_refs.is_empty());
        ix.check_invariants().unwrap();
        let snap = ix.snapshot();
        assert_eq!(snap.runs.len(), n as usize);
        for r in &snap.runs {
            let want = (r.client > 1).then(|| (r.client - 1, 0));
            assert_eq!(r.origin, want, "run of client {}", r.client);
            assert_eq!(r.right_origin, None);
        }
        // A client typing after the last one, then naming that character as
        // a parent (it is no type): refused once the first run was made (with
        // a wide reference), and rolled back: the index reads as before.
        let (before, wide) = (ix.snapshot(), ix.wide_refs.len());
        use crate::varint::write_varuint;
        let mut more = vec![1, 2];
        write_varuint(&mut more, n + 1);
        write_varuint(&mut more, 0);
        more.push(CONTENT_STRING | 0x80);
        write_varuint(&mut more, n);
        write_varuint(&mut more, 0);
        more.extend_from_slice(&[1, b'b']);
        more.push(CONTENT_STRING);
        write_varuint(&mut more, 0); // parent: an item by ID
        write_varuint(&mut more, n);
        write_varuint(&mut more, 0);
        more.extend_from_slice(&[1, b'c']);
        more.push(0);
        let parsed = parse_update(&more, &limits).unwrap();
        let err = ix.begin(&more, &parsed, None, &limits, true).unwrap_err();
        assert!(err.to_string().contains("not a type"), "{err}");
        assert_eq!(ix.snapshot(), before);
        assert_eq!(ix.wide_refs.len(), wide);
        ix.check_invariants().unwrap();
    }

    #[test]
    fn s11_does_not_apply_inside_nested_types() {
        // An XmlElement of unknown type (not a root): attributes and children.
        let mut seen = None;
        for (s, entry) in [(any(), true), (type_item(3), false), (any(), false)] {
            if let Some(now) = place_check(&s, SeqClass::Unknown, entry, seen, false).unwrap() {
                seen = Some(now);
            }
        }
        assert_eq!(seen, Some(VALUED));
    }
}
