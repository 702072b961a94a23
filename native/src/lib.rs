//! `crdtsync._native`: PyO3 bindings of crdtsync-core.
//!
//! Only `crdtsync.accel` imports this module; see it for the Python API.
//! Every entry point runs its work inside `catch_unwind`: a panic (a bug)
//! becomes a `crdtsync.errors.MalformedUpdateError` naming it, never an
//! abort and never pyo3's `PanicException` (a `BaseException` that code
//! catching `Exception` would miss). Large inputs are processed without
//! holding the GIL.
//!
//! `#![forbid(unsafe_code)]` holds here too: the PyO3 macros expand to
//! unsafe code inside pyo3's own crate, not ours.
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use crdtsync_core::error::{Error, ErrorKind};
use crdtsync_core::update::{self, Content, Parent, ParsedUpdate};
use crdtsync_core::{codec, columnar, json, varint, Limits};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

use crdtsync_core::index::{DocIndex, KeyView, RunView, Snapshot};

/// Inputs at least this long are processed with the GIL released.
const DETACH_BYTES: usize = 16 * 1024;

static MALFORMED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static LIMIT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UNSUPPORTED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static MISSING: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn error_class<'py>(py: Python<'py>, kind: ErrorKind) -> PyResult<&'py Bound<'py, PyType>> {
    let (cell, name) = match kind {
        ErrorKind::Malformed => (&MALFORMED, "MalformedUpdateError"),
        ErrorKind::Limit => (&LIMIT, "UpdateLimitError"),
        ErrorKind::Unsupported => (&UNSUPPORTED, "UnsupportedVersionError"),
        ErrorKind::Missing => (&MISSING, "MissingUpdatesError"),
    };
    cell.import(py, "crdtsync.errors", name)
}

fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    match error_class(py, e.kind) {
        Ok(cls) => match e.missing {
            Some((client, clock, needs)) => {
                PyErr::from_type(cls.clone(), (e.message, client, clock, needs))
            }
            None => PyErr::from_type(cls.clone(), e.message),
        },
        Err(import_error) => import_error,
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs `f` (which must not touch Python), releasing the GIL when `detach`,
/// and turns its error or panic into the library's exception.
fn run<T, F>(py: Python<'_>, detach: bool, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, Error> + Send,
{
    let guarded = move || catch_unwind(AssertUnwindSafe(f));
    let outcome = if detach {
        py.detach(guarded)
    } else {
        guarded()
    };
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py_err(py, e)),
        Err(payload) => Err(to_py_err(
            py,
            Error::new(
                ErrorKind::Malformed,
                format!(
                    "internal error in crdtsync._native (a bug, please report it): panic: {}",
                    panic_message(payload.as_ref())
                ),
            ),
        )),
    }
}

/// `UpdateLimits` read once (see `accel.native_limits`): the entry points
/// take it instead of an `UpdateLimits`, which they would read field by field.
#[pyclass(frozen, module = "crdtsync._native", name = "Limits")]
struct PyLimits {
    limits: Limits,
}

#[pymethods]
impl PyLimits {
    #[new]
    fn new(py: Python<'_>, limits: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyLimits {
            limits: read_limits(py, limits)?,
        })
    }
}

/// The core's limits from a `Limits` or an `UpdateLimits`.
fn limits_from(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Limits> {
    if let Ok(l) = obj.cast::<PyLimits>() {
        return Ok(l.get().limits);
    }
    read_limits(py, obj)
}

/// Reads `UpdateLimits` (any object with its attributes) into the core's limits.
fn read_limits(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Limits> {
    fn field(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
        let v = obj.getattr(name)?;
        match v.extract::<u64>() {
            Ok(n) => Ok(n),
            // A positive int too large for u64: as good as unlimited.
            Err(_) if v.extract::<i64>().is_err() && v.gt(0)? => Ok(u64::MAX),
            Err(e) => Err(e),
        }
    }
    let digits: i64 = py
        .import("sys")?
        .getattr("get_int_max_str_digits")?
        .call0()?
        .extract()?;
    Ok(Limits {
        max_update_bytes: field(obj, "max_update_bytes")?,
        max_structs: field(obj, "max_structs")?,
        max_clients: field(obj, "max_clients")?,
        max_any_depth: field(obj, "max_any_depth")?,
        max_string_bytes: field(obj, "max_string_bytes")?,
        max_key_bytes: field(obj, "max_key_bytes")?,
        max_delete_ranges: field(obj, "max_delete_ranges")?,
        max_type_depth: field(obj, "max_type_depth")?,
        max_any_values: field(obj, "max_any_values")?,
        max_clock: field(obj, "max_clock")?.min(crdtsync_core::limits::CLOCK_CEILING),
        max_pending_deletes: match obj.getattr("max_pending_deletes") {
            Ok(_) => field(obj, "max_pending_deletes")?,
            Err(_) => Limits::default().max_pending_deletes,
        },
        int_max_str_digits: digits.max(0) as u64,
    })
}

/// A parsed v1 update (the result of `parse_update`), holding its bytes.
///
/// `release()` frees both once the update has been checked and begun (a
/// load's parse is larger than the document it builds, and freed only after
/// the engine's apply it would leave that much allocator slack behind every
/// loaded document); a released update refuses every later use.
#[pyclass(module = "crdtsync._native", name = "Update")]
struct PyUpdate {
    data: Vec<u8>,
    parsed: ParsedUpdate,
    released: bool,
}

impl PyUpdate {
    fn new(data: Vec<u8>, parsed: ParsedUpdate) -> Self {
        PyUpdate {
            data,
            parsed,
            released: false,
        }
    }

    fn live(&self) -> PyResult<()> {
        if self.released {
            return Err(PyValueError::new_err(
                "this parsed update was released after its index update began",
            ));
        }
        Ok(())
    }
}

fn text<'py>(py: Python<'py>, data: &[u8], span: update::Span) -> PyResult<Bound<'py, PyAny>> {
    // The parser checked the UTF-8.
    let s =
        std::str::from_utf8(span.get(data)).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(s.into_pyobject(py)?.into_any())
}

fn id<'py>(py: Python<'py>, id: Option<update::Id>) -> PyResult<Bound<'py, PyAny>> {
    match id {
        None => Ok(py.None().into_bound(py)),
        Some((c, k)) => Ok((c, k).into_pyobject(py)?.into_any()),
    }
}

