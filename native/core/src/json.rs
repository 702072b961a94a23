//! JSON checks with the exact acceptance of `crdtsync._yupdate._check_json`.
//!
//! The Python reference first measures the bracket depth with a linear scan
//! (`json_depth`), refusing `depth >= max_any_depth` as a limit, then runs
//! `json.loads(text, parse_constant=reject)`. This module reproduces what
//! CPython's `json` scanner accepts: RFC 8259 JSON with whitespace limited
//! to space, tab, LF and CR; no raw control characters (< 0x20) inside
//! strings; any `\uXXXX` escape (lone surrogates included); `NaN`,
//! `Infinity` and `-Infinity` refused (by `parse_constant`); and integers
//! (numbers without fraction or exponent) of more than
//! `sys.get_int_max_str_digits()` digits refused, since `int()` of them
//! raises `ValueError`. The walk is iterative (an explicit stack).

/// Deepest bracket nesting of a JSON text, by the same linear scan as
/// `_yupdate.json_depth` (brackets inside strings do not count).
pub fn json_depth(text: &[u8]) -> u64 {
    let mut depth: i64 = 0;
    let mut deepest: i64 = 0;
    let mut in_str = false;
    let mut escaped = false;
    for &ch in text {
        if in_str {
            if escaped {
                escaped = false;
            } else if ch == b'\\' {
                escaped = true;
            } else if ch == b'"' {
                in_str = false;
            }
        } else if ch == b'"' {
            in_str = true;
        } else if ch == b'[' || ch == b'{' {
            depth += 1;
            deepest = deepest.max(depth);
        } else if ch == b']' || ch == b'}' {
            depth -= 1;
        }
    }
    deepest as u64
}

#[inline]
fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Scans a string body starting after the opening quote; returns the offset
/// after the closing quote.
fn scan_string(s: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let c = *s.get(i)?;
        i += 1;
        match c {
            b'"' => return Some(i),
            b'\\' => {
                let e = *s.get(i)?;
                i += 1;
                match e {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let hex = s.get(i..i + 4)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        i += 4;
                    }
                    _ => return None,
                }
            }
            0x00..=0x1F => return None,
            _ => {}
        }
    }
}

/// Matches a number at `i`; returns the offset after it, or None when
/// Python would refuse it.
fn scan_number(s: &[u8], mut i: usize, max_digits: u64) -> Option<usize> {
    let start = i;
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    let digits_start = i;
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            i += 1;
            while matches!(s.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        _ => return None,
    }
    let int_digits = i - digits_start;
    let mut is_float = false;
    if s.get(i) == Some(&b'.') && matches!(s.get(i + 1), Some(b'0'..=b'9')) {
        is_float = true;
        i += 2;
        while matches!(s.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let d = j;
        while matches!(s.get(j), Some(b'0'..=b'9')) {
            j += 1;
        }
        if j > d {
            is_float = true;
            i = j;
        }
        // else: Python backtracks to the 'e', which then fails the grammar.
    }
    let _ = start;
    if !is_float && max_digits > 0 && int_digits as u64 > max_digits {
        return None; // int(numstr) raises ValueError: too many digits
    }
    Some(i)
}

/// Whether `json.loads(text, parse_constant=reject)` accepts `text`.
pub fn is_valid_json(s: &[u8], max_digits: u64) -> bool {
    validate(s, max_digits).is_some()
}

fn validate(s: &[u8], max_digits: u64) -> Option<()> {
    let n = s.len();
    // Open containers: true for an object, false for an array.
    let mut stack: Vec<bool> = Vec::new();
    let mut i = skip_ws(s, 0);
    'value: loop {
        // A value starts at i.
        let c = *s.get(i)?;
        match c {
            b'"' => i = scan_string(s, i + 1)?,
            b'{' => {
                i = skip_ws(s, i + 1);
                if s.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    stack.push(true);
                    i = object_key(s, i)?;
                    continue 'value;
                }
            }
            b'[' => {
                i = skip_ws(s, i + 1);
                if s.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    stack.push(false);
                    continue 'value;
                }
            }
            b'n' if s[i..].starts_with(b"null") => i += 4,
            b't' if s[i..].starts_with(b"true") => i += 4,
            b'f' if s[i..].starts_with(b"false") => i += 5,
            // NaN, Infinity, -Infinity: refused by parse_constant; anything
            // else starting with N or I is no number either.
            b'N' | b'I' => return None,
            _ => i = scan_number(s, i, max_digits)?,
        }
        // A value ended at i: close the containers it completes.
        loop {
            i = skip_ws(s, i);
            match stack.last() {
                None => return if i == n { Some(()) } else { None },
                Some(&is_obj) => {
                    let c = *s.get(i)?;
                    if c == b',' {
                        i = skip_ws(s, i + 1);
                        if is_obj {
                            i = object_key(s, i)?;
                        }
                        continue 'value;
                    }
                    if c == if is_obj { b'}' } else { b']' } {
                        stack.pop();
                        i += 1;
                        continue;
                    }
                    return None;
                }
            }
        }
    }
}

/// Reads `"key" ws : ws` at `i`; returns where the value starts.
fn object_key(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_ws(s, scan_string(s, i + 1)?);
    if s.get(i) != Some(&b':') {
        return None;
    }
    Some(skip_ws(s, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        is_valid_json(s.as_bytes(), 4300)
    }

    #[test]
    fn accepts_what_python_accepts() {
        for s in [
            "0",
            "-0",
            "1.5",
            "-1.5e10",
            "1E+2",
            "1e-2",
            "\"a\"",
            "null",
            "true",
            "false",
            " [1, 2 ,3] ",
            "{}",
            "[]",
            "{\"a\": [1, {\"b\": null}]}",
            "\"\\ud800\"",
            "\"\\u00e9\\n\\t\\\"\\\\\\/\\b\\f\\r\"",
            "\"é😀\"",
            "\t\n\r 1 \r\n",
            "\"\x7f\"",
            "1e999",
        ] {
            assert!(ok(s), "{s:?}");
        }
    }

    #[test]
    fn refuses_what_python_refuses() {
        for s in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "[1,]",
            "{\"a\":1,}",
            "{'a':1}",
            "[1 2]",
            "NaN",
            "Infinity",
            "-Infinity",
            "nul",
            "\"\\x\"",
            "\"\\u12G4\"",
            "\"\x01\"",
            "\"abc",
            "[",
            "{\"a\"}",
            "{1:2}",
            "1 2",
            "\u{feff}1",
            "\u{a0}1",
            "-",
            "--1",
            "[1]]",
            "tru",
            "\"\\u123\"",
            "{\"a\":}",
        ] {
            assert!(!ok(s), "{s:?}");
        }
    }

    #[test]
    fn integer_digit_limit() {
        let big = "1".repeat(4300);
        assert!(ok(&big));
        assert!(!ok(&format!("{big}1")));
        assert!(!ok(&format!("-{big}1")));
        assert!(ok(&format!("{big}1.0")));
        assert!(ok(&format!("{big}1e2")));
        assert!(is_valid_json(format!("{big}1").as_bytes(), 0));
    }

    #[test]
    fn depth_scan() {
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(b"[[1],{\"a\":[]}]"), 3);
        assert_eq!(json_depth(b"\"[[[\""), 0);
        assert_eq!(json_depth(b"]][["), 0);
        assert_eq!(json_depth(b"[\"\\\"[\"]"), 1);
    }

    #[test]
    fn deep_nesting_is_iterative() {
        let s = "[".repeat(200_000) + &"]".repeat(200_000);
        assert!(ok(&s));
    }
}
