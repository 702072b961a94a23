//! The movable tree's state: a port of `_TreeState` in `crdtsync/model/tree.py`.
//!
//! The Python class is the reference (and the fallback when this crate is not
//! built); `tests/model/test_tree_native.py` runs the same random operation
//! sequences through both and compares the trees, the logs and the entries
//! written. Everything here mirrors a method there, named in its comment.
//!
//! A node id `"<client>:<clock>"` is held as the timestamp of the operation
//! that creates it, `clock << 64 | client` (so "is this the node's creating
//! operation?" is `n == t`). Canonical decimal ids of at most 16 digits map
//! one to one onto these numbers; the top level, the trash and the log's two
//! markers are values no id can take (a clock above 2**64 - 5).
//!
//! Sibling order is `(position key, node id as a string)`, as in Python: the
//! id only breaks ties between equal keys, so it is formatted only then.
//!
//! Position keys between two keys need the arbitrary-precision arithmetic of
//! Python's `key_between` in general; the cases on a local move's hot path
//! (the first child, stepping the integer part up to append or down to
//! prepend) are done here and every other case is handed back to Python as a
//! [`Plan::Between`], so the keys are the reference's by construction.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::fxhash::FxHashMap;

/// A node id, or one of the markers below.
pub type Node = u128;
/// The top level (Python: `""`).
pub const ROOT: Node = u128::MAX;
/// The trash: deleted nodes live under it (Python: `"-"`).
pub const TRASH: Node = u128::MAX - 1;
/// Log entry marker: the operation was skipped (Python: `None`).
pub const SKIPPED: Node = u128::MAX - 2;
/// Log entry marker: the operation created the node (Python: `"\x00"`).
pub const ABSENT: Node = u128::MAX - 3;

const M64: u128 = (1 << 64) - 1;
/// Clock steps the log always keeps (Python: `WINDOW`).
pub const WINDOW: u64 = 1 << 14;
/// A known writer this far behind no longer holds truncation back (`HORIZON`).
pub const HORIZON: u64 = 1 << 16;
/// Sibling lists longer than this are kept sorted (`_FEW`).
pub const FEW: usize = 8;
/// Candidates a key's jitter picks among (`SPREAD`).
pub const SPREAD: u64 = 16;
/// Largest Lamport clock (`MAX_LAMPORT`).
pub const MAX_LAMPORT: u64 = 1 << 53;

const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SMALLEST_INT: &str = "A00000000000000000000000000";
/// Longest integer part (digits after the head) stepped here; longer ones,
/// which need more than 128-bit arithmetic, are left to Python.
const MAX_INT_DIGITS: usize = 18;

/// The string form of a node id.
pub fn node_str(n: Node) -> String {
    match n {
        ROOT => String::new(),
        TRASH => "-".to_string(),
        _ => format!("{}:{}", (n & M64) as u64, (n >> 64) as u64),
    }
}

fn canon(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || (s[0] == b'0' && s.len() > 1) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

/// A node id from its string form, or a parent id (`""` the top level, `"-"`
/// the trash). `None`: not a canonical id, so not a node of any state.
pub fn parse_node(s: &str) -> Option<Node> {
    match s {
        "" => return Some(ROOT),
        "-" => return Some(TRASH),
        _ => {}
    }
    let b = s.as_bytes();
    let colon = b.iter().position(|&c| c == b':')?;
    let client = canon(&b[..colon])?;
    let clock = canon(&b[colon + 1..])?;
    Some(u128::from(clock) << 64 | u128::from(client))
}

/// Python's `str < str` on two node ids (only needed between tied keys).
fn cmp_node(a: Node, b: Node) -> Ordering {
    if a == b {
        Ordering::Equal
    } else {
        node_str(a).cmp(&node_str(b))
    }
}

/// Python's order of `(pos, node)` tuples.
fn cmp_kn(ak: &str, an: Node, bk: &str, bn: Node) -> Ordering {
    ak.cmp(bk).then_with(|| cmp_node(an, bn))
}

/// A sibling in its parent's sorted set: ordered by `(key, node id as a string)`.
///
/// The sorted lists of big parents are B-trees, not vectors as in Python: a
/// move out of a parent with thousands of children then costs a few node
/// visits rather than shifting the rest of the list (40 bytes an entry here,
/// where Python shifts 8-byte pointers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sib(pub String, pub Node);

impl Ord for Sib {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_kn(&self.0, self.1, &other.0, other.1)
    }
}

impl PartialOrd for Sib {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn bisect(lst: &[(String, Node)], k: &str, n: Node) -> usize {
    lst.partition_point(|(ek, en)| cmp_kn(ek, *en, k, n) == Ordering::Less)
}

/// `_jitter(t)`: a fixed mix of the timestamp.
pub fn jitter(t: u128) -> u64 {
    let lam = (t >> 64) as u64;
    let w = t as u64;
    (w ^ lam).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40
}

fn val(c: u8) -> u64 {
    match c {
        b'0'..=b'9' => u64::from(c - b'0'),
        b'A'..=b'Z' => u64::from(c - b'A') + 10,
        _ => u64::from(c - b'a') + 36,
    }
}

/// `_int_len`: length of the integer part a key's first character announces.
fn int_len(head: u8) -> usize {
    match head {
        b'a'..=b'z' => usize::from(head - 95),
        b'A'..=b'Z' => usize::from(92 - head),
        _ => 0,
    }
}

/// `_POW62`: `62**k` for the integer parts stepped here.
const POW62: [i128; MAX_INT_DIGITS + 2] = {
    let mut t = [1i128; MAX_INT_DIGITS + 2];
    let mut k = 1;
    while k < t.len() {
        t[k] = t[k - 1] * 62;
        k += 1;
    }
    t
};

/// `_INT_BASE`: the first value of the positive head with `k + 1` digits.
const INT_BASE: [i128; MAX_INT_DIGITS + 2] = {
    let mut t = [0i128; MAX_INT_DIGITS + 2];
    let mut k = 1;
    while k < t.len() {
        t[k] = t[k - 1] + POW62[k];
        k += 1;
    }
    t
};

fn pow62(k: usize) -> i128 {
    POW62[k]
}

fn int_base(k: usize) -> i128 {
    INT_BASE[k]
}

/// `_int_value`, for integer parts of at most [`MAX_INT_DIGITS`] digits.
fn int_value(x: &[u8]) -> Option<i128> {
    if x.len() - 1 > MAX_INT_DIGITS {
        return None;
    }
    let mut v: i128 = 0;
    for &c in &x[1..] {
        v = v * 62 + i128::from(val(c));
    }
    let h = x[0];
    if h >= b'a' {
        Some(int_base(usize::from(h - b'a')) + v)
    } else {
        let k = usize::from(b'Z' - h);
        Some(v - int_base(k) - pow62(k + 1))
    }
}

fn digits(mut x: i128, n: usize) -> Vec<u8> {
    let mut out = vec![b'0'; n];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(x % 62) as usize];
        x /= 62;
    }
    out
}

/// `_int_part`, when the result has at most [`MAX_INT_DIGITS`] digits.
fn int_part(v: i128) -> Option<String> {
    let (head, body) = if v >= 0 {
        let k = (0..=MAX_INT_DIGITS)
            .take_while(|&k| int_base(k) <= v)
            .last()?;
        if k + 1 > MAX_INT_DIGITS || int_base(k + 1) <= v {
            return None;
        }
        (b'a' + k as u8, digits(v - int_base(k), k + 1))
    } else {
        let k = (0..=MAX_INT_DIGITS)
            .take_while(|&k| int_base(k) < -v)
            .last()?;
        if k + 1 > MAX_INT_DIGITS || int_base(k + 1) < -v {
            return None;
        }
        (
            b'Z' - k as u8,
            digits(v + int_base(k) + pow62(k + 1), k + 1),
        )
    };
    let mut s = String::with_capacity(body.len() + 1);
    s.push(head as char);
    s.extend(body.iter().map(|&c| c as char));
    Some(s)
}