#[pymethods]
impl PyUpdate {
    /// The v1 bytes again (identical to the parsed input).
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.live()?;
        let out = update::encode_update(&self.parsed, &self.data);
        Ok(PyBytes::new(py, &out))
    }

    /// Whether every struct is a GC, a Skip, deleted content or an ASCII
    /// String: then importing it keeps an ASCII text ASCII, with no embeds
    /// (`crdtsync.model.Text` keeps its offset index over such imports).
    fn plain_ascii(&self) -> PyResult<bool> {
        self.live()?;
        Ok(plain_ascii_of(&self.parsed, &self.data))
    }

    /// Frees the bytes and the parse (see the class); idempotent.
    fn release(&mut self) {
        self.released = true;
        self.data = Vec::new();
        self.parsed = ParsedUpdate::default();
    }

    /// The value of the item at `client:clock` if it is a single string
    /// (Any content of one value, a string, in an item of its own), else
    /// None: a map entry's value read from the parse, without the engine
    /// (`Doc.load` reads the root registry so).
    fn any_string(&self, client: u64, clock: u32) -> PyResult<Option<String>> {
        self.live()?;
        let Some((_, structs)) = self.parsed.clients.iter().find(|(c, _)| *c == client) else {
            return Ok(None);
        };
        let i = structs.partition_point(|s| s.clock <= clock);
        if i == 0 {
            return Ok(None);
        }
        let s = &structs[i - 1];
        if s.clock != clock || s.length != 1 {
            return Ok(None);
        }
        let Content::Any { n: 1, raw } = &s.content else {
            return Ok(None);
        };
        let raw = raw.get(&self.data);
        if raw.first() != Some(&119) {
            return Ok(None); // not a string
        }
        let Ok((len, pos)) = varint::read_varuint(raw, 1, 32, "a string length") else {
            return Ok(None);
        };
        if pos as u64 + len != raw.len() as u64 {
            return Ok(None);
        }
        Ok(std::str::from_utf8(&raw[pos..]).ok().map(str::to_owned))
    }

    /// Total number of structs.
    fn struct_count(&self) -> PyResult<usize> {
        self.live()?;
        Ok(self.parsed.struct_count())
    }

    /// `[(client, [struct, ...]), ...]` in encoding order; each struct is
    /// `(client, clock, length, kind, info, origin, right_origin, parent,
    /// parent_sub, content)` with the field values of `_yupdate.Struct`
    /// (contents as plain tuples: Format `(key, value_json)`, Type
    /// `(type_ref, name)`, Any `(n, raw)`, Doc `(guid, options_raw)`).
    fn clients<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.live()?;
        let data = &self.data;
        let out = PyList::empty(py);
        for (client, structs) in &self.parsed.clients {
            let items = PyList::empty(py);
            for s in structs {
                let parent = match &s.parent {
                    Parent::Inherited => py.None().into_bound(py),
                    Parent::Root(name) => text(py, data, *name)?,
                    Parent::Item(i) => id(py, Some(*i))?,
                };
                let parent_sub = match s.parent_sub {
                    None => py.None().into_bound(py),
                    Some(k) => text(py, data, k)?,
                };
                let content: Bound<'py, PyAny> = match &s.content {
                    Content::None => py.None().into_bound(py),
                    Content::String(t) | Content::Embed(t) => text(py, data, *t)?,
                    Content::Binary(b) => PyBytes::new(py, b.get(data)).into_any(),
                    Content::Json(items) => {
                        let texts = items
                            .iter()
                            .map(|t| text(py, data, *t))
                            .collect::<PyResult<Vec<_>>>()?;
                        PyTuple::new(py, texts)?.into_any()
                    }
                    Content::Format { key, value } => {
                        PyTuple::new(py, [text(py, data, *key)?, text(py, data, *value)?])?
                            .into_any()
                    }
                    Content::Type { type_ref, name } => {
                        let name = match name {
                            None => py.None().into_bound(py),
                            Some(n) => text(py, data, *n)?,
                        };
                        PyTuple::new(py, [type_ref.into_pyobject(py)?.into_any(), name])?.into_any()
                    }
                    Content::Any { n, raw } => PyTuple::new(
                        py,
                        [
                            n.into_pyobject(py)?.into_any(),
                            PyBytes::new(py, raw.get(data)).into_any(),
                        ],
                    )?
                    .into_any(),
                    Content::Doc { guid, options } => PyTuple::new(
                        py,
                        [
                            text(py, data, *guid)?,
                            PyBytes::new(py, options.get(data)).into_any(),
                        ],
                    )?
                    .into_any(),
                };
                let fields: [Bound<'py, PyAny>; 10] = [
                    s.client.into_pyobject(py)?.into_any(),
                    s.clock.into_pyobject(py)?.into_any(),
                    s.length.into_pyobject(py)?.into_any(),
                    s.kind.into_pyobject(py)?.into_any(),
                    s.info.into_pyobject(py)?.into_any(),
                    id(py, s.origin)?,
                    id(py, s.right_origin)?,
                    parent,
                    parent_sub,
                    content,
                ];
                items.append(PyTuple::new(py, fields)?)?;
            }
            out.append((client, items))?;
        }
        Ok(out)
    }

    /// `[(client, [(clock, length), ...]), ...]` in encoding order.
    fn delete_set(&self) -> PyResult<Vec<(u64, Vec<(u32, u32)>)>> {
        self.live()?;
        Ok(self.parsed.delete_set.clone())
    }

    /// `ParsedUpdate.state_vector_after()`: client -> clock after its last
    /// struct that is not a Skip, in encoding order.
    fn writes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.live()?;
        let out = PyDict::new(py);
        for (client, structs) in &self.parsed.clients {
            if let Some(s) = structs.iter().rev().find(|s| s.kind != update::STRUCT_SKIP) {
                out.set_item(*client, s.end())?;
            }
        }
        Ok(out)
    }

    /// Whether the update carries neither structs nor deletions.
    fn is_empty(&self) -> PyResult<bool> {
        self.live()?;
        Ok(self.parsed.clients.is_empty() && self.parsed.delete_set.is_empty())
    }

    /// The offset of the delete set in the bytes (`ParsedUpdate.ds_pos`).
    #[getter]
    fn ds_pos(&self) -> PyResult<usize> {
        self.live()?;
        Ok(self.parsed.ds_pos)
    }

    /// Length of the v1 bytes.
    fn __len__(&self) -> PyResult<usize> {
        self.live()?;
        Ok(self.data.len())
    }
}

/// `Update.plain_ascii` of a parse of `data`.
fn plain_ascii_of(parsed: &ParsedUpdate, data: &[u8]) -> bool {
    for (_, structs) in &parsed.clients {
        for s in structs {
            match (s.kind, &s.content) {
                (update::STRUCT_GC | update::STRUCT_SKIP | update::CONTENT_DELETED, _) => {}
                (update::CONTENT_STRING, Content::String(t)) if t.get(data).is_ascii() => {}
                _ => return false,
            }
        }
    }
    true
}

/// Parses a Yjs v1 update with the rules and limits of `_yupdate.parse_update`.
#[pyfunction]
fn parse_update(py: Python<'_>, data: &[u8], limits: &Bound<'_, PyAny>) -> PyResult<PyUpdate> {
    let limits = limits_from(py, limits)?;
    let parsed = run(py, data.len() >= DETACH_BYTES, || {
        update::parse_update(data, &limits)
    })?;
    Ok(PyUpdate::new(data.to_vec(), parsed))
}

