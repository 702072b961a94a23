//! crdtsync-core: the byte formats of crdtsync in plain Rust.
//!
//! Every function here is a port of a Python reference in the `crdtsync`
//! package (named in each module) and must accept, refuse and produce exactly
//! what it does: `scripts/fuzz_differential.py` feeds both the same inputs.
//! All input is treated as hostile: nothing recurses on input depth, every
//! count is checked against the bytes left before anything is allocated.
#![forbid(unsafe_code)]

pub mod codec;
pub mod columnar;
pub mod error;
pub mod fxhash;
pub mod index;
pub mod json;
pub mod keyed;
pub mod limits;
pub mod tree;
pub mod update;
pub mod varint;

pub use error::{Error, ErrorKind, Result};
pub use limits::Limits;