/// `key_between(a, b, jitter, 0)` in the cases a local move meets most, or
/// `None` where only Python's arbitrary-precision version can say.
fn key_between_simple(a: Option<&str>, b: Option<&str>, jit: u64) -> Option<String> {
    let steps = 1 + (jit % SPREAD) as i128;
    match (a, b) {
        (None, None) => Some(format!("a{}", DIGITS[(steps - 1) as usize] as char)),
        (None, Some(b)) => {
            let ib = &b[..int_len(b.as_bytes()[0])];
            if ib == SMALLEST_INT {
                return None;
            }
            int_part(int_value(ib.as_bytes())? - steps)
        }
        (Some(a), None) => {
            let ab = a.as_bytes();
            int_part(int_value(&ab[..int_len(ab[0])])? + steps)
        }
        (Some(_), Some(_)) => None,
    }
}

/// The key just after the last sibling's key `k` (`up`) or just before the
/// first one's (`key_for`'s append and prepend): step the integer part's last
/// digit, or step the integer part, or leave it to Python.
fn step_key(k: &str, up: bool, h: u64) -> Plan {
    let kb = k.as_bytes();
    let n = int_len(kb[0]);
    let step = 1 + h % SPREAD;
    let v = val(kb[n - 1]);
    if up {
        let d = v + step;
        if d < 62 {
            let mut out = String::with_capacity(n);
            out.push_str(&k[..n - 1]);
            out.push(DIGITS[d as usize] as char);
            return Plan::Key(out);
        }
        return match key_between_simple(Some(k), None, h) {
            Some(out) => Plan::Key(out),
            None => Plan::Between(Some(k.to_string()), None, 0),
        };
    }
    if v >= step {
        let mut out = String::with_capacity(n);
        out.push_str(&k[..n - 1]);
        out.push(DIGITS[(v - step) as usize] as char);
        if out != SMALLEST_INT {
            return Plan::Key(out);
        }
    }
    match key_between_simple(None, Some(k), h) {
        Some(out) => Plan::Key(out),
        None => Plan::Between(None, Some(k.to_string()), 0),
    }
}

/// Appends how writer `wid` refers to `n` in an entry: its clock alone for
/// its own nodes, `""` for the top level (`_Binding.ref`).
fn write_ref(out: &mut String, n: Node, wid: u64) {
    use std::fmt::Write;
    if n == ROOT {
        return;
    }
    if n as u64 == wid {
        let _ = write!(out, "{}", (n >> 64) as u64);
    } else {
        let _ = write!(out, "{}:{}", n as u64, (n >> 64) as u64);
    }
}

/// What [`TreeState::key_for`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The node is already there: nothing to write.
    Nothing,
    /// The position key.
    Key(String),
    /// Python's `key_between(lo, hi, _jitter(t), bias)` gives the key.
    Between(Option<String>, Option<String>, i8),
    /// The index is out of range; the parent has this many other children.
    Range(usize),
}

/// One operation: `(timestamp, node, parent, position key)`.
pub type Op = (u128, Node, Node, String);

/// A log entry: the operation and what it replaced (`old` is [`SKIPPED`],
/// [`ABSENT`], or the node's parent before it, `oldk` its key there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub t: u128,
    pub n: Node,
    pub p: Node,
    pub k: String,
    pub old: Node,
    pub oldk: String,
}

/// Why [`TreeState::integrate`] refused a batch (the tree is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Two different operations claim one timestamp (`_Conflict`).
    Conflict,
    /// An operation is older than the log's floor (`_Stale`).
    Stale,
}

/// What a local move did, so that it can be taken back if the engine write fails.
#[derive(Debug, Clone)]
struct LocalUndo {
    clock: u64,
    last: Option<u64>,
    parent: Node,
    recent: Option<u32>,
}

/// No parent: the node is not in the state (its creation is unknown or undone).
const NONE: u32 = u32::MAX;
/// Indexes of the top level and the trash.
const R: u32 = 0;
const T: u32 = 1;

/// The tree defined by a set of move operations (`_TreeState`).
///
/// Python keeps `parent` and `kids` as dictionaries keyed by node id. Here a
/// node id is looked up once per operation (`ix`, std's randomly keyed hash:
/// ids are chosen by writers) and everything else is indexed by the dense
/// number it was given when first created: its parent, its position key, its
/// children (unordered, each child knowing its slot so that it leaves in
/// O(1)). A walk up the tree is then a walk over one small array, and a move
/// touches a few cache lines instead of a few hash tables.
#[derive(Debug)]
pub struct TreeState {
    ix: HashMap<Node, u32>,
    ids: Vec<Node>,
    up: Vec<u32>,
    key: Vec<String>,
    kids: Vec<Vec<u32>>,
    slot: Vec<u32>,
    count: usize,
    /// Sorted children of big parents, by index (`order`): kept by local
    /// operations, dropped by remote ones, rebuilt when read.
    order: FxHashMap<u32, BTreeSet<Sib>>,
    pub log: Vec<Entry>,
    pub floor: u128,
    pub last: HashMap<u64, u64>,
    pub clock: u64,
    pub trashed: usize,
    /// `recent`: per parent index, the node a local operation last put there
    /// (an index, `NONE` if none).
    recent: Vec<u32>,
    pub trim_at: usize,
    /// The truncation policy: clock steps always kept, and how far behind a
    /// known writer stops holding truncation back ([`WINDOW`], [`HORIZON`];
    /// tests make them small).
    pub window: u64,
    pub horizon: u64,
    /// False while a fold writes no undo records (Python's `_DISCARD`).
    logging: bool,
    /// The local move a failed engine write takes back.
    undo_local: Option<LocalUndo>,
    /// A local move waiting for the key only Python can compute.
    pending: Option<(Node, Node, u128, bool)>,
}

impl Default for TreeState {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeState {
    pub fn new() -> Self {
        Self::with_policy(WINDOW, HORIZON)
    }

    /// An empty state truncating its log with `window` and `horizon`.
    pub fn with_policy(window: u64, horizon: u64) -> Self {
        TreeState {
            ix: HashMap::new(),
            ids: vec![ROOT, TRASH],
            up: vec![NONE, NONE],
            key: vec![String::new(), String::new()],
            kids: vec![Vec::new(), Vec::new()],
            slot: vec![0, 0],
            count: 0,
            order: FxHashMap::default(),
            log: Vec::new(),
            floor: 0,
            last: HashMap::new(),
            clock: 0,
            trashed: 0,
            recent: vec![NONE, NONE],
            trim_at: (window + (window >> 2)) as usize,
            window,
            horizon,
            logging: true,
            undo_local: None,
            pending: None,
        }
    }

    // -- node ids and indexes --------------------------------------------------------

    /// The index of `n` if it was ever created here (ROOT and TRASH always).
    fn idx(&self, n: Node) -> Option<u32> {
        match n {
            ROOT => Some(R),
            TRASH => Some(T),
            _ => self.ix.get(&n).copied(),
        }
    }

    /// The index of node `n` if it is in the state.
    fn present(&self, n: Node) -> Option<u32> {
        self.ix
            .get(&n)
            .copied()
            .filter(|&i| self.up[i as usize] != NONE)
    }

    /// The index of `p` if it can be a parent: ROOT, TRASH or a node in the state.
    fn parent_idx(&self, p: Node) -> Option<u32> {
        match p {
            ROOT => Some(R),
            TRASH => Some(T),
            _ => self.present(p),
        }
    }