/// Checks a v1 update like `parse_update` without keeping the result.
#[pyfunction]
fn check_update(py: Python<'_>, data: &[u8], limits: &Bound<'_, PyAny>) -> PyResult<()> {
    let limits = limits_from(py, limits)?;
    run(py, data.len() >= DETACH_BYTES, || {
        update::parse_update(data, &limits).map(|_| ())
    })
}

/// `_columnar.compact_encode` (parsing `v1` under `limits`).
#[pyfunction]
fn compact_encode<'py>(
    py: Python<'py>,
    v1: &[u8],
    limits: &Bound<'_, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let limits = limits_from(py, limits)?;
    let out = run(py, v1.len() >= DETACH_BYTES, || {
        columnar::compact_encode(v1, &limits)
    })?;
    Ok(PyBytes::new(py, &out))
}

/// `_columnar.compact_decode`.
#[pyfunction]
fn compact_decode<'py>(
    py: Python<'py>,
    data: &[u8],
    limits: &Bound<'_, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let limits = limits_from(py, limits)?;
    // Even a small input may decompress to a large block: always detach.
    let out = run(py, true, || columnar::compact_decode(data, &limits))?;
    Ok(PyBytes::new(py, &out))
}

/// `_columnar.compact_decode_parsed`: `(v1 bytes, Update)`, the parse being the
/// decoder's own.
#[pyfunction]
fn compact_decode_parsed<'py>(
    py: Python<'py>,
    data: &[u8],
    limits: &Bound<'_, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, PyUpdate)> {
    let limits = limits_from(py, limits)?;
    let (out, parsed) = run(py, true, || columnar::compact_decode_parsed(data, &limits))?;
    let bytes = PyBytes::new(py, &out);
    Ok((bytes, PyUpdate::new(out, parsed)))
}

/// `encoding._unzstd`: one zstd frame declaring its size, at most `limit`.
#[pyfunction]
fn zstd_unframe<'py>(py: Python<'py>, payload: &[u8], limit: u64) -> PyResult<Bound<'py, PyBytes>> {
    let out = run(py, payload.len() >= DETACH_BYTES, || {
        codec::zstd_unframe(payload, limit)
    })?;
    Ok(PyBytes::new(py, &out))
}

/// Reads a varuint of at most `bits` (32 or 64) bits: `(value, new_pos)`.
#[pyfunction]
fn read_varuint(py: Python<'_>, data: &[u8], pos: usize, bits: u32) -> PyResult<(u64, usize)> {
    if bits != 32 && bits != 64 {
        return Err(PyValueError::new_err("bits must be 32 or 64"));
    }
    if pos > data.len() {
        return Err(PyValueError::new_err("pos beyond the data"));
    }
    run(py, false, || {
        varint::read_varuint(data, pos, bits, "varuint")
    })
}

/// Reads a lib0 signed varint: `(value, new_pos)`.
#[pyfunction]
fn read_varint(py: Python<'_>, data: &[u8], pos: usize) -> PyResult<(i64, usize)> {
    if pos > data.len() {
        return Err(PyValueError::new_err("pos beyond the data"));
    }
    run(py, false, || varint::read_varint(data, pos))
}

/// The varuint encoding of a non-negative int below 2**64.
#[pyfunction]
fn write_varuint<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let v: u64 = value
        .extract()
        .map_err(|_| PyTypeError::new_err("write_varuint takes an int in 0..2**64"))?;
    let mut out = Vec::with_capacity(10);
    varint::write_varuint(&mut out, v);
    Ok(PyBytes::new(py, &out))
}

/// `_yupdate.json_depth` of UTF-8 text.
#[pyfunction]
fn json_depth(text: &[u8]) -> u64 {
    json::json_depth(text)
}

/// Whether `json.loads(text, parse_constant=<refuse>)` accepts the UTF-8 text.
#[pyfunction]
fn json_valid(text: &[u8]) -> PyResult<bool> {
    if std::str::from_utf8(text).is_err() {
        return Err(PyValueError::new_err("text must be UTF-8"));
    }
    Python::attach(|py| {
        let digits: i64 = py
            .import("sys")?
            .getattr("get_int_max_str_digits")?
            .call0()?
            .extract()?;
        Ok(json::is_valid_json(text, digits.max(0) as u64))
    })
}

/// Panics inside the guarded boundary: for the tests that check a panic
/// becomes a crdtsync error instead of an abort or a BaseException.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, message: String) -> PyResult<()> {
    run(py, false, move || -> Result<(), Error> {
        panic!("{}", message)
    })
}

// -- the document index ------------------------------------------------------------

/// `crdtsync.format.yupdate.DocIndex` in Rust, kept per `crdtsync.Doc` (see
/// `crdtsync_core::index`). One update at a time is open between `begin` and
/// `commit` / `rollback`. A panic inside (a bug) poisons the index: the call
/// raises `MalformedUpdateError` and `poisoned` turns true; the owner then
/// rebuilds the index from the engine's state.
#[pyclass(module = "crdtsync._native", name = "DocIndex")]
struct PyDocIndex {
    inner: DocIndex,
    poisoned: bool,
}

impl PyDocIndex {
    /// Runs `f` on the index, GIL released when `detach`; a panic poisons it.
    fn guarded<T, F>(&mut self, py: Python<'_>, detach: bool, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&mut DocIndex) -> Result<T, Error> + Send,
    {
        if self.poisoned {
            return Err(to_py_err(
                py,
                Error::new(
                    ErrorKind::Malformed,
                    "internal error in crdtsync._native: the document index is poisoned by an \
                     earlier panic (rebuild it)",
                ),
            ));
        }
        let inner = &mut self.inner;
        let guarded = move || catch_unwind(AssertUnwindSafe(|| f(inner)));
        let outcome = if detach {
            py.detach(guarded)
        } else {
            guarded()
        };
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(to_py_err(py, e)),
            Err(payload) => {
                self.poisoned = true;
                Err(to_py_err(
                    py,
                    Error::new(
                        ErrorKind::Malformed,
                        format!(
                            "internal error in crdtsync._native (a bug, please report it): \
                             panic in the document index: {}",
                            panic_message(payload.as_ref())
                        ),
                    ),
                ))
            }
        }
    }
}

/// A container argument: a root name (str) or a type item's `(client, clock)`.
fn container_arg(obj: &Bound<'_, PyAny>) -> PyResult<KeyView> {
    if let Ok(name) = obj.extract::<String>() {
        return Ok(KeyView::Root(name.into_bytes()));
    }
    let (client, clock): (u64, u32) = obj.extract()?;
    Ok(KeyView::Item(client, clock))
}

fn key_view<'py>(py: Python<'py>, k: &KeyView) -> PyResult<Bound<'py, PyAny>> {
    match k {
        KeyView::Root(name) => Ok(String::from_utf8_lossy(name).into_pyobject(py)?.into_any()),
        KeyView::Item(c, k) => Ok((*c, *k).into_pyobject(py)?.into_any()),
    }
}

