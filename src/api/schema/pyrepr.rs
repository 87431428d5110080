//! The bits of CPython 2.7 object semantics that leak into jsonschema 2.5.1
//! error messages: `repr` of decoded JSON values and of schema literals, the
//! int/long/float split made by `json.loads`, numeric comparison and
//! equality, and the iteration order of `dict` and `set` objects.
//!
//! Everything here is written against the CPython 2.7 sources' documented
//! behaviour (64-bit build, UCS-4 `unicode`, hash randomisation off, which is
//! the 2.7 default).

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// An integer as decoded by Python's `json` module: an `int` when it fits a
/// C `long` (64 bits), a `long` otherwise. Kept as decimal text so that no
/// value is ever out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PyInt {
    negative: bool,
    /// Decimal digits without leading zeros ("0" for zero).
    digits: String,
}

/// A JSON number the way Python 2.7's `json.loads` decodes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyNum {
    /// No fraction and no exponent in the text: `int` or `long`.
    Int(PyInt),
    /// Anything else: a C double (`1e400` becomes `inf`).
    Float(f64),
}

impl PyInt {
    fn from_text(text: &str) -> PyInt {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let trimmed = rest.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        PyInt {
            // `-0` decodes to the int 0.
            negative: negative && digits != "0",
            digits: digits.to_owned(),
        }
    }

    /// The value when it fits an `i128` (always the case for up to 38 digits).
    fn small(&self) -> Option<i128> {
        if self.digits.len() > 38 {
            return None;
        }
        let magnitude: i128 = self.digits.parse().ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }

    /// Python 2 `repr`: decimal, with the `L` suffix of a `long` when the
    /// value does not fit a 64-bit C `long`.
    pub(crate) fn repr(&self) -> String {
        let fits = self
            .small()
            .is_some_and(|v| v >= i128::from(i64::MIN) && v <= i128::from(i64::MAX));
        let sign = if self.negative { "-" } else { "" };
        let suffix = if fits { "" } else { "L" };
        format!("{sign}{}{suffix}", self.digits)
    }

    /// Exact comparison with a (schema) integer.
    pub(crate) fn cmp_i64(&self, other: i64) -> Ordering {
        match self.small() {
            Some(v) => v.cmp(&i128::from(other)),
            // More than 38 digits: beyond any i64 in magnitude.
            None if self.negative => Ordering::Less,
            None => Ordering::Greater,
        }
    }

    /// Whether `self % divisor` is non-zero (Python's `%` has the sign of
    /// the divisor, but whether it is zero does not depend on signs).
    pub(crate) fn has_remainder(&self, divisor: u64) -> bool {
        if divisor == 0 {
            return false;
        }
        let divisor = u128::from(divisor);
        let rem = self.digits.bytes().fold(0u128, |acc, b| {
            (acc * 10 + u128::from(b.wrapping_sub(b'0'))) % divisor
        });
        rem != 0
    }

    /// Decimal text with sign (no `L`).
    fn decimal(&self) -> String {
        let sign = if self.negative { "-" } else { "" };
        format!("{sign}{}", self.digits)
    }

    /// Python's `int < float` etc. (exact).
    fn cmp_float(&self, f: f64) -> Option<Ordering> {
        if f.is_nan() {
            return None;
        }
        if f.is_infinite() {
            return Some(if f > 0.0 {
                Ordering::Less
            } else {
                Ordering::Greater
            });
        }
        // Compare with the integer part, then settle ties by the fraction.
        let floor = f.floor();
        let floor_int = PyInt::from_text(&format!("{floor:.0}"));
        match cmp_int(self, &floor_int) {
            Ordering::Equal if f > floor => Some(Ordering::Less),
            ord => Some(ord),
        }
    }
}

fn cmp_int(a: &PyInt, b: &PyInt) -> Ordering {
    let magnitude = a
        .digits
        .len()
        .cmp(&b.digits.len())
        .then_with(|| a.digits.cmp(&b.digits));
    match (a.negative, b.negative) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
    }
}

impl PyNum {
    /// Classify a JSON number by its original text (serde_json's
    /// `arbitrary_precision` keeps it): Python's `json` makes an int of
    /// `-?(0|[1-9][0-9]*)` and a float of anything with a fraction or an
    /// exponent.
    pub(crate) fn from_json(n: &Number) -> PyNum {
        let text = n.to_string();
        if text.contains(['.', 'e', 'E']) {
            // Rust's parser, like Python's `float()`, rounds correctly and
            // overflows to infinity. serde_json already checked the syntax.
            PyNum::Float(text.parse::<f64>().unwrap_or(f64::NAN))
        } else {
            PyNum::Int(PyInt::from_text(&text))
        }
    }