    fn intern(&mut self, n: Node) -> u32 {
        if let Some(&i) = self.ix.get(&n) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ix.insert(n, i);
        self.ids.push(n);
        self.up.push(NONE);
        self.key.push(String::new());
        self.kids.push(Vec::new());
        self.slot.push(0);
        self.recent.push(NONE);
        i
    }

    /// `recent`: `(parent, node)` pairs.
    pub fn recent_pairs(&self) -> Vec<(Node, Node)> {
        (0..self.ids.len())
            .filter(|&i| self.recent[i] != NONE)
            .map(|i| (self.ids[i], self.ids[self.recent[i] as usize]))
            .collect()
    }

    /// Replace `recent` (a rebuilt state keeps its predecessor's).
    pub fn set_recent(&mut self, pairs: Vec<(Node, Node)>) {
        for r in self.recent.iter_mut() {
            *r = NONE;
        }
        for (p, n) in pairs {
            let pi = match p {
                ROOT => R,
                TRASH => continue,
                _ => self.intern(p),
            };
            let ni = self.intern(n);
            self.recent[pi as usize] = ni;
        }
    }

    /// Put node `i` under `p` with key `k`. Remote operations drop `p`'s
    /// sorted list (`keep == false`); local ones keep it up to date.
    fn attach(&mut self, i: u32, p: u32, k: String, keep: bool) {
        let iu = i as usize;
        self.up[iu] = p;
        self.count += 1;
        if p == T {
            self.trashed += 1;
            self.key[iu] = k;
            return;
        }
        let pu = p as usize;
        self.slot[iu] = self.kids[pu].len() as u32;
        self.kids[pu].push(i);
        if keep {
            if let Some(set) = self.order.get_mut(&p) {
                set.insert(Sib(k.clone(), self.ids[iu]));
            }
        } else {
            self.order.remove(&p);
        }
        self.key[iu] = k;
    }

    /// Take node `i` out of its parent; returns its key there.
    fn detach(&mut self, i: u32, keep: bool) -> String {
        let iu = i as usize;
        let p = self.up[iu];
        self.up[iu] = NONE;
        self.count -= 1;
        let k = std::mem::take(&mut self.key[iu]);
        if p == T {
            self.trashed -= 1;
            return k;
        }
        let pu = p as usize;
        let s = self.slot[iu] as usize;
        self.kids[pu].swap_remove(s);
        if let Some(&moved) = self.kids[pu].get(s) {
            self.slot[moved as usize] = s as u32;
        }
        if keep {
            if let Some(set) = self.order.get_mut(&p) {
                set.remove(&Sib(k.clone(), self.ids[iu]));
            }
        } else {
            self.order.remove(&p);
        }
        k
    }

    // -- reading single nodes ------------------------------------------------------------

    /// The parent of node `n`, if it is in the state.
    pub fn parent_of(&self, n: Node) -> Option<Node> {
        self.present(n)
            .map(|i| self.ids[self.up[i as usize] as usize])
    }

    /// Whether node `n` is in the state (live or deleted).
    pub fn contains(&self, n: Node) -> bool {
        self.present(n).is_some()
    }

    /// How many nodes are in the state.
    pub fn node_count(&self) -> usize {
        self.count
    }

    /// Every node in the state with its parent.
    pub fn nodes(&self) -> Vec<(Node, Node)> {
        (2..self.ids.len())
            .filter(|&i| self.up[i] != NONE)
            .map(|i| (self.ids[i], self.ids[self.up[i] as usize]))
            .collect()
    }

    /// `kids.get(p)`: the children of `p` with their keys, `None` if `p` is
    /// neither the top level nor a node in the state.
    pub fn kids_of(&self, p: Node) -> Option<Vec<(Node, String)>> {
        let pi = match p {
            ROOT => R,
            _ => self.present(p)?,
        };
        Some(
            self.kids[pi as usize]
                .iter()
                .map(|&c| (self.ids[c as usize], self.key[c as usize].clone()))
                .collect(),
        )
    }

    /// Every parent with children, and its children with their keys.
    pub fn kids_all(&self) -> Vec<(Node, Vec<(Node, String)>)> {
        (0..self.ids.len())
            .filter(|&i| i != T as usize && !self.kids[i].is_empty())
            .map(|i| {
                let d = self.kids[i]
                    .iter()
                    .map(|&c| (self.ids[c as usize], self.key[c as usize].clone()))
                    .collect();
                (self.ids[i], d)
            })
            .collect()
    }

    /// The sorted lists kept (`order`).
    pub fn order_all(&self) -> Vec<(Node, Vec<(String, Node)>)> {
        self.order
            .iter()
            .map(|(p, set)| {
                let lst = set.iter().map(|s| (s.0.clone(), s.1)).collect();
                (self.ids[*p as usize], lst)
            })
            .collect()
    }

    /// `key_of`: the position key of `n` (`""` in the trash).
    pub fn key_of(&self, n: Node) -> Option<&str> {
        self.present(n).map(|i| self.key[i as usize].as_str())
    }

    pub fn has_kids(&self, n: Node) -> bool {
        self.idx(n)
            .is_some_and(|i| !self.kids[i as usize].is_empty())
    }

    fn log_push(&mut self, e: Entry) {
        if self.logging {
            self.log.push(e);
        }
    }

    // -- applying (`_place`, `_unplace`, `_do`, `_undo`, `apply_local`) --------

    fn skip(&mut self, t: u128, n: Node, p: Node, k: String) {
        self.log_push(Entry {
            t,
            n,
            p,
            k,
            old: SKIPPED,
            oldk: String::new(),
        });
    }

    /// `_do`: apply one operation newer than every logged one, logging it.
    fn do_op(&mut self, t: u128, n: Node, p: Node, k: String) {
        let Some(ni) = self.present(n) else {
            // R1: a node comes into being only by its own creation, under
            // something that exists.
            let Some(pi) = self.parent_idx(p).filter(|_| n == t) else {
                return self.skip(t, n, p, k);
            };
            let ni = self.intern(n);
            let kept = if self.logging {
                k.clone()
            } else {
                String::new()
            };
            self.attach(ni, pi, k, false);
            return self.log_push(Entry {
                t,
                n,
                p,
                k: kept,
                old: ABSENT,
                oldk: String::new(),
            });
        };
        let Some(pi) = self.parent_idx(p) else {
            return self.skip(t, n, p, k); // R2
        };
        if pi > T && (pi == ni || !self.kids[ni as usize].is_empty()) {
            // R3; a leaf is nobody's ancestor: no walk
            let mut a = pi;
            while a > T {
                if a == ni {
                    return self.skip(t, n, p, k);
                }
                a = self.up[a as usize];
            }
        }
        let old = self.ids[self.up[ni as usize] as usize];
        let oldk = self.detach(ni, false);
        let kept = if self.logging {
            k.clone()
        } else {
            String::new()
        };
        self.attach(ni, pi, k, false);
        self.log_push(Entry {
            t,
            n,
            p,
            k: kept,
            old,
            oldk,
        });
    }

    /// `_undo`.
    fn undo(&mut self, e: Entry) {
        let Entry { n, old, oldk, .. } = e;
        if old == SKIPPED {
            return;
        }
        let Some(ni) = self.present(n) else {
            return; // (cannot happen: the entry applied it)
        };
        self.detach(ni, false);
        if old == ABSENT {
            // its children were undone first: it has none
            self.order.remove(&ni);
        } else {
            let oi = self.idx(old).unwrap_or(T);
            self.attach(ni, oi, oldk, false);
        }
    }