fn sub_view<'py>(py: Python<'py>, s: &Option<Vec<u8>>) -> PyResult<Bound<'py, PyAny>> {
    match s {
        None => Ok(py.None().into_bound(py)),
        Some(b) => Ok(String::from_utf8_lossy(b).into_pyobject(py)?.into_any()),
    }
}

fn run_view<'py>(py: Python<'py>, r: &RunView) -> PyResult<Bound<'py, PyAny>> {
    let list: Bound<'py, PyAny> = match &r.list {
        None => py.None().into_bound(py),
        Some((k, sub)) => PyTuple::new(py, [key_view(py, k)?, sub_view(py, sub)?])?.into_any(),
    };
    let fields: [Bound<'py, PyAny>; 8] = [
        r.client.into_pyobject(py)?.into_any(),
        r.clock.into_pyobject(py)?.into_any(),
        r.end.into_pyobject(py)?.into_any(),
        r.kind.into_pyobject(py)?.into_any(),
        id(py, r.origin)?,
        id(py, r.right_origin)?,
        list,
        match r.type_ref {
            None => py.None().into_bound(py),
            Some(t) => t.into_pyobject(py)?.into_any(),
        },
    ];
    Ok(PyTuple::new(py, fields)?.into_any())
}

fn snapshot_dict<'py>(py: Python<'py>, snap: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("state", snap.state.clone())?;
    let runs = PyList::empty(py);
    for r in &snap.runs {
        runs.append(run_view(py, r)?)?;
    }
    d.set_item("runs", runs)?;
    let lists = PyList::empty(py);
    for (k, sub, order) in &snap.lists {
        lists.append(PyTuple::new(
            py,
            [
                key_view(py, k)?,
                sub_view(py, sub)?,
                order.clone().into_pyobject(py)?.into_any(),
            ],
        )?)?;
    }
    d.set_item("lists", lists)?;
    d.set_item("deleted", snap.deleted.clone())?;
    d.set_item("pending", snap.pending.clone())?;
    d.set_item("types", snap.types.clone())?;
    let observed = PyList::empty(py);
    for (k, cls) in &snap.observed {
        observed.append(PyTuple::new(
            py,
            [key_view(py, k)?, cls.into_pyobject(py)?.into_any()],
        )?)?;
    }
    d.set_item("observed", observed)?;
    d.set_item("pair_splits", snap.pair_splits.clone())?;
    let roots = PyList::empty(py);
    for (name, tr) in &snap.root_types {
        roots.append((String::from_utf8_lossy(name).into_owned(), *tr))?;
    }
    d.set_item("root_types", roots)?;
    d.set_item("formatting", snap.formatting)?;
    Ok(d)
}

#[pymethods]
impl PyDocIndex {
    /// A new index; `root_types` maps root names to type refs (`TYPE_TEXT`...).
    #[new]
    #[pyo3(signature = (root_types=None))]
    fn new(root_types: Option<std::collections::HashMap<String, u8>>) -> Self {
        let mut inner = DocIndex::new();
        let mut roots: Vec<(String, u8)> = root_types.unwrap_or_default().into_iter().collect();
        roots.sort();
        for (name, tr) in roots {
            inner.set_root_type(name.as_bytes(), tr);
        }
        PyDocIndex {
            inner,
            poisoned: false,
        }
    }

    /// Size of one run in bytes (the arena's element).
    #[classattr]
    const RUN_BYTES: usize = DocIndex::RUN_BYTES;

    /// Whether a panic left the index unusable (rebuild it).
    #[getter]
    fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Declares a root's type (the first declaration stays).
    fn set_root_type(&mut self, name: &str, type_ref: u8) {
        self.inner.set_root_type(name.as_bytes(), type_ref);
    }