    pub(crate) fn repr(&self) -> String {
        match self {
            PyNum::Int(i) => i.repr(),
            PyNum::Float(f) => float_repr(*f),
        }
    }

    /// Python comparison against a schema integer (`minimum`, `maximum`).
    pub(crate) fn cmp_i64(&self, bound: i64) -> Option<Ordering> {
        match self {
            PyNum::Int(i) => Some(i.cmp_i64(bound)),
            PyNum::Float(f) => {
                // Schema bounds are small enough to be exact doubles, but be
                // exact anyway.
                let bound = PyInt::from_text(&bound.to_string());
                bound.cmp_float(*f).map(Ordering::reverse)
            }
        }
    }

    /// Python's truthiness of `instance % divisor` (`multipleOf` with an
    /// integer divisor). For a float, `float % int` is `fmod` (adjusted in
    /// sign); `inf % d` is `nan`, which is truthy.
    pub(crate) fn not_multiple_of(&self, divisor: i64) -> bool {
        match self {
            PyNum::Int(i) => i.has_remainder(divisor.unsigned_abs()),
            PyNum::Float(f) => {
                let m = f % (divisor as f64);
                m != 0.0
            }
        }
    }

    /// A text that two numbers share exactly when Python's `==` holds
    /// between them (`1 == 1.0 == 1e0`, `0 == -0.0`; ints and floats are
    /// compared exactly, never by rounding the int).
    pub(crate) fn equality_key(&self) -> String {
        match self {
            PyNum::Int(i) => i.decimal(),
            // `{:.0}` prints the exact decimal expansion of an integral
            // double.
            PyNum::Float(f) if f.is_finite() && f.fract() == 0.0 => {
                PyInt::from_text(&format!("{f:.0}")).decimal()
            }
            // Non-integral: the repr has a '.' or a negative exponent, or is
            // `inf`/`-inf`; it identifies the double.
            PyNum::Float(f) => float_repr(*f),
        }
    }
}

/// Python 2.7 `repr(float)`: the shortest digit string that round-trips
/// (`repr` style 'r'), printed in positional notation when the decimal
/// exponent is in `-4 < decpt <= 16`, with `.0` added to integral values;
/// exponent notation otherwise (`1e+16`, `1e-05`, `1.5e+300`).
pub(crate) fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let (digits, exponent) = shortest_digits(x.abs());
    let decpt = exponent + 1;
    let ndigits = digits.len() as i64;
    let body = if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{dot}e{exp_sign}{:02}", exponent.unsigned_abs())
    } else if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
    } else if decpt >= ndigits {
        format!("{digits}{}.0", "0".repeat((decpt - ndigits) as usize))
    } else {
        let (int_part, frac_part) = digits.split_at(decpt as usize);
        format!("{int_part}.{frac_part}")
    };
    format!("{sign}{body}")
}