    /// `apply_local`: apply a checked local operation, newer than everything known.
    pub fn apply_local(&mut self, t: u128, n: Node, p: Node, k: String, create: bool) {
        self.undo_local = None;
        self.apply_local_with(t, n, p, k, create, true);
    }

    fn apply_local_with(
        &mut self,
        t: u128,
        n: Node,
        p: Node,
        k: String,
        create: bool,
        set_recent: bool,
    ) {
        let pi = match p {
            ROOT => R,
            TRASH => T,
            _ => self.intern(p),
        };
        let ni = self.intern(n);
        self.apply_at(t, ni, pi, k, create, set_recent);
    }

    /// `apply_local` on node and parent indexes.
    fn apply_at(&mut self, t: u128, ni: u32, pi: u32, k: String, create: bool, set_recent: bool) {
        let lam = (t >> 64) as u64;
        self.clock = lam;
        self.last.insert(t as u64, lam);
        let n = self.ids[ni as usize];
        let p = self.ids[pi as usize];
        let (old, oldk) = if create {
            (ABSENT, String::new())
        } else {
            let old = self.ids[self.up[ni as usize] as usize];
            (old, self.detach(ni, true))
        };
        if pi != T && set_recent {
            self.recent[pi as usize] = ni;
        }
        self.attach(ni, pi, k.clone(), true);
        self.log.push(Entry {
            t,
            n,
            p,
            k,
            old,
            oldk,
        });
        if self.log.len() > self.trim_at {
            self.truncate();
        }
    }

    // -- the local move (`Tree.move`'s checks, `key_for`, `apply_local`) -------

    /// Whether node index `i` is live: reachable from the top level.
    fn live_idx(&self, mut i: u32) -> bool {
        if self.trashed == 0 {
            return true;
        }
        while i > T {
            i = self.up[i as usize];
        }
        i == R
    }

    /// A local move of `node` under `parent` at `index` by writer `wid`:
    /// checked, keyed and applied in one call when everything is ordinary.
    ///
    /// Returns `Err(code)` with nothing changed when the move is refused or
    /// unusual: 1 unknown node, 2 deleted node, 3 unknown parent, 4 the node
    /// itself as its parent, 5 a descendant as its parent, 6 a deleted
    /// parent, 0 anything else Python must look at (an index out of range, an
    /// exhausted clock). `Ok(Plan::Nothing)` when the node is already there;
    /// `Ok(Plan::Key(k))` when the move is applied (`k` its key);
    /// `Ok(Plan::Between(..))` when Python must compute the key, then call
    /// [`Self::finish_move`].
    ///
    /// An applied move's entry, `"<node> <parent> <key>"` as writer `wid`
    /// refers to them, is written into `entry` (then `Plan::Key` holds an
    /// empty string: the key is in the entry).
    pub fn move_local(
        &mut self,
        node: Node,
        parent: Node,
        index: Option<u64>,
        wid: u64,
        entry: &mut String,
    ) -> Result<Plan, u8> {
        let Some(ni) = self.present(node) else {
            return Err(1);
        };
        if !self.live_idx(ni) {
            return Err(2);
        }
        let pi = match parent {
            ROOT => R,
            TRASH => return Err(0),
            _ => self.present(parent).ok_or(3u8)?,
        };
        if pi > T {
            if pi == ni {
                return Err(4);
            }
            if self.trashed > 0 || !self.kids[ni as usize].is_empty() {
                let mut a = pi;
                while a > T {
                    if a == ni {
                        return Err(5);
                    }
                    a = self.up[a as usize];
                }
                if a == T {
                    return Err(6);
                }
            }
        }
        let lam = self.clock + 1;
        if lam > MAX_LAMPORT {
            return Err(0);
        }
        let t = u128::from(lam) << 64 | u128::from(wid);
        match self.key_for_at(pi, Some(node), index, t, node) {
            Plan::Range(_) => Err(0),
            Plan::Nothing => Ok(Plan::Nothing),
            Plan::Key(k) => {
                entry.clear();
                write_ref(entry, node, wid);
                entry.push(' ');
                write_ref(entry, parent, wid);
                entry.push(' ');
                entry.push_str(&k);
                self.apply_move(t, ni, pi, k, index.is_some());
                Ok(Plan::Key(String::new()))
            }
            b @ Plan::Between(..) => {
                self.pending = Some((node, parent, t, index.is_some()));
                Ok(b)
            }
        }
    }

    /// Apply the move [`Self::move_local`] left waiting for its key.
    /// Returns `(timestamp, node, parent)`, or `None` if none is waiting.
    pub fn finish_move(&mut self, key: String) -> Option<(u128, Node, Node)> {
        let (n, p, t, set_recent) = self.pending.take()?;
        let ni = self.present(n)?;
        let pi = self.parent_idx(p)?;
        self.apply_move(t, ni, pi, key, set_recent);
        Some((t, n, p))
    }

    /// A checked local move of node index `ni` under parent index `pi`.
    fn apply_move(&mut self, t: u128, ni: u32, pi: u32, k: String, set_recent: bool) {
        self.undo_local = Some(LocalUndo {
            clock: self.clock,
            last: self.last.get(&(t as u64)).copied(),
            parent: self.ids[pi as usize],
            recent: set_recent.then(|| self.recent[pi as usize]),
        });
        // (Tree.move's fast path records the insert only for moves at an
        // index: key_for's bias reads it only for those.)
        self.apply_at(t, ni, pi, k, false, set_recent);
    }

    /// Take back the last local move (its engine write failed). Returns
    /// whether there was one to take back.
    pub fn rollback_local(&mut self) -> bool {
        let Some(u) = self.undo_local.take() else {
            return false;
        };
        let Some(e) = self.log.pop() else {
            return false;
        };
        let w = e.t as u64;
        self.undo(e);
        self.clock = u.clock;
        match u.last {
            Some(l) => self.last.insert(w, l),
            None => self.last.remove(&w),
        };
        if let (Some(r), Some(pi)) = (u.recent, self.idx(u.parent)) {
            self.recent[pi as usize] = r;
        }
        true
    }

    // -- integrating remote operations (`integrate`, `truncate`) -------------

    fn logged_at(&self, t: u128) -> Option<usize> {
        let i = self.log.partition_point(|e| e.t < t);
        (i < self.log.len() && self.log[i].t == t).then_some(i)
    }