    /// The state vector: `{client: next clock}`.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (c, k) in self.inner.state() {
            d.set_item(c, k)?;
        }
        Ok(d)
    }

    /// The next clock of `client` (0 if unknown).
    fn state_of(&self, client: u64) -> u32 {
        self.inner.state_of(client)
    }

    /// Whether a Format item was ever integrated.
    #[getter]
    fn formatting(&self) -> bool {
        self.inner.formatting
    }

    /// Whether the open update integrated a Format item.
    #[getter]
    fn open_formatting(&self) -> bool {
        self.inner.open_formatting()
    }

    /// Pending deletions (of clocks not integrated yet) in all.
    #[getter]
    fn pending_deletes(&self) -> u64 {
        self.inner.pending_deletes
    }

    /// Checks `update` against the document and integrates its structs
    /// (`DocIndex.begin`). Then `commit()` once the engine applied it, or
    /// `rollback()`.
    ///
    /// Deletions of clocks the document will not have after the update's
    /// structs are split off (as `crdtsync.Doc` holds them): when there are
    /// some and `split` is false, nothing is begun and the split is returned,
    /// `(engine_update, later_update, later_ranges, needs)`: the update with
    /// only the applicable deletions, a delete-only update of the rest, its
    /// range count and the first missing clock of each of its clients (the
    /// caller checks its budgets, then calls again with `split=True`, which
    /// begins with the applicable deletions). Otherwise returns whether a
    /// Format item was ever integrated (this update included): yrs may then
    /// delete formatting items of its own accord.
    #[pyo3(signature = (update, limits, split=false, strict=true))]
    fn begin<'py>(
        &mut self,
        py: Python<'py>,
        update: &Bound<'py, PyUpdate>,
        limits: &Bound<'py, PyAny>,
        split: bool,
        strict: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limits = limits_from(py, limits)?;
        let u = update.try_borrow()?;
        u.live()?;
        let (data, parsed) = (&u.data, &u.parsed);
        let mut now = None;
        if !parsed.delete_set.is_empty() {
            let cut = self.inner.split_deletes(parsed);
            if !cut.later.is_empty() {
                if !split {
                    let mut engine = data[..parsed.ds_pos].to_vec();
                    update::write_delete_set(&mut engine, &cut.now);
                    let mut later = vec![0u8];
                    update::write_delete_set(&mut later, &cut.later);
                    let needs: Vec<(u64, u32)> =
                        cut.later.iter().map(|(c, r)| (*c, r[0].0)).collect();
                    let out = (
                        PyBytes::new(py, &engine),
                        PyBytes::new(py, &later),
                        cut.later_ranges(),
                        needs,
                    );
                    return Ok(out.into_pyobject(py)?.into_any());
                }
                now = Some(cut.now);
            }
        }
        let detach = data.len() >= DETACH_BYTES;
        let formatting = self.guarded(py, detach, |ix| {
            ix.begin(data, parsed, now, &limits, strict)?;
            Ok(ix.formatting || ix.open_formatting())
        })?;
        Ok(pyo3::types::PyBool::new(py, formatting)
            .to_owned()
            .into_any())
    }

    /// Records the open update's deletions; returns the clients whose clocks moved.
    fn commit(&mut self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.guarded(py, false, |ix| Ok(ix.commit()))
    }

    /// Undoes the open update.
    fn rollback(&mut self, py: Python<'_>) -> PyResult<()> {
        self.guarded(py, false, |ix| {
            ix.rollback();
            Ok(())
        })
    }

    /// Records updates the engine applied (local transactions'), in order, each
    /// parsed under `limits`. On an error, those before it stay recorded.
    fn record(
        &mut self,
        py: Python<'_>,
        updates: Vec<Vec<u8>>,
        limits: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let limits = limits_from(py, limits)?;
        let detach = updates.iter().map(|u| u.len()).sum::<usize>() >= DETACH_BYTES;
        self.guarded(py, detach, |ix| {
            for data in &updates {
                let parsed = update::parse_update(data, &limits)?;
                ix.record(data, &parsed)?;
            }
            Ok(())
        })
    }

    /// Records the document's own changes from a state-vector diff.
    fn record_diff(
        &mut self,
        py: Python<'_>,
        data: &[u8],
        limits: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let limits = limits_from(py, limits)?;
        let detach = data.len() >= DETACH_BYTES;
        self.guarded(py, detach, |ix| ix.record_diff(data, &limits))
    }

    /// Records deletions the engine applied, given as a v1 delete set.
    fn record_delete_set(
        &mut self,
        py: Python<'_>,
        delete_set: &[u8],
        limits: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let limits = limits_from(py, limits)?;
        self.guarded(py, false, |ix| {
            let mut data = Vec::with_capacity(delete_set.len() + 1);
            data.push(0);
            data.extend_from_slice(delete_set);
            let mut l = limits;
            l.max_update_bytes = l.max_update_bytes.max(data.len() as u64);
            let parsed = update::parse_update(&data, &l)?;
            ix.record_deletes(&parsed.delete_set);
            Ok(())
        })
    }

    /// Whether importing `update` would change nothing and hold nothing.
    fn contains(&self, update: &Bound<'_, PyUpdate>) -> PyResult<bool> {
        let u = update.try_borrow()?;
        u.live()?;
        Ok(self.inner.contains(&u.parsed))
    }

    /// `(container, map key)` of the list holding `client:clock`, or None.
    fn where_of<'py>(
        &self,
        py: Python<'py>,
        client: u64,
        clock: u32,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match self.inner.where_of(client, clock) {
            None => Ok(None),
            Some((k, sub)) => Ok(Some(PyTuple::new(
                py,
                [key_view(py, &k)?, sub_view(py, &sub)?],
            )?)),
        }
    }

    /// The live entries of a map container: `container` is a root name or
    /// `(client, clock)` of a type item. Returns `{key: (client, clock, kind,
    /// type_ref)}` (see `DocIndex::map_entries`), or None for a container the
    /// index does not know.
    fn map_entries<'py>(
        &self,
        py: Python<'py>,
        container: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let key = container_arg(container)?;
        let Some(entries) = self.inner.map_entries(&key) else {
            return Ok(None);
        };
        let out = PyDict::new(py);
        for (k, client, clock, kind, type_ref) in entries {
            out.set_item(String::from_utf8_lossy(&k), (client, clock, kind, type_ref))?;
        }
        Ok(Some(out))
    }

    /// The number of live entries of a map container (`map_entries`'s
    /// length, without building it), or None for one the index does not know.
    fn map_size(&self, container: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        let key = container_arg(container)?;
        Ok(self.inner.map_size(&key))
    }

    /// The document's delete set: `[(client, [(clock, length), ...]), ...]`.
    fn delete_set(&self) -> Vec<(u64, Vec<(u32, u32)>)> {
        self.inner.delete_set()
    }

    /// Runs in the index.
    fn runs(&self) -> usize {
        self.inner.run_count()
    }

    /// Bytes the index's tables hold.
    fn heap_bytes(&self) -> usize {
        self.inner.heap_bytes()
    }

    /// Everything the index holds, canonically ordered (as `DocIndex.snapshot`).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        snapshot_dict(py, &self.inner.snapshot())
    }

    /// Checks the index's invariants (AssertionError if one is broken).
    fn check_invariants(&self) -> PyResult<()> {
        self.inner.check_invariants().map_err(|e| {
            pyo3::exceptions::PyAssertionError::new_err(format!("DocIndex invariant broken: {e}"))
        })
    }

    /// `parse_update(data, limits)`, then `Update.plain_ascii()` and
    /// `begin(update, limits)` in one call: an import's whole check, with no
    /// `Update` object and no copy of the bytes (the parse is freed before
    /// this returns, so before the engine applies the update). The limits
    /// come first so that `functools.partial` can bind them positionally (a
    /// keyword costs a tenth of a keystroke's import).
    ///
    /// Returns an int when the update was begun (nothing split off): bit 0
    /// set when a Format item was ever integrated (`begin`'s flag), bit 1
    /// when the update is plain ASCII. When deletions must be split off,
    /// nothing is begun and the parse is returned as an `Update` (the caller
    /// then takes the two-step path: `plain_ascii`, `begin`, budgets, `begin`
    /// with `split=True`). Raises what `parse_update` or `begin` raise, in
    /// that order.
    fn parse_begin<'py>(
        &mut self,
        py: Python<'py>,
        limits: &Bound<'py, PyAny>,
        data: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        let limits = limits_from(py, limits)?;
        let detach = data.len() >= DETACH_BYTES;
        let parsed = run(py, detach, || update::parse_update(data, &limits))?;
        if !parsed.delete_set.is_empty() && !self.inner.split_deletes(&parsed).later.is_empty() {
            return Ok(Bound::new(py, PyUpdate::new(data.to_vec(), parsed))?.into_any());
        }
        let plain = plain_ascii_of(&parsed, data);
        let formatting = self.guarded(py, detach, |ix| {
            ix.begin(data, &parsed, None, &limits, true)?;
            Ok(ix.formatting || ix.open_formatting())
        })?;
        let flags = u8::from(formatting) | (u8::from(plain) << 1);
        Ok(flags.into_pyobject(py)?.into_any())
    }
}

