//! The errors of the core: each maps onto one class of `crdtsync.errors`.

use std::fmt;

/// Which `crdtsync.errors` class an error becomes in Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `MalformedUpdateError`: the bytes do not parse or break a rule.
    Malformed,
    /// `UpdateLimitError`: the bytes exceed a configured limit.
    Limit,
    /// `UnsupportedVersionError`: written by a newer format version.
    Unsupported,
    /// `MissingUpdatesError`: the update depends on changes the document does
    /// not have yet (see [`Error::missing`]).
    Missing,
}

/// A refusal of some input, with a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// For `Missing`: the client and clock of the first missing change, and
    /// the `(client, clock)` the document must hold for the update to apply.
    pub missing: Option<(u64, u32, (u64, u32))>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            missing: None,
        }
    }

    /// A `MissingUpdatesError` (`crdtsync.errors.MissingUpdatesError(message,
    /// client, clock, needs)`).
    pub fn missing(message: impl Into<String>, client: u64, clock: u32, needs: (u64, u32)) -> Self {
        Error {
            kind: ErrorKind::Missing,
            message: message.into(),
            missing: Some((client, clock, needs)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A malformed-update error at a byte offset (the wording of `_yupdate._malformed`).
pub fn malformed(msg: impl fmt::Display, pos: usize) -> Error {
    Error::new(
        ErrorKind::Malformed,
        format!("malformed update at byte {pos}: {msg}"),
    )
}

/// A limit error at a byte offset (the wording of `_yupdate._limit`).
pub fn limit(msg: impl fmt::Display, pos: usize) -> Error {
    Error::new(
        ErrorKind::Limit,
        format!("update exceeds a limit at byte {pos}: {msg}"),
    )
}