    /// `integrate`: add operations received in any order, possibly known.
    ///
    /// With `want_old`, also returns the place before the batch (`(node,
    /// parent or None, key)`) of every node the batch may move, in the order
    /// Python fills its `old` (first mention wins).
    #[allow(clippy::type_complexity)]
    pub fn integrate(
        &mut self,
        mut new: Vec<Op>,
        want_old: bool,
        trim: bool,
    ) -> Result<(bool, Vec<(Node, Option<Node>, String)>), Refusal> {
        self.undo_local = None;
        let newest = self.log.last().map(|e| e.t);
        new.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| cmp_node(a.1, b.1))
                .then_with(|| cmp_node(a.2, b.2))
                .then_with(|| a.3.cmp(&b.3))
        });
        let mut fresh: Vec<Op> = Vec::with_capacity(new.len());
        let mut prev: Option<usize> = None;
        for (idx, op) in new.iter().enumerate() {
            let t = op.0;
            if let Some(pi) = prev {
                if new[pi].0 == t {
                    // Repeated in this batch: one timestamp names one operation.
                    if new[pi] != *op {
                        return Err(Refusal::Conflict);
                    }
                    continue;
                }
            }
            prev = Some(idx);
            if newest.is_some_and(|nt| t <= nt) {
                if let Some(i) = self.logged_at(t) {
                    let e = &self.log[i];
                    if (e.n, e.p, e.k.as_str()) != (op.1, op.2, op.3.as_str()) {
                        return Err(Refusal::Conflict);
                    }
                    continue;
                }
            }
            if t < self.floor {
                return Err(Refusal::Stale);
            }
            fresh.push(op.clone());
        }
        drop(new);
        let mut olds = Vec::new();
        if fresh.is_empty() {
            return Ok((false, olds));
        }
        let mut clock = self.clock;
        for op in &fresh {
            let lam = (op.0 >> 64) as u64;
            clock = clock.max(lam);
            let w = op.0 as u64;
            let l = self.last.entry(w).or_insert(0);
            if *l < lam {
                *l = lam;
            }
        }
        self.clock = clock;
        let i = self.log.partition_point(|e| e.t < fresh[0].0);
        if want_old {
            let mut seen = std::collections::HashSet::new();
            let nodes = self.log[i..]
                .iter()
                .map(|e| e.n)
                .chain(fresh.iter().map(|op| op.1));
            for n in nodes {
                if seen.insert(n) {
                    let p = self.parent_of(n);
                    let k = self.key_of(n).unwrap_or("").to_string();
                    olds.push((n, p, k));
                }
            }
        }
        let undone: Vec<Entry> = self.log.split_off(i);
        if undone.len() + fresh.len() > 256 {
            // A large batch touches many sibling lists: drop the sorted caches
            // at once (read ones are sorted again).
            self.order.clear();
        }
        let mut redo: Vec<Op> = fresh;
        if !undone.is_empty() {
            let mut back: Vec<Op> = Vec::with_capacity(undone.len() + redo.len());
            for e in undone.into_iter().rev() {
                back.push((e.t, e.n, e.p, e.k.clone()));
                self.undo(e);
            }
            back.reverse();
            back.append(&mut redo);
            back.sort_by_key(|op| op.0);
            redo = back;
        }
        let mut start = 0;
        if trim {
            // Operations below where the log will be truncated need no undo
            // record: fold them without one (a rebuild is mostly these).
            let f = self.floor_for(clock);
            if redo[0].0 < f {
                self.truncate_at(f);
                start = redo.partition_point(|op| op.0 < f);
                self.logging = false;
            }
        }
        for (j, (t, n, p, k)) in redo.into_iter().enumerate() {
            if j == start {
                self.logging = true;
            }
            self.do_op(t, n, p, k);
        }
        self.logging = true;
        if trim {
            self.truncate();
        }
        Ok((true, olds))
    }

    /// `truncate`: drop the undo records no operation can need any more.
    pub fn truncate(&mut self) {
        self.truncate_at(self.floor_for(self.clock));
        self.trim_at = self.log.len() + (self.window >> 2) as usize;
    }

    /// `_floor_for` (0 where Python's is 0 or below: nothing to drop either way).
    pub fn floor_for(&self, clock: u64) -> u128 {
        let clock = i128::from(clock);
        let mut sigma = clock;
        for &lam in self.last.values() {
            let lam = i128::from(lam);
            if lam < sigma && lam >= clock - i128::from(self.horizon) {
                sigma = lam;
            }
        }
        let horizon = i128::from(self.horizon);
        let keep = (clock - horizon).max(sigma.min(clock - i128::from(self.window)));
        if keep < 0 {
            0
        } else {
            ((keep + 1) as u128) << 64
        }
    }

    /// `truncate_at`: drop the log entries below timestamp `t`.
    pub fn truncate_at(&mut self, t: u128) {
        if t > self.floor {
            let i = self.log.partition_point(|e| e.t < t);
            self.log.drain(..i);
            self.floor = t;
        }
    }

    // -- reading ---------------------------------------------------------------

    fn build_sorted(&self, pi: u32) -> Vec<(String, Node)> {
        let mut lst: Vec<(String, Node)> = self.kids[pi as usize]
            .iter()
            .map(|&c| (self.key[c as usize].clone(), self.ids[c as usize]))
            .collect();
        lst.sort_by(|a, b| cmp_kn(&a.0, a.1, &b.0, b.1));
        lst
    }

    fn sorted_idx(&mut self, pi: u32) -> Vec<(String, Node)> {
        if let Some(set) = self.order.get(&pi) {
            return set.iter().map(|s| (s.0.clone(), s.1)).collect();
        }
        let lst = self.build_sorted(pi);
        if lst.len() > FEW {
            let set = lst.iter().map(|(k, n)| Sib(k.clone(), *n)).collect();
            self.order.insert(pi, set);
        }
        lst
    }

    /// `sorted_kids`: `[(pos, child)]` of `p` in order (cached when long).
    pub fn sorted_kids(&mut self, p: Node) -> Vec<(String, Node)> {
        match self.parent_idx(p) {
            Some(pi) if pi != T => self.sorted_idx(pi),
            _ => Vec::new(),
        }
    }

    /// The last (`up`) or first sibling under `pi`: `(key, node)`, if any.
    fn extreme(&mut self, pi: u32, up: bool) -> Option<(&str, Node)> {
        if !self.order.contains_key(&pi) && self.kids[pi as usize].len() > FEW {
            self.sorted_idx(pi); // cached from now on
        }
        if !self.order.contains_key(&pi) {
            let d = &self.kids[pi as usize];
            if d.is_empty() {
                return None;
            }
            {
                // A few siblings (most parents): scanned, not sorted.
                let pick = if up {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                let mut best = d[0] as usize;
                for &c in &d[1..] {
                    let c = c as usize;
                    if cmp_kn(&self.key[c], self.ids[c], &self.key[best], self.ids[best]) == pick {
                        best = c;
                    }
                }
                return Some((self.key[best].as_str(), self.ids[best]));
            }
        }
        let set = &self.order[&pi];
        let s = if up { set.last() } else { set.first() }?;
        Some((s.0.as_str(), s.1))
    }

    /// `bisect_left(sorted_kids(p), (k, n))`: how many children of `p` sort
    /// before `(k, n)` (the index a change event reports), without copying them.
    pub fn rank(&self, p: Node, k: &str, n: Node) -> usize {
        let Some(pi) = self.parent_idx(p).filter(|&pi| pi != T) else {
            return 0;
        };
        if let Some(set) = self.order.get(&pi) {
            return set.range(..Sib(k.to_string(), n)).count();
        }
        self.kids[pi as usize]
            .iter()
            .filter(|&&c| {
                let c = c as usize;
                cmp_kn(&self.key[c], self.ids[c], k, n) == Ordering::Less
            })
            .count()
    }

    /// `top`: `ROOT` if `n` is live, `TRASH` if deleted.
    pub fn top(&self, n: Node) -> Node {
        let Some(mut i) = self.idx(n) else {
            return n;
        };
        while i > T {
            i = self.up[i as usize];
        }
        self.ids[i as usize]
    }

    /// `live`: whether `n` is a node reachable from the top level.
    pub fn live(&self, n: Node) -> bool {
        n != ROOT && n != TRASH && self.present(n).is_some_and(|i| self.live_idx(i))
    }

    /// `key_for`: the position key putting `node` (`None`: a new node whose id
    /// is `new_id`) at `index` under `p` (`None`: appending).
    pub fn key_for(
        &mut self,
        p: Node,
        node: Option<Node>,
        index: Option<u64>,
        t: u128,
        new_id: Node,
    ) -> Plan {
        match self.parent_idx(p).filter(|&pi| pi != T) {
            Some(pi) => self.key_for_at(pi, node, index, t, new_id),
            None => Plan::Range(0),
        }
    }

    /// [`Self::key_for`] under parent index `pi`.
    fn key_for_at(
        &mut self,
        pi: u32,
        node: Option<Node>,
        index: Option<u64>,
        t: u128,
        new_id: Node,
    ) -> Plan {
        let h = jitter(t);
        if index.is_none() || index == Some(0) {
            // Appending (the common case) after the last sibling other than
            // node, or prepending before the first.
            let up = index.is_none();
            if let Some((k, n)) = self.extreme(pi, up) {
                if Some(n) == node {
                    return Plan::Nothing;
                }
                return step_key(k, up, h);
            }
        }
        let lst = self.sorted_idx(pi);
        let mut j: Option<usize> = None;
        if let Some(ni) = node.and_then(|nd| self.present(nd)) {
            if self.up[ni as usize] == pi {
                j = Some(bisect(&lst, &self.key[ni as usize], self.ids[ni as usize]));
            }
        }
        let others = lst.len() - usize::from(j.is_some());
        let index = match index {
            None => others,
            Some(i) if i as u128 <= others as u128 => i as usize,
            Some(_) => return Plan::Range(others),
        };
        if Some(index) == j {
            return Plan::Nothing;
        }
        // others[i] is lst[i] before the node's own slot j, lst[i + 1] after it.
        let li = if j.is_none_or(|j| index < j + 1) {
            index.wrapping_sub(1)
        } else {
            index
        };
        let mut ri = if j.is_none_or(|j| index < j) {
            index
        } else {
            index + 1
        };
        let lo: Option<&str> = (index > 0).then(|| lst[li].0.as_str());
        let mut hi: Option<&str> = (index < others).then(|| lst[ri].0.as_str());
        if lo.is_some() && lo == hi {
            // Tied keys: only the node id orders the pair. Fit between them if
            // the id allows, otherwise land just after the tied run.
            let me = node.unwrap_or(new_id);
            if cmp_node(lst[li].1, me) == Ordering::Less
                && cmp_node(me, lst[ri].1) == Ordering::Less
            {
                return Plan::Key(lo.unwrap_or_default().to_string());
            }
            while ri < lst.len() && (Some(lst[ri].0.as_str()) == lo || Some(ri) == j) {
                ri += 1;
            }
            hi = (ri < lst.len()).then(|| lst[ri].0.as_str());
        }
        let mut bias: i8 = 0;
        let last = self.recent[pi as usize];
        if last != NONE {
            let last = self.ids[last as usize];
            if Some(last) != node {
                if index > 0 && lst[li].1 == last {
                    bias = 1; // right after the previous insert: typing forward
                } else if index < others && ri < lst.len() && lst[ri].1 == last {
                    bias = -1; // right before it: typing backward
                }
            }
        }
        // (bias only moves keys inside a fraction, which Python computes.)
        if let Some(k) = key_between_simple(lo, hi, h) {
            return Plan::Key(k);
        }
        Plan::Between(lo.map(str::to_string), hi.map(str::to_string), bias)
    }

    /// Every live node, depth first, parents before children, siblings in order.
    pub fn walk(&mut self) -> Vec<Node> {
        let mut out = Vec::new();
        let mut stack: Vec<Node> = self
            .sorted_kids(ROOT)
            .into_iter()
            .rev()
            .map(|e| e.1)
            .collect();
        while let Some(n) = stack.pop() {
            out.push(n);
            if self.has_kids(n) {
                stack.extend(self.sorted_kids(n).into_iter().rev().map(|e| e.1));
            }
        }
        out
    }

    /// Load a state (a saved shape, or a Python state): nodes with their
    /// parents and keys, the writers' clocks, the floor and the log.
    pub fn load(
        &mut self,
        nodes: Vec<(Node, Node, String)>,
        last: HashMap<u64, u64>,
        clock: u64,
        floor: u128,
        log: Vec<Entry>,
        trim_at: usize,
    ) {
        let idx: Vec<(u32, u32, String)> = nodes
            .into_iter()
            .map(|(n, p, k)| {
                let ni = self.intern(n);
                let pi = match p {
                    ROOT => R,
                    TRASH => T,
                    _ => self.intern(p),
                };
                (ni, pi, k)
            })
            .collect();
        for (ni, pi, k) in idx {
            self.attach(ni, pi, k, false);
        }
        self.order.clear();
        self.last = last;
        self.clock = clock;
        self.floor = floor;
        self.log = log;
        self.trim_at = trim_at;
    }
}