/// How this module was built (shown by `crdtsync --version`).
fn build_info() -> String {
    format!(
        "crdtsync-native {}, {} build",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BUILD", build_info())?;
    m.add_class::<PyUpdate>()?;
    m.add_function(wrap_pyfunction!(parse_update, m)?)?;
    m.add_function(wrap_pyfunction!(check_update, m)?)?;
    m.add_function(wrap_pyfunction!(compact_encode, m)?)?;
    m.add_function(wrap_pyfunction!(compact_decode, m)?)?;
    m.add_function(wrap_pyfunction!(compact_decode_parsed, m)?)?;
    m.add_class::<PyLimits>()?;
    m.add_class::<PyDocIndex>()?;
    m.add_class::<PyTreeCore>()?;
    m.add_function(wrap_pyfunction!(zstd_unframe, m)?)?;
    m.add_function(wrap_pyfunction!(read_varuint, m)?)?;
    m.add_function(wrap_pyfunction!(read_varint, m)?)?;
    m.add_function(wrap_pyfunction!(write_varuint, m)?)?;
    m.add_function(wrap_pyfunction!(json_depth, m)?)?;
    m.add_function(wrap_pyfunction!(json_valid, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The movable tree's state (crdtsync_core::tree; Python: tree._TreeState)

use crdtsync_core::tree::{self as ctree, Entry as TreeEntry, Node, Plan, Refusal, TreeState};
use pyo3::types::{PyBool, PyInt, PyString};
use std::collections::HashMap as StdHashMap;

static TREE_OP_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Runs `f` on the tree state, turning a panic (a bug) into the library's
/// `InvalidOperationError` naming it, never an abort.
fn tree_guard<T>(py: Python<'_>, f: impl FnOnce() -> T) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => {
            let cls = TREE_OP_ERROR.import(py, "crdtsync.errors", "InvalidOperationError")?;
            Err(PyErr::from_type(
                cls.clone(),
                format!(
                    "internal error in crdtsync._native's tree (a bug, please report it): panic: {}",
                    panic_message(payload.as_ref())
                ),
            ))
        }
    }
}

fn node_arg(s: &str) -> PyResult<Node> {
    ctree::parse_node(s).ok_or_else(|| PyValueError::new_err(format!("not a node id: {s:?}")))
}

/// `Some(node)` for a str that is a node id (not the top level or the trash).
fn node_of(obj: &Bound<'_, PyAny>) -> Option<Node> {
    let s = obj.cast::<PyString>().ok()?;
    let n = ctree::parse_node(s.to_str().ok()?)?;
    (n != ctree::ROOT && n != ctree::TRASH).then_some(n)
}

fn old_str(n: Node) -> Option<String> {
    match n {
        ctree::SKIPPED => None,
        ctree::ABSENT => Some("\u{0}".to_string()),
        _ => Some(ctree::node_str(n)),
    }
}

/// How writer `wid` refers to `n` in an entry (`Binding.ref`).
fn node_ref(n: Node, wid: u64) -> String {
    if n != ctree::ROOT && n != ctree::TRASH && n as u64 == wid {
        ((n >> 64) as u64).to_string()
    } else {
        ctree::node_str(n)
    }
}

/// The tree state in Rust; `crdtsync.model.tree._NativeState` wraps it with
/// `_TreeState`'s interface, and `Tree.move` calls `move_local` directly.
#[pyclass(module = "crdtsync._native", name = "TreeCore")]
struct PyTreeCore {
    st: TreeState,
}

impl PyTreeCore {
    fn written<'py>(
        py: Python<'py>,
        t: u128,
        n: Node,
        p: Node,
        key: &str,
        wid: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lam = ((t >> 64) as u64).to_string();
        let entry = format!("{} {} {}", node_ref(n, wid), node_ref(p, wid), key);
        Ok((lam, entry).into_pyobject(py)?.into_any())
    }
}

#[pymethods]
impl PyTreeCore {
    /// An empty state; `window` and `horizon` are the log's truncation policy
    /// (`tree.WINDOW`, `tree.HORIZON`).
    #[new]
    #[pyo3(signature = (window = ctree::WINDOW, horizon = ctree::HORIZON))]
    fn new(window: u64, horizon: u64) -> Self {
        PyTreeCore {
            st: TreeState::with_policy(window, horizon),
        }
    }

    /// A local move, checked, keyed and applied (Tree.move's hot path).
    ///
    /// Returns False (nothing changed: take the Python path, which raises or
    /// handles the unusual case), an int (refused, nothing changed: the code
    /// of `TreeState::move_local`'s error), None (already there), `(clock, entry)` (applied:
    /// write the entry), or `(lo, hi, bias, jitter)` (compute `key_between(lo,
    /// hi, jitter, bias)` and call `finish_move`).
    fn move_local<'py>(
        &mut self,
        py: Python<'py>,
        node: &Bound<'py, PyAny>,
        parent: &Bound<'py, PyAny>,
        index: &Bound<'py, PyAny>,
        wid: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let slow = || PyBool::new(py, false).to_owned().into_any();
        let Some(n) = node_of(node) else {
            return Ok(slow());
        };
        let p = if parent.is_none() {
            ctree::ROOT
        } else {
            match node_of(parent) {
                Some(p) => p,
                None => return Ok(slow()),
            }
        };
        let index = if index.is_none() {
            None
        } else if index.is_exact_instance_of::<PyInt>() {
            match index.extract::<u64>() {
                Ok(i) => Some(i),
                Err(_) => return Ok(slow()),
            }
        } else {
            return Ok(slow());
        };
        let st = &mut self.st;
        let mut entry = String::new();
        match tree_guard(py, || st.move_local(n, p, index, wid, &mut entry))? {
            Err(0) => Ok(slow()),
            Err(code) => Ok(code.into_pyobject(py)?.into_any()),
            Ok(Plan::Nothing) => Ok(py.None().into_bound(py)),
            Ok(Plan::Key(_)) => {
                let lam = self.st.clock.to_string();
                Ok((lam, entry).into_pyobject(py)?.into_any())
            }
            Ok(Plan::Between(lo, hi, bias)) => {
                let t = u128::from(self.st.clock + 1) << 64 | u128::from(wid);
                Ok((lo, hi, bias, ctree::jitter(t))
                    .into_pyobject(py)?
                    .into_any())
            }
            Ok(Plan::Range(_)) => Ok(slow()),
        }
    }

    /// Applies the move `move_local` left waiting for its key; `(clock, entry)`.
    fn finish_move<'py>(
        &mut self,
        py: Python<'py>,
        key: String,
        wid: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = key.clone();
        let st = &mut self.st;
        match tree_guard(py, || st.finish_move(k))? {
            Some((t, n, p)) => Self::written(py, t, n, p, &key, wid),
            None => Err(PyValueError::new_err("no move is waiting for its key")),
        }
    }

    /// Takes back the last local move (its engine write failed).
    fn rollback_local(&mut self, py: Python<'_>) -> PyResult<bool> {
        let st = &mut self.st;
        tree_guard(py, || st.rollback_local())
    }

    fn parent_of(&self, n: &str) -> Option<String> {
        let n = ctree::parse_node(n)?;
        self.st.parent_of(n).map(ctree::node_str)
    }

    /// Walks up from `start` until the top level (`""`), the trash (`"-"`) or
    /// `node`: returns where it stopped (`Tree._target`'s one walk).
    fn walk_up(&self, py: Python<'_>, start: &str, node: Option<&str>) -> PyResult<String> {
        let mut a = node_arg(start)?;
        let stop = node.and_then(ctree::parse_node);
        let st = &self.st;
        let end = tree_guard(py, || {
            while a != ctree::ROOT && a != ctree::TRASH && Some(a) != stop {
                a = st.parent_of(a).unwrap_or(ctree::TRASH);
            }
            a
        })?;
        Ok(ctree::node_str(end))
    }

    /// The `i`-th log entry (negative: from the end), as `log_list` gives them.
    #[allow(clippy::type_complexity)]
    fn log_entry(
        &self,
        i: isize,
    ) -> PyResult<(u128, String, String, String, Option<String>, String)> {
        let len = self.st.log.len() as isize;
        let j = if i < 0 { i + len } else { i };
        if j < 0 || j >= len {
            return Err(pyo3::exceptions::PyIndexError::new_err(
                "log index out of range",
            ));
        }
        let e = &self.st.log[j as usize];
        Ok((
            e.t,
            ctree::node_str(e.n),
            ctree::node_str(e.p),
            e.k.clone(),
            old_str(e.old),
            e.oldk.clone(),
        ))
    }

    /// How many children of `p` sort before `(k, n)` (`bisect_left` on `sorted_kids`).
    fn rank(&self, py: Python<'_>, p: &str, k: &str, n: &str) -> PyResult<usize> {
        let p = node_arg(p)?;
        let n = node_arg(n)?;
        let st = &self.st;
        tree_guard(py, || st.rank(p, k, n))
    }

    fn contains(&self, n: &str) -> bool {
        ctree::parse_node(n).is_some_and(|n| self.st.contains(n))
    }

    fn key_of(&self, n: &str) -> PyResult<String> {
        let n = node_arg(n)?;
        self.st
            .key_of(n)
            .map(str::to_string)
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(ctree::node_str(n)))
    }

    fn has_kids(&self, n: &str) -> bool {
        ctree::parse_node(n).is_some_and(|n| self.st.has_kids(n))
    }

    fn top(&self, py: Python<'_>, n: &str) -> PyResult<String> {
        let n = node_arg(n)?;
        if !self.st.contains(n) && n != ctree::ROOT && n != ctree::TRASH {
            return Err(pyo3::exceptions::PyKeyError::new_err(ctree::node_str(n)));
        }
        let st = &self.st;
        Ok(ctree::node_str(tree_guard(py, || st.top(n))?))
    }

    fn live(&self, py: Python<'_>, n: &Bound<'_, PyAny>) -> PyResult<bool> {
        match node_of(n) {
            Some(n) => {
                let st = &self.st;
                tree_guard(py, || st.live(n))
            }
            None => Ok(false),
        }
    }

    fn sorted_kids(&mut self, py: Python<'_>, p: &str) -> PyResult<Vec<(String, String)>> {
        let p = node_arg(p)?;
        let st = &mut self.st;
        let lst = tree_guard(py, || st.sorted_kids(p))?;
        Ok(lst
            .into_iter()
            .map(|(k, n)| (k, ctree::node_str(n)))
            .collect())
    }

    fn children(&mut self, py: Python<'_>, p: &str) -> PyResult<Vec<String>> {
        let p = node_arg(p)?;
        let st = &mut self.st;
        let lst = tree_guard(py, || st.sorted_kids(p))?;
        Ok(lst.into_iter().map(|(_, n)| ctree::node_str(n)).collect())
    }

    fn kids_of<'py>(&self, py: Python<'py>, p: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(p) = ctree::parse_node(p) else {
            return Ok(None);
        };
        let Some(d) = self.st.kids_of(p) else {
            return Ok(None);
        };
        let out = PyDict::new(py);
        for (n, k) in d {
            out.set_item(ctree::node_str(n), k)?;
        }
        Ok(Some(out))
    }

    fn walk(&mut self, py: Python<'_>) -> PyResult<Vec<String>> {
        let st = &mut self.st;
        let nodes = tree_guard(py, || st.walk())?;
        Ok(nodes.into_iter().map(ctree::node_str).collect())
    }

    /// `key_for`: None (already there), a key, `(lo, hi, bias)` (Python's
    /// `key_between` gives the key), or an int: the index is out of range and
    /// the parent has that many other children.
    #[pyo3(signature = (p, node, index, t, new_id))]
    fn key_for<'py>(
        &mut self,
        py: Python<'py>,
        p: &str,
        node: Option<&str>,
        index: Option<&Bound<'py, PyAny>>,
        t: u128,
        new_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = node_arg(p)?;
        let node = node.map(node_arg).transpose()?;
        let new_id = node_arg(new_id)?;
        // A negative or huge index is out of range whatever the siblings.
        let index = index.map(|i| i.extract::<u64>().unwrap_or(u64::MAX));
        let st = &mut self.st;
        Ok(
            match tree_guard(py, || st.key_for(p, node, index, t, new_id))? {
                Plan::Nothing => py.None().into_bound(py),
                Plan::Key(k) => k.into_pyobject(py)?.into_any(),
                Plan::Between(lo, hi, bias) => (lo, hi, bias).into_pyobject(py)?.into_any(),
                Plan::Range(others) => others.into_pyobject(py)?.into_any(),
            },
        )
    }

    fn apply_local(
        &mut self,
        py: Python<'_>,
        t: u128,
        n: &str,
        p: &str,
        k: String,
        create: bool,
    ) -> PyResult<()> {
        let n = node_arg(n)?;
        let p = node_arg(p)?;
        let st = &mut self.st;
        tree_guard(py, || st.apply_local(t, n, p, k, create))
    }

    /// `integrate`: `(status, olds)`, status 0 unchanged, 1 changed, 2 a
    /// conflict, 3 a stale operation (both: unchanged); olds `[(node, parent
    /// or None, key)]` when `want_old`.
    #[allow(clippy::type_complexity)]
    fn integrate(
        &mut self,
        py: Python<'_>,
        ops: Vec<(u128, String, String, String)>,
        want_old: bool,
        trim: bool,
    ) -> PyResult<(u8, Vec<(String, Option<String>, String)>)> {
        let mut parsed = Vec::with_capacity(ops.len());
        for (t, n, p, k) in ops {
            parsed.push((t, node_arg(&n)?, node_arg(&p)?, k));
        }
        let st = &mut self.st;
        Ok(
            match tree_guard(py, || st.integrate(parsed, want_old, trim))? {
                Ok((changed, olds)) => (
                    u8::from(changed),
                    olds.into_iter()
                        .map(|(n, p, k)| (ctree::node_str(n), p.map(ctree::node_str), k))
                        .collect(),
                ),
                Err(Refusal::Conflict) => (2, Vec::new()),
                Err(Refusal::Stale) => (3, Vec::new()),
            },
        )
    }

    fn truncate(&mut self, py: Python<'_>) -> PyResult<()> {
        let st = &mut self.st;
        tree_guard(py, || st.truncate())
    }

    fn truncate_at(&mut self, py: Python<'_>, t: u128) -> PyResult<()> {
        let st = &mut self.st;
        tree_guard(py, || st.truncate_at(t))
    }

    fn floor_for(&self, clock: u64) -> u128 {
        self.st.floor_for(clock)
    }

    /// Loads a whole state: `[(node, parent, key)]`, the writers' clocks, the
    /// clock, the floor, the log `[(t, node, parent, key, old, oldk)]` and trim_at.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn load(
        &mut self,
        py: Python<'_>,
        nodes: Vec<(String, String, String)>,
        last: StdHashMap<u64, u64>,
        clock: u64,
        floor: u128,
        log: Vec<(u128, String, String, String, Option<String>, String)>,
        trim_at: usize,
    ) -> PyResult<()> {
        let mut ns = Vec::with_capacity(nodes.len());
        for (n, p, k) in nodes {
            ns.push((node_arg(&n)?, node_arg(&p)?, k));
        }
        let mut entries = Vec::with_capacity(log.len());
        for (t, n, p, k, old, oldk) in log {
            let old = match old.as_deref() {
                None => ctree::SKIPPED,
                Some("\u{0}") => ctree::ABSENT,
                Some(o) => node_arg(o)?,
            };
            entries.push(TreeEntry {
                t,
                n: node_arg(&n)?,
                p: node_arg(&p)?,
                k,
                old,
                oldk,
            });
        }
        let mut st = TreeState::with_policy(self.st.window, self.st.horizon);
        tree_guard(py, || st.load(ns, last, clock, floor, entries, trim_at))?;
        self.st = st;
        Ok(())
    }

    /// The state a saved shape describes (`tree._decode_shape_native`), after
    /// checking its node lists as `tree._decode_shape_py` does, with the same
    /// `ValueError` messages (and its `KeyError` for a writer without a clock).
    ///
    /// `ids`, `pos` and `parents` are the shape's fields (their types checked
    /// by the caller), `known` the writers that have a container in the
    /// document (canonical ids), `last`, `clock` and `floor` what its header
    /// gave. A panic (a bug) becomes `InvalidOperationError`, a `ValueError`:
    /// the caller then ignores the shape like any refused one.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ids, pos, parents, known, last, clock, floor, window = ctree::WINDOW, horizon = ctree::HORIZON))]
    fn from_shape(
        py: Python<'_>,
        ids: &Bound<'_, PyString>,
        pos: &Bound<'_, PyString>,
        parents: &Bound<'_, PyList>,
        known: Vec<u64>,
        last: StdHashMap<u64, u64>,
        clock: u64,
        floor: u128,
        window: u64,
        horizon: u64,
    ) -> PyResult<Self> {
        // A str holding a lone surrogate (JSON's "\ud800") has no UTF-8 form:
        // its lossy one has as many spaces, and the same refusals (neither an
        // id nor a key may hold anything but ASCII).
        let ids_s = ids.to_string_lossy();
        let pos_s = pos.to_string_lossy();
        let mut ps = Vec::with_capacity(parents.len());
        for p in parents.iter() {
            // `type(pi) is int`: not a bool, not a float.
            ps.push(if p.is_exact_instance_of::<PyInt>() {
                p.extract::<i64>().ok()
            } else {
                None
            });
        }
        let known: std::collections::HashSet<u64> = known.into_iter().collect();
        let shape = ctree::Shape {
            ids: &ids_s,
            keys: &pos_s,
            parents: &ps,
            known: &known,
            last: &last,
            clock,
            floor,
        };
        let decoded = tree_guard(py, || TreeState::from_shape(window, horizon, &shape))?;
        let err = match decoded {
            Ok(st) => return Ok(PyTreeCore { st }),
            Err(e) => e,
        };
        use ctree::ShapeError as E;
        let msg = match err {
            E::MalformedIds => "malformed node ids".to_string(),
            E::ListsDisagree => "node lists disagree".to_string(),
            E::UnknownWriter(i) => {
                let n = ids_s.split(' ').nth(i).unwrap_or_default();
                format!("node {n} was not created by a known writer")
            }
            E::NoClock(w) => return Err(pyo3::exceptions::PyKeyError::new_err(w)),
            E::BadParent => "bad parent index".to_string(),
            E::DeletedWithKey => "a deleted node with a position".to_string(),
            E::BadKey(i) => {
                // Python's repr of the key as it is (not its lossy UTF-8).
                let k = pos.call_method1("split", (" ",))?.get_item(i)?;
                format!("invalid position key {}", k.repr()?)
            }
            E::Cycle => "a cycle".to_string(),
        };
        Err(PyValueError::new_err(msg))
    }

    fn node_count(&self) -> usize {
        self.st.node_count()
    }

    /// `[(node, parent)]`, every node.
    fn parent_items(&self) -> Vec<(String, String)> {
        self.st
            .nodes()
            .into_iter()
            .map(|(n, p)| (ctree::node_str(n), ctree::node_str(p)))
            .collect()
    }

    fn kids_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (p, d) in self.st.kids_all() {
            let inner = PyDict::new(py);
            for (n, k) in d {
                inner.set_item(ctree::node_str(n), k)?;
            }
            out.set_item(ctree::node_str(p), inner)?;
        }
        Ok(out)
    }

    fn order_dict(&self) -> StdHashMap<String, Vec<(String, String)>> {
        self.st
            .order_all()
            .into_iter()
            .map(|(p, l)| {
                let lst = l
                    .into_iter()
                    .map(|(k, n)| (k, ctree::node_str(n)))
                    .collect();
                (ctree::node_str(p), lst)
            })
            .collect()
    }

    #[allow(clippy::type_complexity)]
    fn log_list(&self) -> Vec<(u128, String, String, String, Option<String>, String)> {
        self.st
            .log
            .iter()
            .map(|e| {
                (
                    e.t,
                    ctree::node_str(e.n),
                    ctree::node_str(e.p),
                    e.k.clone(),
                    old_str(e.old),
                    e.oldk.clone(),
                )
            })
            .collect()
    }

    fn log_len(&self) -> usize {
        self.st.log.len()
    }

    /// The newest logged timestamp, if any.
    fn log_top(&self) -> Option<u128> {
        self.st.log.last().map(|e| e.t)
    }

    #[getter]
    fn floor(&self) -> u128 {
        self.st.floor
    }

    #[getter]
    fn clock(&self) -> u64 {
        self.st.clock
    }

    #[getter]
    fn trashed(&self) -> usize {
        self.st.trashed
    }

    #[getter]
    fn trim_at(&self) -> usize {
        self.st.trim_at
    }

    #[getter]
    fn last(&self) -> StdHashMap<u64, u64> {
        self.st.last.iter().map(|(w, l)| (*w, *l)).collect()
    }

    #[getter]
    fn recent(&self) -> StdHashMap<String, String> {
        self.st
            .recent_pairs()
            .into_iter()
            .map(|(p, n)| (ctree::node_str(p), ctree::node_str(n)))
            .collect()
    }

    #[setter]
    fn set_recent(&mut self, recent: StdHashMap<String, String>) -> PyResult<()> {
        let mut pairs = Vec::with_capacity(recent.len());
        for (p, n) in recent {
            pairs.push((node_arg(&p)?, node_arg(&n)?));
        }
        self.st.set_recent(pairs);
        Ok(())
    }
}
