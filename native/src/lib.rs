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
use pyo3::types::{PyBytes, PyList, PyTuple, PyType};

/// Inputs at least this long are processed with the GIL released.
const DETACH_BYTES: usize = 16 * 1024;

static MALFORMED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static LIMIT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UNSUPPORTED: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn error_class<'py>(py: Python<'py>, kind: ErrorKind) -> PyResult<&'py Bound<'py, PyType>> {
    let (cell, name) = match kind {
        ErrorKind::Malformed => (&MALFORMED, "MalformedUpdateError"),
        ErrorKind::Limit => (&LIMIT, "UpdateLimitError"),
        ErrorKind::Unsupported => (&UNSUPPORTED, "UnsupportedVersionError"),
    };
    cell.import(py, "crdtsync.errors", name)
}

fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    match error_class(py, e.kind) {
        Ok(cls) => PyErr::from_type(cls.clone(), e.message),
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

/// Reads `UpdateLimits` (any object with its attributes) into the core's limits.
fn limits_from(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Limits> {
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
        int_max_str_digits: digits.max(0) as u64,
    })
}

/// A parsed v1 update (the result of `parse_update`), holding its bytes.
#[pyclass(frozen, module = "crdtsync._native", name = "Update")]
struct PyUpdate {
    data: Vec<u8>,
    parsed: ParsedUpdate,
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
    fn encode<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let out = update::encode_update(&self.parsed, &self.data);
        PyBytes::new(py, &out)
    }

    /// Total number of structs.
    fn struct_count(&self) -> usize {
        self.parsed.struct_count()
    }

    /// `[(client, [struct, ...]), ...]` in encoding order; each struct is
    /// `(client, clock, length, kind, info, origin, right_origin, parent,
    /// parent_sub, content)` with the field values of `_yupdate.Struct`
    /// (contents as plain tuples: Format `(key, value_json)`, Type
    /// `(type_ref, name)`, Any `(n, raw)`, Doc `(guid, options_raw)`).
    fn clients<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
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
    fn delete_set(&self) -> Vec<(u64, Vec<(u32, u32)>)> {
        self.parsed.delete_set.clone()
    }
}

/// Parses a Yjs v1 update with the rules and limits of `_yupdate.parse_update`.
#[pyfunction]
fn parse_update(py: Python<'_>, data: &[u8], limits: &Bound<'_, PyAny>) -> PyResult<PyUpdate> {
    let limits = limits_from(py, limits)?;
    let parsed = run(py, data.len() >= DETACH_BYTES, || {
        update::parse_update(data, &limits)
    })?;
    Ok(PyUpdate {
        data: data.to_vec(),
        parsed,
    })
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
    m.add_function(wrap_pyfunction!(zstd_unframe, m)?)?;
    m.add_function(wrap_pyfunction!(read_varuint, m)?)?;
    m.add_function(wrap_pyfunction!(read_varint, m)?)?;
    m.add_function(wrap_pyfunction!(write_varuint, m)?)?;
    m.add_function(wrap_pyfunction!(json_depth, m)?)?;
    m.add_function(wrap_pyfunction!(json_valid, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}