// -- saved shapes (`_decode_shape` in crdtsync/model/tree.py) ---------------------------

/// Longest position key (`MAX_KEY`).
pub const MAX_KEY: usize = 4096;

/// `valid_key`: whether `key` is a position key we generate and can generate
/// around (Python's, on the key's UTF-8 bytes).
///
/// Python checks the length in characters first; a key that passes here is
/// ASCII, where characters and bytes are one, and one that is not ASCII fails
/// both (`_KEY_CHARS` takes ASCII letters and digits only).
pub fn valid_key(key: &[u8]) -> bool {
    if !(2..=MAX_KEY).contains(&key.len()) || !key.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let n = int_len(key[0]);
    if n == 0 || key.len() < n {
        return false;
    }
    // A trailing zero in the fraction would leave no key between it and its prefix.
    !((key.len() > n && key[key.len() - 1] == b'0') || key == SMALLEST_INT.as_bytes())
}

/// A saved shape's node lists and what the document says about its writers,
/// after `_shape_header`'s checks (the writers' containers and clocks).
#[derive(Debug)]
pub struct Shape<'a> {
    /// `"<w>:<lam>"` ids, space-separated.
    pub ids: &'a str,
    /// Each node's position key, space-separated (empty in the trash).
    pub keys: &'a str,
    /// Each node's parent: an index into `ids`, -1 the top level, -2 the
    /// trash; `None` for anything that is not an int (or not an `i64`).
    pub parents: &'a [Option<i64>],
    /// The writers that have a container in the document.
    pub known: &'a HashSet<u64>,
    /// The writers' greatest clocks, as the shape states them.
    pub last: &'a HashMap<u64, u64>,
    /// The greatest of them, and the floor of the (empty) log.
    pub clock: u64,
    pub floor: u128,
}

/// Why [`TreeState::from_shape`] refused a shape: `_decode_shape`'s first
/// failed check, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// "malformed node ids"
    MalformedIds,
    /// "node lists disagree" (lengths, or an id twice)
    ListsDisagree,
    /// "node {id} was not created by a known writer" (the node's index)
    UnknownWriter(usize),
    /// A known writer's node, and the shape states no clock for the writer
    /// (Python: `KeyError(writer)` from `last[int(w)]`).
    NoClock(u64),
    /// "bad parent index"
    BadParent,
    /// "a deleted node with a position"
    DeletedWithKey,
    /// "invalid position key {key!r}" (the node's index)
    BadKey(usize),
    /// "a cycle"
    Cycle,
}

/// `"<w>:<lam>"` with both canonical (`_NUM`): `(w, lam)`.
fn shape_id(s: &str) -> Option<(u64, u64)> {
    let b = s.as_bytes();
    let colon = b.iter().position(|&c| c == b':')?;
    Some((canon(&b[..colon])?, canon(&b[colon + 1..])?))
}

