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
}

/// A refusal of some input, with a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
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
