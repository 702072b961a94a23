//! Resource limits: the fields of `crdtsync._yupdate.UpdateLimits`.

/// Hard ceiling for clocks: yrs stores them as u32 and subtracts them as i32.
pub const CLOCK_CEILING: u64 = (1 << 31) - 1;

/// Limits enforced while parsing (every limit inclusive). See
/// `UpdateLimits` in `crdtsync/_yupdate.py` for what each one bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_update_bytes: u64,
    pub max_structs: u64,
    pub max_clients: u64,
    pub max_any_depth: u64,
    pub max_string_bytes: u64,
    pub max_key_bytes: u64,
    pub max_delete_ranges: u64,
    pub max_type_depth: u64,
    pub max_any_values: u64,
    pub max_clock: u64,
    /// Deleted ranges of clocks a document does not have yet, kept until
    /// they arrive (`max_pending_deletes`).
    pub max_pending_deletes: u64,
    /// Python's `sys.get_int_max_str_digits()` (0: unlimited): `json.loads`
    /// refuses integers with more digits, so the JSON check must too.
    pub int_max_str_digits: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_update_bytes: 64 * 1024 * 1024,
            max_structs: 10_000_000,
            max_clients: 100_000,
            max_any_depth: 64,
            max_string_bytes: 64 * 1024 * 1024,
            max_key_bytes: 64 * 1024,
            max_delete_ranges: 10_000_000,
            max_type_depth: 256,
            max_any_values: 10_000_000,
            max_clock: CLOCK_CEILING,
            max_pending_deletes: 100_000,
            int_max_str_digits: 4300,
        }
    }
}