impl TreeState {
    /// The state a saved shape describes, after `_decode_shape`'s checks on
    /// its nodes (its header, the writers and clocks, is checked before).
    ///
    /// Linear in the shape's size (one hash per node), whatever it holds:
    /// the cycle check marks each node once.
    pub fn from_shape(window: u64, horizon: u64, shape: &Shape<'_>) -> Result<Self, ShapeError> {
        let mut pairs = Vec::new();
        for s in shape.ids.split(' ') {
            pairs.push(shape_id(s).ok_or(ShapeError::MalformedIds)?);
        }
        let n = pairs.len();
        if n >= (NONE - 2) as usize {
            // (Beyond the dense indexes; no blob the loader accepts is this big.)
            return Err(ShapeError::ListsDisagree);
        }
        let keys: Vec<&str> = shape.keys.split(' ').collect();
        if keys.len() != n || shape.parents.len() != n {
            return Err(ShapeError::ListsDisagree);
        }
        let mut st = TreeState::with_policy(window, horizon);
        st.ix.reserve(n);
        st.ids.reserve(n);
        // Duplicates first (Python counts the distinct ids before checking
        // writers), so the first writer refusal waits for the whole pass.
        let mut writer_error = None;
        for (i, &(w, lam)) in pairs.iter().enumerate() {
            let node = u128::from(lam) << 64 | u128::from(w);
            if st.ix.insert(node, (i + 2) as u32).is_some() {
                return Err(ShapeError::ListsDisagree);
            }
            st.ids.push(node);
            if writer_error.is_none() {
                if !shape.known.contains(&w) {
                    writer_error = Some(ShapeError::UnknownWriter(i));
                } else {
                    match shape.last.get(&w) {
                        None => writer_error = Some(ShapeError::NoClock(w)),
                        Some(&last) if lam > last || lam == 0 => {
                            writer_error = Some(ShapeError::UnknownWriter(i));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some(e) = writer_error {
            return Err(e);
        }
        // Parents and keys, node by node (the first bad one names the error).
        let mut up: Vec<u32> = Vec::with_capacity(n);
        for (i, (pi, k)) in shape.parents.iter().zip(&keys).enumerate() {
            let pi = match *pi {
                Some(pi) if (-2..n as i64).contains(&pi) && pi != i as i64 => pi,
                _ => return Err(ShapeError::BadParent),
            };
            if pi == -2 {
                if !k.is_empty() {
                    return Err(ShapeError::DeletedWithKey);
                }
                up.push(T);
                continue;
            }
            if !valid_key(k.as_bytes()) {
                return Err(ShapeError::BadKey(i));
            }
            up.push(if pi == -1 { R } else { pi as u32 + 2 });
        }
        // No cycle: every chain of parents ends at the top level or the
        // trash. 0 unseen, 1 on the chain being walked, 2 ends well.
        let mut mark = vec![0u8; n];
        let mut chain = Vec::new();
        for i in 0..n {
            let mut a = i;
            while mark[a] == 0 {
                mark[a] = 1;
                chain.push(a);
                let p = up[a];
                if p <= T {
                    break;
                }
                a = (p - 2) as usize;
            }
            if mark[a] == 1 && up[a] > T {
                return Err(ShapeError::Cycle);
            }
            for c in chain.drain(..) {
                mark[c] = 2;
            }
        }
        let len = n + 2;
        st.up.resize(len, NONE);
        st.key.resize(len, String::new());
        st.kids.resize_with(len, Vec::new);
        st.slot.resize(len, 0);
        st.recent.resize(len, NONE);
        for (i, (p, k)) in up.into_iter().zip(keys).enumerate() {
            st.attach((i + 2) as u32, p, k.to_string(), false);
        }
        st.last = shape.last.clone();
        st.clock = shape.clock;
        st.floor = shape.floor;
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Node {
        parse_node(s).unwrap()
    }

    fn fold(ops: &[Op]) -> TreeState {
        let mut st = TreeState::new();
        st.integrate(ops.to_vec(), false, false).unwrap();
        st
    }

    fn create(w: u64, lam: u64, p: Node, k: &str) -> Op {
        let t = u128::from(lam) << 64 | u128::from(w);
        (t, t, p, k.to_string())
    }

    fn mv(w: u64, lam: u64, n: Node, p: Node, k: &str) -> Op {
        (u128::from(lam) << 64 | u128::from(w), n, p, k.to_string())
    }

    #[test]
    fn node_ids_round_trip_and_refuse_non_canonical() {
        for s in ["1:1", "0:5", "9999999999999999:9007199254740992", "12:34"] {
            assert_eq!(node_str(id(s)), s);
        }
        for s in [
            "01:1",
            "1:01",
            "1",
            ":1",
            "1:",
            "a:1",
            "1:1:1",
            "99999999999999999:1",
        ] {
            assert_eq!(parse_node(s), None, "{s}");
        }
        assert_eq!(parse_node(""), Some(ROOT));
        assert_eq!(parse_node("-"), Some(TRASH));
        // Node ids order as strings, as in Python: "10:1" < "9:1".
        assert_eq!(cmp_node(id("10:1"), id("9:1")), Ordering::Less);
    }

    #[test]
    fn concurrent_cycle_keeps_the_earlier_move() {
        let a = id("1:1");
        let b = id("1:2");
        let ops = vec![
            create(1, 1, ROOT, "a0"),
            create(1, 2, ROOT, "a1"),
            mv(1, 3, a, b, "a0"),
            mv(2, 3, b, a, "a0"),
        ];
        let st = fold(&ops);
        assert_eq!(st.parent_of(a), Some(b));
        assert_eq!(st.parent_of(b), Some(ROOT));
        assert_eq!(st.log[3].old, SKIPPED);
        // Any arrival order gives the same state.
        let mut st2 = TreeState::new();
        st2.integrate(vec![ops[3].clone(), ops[2].clone()], false, false)
            .unwrap();
        st2.integrate(vec![ops[1].clone(), ops[0].clone()], false, false)
            .unwrap();
        let sorted = |mut v: Vec<(Node, Node)>| {
            v.sort();
            v
        };
        assert_eq!(sorted(st2.nodes()), sorted(st.nodes()));
        assert_eq!(st2.log, st.log);
    }

    #[test]
    fn operations_wait_for_their_creation() {
        let a = id("1:1");
        let c = id("2:5");
        let mut st = TreeState::new();
        st.integrate(vec![mv(2, 6, a, ROOT, "a5")], false, false)
            .unwrap();
        assert_eq!(st.node_count(), 0);
        st.integrate(
            vec![create(1, 1, ROOT, "a0"), create(2, 5, a, "a0")],
            false,
            false,
        )
        .unwrap();
        assert_eq!(st.parent_of(a), Some(ROOT));
        assert_eq!(st.parent_of(c), Some(a));
        assert_eq!(st.key_of(a), Some("a5"));
    }

    #[test]
    fn conflicts_and_stale_operations_are_refused_unchanged() {
        let mut st = fold(&[create(1, 1, ROOT, "a0")]);
        let r = st.integrate(vec![create(1, 1, ROOT, "a1")], false, true);
        assert_eq!(r, Err(Refusal::Conflict));
        st.truncate_at(5 << 64);
        let r = st.integrate(vec![create(3, 2, ROOT, "a1")], false, true);
        assert_eq!(r, Err(Refusal::Stale));
        assert_eq!(st.node_count(), 1);
    }

    #[test]
    fn local_move_checks_keys_and_rolls_back() {
        let mut st = TreeState::new();
        let a = id("7:1");
        let b = id("7:2");
        st.apply_local(a, a, ROOT, "a0".into(), true);
        st.apply_local(b, b, ROOT, "a5".into(), true);
        let mut e = String::new();
        // Refusals: their codes (Python raises the errors).
        st.apply_local(3 << 64 | 7, id("7:3"), a, "a0".into(), true);
        assert_eq!(st.move_local(a, id("7:3"), None, 7, &mut e), Err(5));
        assert_eq!(st.move_local(a, a, None, 7, &mut e), Err(4));
        assert_eq!(st.move_local(a, id("9:9"), None, 7, &mut e), Err(3));
        assert_eq!(st.move_local(id("9:9"), a, None, 7, &mut e), Err(1));
        assert_eq!(
            st.move_local(id("7:3"), a, None, 7, &mut e),
            Ok(Plan::Nothing)
        );
        let snap = |st: &TreeState| {
            let mut nodes = st.nodes();
            nodes.sort();
            let mut kids = st.kids_all();
            kids.sort();
            for (_, d) in kids.iter_mut() {
                d.sort();
            }
            (nodes, kids, st.log.clone(), st.clock)
        };
        let before = snap(&st);
        let Ok(Plan::Key(_)) = st.move_local(a, ROOT, None, 7, &mut e) else {
            panic!("appending is a plain key")
        };
        let k = e
            .strip_prefix("1  ")
            .expect("the entry of 7:1 moved to the top level");
        assert!(k > "a5");
        assert_eq!(st.parent_of(a), Some(ROOT));
        assert_eq!(st.clock, 4);
        assert!(st.rollback_local());
        assert_eq!(snap(&st), before);
        // Out of range goes to Python; index 0 prepends.
        assert_eq!(st.move_local(b, ROOT, Some(5), 7, &mut e), Err(0));
        let Ok(Plan::Key(_)) = st.move_local(b, ROOT, Some(0), 7, &mut e) else {
            panic!("prepending is a plain key")
        };
        let k = e
            .strip_prefix("2  ")
            .expect("the entry of 7:2 moved to the top level");
        assert!(k < "a0");
    }

    #[test]
    fn rank_counts_the_siblings_before() {
        let mut st = TreeState::new();
        let keys = ["a5", "a1", "a9", "a3", "a7", "a2", "a8", "a4", "a6", "a0"];
        for (i, k) in keys.iter().enumerate() {
            let t = u128::from(i as u64 + 1) << 64 | 1;
            st.apply_local(t, t, ROOT, (*k).to_string(), true);
        }
        let n = id("1:1");
        assert_eq!(st.rank(ROOT, "a5", n), 5); // not cached: scanned
        st.sorted_kids(ROOT); // more than FEW: cached as a B-tree
        assert_eq!(st.rank(ROOT, "a5", n), 5);
        assert_eq!(st.rank(ROOT, "a", n), 0);
        assert_eq!(st.rank(ROOT, "b", n), 10);
    }

    #[test]
    fn integer_parts_step_like_python() {
        // Values from Python's key_between (crdtsync/model/tree.py).
        assert_eq!(
            key_between_simple(Some("az"), None, 0).as_deref(),
            Some("b00")
        );
        assert_eq!(
            key_between_simple(Some("bzz"), None, 0).as_deref(),
            Some("c000")
        );
        assert_eq!(
            key_between_simple(None, Some("a0"), 0).as_deref(),
            Some("Zz")
        );
        assert_eq!(
            key_between_simple(None, Some("Z0"), 1).as_deref(),
            Some("Yzy")
        );
        assert_eq!(key_between_simple(None, None, 17).as_deref(), Some("a1"));
        assert_eq!(key_between_simple(Some("a1"), Some("a3"), 0), None);
        assert_eq!(key_between_simple(None, Some(SMALLEST_INT), 0), None);
        for v in [
            -300_000i128,
            -3845,
            -3844,
            -63,
            -62,
            -1,
            0,
            61,
            62,
            3905,
            3906,
            250_000,
        ] {
            let s = int_part(v).unwrap();
            assert_eq!(int_value(s.as_bytes()), Some(v), "{s}");
        }
    }

    fn shape_of<'a>(
        ids: &'a str,
        keys: &'a str,
        parents: &'a [Option<i64>],
        known: &'a HashSet<u64>,
        last: &'a HashMap<u64, u64>,
    ) -> Shape<'a> {
        Shape {
            ids,
            keys,
            parents,
            known,
            last,
            clock: 9,
            floor: (9 << 64 | 1) + 1,
        }
    }

    #[test]
    fn a_saved_shape_loads_and_every_refusal_is_named() {
        let known: HashSet<u64> = [1, 2].into_iter().collect();
        let last: HashMap<u64, u64> = [(1, 9), (2, 3)].into_iter().collect();
        let go = |ids: &str, keys: &str, parents: &[Option<i64>]| {
            TreeState::from_shape(
                WINDOW,
                HORIZON,
                &shape_of(ids, keys, parents, &known, &last),
            )
        };
        let st = go("1:1 2:3 1:9", "a0 a0 ", &[Some(-1), Some(0), Some(-2)]).unwrap();
        assert_eq!(st.parent_of(id("2:3")), Some(id("1:1")));
        assert_eq!(st.parent_of(id("1:9")), Some(TRASH));
        assert_eq!(st.key_of(id("1:1")), Some("a0"));
        assert_eq!((st.node_count(), st.trashed, st.clock), (3, 1, 9));
        assert_eq!(st.floor, (9 << 64 | 1) + 1);
        use ShapeError::*;
        let top = [Some(-1)];
        for (ids, keys, parents, err) in [
            ("", "", &top[..], MalformedIds),
            ("1:1 ", "a0", &top[..], MalformedIds),
            ("01:1", "a0", &top[..], MalformedIds),
            ("1:1", "a0 a1", &top[..], ListsDisagree),
            ("1:1 1:1", "a0 a1", &[Some(-1), Some(-1)][..], ListsDisagree),
            ("3:1 1:1 1:1", "a0 a1 a2", &[Some(-1); 3][..], ListsDisagree),
            ("3:1", "a0", &top[..], UnknownWriter(0)),
            ("1:10", "a0", &top[..], UnknownWriter(0)),
            ("1:0", "a0", &top[..], UnknownWriter(0)),
            ("1:1", "a0", &[None][..], BadParent),
            ("1:1", "a0", &[Some(0)][..], BadParent),
            ("1:1", "a0", &[Some(1)][..], BadParent),
            ("1:1", "a0", &[Some(-3)][..], BadParent),
            ("1:1", "a0", &[Some(-2)][..], DeletedWithKey),
            ("1:1", "a00", &top[..], BadKey(0)),
            ("1:1 1:2", "a0 a0", &[Some(1), Some(0)][..], Cycle),
        ] {
            assert_eq!(go(ids, keys, parents).unwrap_err(), err, "{ids:?} {keys:?}");
        }
        let only1: HashMap<u64, u64> = [(1, 9)].into_iter().collect();
        let s = shape_of("2:1", "a0", &top, &known, &only1);
        assert_eq!(
            TreeState::from_shape(WINDOW, HORIZON, &s).unwrap_err(),
            NoClock(2)
        );
    }

    #[test]
    fn position_keys_are_checked_like_python() {
        // Values from Python's valid_key (crdtsync/model/tree.py).
        for k in [
            "a0",
            "a1V",
            "Zz",
            "b00",
            "A000000000000000000000000001",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(valid_key(k.as_bytes()), "{k}");
        }
        let long = "a".repeat(MAX_KEY + 1);
        for k in [
            "",
            "a",
            "a10",
            "b0",
            "0a",
            "a-",
            "a\u{e9}",
            SMALLEST_INT,
            &long,
        ] {
            assert!(!valid_key(k.as_bytes()), "{k}");
        }
    }

    #[test]
    fn truncation_keeps_the_window() {
        let mut st = TreeState::new();
        let a = id("1:1");
        st.apply_local(1 << 64 | 1, a, ROOT, "a0".into(), true);
        for lam in 2..(WINDOW * 2) {
            let k = if lam % 2 == 0 { "a1" } else { "a2" };
            st.apply_local(u128::from(lam) << 64 | 1, a, ROOT, k.into(), false);
        }
        assert!(st.log.len() <= (WINDOW + (WINDOW >> 2)) as usize + 1);
        assert!(st.floor > 0);
        assert_eq!(st.log.last().unwrap().t >> 64, u128::from(WINDOW * 2 - 1));
    }
}