/// Split Rust's `{:e}` output into (significant digits, decimal exponent
/// of the first digit).
fn split_sci(sci: &str) -> (String, i64) {
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
    let digits = mantissa.chars().filter(|c| *c != '.').collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// The shortest digit string that reads back as `x` (finite, >= 0), with
/// the exponent of its first digit — David Gay's `dtoa` mode 0, as used by
/// Python. Rust's `{:e}` computes the same thing except when two shortest
/// candidates are exactly equally close to `x`: Rust then rounds the last
/// digit up, `dtoa` rounds it to even (`652096281946227.2`, not `.3`).
fn shortest_digits(x: f64) -> (String, i64) {
    let (digits, exponent) = split_sci(&format!("{x:e}"));
    let n = digits.len();
    // The exact decimal expansion of a double has at most 767 significant
    // digits; Rust prints it exactly.
    let (exact, exact_exponent) = split_sci(&format!("{x:.800e}"));
    let exact = exact.trim_end_matches('0');
    if exact_exponent != exponent || exact.len() != n + 1 || !exact.ends_with('5') {
        return (digits, exponent);
    }
    // A tie between `low` and `low + 1` (in the last place).
    let low = &exact[..n];
    let Some(high) = increment_digits(low) else {
        return (digits, exponent);
    };
    let reads_back = |d: &str| {
        let (first, rest) = d.split_at(1);
        format!("{first}.{rest}0e{exponent}").parse::<f64>() == Ok(x)
    };
    if !(reads_back(low) && reads_back(&high)) {
        return (digits, exponent);
    }
    let low_is_even = low.bytes().last().is_some_and(|b| (b - b'0') % 2 == 0);
    let chosen = if low_is_even { low } else { high.as_str() };
    let chosen = chosen.trim_end_matches('0');
    let chosen = if chosen.is_empty() { "0" } else { chosen };
    (chosen.to_owned(), exponent)
}

/// `digits + 1` in the last place, or `None` when that carries out of the
/// first digit (never a tie candidate of the same length).
fn increment_digits(digits: &str) -> Option<String> {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------

fn push_hex(out: &mut String, prefix: &str, value: u32, width: usize) {
    out.push_str(prefix);
    out.push_str(&format!("{value:0width$x}"));
}

/// Python 2's choice of quote: `"` when the text has a `'` and no `"`.
fn quote_for(has_single: bool, has_double: bool) -> char {
    if has_single && !has_double {
        '"'
    } else {
        '\''
    }
}

/// Python 2 `repr(unicode)` — how every string decoded from a request body
/// appears in messages: `u'...'`, `\uNNNN` / `\UNNNNNNNN` for non-Latin-1
/// characters, `\xNN` for other non-printable ones (lowercase hex).
pub(crate) fn unicode_repr(s: &str) -> String {
    let quote = quote_for(s.contains('\''), s.contains('"'));
    let mut out = String::with_capacity(s.len() + 3);
    out.push('u');
    out.push(quote);
    for ch in s.chars() {
        let code = u32::from(ch);
        if ch == quote || ch == '\\' {
            out.push('\\');
            out.push(ch);
        } else if code >= 0x10000 {
            push_hex(&mut out, "\\U", code, 8);
        } else if code >= 0x100 {
            push_hex(&mut out, "\\u", code, 4);
        } else if ch == '\t' {
            out.push_str("\\t");
        } else if ch == '\n' {
            out.push_str("\\n");
        } else if ch == '\r' {
            out.push_str("\\r");
        } else if !(0x20..0x7f).contains(&code) {
            push_hex(&mut out, "\\x", code, 2);
        } else {
            out.push(ch);
        }
    }
    out.push(quote);
    out
}

/// Python 2 `repr(str)` — how strings taken from the schema (loaded by
/// PyYAML as ASCII byte strings) appear in messages: `'...'`, no prefix.
pub(crate) fn bytes_repr(s: &str) -> String {
    let quote = quote_for(s.contains('\''), s.contains('"'));
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for b in s.bytes() {
        let ch = char::from(b);
        if ch == quote || ch == '\\' {
            out.push('\\');
            out.push(ch);
        } else if ch == '\t' {
            out.push_str("\\t");
        } else if ch == '\n' {
            out.push_str("\\n");
        } else if ch == '\r' {
            out.push_str("\\r");
        } else if !(0x20..0x7f).contains(&b) {
            push_hex(&mut out, "\\x", u32::from(b), 2);
        } else {
            out.push(ch);
        }
    }
    out.push(quote);
    out
}

/// Python 2 `repr` of a list of schema (byte) strings: `['a', 'b']`.
pub(crate) fn bytes_list_repr(items: &[&str]) -> String {
    let parts: Vec<String> = items.iter().map(|s| bytes_repr(s)).collect();
    format!("[{}]", parts.join(", "))
}

// ---------------------------------------------------------------------------
// Values decoded from the request
// ---------------------------------------------------------------------------

/// Python 2 `repr` of a value produced by `json.loads`.
pub(crate) fn value_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&PyNum::from_json(n).repr()),
        Value::String(s) => out.push_str(&unicode_repr(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in dict_items(map).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&unicode_repr(key));
                out.push_str(": ");
                write_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// A text that two decoded values share exactly when Python's `==` holds
/// between them, so that `uniqueItems` can use a hash set (the original
/// uses a `set`, or for unhashable lists/dicts sorts them and compares
/// neighbours). `top_level_unbool` reproduces jsonschema's `unbool` hack:
/// at the top level of the array `True`/`False` are distinct from `1`/`0`;
/// nested inside lists and dicts they are plain Python bools
/// (`True == 1 == 1.0`).
pub(crate) fn equality_key(value: &Value, top_level_unbool: bool) -> String {
    let mut out = String::new();
    write_equality_key(&mut out, value, top_level_unbool);
    out
}

fn write_equality_key(out: &mut String, value: &Value, top_level_unbool: bool) {
    match value {
        Value::Null => out.push('N'),
        Value::Bool(b) if top_level_unbool => out.push(if *b { 'T' } else { 'F' }),
        Value::Bool(b) => out.push_str(if *b { "n1" } else { "n0" }),
        Value::Number(n) => {
            out.push('n');
            out.push_str(&PyNum::from_json(n).equality_key());
        }
        Value::String(s) => write_key_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for item in items {
                write_equality_key(out, item, false);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's map iterates in sorted key order: canonical.
            out.push('{');
            for (key, item) in map {
                write_key_string(out, key);
                out.push('=');
                write_equality_key(out, item, false);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// Length-prefixed, so that no string content can be mistaken for
/// structure.
fn write_key_string(out: &mut String, s: &str) {
    out.push_str(&format!("s{}:", s.len()));
    out.push_str(s);
}

// ---------------------------------------------------------------------------
// dict / set iteration order
// ---------------------------------------------------------------------------

/// CPython 2.7 `hash(unicode)` (UCS-4 build, no hash randomisation); equal
/// to `hash(str)` for ASCII text.
pub(crate) fn py_hash(s: &str) -> i64 {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return 0;
    };
    let mut x: i64 = i64::from(u32::from(first)) << 7;
    let mut len: i64 = 0;
    for ch in s.chars() {
        x = x.wrapping_mul(1_000_003) ^ i64::from(u32::from(ch));
        len += 1;
    }
    x ^= len;
    if x == -1 {
        -2
    } else {
        x
    }
}

/// Iteration order of a CPython 2.7 `dict` or `set` (both use the same
/// open-addressing table: 8 slots to start, probe `i = 5*i + perturb + 1`
/// with `perturb >>= 5`, grown to the smallest power of two above
/// `4 * used` once two thirds of the slots are filled) after inserting
/// distinct keys with the given hashes in order. Returns the insertion
/// indices in iteration (slot) order.
pub(crate) fn table_order(hashes: &[i64]) -> Vec<usize> {
    const MIN_SIZE: usize = 8;
    let mut slots: Vec<Option<usize>> = vec![None; MIN_SIZE];
    let mut used = 0usize;
    for (index, _) in hashes.iter().enumerate() {
        insert_clean(&mut slots, hashes, index);
        used += 1;
        if used * 3 >= slots.len() * 2 {
            let min_used = if used > 50_000 { used * 2 } else { used * 4 };
            let mut new_size = MIN_SIZE;
            while new_size <= min_used {
                new_size <<= 1;
            }
            let old = std::mem::replace(&mut slots, vec![None; new_size]);
            for entry in old.into_iter().flatten() {
                insert_clean(&mut slots, hashes, entry);
            }
        }
    }
    slots.into_iter().flatten().collect()
}

fn insert_clean(slots: &mut [Option<usize>], hashes: &[i64], index: usize) {
    let mask = (slots.len() - 1) as u64;
    let hash = hashes[index] as u64;
    let mut i = hash & mask;
    let mut perturb = hash;
    while slots[(i & mask) as usize].is_some() {
        i = (i << 2)
            .wrapping_add(i)
            .wrapping_add(perturb)
            .wrapping_add(1);
        perturb >>= 5;
    }
    slots[(i & mask) as usize] = Some(index);
}

/// Reorder strings the way a Python 2.7 `dict`/`set` of them, filled in the
/// given order, iterates.
pub(crate) fn py_order<'a>(keys: &[&'a str]) -> Vec<&'a str> {
    let hashes: Vec<i64> = keys.iter().map(|k| py_hash(k)).collect();
    table_order(&hashes).into_iter().map(|i| keys[i]).collect()
}

/// The items of a decoded JSON object in the iteration order of the Python
/// dict `json.loads` would have built. The dict is filled in document
/// order; serde_json's map only keeps sorted order, which is used instead
/// (this only matters when keys collide in the hash table).
pub(crate) fn dict_items(map: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    py_order(&keys)
        .into_iter()
        .filter_map(|k| map.get(k).map(|v| (k, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_cpython_27() {
        // Values printed by CPython 2.7.18 (64-bit, UCS-4).
        assert_eq!(py_hash("abc"), 1_453_079_729_188_098_211);
        assert_eq!(py_hash("\u{20ac}\u{1F600}x"), 7_957_915_087_749_881_975);
        assert_eq!(py_hash(""), 0);
    }

    #[test]
    fn float_reprs() {
        let cases = [
            (67108864.0, "67108864.0"),
            (1.5, "1.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (0.1, "0.1"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-2.5, "-2.5"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (123456.789, "123456.789"),
            // A tie between two shortest candidates: round half to even.
            (652_096_281_946_227.0 + 0.25, "652096281946227.2"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_repr(value), expected, "{value:e}");
        }
    }

    #[test]
    fn int_reprs_and_comparisons() {
        let big = PyInt::from_text("9223372036854775808");
        assert_eq!(big.repr(), "9223372036854775808L");
        assert_eq!(
            PyInt::from_text("9223372036854775807").repr(),
            "9223372036854775807"
        );
        assert_eq!(
            PyInt::from_text("-9223372036854775808").repr(),
            "-9223372036854775808"
        );
        assert_eq!(
            PyInt::from_text("-9223372036854775809").repr(),
            "-9223372036854775809L"
        );
        assert_eq!(PyInt::from_text("-0").repr(), "0");
        let huge = PyInt::from_text(&"9".repeat(50));
        assert_eq!(huge.cmp_i64(5), Ordering::Greater);
        assert_eq!(
            PyInt::from_text(&format!("-{}", "9".repeat(50))).cmp_i64(5),
            Ordering::Less
        );
        // 2**70 and 2**70 + 1.
        assert!(!PyInt::from_text("1180591620717411303424").has_remainder(1024));
        assert!(PyInt::from_text("1180591620717411303425").has_remainder(1024));
        assert!(!PyInt::from_text("1073741824").has_remainder(1024));
        assert!(PyInt::from_text("1073741825").has_remainder(1024));
        assert!(
            PyInt::from_text("9007199254740993").cmp_float(9007199254740992.0)
                == Some(Ordering::Greater)
        );
        assert!(PyInt::from_text("1").cmp_float(1.5) == Some(Ordering::Less));
        assert!(PyInt::from_text("2").cmp_float(1.5) == Some(Ordering::Greater));
        assert!(PyInt::from_text("-2").cmp_float(-1.5) == Some(Ordering::Less));
    }

    fn key(text: &str) -> String {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        equality_key(&value, true)
    }

    #[test]
    fn equality_keys_follow_python_eq() {
        let same = [
            ("1", "1.0"),
            ("1", "1e0"),
            ("0", "-0.0"),
            ("-0", "0"),
            ("9007199254740992", "9007199254740992.0"),
            ("1e400", "2e400"),
            ("[1, true]", "[1.0, 1]"),
            (r#"{"a": false}"#, r#"{"a": 0}"#),
            (r#"{"a": 1, "b": [null]}"#, r#"{"b": [null], "a": 1.0}"#),
            (r#""x""#, r#""x""#),
        ];
        for (a, b) in same {
            assert_eq!(key(a), key(b), "{a} == {b}");
        }
        let different = [
            ("true", "1"),
            ("false", "0"),
            ("true", "false"),
            ("9007199254740993", "9007199254740992.0"),
            ("1.5", "1"),
            (r#""1""#, "1"),
            ("null", "0"),
            ("[1]", "[1, 1]"),
            (r#"["a,b"]"#, r#"["a", "b"]"#),
            (r#"{"a": 1}"#, r#"{"a": 1, "b": 1}"#),
            ("[]", "{}"),
        ];
        for (a, b) in different {
            assert_ne!(key(a), key(b), "{a} != {b}");
        }
    }

    #[test]
    fn string_reprs() {
        assert_eq!(unicode_repr("junk"), "u'junk'");
        assert_eq!(unicode_repr(""), "u''");
        assert_eq!(unicode_repr("it's"), "u\"it's\"");
        assert_eq!(unicode_repr("it's \"x\""), "u'it\\'s \"x\"'");
        assert_eq!(unicode_repr("a\\b"), "u'a\\\\b'");
        assert_eq!(
            unicode_repr("\t\n\r\u{0}\u{7f}\u{e9}"),
            "u'\\t\\n\\r\\x00\\x7f\\xe9'"
        );
        assert_eq!(unicode_repr("\u{20ac}\u{1F600}"), "u'\\u20ac\\U0001f600'");
        assert_eq!(bytes_repr("primary"), "'primary'");
        assert_eq!(bytes_repr("^\\/.*$"), "'^\\\\/.*$'");
        assert_eq!(bytes_list_repr(&["never", "always"]), "['never', 'always']");
    }
}
