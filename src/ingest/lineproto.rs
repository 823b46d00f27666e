//! The InfluxDB line protocol: a zero-copy decoder for request bodies, and cc-metric-store's mapping of a
//! decoded line onto a silt sample.
//!
//! # What this module owns
//!
//! - the syntax of one line ([`parse_line`], [`parse_line_into`]) and its canonical text form ([`Line`]'s
//!   `Display`);
//! - splitting a body into lines, with 1-based line numbers, skipping blank and comment lines
//!   ([`Decoder`]);
//! - the limits on untrusted input ([`MAX_LINE_BYTES`], [`MAX_TAGS`], [`MAX_FIELDS`]);
//! - timestamp precisions ([`Precision`]);
//! - cc-metric-store's mapping of a line onto a metric, a [`HostKey`], a time and a value ([`to_sample`]),
//!   and decoding a whole body into a [`Batch`] ([`decode_into`]).
//!
//! # Syntax
//!
//! ```text
//! line      = ws* measurement ("," tag)* " "+ field ("," field)* (ws+ timestamp)? ws*
//! tag       = tag-key "=" tag-value
//! field     = field-key "=" field-value
//! ws        = " " | "\t"
//! timestamp = "-"? digit+                      (a decimal i64, in the body's precision)
//! ```
//!
//! Lines end at `\n`; one `\r` before it is dropped, so `\r\n` works too. A line that is empty or holds only
//! spaces and tabs is blank, and a line whose first byte other than a space or tab is `#` is a comment; the
//! [`Decoder`] skips both (a comment is not checked for UTF-8). Every other line must be UTF-8 and a point.
//!
//! Names (measurement, tag keys and values, field keys) are non-empty, may not contain an ASCII control
//! character (`0x00..=0x1F`, `0x7F`), and use backslash escapes:
//!
//! | Position          | Ends at unescaped | Escapes                 |
//! |-------------------|-------------------|-------------------------|
//! | measurement       | `,` ` `           | `\,` `\ ` `\\`          |
//! | tag key and value | `,` `=` ` `       | `\,` `\=` `\ ` `\\`     |
//! | field key         | `,` `=` ` `       | `\,` `\=` `\ ` `\\`     |
//! | string value      | `"`               | `\"` `\\`               |
//!
//! A backslash before any other character is an ordinary character (`a\b` is the three characters
//! `a\b`), as in InfluxDB. A backslash as the last byte of a line escapes nothing and is an error. An
//! unescaped `=` may appear in a measurement but not in a tag value. The measurement cannot start with
//! `#` (that is a comment).
//!
//! Field values:
//!
//! | Type     | Syntax                                             | Examples                        |
//! |----------|----------------------------------------------------|---------------------------------|
//! | float    | `-`? digits (`.` digits)? (`e`/`E` (`+`/`-`)? digits)? with at least one mantissa digit | `1`, `-0`, `1.5`, `.5`, `1.`, `-1e3`, `1E-3` |
//! | integer  | `-`? digits `i`, within `i64`                      | `42i`, `-9223372036854775808i`  |
//! | unsigned | digits `u`, within `u64`                           | `42u`                           |
//! | boolean  | `t` `T` `true` `True` `TRUE` `f` `F` `false` `False` `FALSE` | `true`                |
//! | string   | `"` ... `"` on one line                            | `"a \"b\", c=d"`                |
//!
//! A float that does not fit an `f64` (`1e400`) is an error, as are `NaN` and `inf`; one that underflows
//! becomes zero. An integer outside its type's range is an error. Tag keys and field keys are each unique
//! within a line (a repeat is an error); tags need not be sorted.
//!
//! # Limits
//!
//! Bodies come from the network, so every line is bounded: at most [`MAX_LINE_BYTES`] bytes (64 KiB, not
//! counting the line end), at most [`MAX_TAGS`] tags and at most [`MAX_FIELDS`] fields. The duplicate
//! checks are quadratic in these counts, so the bounds also bound the work per line.
//!
//! # Allocation
//!
//! Decoding borrows from the body: a token becomes a [`Cow::Borrowed`] slice of it unless it contains an
//! escape sequence, and only then is an unescaped [`String`] allocated. [`Decoder::next_into`] and
//! [`parse_line_into`] refill one caller-owned [`Line`], reusing its vectors, so decoding a body of
//! escape-free lines allocates nothing per line. (Building a [`HostKey`] in [`to_sample`] does allocate.)
//!
//! # cc-metric-store mapping
//!
//! [`to_sample`] follows cc-metric-store's `decodeLine`: the measurement is the metric name; the tags
//! `cluster` and `hostname` (or `host`) give the node, `type` + `type-id` one component and `stype` (or
//! `subtype`, the spelling cc-metric-store reads) + `stype-id` a second one below it; other tags are
//! ignored. The field `value` is the sample; other fields are ignored. See [`to_sample`] for the details.
//!
//! This module holds no locks and does no I/O.

use std::borrow::Cow;
use std::fmt;

use crate::keys::{validate_name, HostKey, KeyError};
use crate::Batch;

/// Longest line in bytes, not counting its `\n` or `\r\n`.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Most tags in one line.
pub const MAX_TAGS: usize = 64;

/// Most fields in one line.
pub const MAX_FIELDS: usize = 256;

/// Longest excerpt of untrusted text quoted in a [`LineError`], in chars.
const EXCERPT_CHARS: usize = 64;

/// The unit of the timestamps in a body.
///
/// Conversion to unix seconds divides with rounding towards negative infinity (floor), so every instant
/// maps to the second it falls in: `1_700_000_000_999` ms is `1_700_000_000` s and `-1` ms is `-1` s.
/// The conversion never overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
    /// Microseconds.
    Microseconds,
    /// Nanoseconds (InfluxDB's default).
    Nanoseconds,
    /// Guessed per timestamp from its magnitude, as cc-metric-store does: the coarsest of seconds,
    /// milliseconds, microseconds and nanoseconds in which the timestamp, converted to nanoseconds, still
    /// fits an `i64` (see [`Precision::detect`]). Present-day timestamps in any of the four units are
    /// recognised, since nanoseconds can only count to the year 2262.
    Auto,
}

impl Precision {
    /// The precision named by an InfluxDB `precision` query parameter: `s`, `ms`, `us` (or `u`), `ns`
    /// (or `n`); `None` for anything else.
    pub fn from_param(name: &str) -> Option<Precision> {
        match name {
            "s" => Some(Precision::Seconds),
            "ms" => Some(Precision::Milliseconds),
            "us" | "u" => Some(Precision::Microseconds),
            "ns" | "n" => Some(Precision::Nanoseconds),
            _ => None,
        }
    }

    /// The unit [`Precision::Auto`] picks for `ts`: the first of seconds, milliseconds, microseconds in
    /// which `ts` converted to nanoseconds fits an `i64`, else nanoseconds. So `|ts|` up to about
    /// `9.2e9` is seconds, up to `9.2e12` milliseconds, up to `9.2e15` microseconds.
    pub fn detect(ts: i64) -> Precision {
        if ts.checked_mul(1_000_000_000).is_some() {
            Precision::Seconds
        } else if ts.checked_mul(1_000_000).is_some() {
            Precision::Milliseconds
        } else if ts.checked_mul(1_000).is_some() {
            Precision::Microseconds
        } else {
            Precision::Nanoseconds
        }
    }

    /// `ts` in this precision as unix seconds, rounded down (floor division).
    pub fn to_unix_seconds(self, ts: i64) -> i64 {
        let per_second: i64 = match self {
            Precision::Seconds => 1,
            Precision::Milliseconds => 1_000,
            Precision::Microseconds => 1_000_000,
            Precision::Nanoseconds => 1_000_000_000,
            Precision::Auto => return Precision::detect(ts).to_unix_seconds(ts),
        };
        ts.div_euclid(per_second)
    }
}

/// The value of one field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// A float, always finite.
    Float(f64),
    /// A signed integer (`42i`).
    Int(i64),
    /// An unsigned integer (`42u`).
    UInt(u64),
    /// A boolean.
    Bool(bool),
    /// A string, unescaped; borrowed from the body unless it contained an escape.
    Str(Cow<'a, str>),
}

impl FieldValue<'_> {
    /// The value as a number: floats as they are, integers converted (rounding to the nearest `f64`),
    /// booleans as `1.0` and `0.0`; `None` for a string.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::Float(x) => Some(x),
            FieldValue::Int(i) => Some(i as f64),
            FieldValue::UInt(u) => Some(u as f64),
            FieldValue::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            FieldValue::Str(_) => None,
        }
    }

    /// Equality with floats compared bit for bit (so `-0.0` differs from `0.0`).
    pub fn identical(&self, other: &FieldValue<'_>) -> bool {
        match (self, other) {
            (FieldValue::Float(a), FieldValue::Float(b)) => a.to_bits() == b.to_bits(),
            (FieldValue::Int(a), FieldValue::Int(b)) => a == b,
            (FieldValue::UInt(a), FieldValue::UInt(b)) => a == b,
            (FieldValue::Bool(a), FieldValue::Bool(b)) => a == b,
            (FieldValue::Str(a), FieldValue::Str(b)) => a == b,
            _ => false,
        }
    }

    /// The same value, owning its string.
    pub fn into_owned(self) -> FieldValue<'static> {
        match self {
            FieldValue::Float(x) => FieldValue::Float(x),
            FieldValue::Int(i) => FieldValue::Int(i),
            FieldValue::UInt(u) => FieldValue::UInt(u),
            FieldValue::Bool(b) => FieldValue::Bool(b),
            FieldValue::Str(s) => FieldValue::Str(Cow::Owned(s.into_owned())),
        }
    }
}

/// One point of line protocol, borrowing from the body it was parsed from.
///
/// What [`parse_line`] returns always has a non-empty measurement that does not start with `#`, up to
/// [`MAX_TAGS`] tags and 1 to [`MAX_FIELDS`] fields with unique non-empty keys, non-empty tag values, finite floats, names without ASCII control characters and strings without
/// `\n`. For such a line, `Display` writes the canonical text (every special character escaped, floats in
/// Rust's shortest round-trip form, booleans as `true`/`false`) and parsing that text gives the line back
/// exactly ([`Line::identical`]). A line built by hand that breaks these rules may display as text that
/// does not parse, or parses differently.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line<'a> {
    /// The measurement, unescaped.
    pub measurement: Cow<'a, str>,
    /// The tags as `(key, value)`, unescaped, in the order of the line.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The fields as `(key, value)`, keys unescaped, in the order of the line.
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// The timestamp as written, in the body's precision; `None` if the line has none.
    pub timestamp: Option<i64>,
}

impl<'a> Line<'a> {
    /// Empties the line, keeping the allocations of its vectors.
    pub fn clear(&mut self) {
        self.measurement = Cow::Borrowed("");
        self.tags.clear();
        self.fields.clear();
        self.timestamp = None;
    }

    /// The value of the tag `key`, if the line has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// The value of the field `key`, if the line has it.
    pub fn field(&self, key: &str) -> Option<&FieldValue<'a>> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Equality with float fields compared bit for bit (see [`FieldValue::identical`]).
    pub fn identical(&self, other: &Line<'_>) -> bool {
        self.measurement == other.measurement
            && self.tags == other.tags
            && self.timestamp == other.timestamp
            && self.fields.len() == other.fields.len()
            && self.fields.iter().zip(&other.fields).all(|((k, v), (l, w))| k == l && v.identical(w))
    }

    /// The same line, owning all its text.
    pub fn into_owned(self) -> Line<'static> {
        let own = |s: Cow<'_, str>| -> Cow<'static, str> { Cow::Owned(s.into_owned()) };
        Line {
            measurement: own(self.measurement),
            tags: self.tags.into_iter().map(|(k, v)| (own(k), own(v))).collect(),
            fields: self.fields.into_iter().map(|(k, v)| (own(k), v.into_owned())).collect(),
            timestamp: self.timestamp,
        }
    }
}

/// Writes `s`, putting a backslash before every char for which `special` is true.
fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str, special: fn(u8) -> bool) -> fmt::Result {
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if special(b) {
            f.write_str(&s[start..i])?;
            f.write_str("\\")?;
            // The special bytes are ASCII, so `i` is a char boundary.
            start = i;
        }
    }
    f.write_str(&s[start..])
}

fn measurement_special(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'\\')
}

fn key_special(b: u8) -> bool {
    matches!(b, b',' | b'=' | b' ' | b'\\')
}

fn string_special(b: u8) -> bool {
    matches!(b, b'"' | b'\\')
}

/// The canonical text of the line, without a line end. See [`Line`] for when it parses back.
impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.measurement, measurement_special)?;
        for (key, value) in &self.tags {
            f.write_str(",")?;
            write_escaped(f, key, key_special)?;
            f.write_str("=")?;
            write_escaped(f, value, key_special)?;
        }
        for (i, (key, value)) in self.fields.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { "," })?;
            write_escaped(f, key, key_special)?;
            f.write_str("=")?;
            match value {
                // `{:?}` is the shortest text that parses back to the same bits, and uses an exponent
                // for very large and very small magnitudes (`1e300`), which the grammar accepts.
                FieldValue::Float(x) => write!(f, "{x:?}")?,
                FieldValue::Int(i) => write!(f, "{i}i")?,
                FieldValue::UInt(u) => write!(f, "{u}u")?,
                FieldValue::Bool(b) => f.write_str(if *b { "true" } else { "false" })?,
                FieldValue::Str(s) => {
                    f.write_str("\"")?;
                    write_escaped(f, s, string_special)?;
                    f.write_str("\"")?;
                }
            }
        }
        if let Some(ts) = self.timestamp {
            write!(f, " {ts}")?;
        }
        Ok(())
    }
}

/// Why one line was refused.
///
/// Syntax errors carry the 1-based byte `column` in the line (after a dropped `\r`) where the problem was
/// found; the [`Decoder`] adds the line number ([`DecodeError`]). Errors of the cc-metric-store mapping
/// ([`to_sample`]) name the tag or field instead. Quoted text is at most 64 chars, escaped with `{:?}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line is longer than `max` bytes.
    #[error("line is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Its length in bytes, without the line end.
        len: usize,
        /// The limit, [`MAX_LINE_BYTES`].
        max: usize,
    },
    /// The line is not UTF-8.
    #[error("column {column}: invalid UTF-8")]
    InvalidUtf8 {
        /// Where the first invalid byte is.
        column: usize,
    },
    /// The line is blank or a comment ([`parse_line`] was given a line the [`Decoder`] skips).
    #[error("column {column}: line is blank or a comment, not a point")]
    NotAPoint {
        /// Where the line's content (or its end) starts.
        column: usize,
    },
    /// A name contains an ASCII control character.
    #[error("column {column}: control character {found:?} in the {part}")]
    ControlChar {
        /// Where it is.
        column: usize,
        /// The character.
        found: char,
        /// `"measurement"`, `"tag key"`, `"tag value"` or `"field key"`.
        part: &'static str,
    },
    /// The line starts with `,`: there is no measurement.
    #[error("column {column}: empty measurement")]
    EmptyMeasurement {
        /// Where the measurement should be.
        column: usize,
    },
    /// The line ends before its field set: a point needs a space and at least one field.
    #[error("column {column}: no field set (a point needs a space and at least one field)")]
    MissingFields {
        /// Where the line ended.
        column: usize,
    },
    /// A tag key is empty (`m,=v` or `m,,a=b` or a trailing comma).
    #[error("column {column}: empty tag key")]
    EmptyTagKey {
        /// Where the key should be.
        column: usize,
    },
    /// A tag key is not followed by `=`.
    #[error("column {column}: tag {key:?} has no '='")]
    TagWithoutEquals {
        /// Where the `=` should be.
        column: usize,
        /// The tag key.
        key: String,
    },
    /// A tag value is empty.
    #[error("column {column}: tag {key:?} has an empty value")]
    EmptyTagValue {
        /// Where the value should be.
        column: usize,
        /// The tag key.
        key: String,
    },
    /// A tag key appears twice.
    #[error("column {column}: duplicate tag {key:?}")]
    DuplicateTag {
        /// Where the second one starts.
        column: usize,
        /// The tag key.
        key: String,
    },
    /// More than `max` tags.
    #[error("column {column}: more than {max} tags")]
    TooManyTags {
        /// Where the tag over the limit starts.
        column: usize,
        /// The limit, [`MAX_TAGS`].
        max: usize,
    },
    /// A field key is empty (`m =1`, `m a=1,=2`, or a trailing comma).
    #[error("column {column}: empty field key")]
    EmptyFieldKey {
        /// Where the key should be.
        column: usize,
    },
    /// A field key is not followed by `=`.
    #[error("column {column}: field {key:?} has no '='")]
    FieldWithoutEquals {
        /// Where the `=` should be.
        column: usize,
        /// The field key.
        key: String,
    },
    /// A field has `=` but no value.
    #[error("column {column}: field {key:?} has no value")]
    MissingFieldValue {
        /// Where the value should be.
        column: usize,
        /// The field key.
        key: String,
    },
    /// A field key appears twice.
    #[error("column {column}: duplicate field {key:?}")]
    DuplicateField {
        /// Where the second one starts.
        column: usize,
        /// The field key.
        key: String,
    },
    /// More than `max` fields.
    #[error("column {column}: more than {max} fields")]
    TooManyFields {
        /// Where the field over the limit starts.
        column: usize,
        /// The limit, [`MAX_FIELDS`].
        max: usize,
    },
    /// A field value starting like a number is not one.
    #[error("column {column}: {text:?} is not a valid {kind}")]
    InvalidNumber {
        /// Where the value starts.
        column: usize,
        /// `"float"`, `"integer"` or `"unsigned integer"`.
        kind: &'static str,
        /// The value as written.
        text: String,
    },
    /// A number is outside its type's range (or a float overflows to infinity).
    #[error("column {column}: {text:?} is out of range for a {kind}")]
    NumberOutOfRange {
        /// Where the value starts.
        column: usize,
        /// `"float"`, `"integer"` or `"unsigned integer"`.
        kind: &'static str,
        /// The value as written.
        text: String,
    },
    /// A field value starting with `t`, `T`, `f` or `F` is not a boolean spelling.
    #[error("column {column}: {text:?} is not a boolean (t, T, true, True, TRUE, f, F, false, False, FALSE)")]
    InvalidBool {
        /// Where the value starts.
        column: usize,
        /// The value as written.
        text: String,
    },
    /// A field value starts with a character no type starts with.
    #[error("column {column}: a field value cannot start with {found:?}")]
    UnknownValueType {
        /// Where the value starts.
        column: usize,
        /// The first character.
        found: char,
    },
    /// A string field value has no closing `"` on its line.
    #[error("column {column}: string has no closing '\"' on this line")]
    UnterminatedString {
        /// Where the opening `"` is.
        column: usize,
    },
    /// The line ends with a backslash that escapes nothing.
    #[error("column {column}: backslash at the end of the line escapes nothing")]
    EscapeAtEnd {
        /// Where the backslash is.
        column: usize,
    },
    /// A character that cannot follow what precedes it (an unescaped `=` in a tag value, text after a
    /// string's closing quote).
    #[error("column {column}: unexpected {found:?} after the {after}")]
    UnexpectedChar {
        /// Where it is.
        column: usize,
        /// The character.
        found: char,
        /// `"tag value"` or `"field value"`.
        after: &'static str,
    },
    /// The text after the field set is not an integer timestamp.
    #[error("column {column}: timestamp {text:?} is not an integer")]
    InvalidTimestamp {
        /// Where the timestamp starts.
        column: usize,
        /// The text, up to the next space.
        text: String,
    },
    /// The timestamp does not fit an `i64`.
    #[error("column {column}: timestamp {text:?} does not fit a 64-bit integer")]
    TimestampOutOfRange {
        /// Where the timestamp starts.
        column: usize,
        /// The timestamp as written.
        text: String,
    },
    /// More text after the timestamp.
    #[error("column {column}: unexpected text after the timestamp")]
    TrailingText {
        /// Where it starts.
        column: usize,
    },
    /// The line has no field `value` (cc-metric-store mapping).
    #[error("no field \"value\"")]
    MissingValue,
    /// The field `value` is a string (cc-metric-store mapping).
    #[error("field \"value\" is a string, not a number")]
    ValueIsString,
    /// No tag `cluster` and no default cluster (cc-metric-store mapping).
    #[error("no tag \"cluster\" and no default cluster")]
    MissingCluster,
    /// No tag `hostname` or `host` (cc-metric-store mapping).
    #[error("no tag \"hostname\" (or \"host\")")]
    MissingHost,
    /// Two tags that mean the same (`hostname` and `host`, `stype` and `subtype`) have different values.
    #[error("tags {first:?} and {second:?} have different values")]
    ConflictingTags {
        /// The one that came first.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// A tag of a pair (`type`/`type-id`, `stype`/`stype-id`) without the other.
    #[error("tag {present:?} needs the tag {missing:?} too")]
    UnpairedTag {
        /// The tag that is there.
        present: &'static str,
        /// The tag that is missing.
        missing: &'static str,
    },
    /// A sub-component (`stype`) without a component (`type` other than `node`).
    #[error("tag {tag:?} needs a tag \"type\" other than \"node\"")]
    SubtypeWithoutType {
        /// `"stype"`, `"subtype"` or `"stype-id"`.
        tag: &'static str,
    },
    /// A name that silt's key space refuses (see [`crate::keys::validate_name`]).
    #[error("{part}: {source}")]
    InvalidName {
        /// What the name came from: `"measurement"`, `"tag \"cluster\""`, `"default cluster"`, ...
        part: &'static str,
        /// Why it was refused.
        source: KeyError,
    },
}

impl LineError {
    /// The 1-based byte column of a syntax error; `None` for [`LineError::TooLong`] and the errors of the
    /// cc-metric-store mapping.
    pub fn column(&self) -> Option<usize> {
        use LineError::*;
        match *self {
            InvalidUtf8 { column }
            | NotAPoint { column }
            | ControlChar { column, .. }
            | EmptyMeasurement { column }
            | MissingFields { column }
            | EmptyTagKey { column }
            | TagWithoutEquals { column, .. }
            | EmptyTagValue { column, .. }
            | DuplicateTag { column, .. }
            | TooManyTags { column, .. }
            | EmptyFieldKey { column }
            | FieldWithoutEquals { column, .. }
            | MissingFieldValue { column, .. }
            | DuplicateField { column, .. }
            | TooManyFields { column, .. }
            | InvalidNumber { column, .. }
            | NumberOutOfRange { column, .. }
            | InvalidBool { column, .. }
            | UnknownValueType { column, .. }
            | UnterminatedString { column }
            | EscapeAtEnd { column }
            | UnexpectedChar { column, .. }
            | InvalidTimestamp { column, .. }
            | TimestampOutOfRange { column, .. }
            | TrailingText { column } => Some(column),
            TooLong { .. }
            | MissingValue
            | ValueIsString
            | MissingCluster
            | MissingHost
            | ConflictingTags { .. }
            | UnpairedTag { .. }
            | SubtypeWithoutType { .. }
            | InvalidName { .. } => None,
        }
    }
}

/// A line of a body refused, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct DecodeError {
    /// The 1-based line number in the body (blank and comment lines count).
    pub line: usize,
    /// What was wrong with it.
    pub error: LineError,
}

/// [`decode_into`] stopped at a bad line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct BatchError {
    /// How many samples, from the lines before the bad one, were added to the batch (and stay there).
    pub added: usize,
    /// The 1-based line number of the bad line.
    pub line: usize,
    /// What was wrong with it.
    pub error: LineError,
}

/// Quotes at most [`EXCERPT_CHARS`] chars of untrusted text in an error.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

/// Parses one line (without its `\n`; a trailing `\r` is not dropped here) into a new [`Line`].
///
/// Blank and comment lines are [`LineError::NotAPoint`]; the [`Decoder`] skips them before they get here.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, LineError> {
    let mut out = Line::default();
    parse_line_into(line, &mut out)?;
    Ok(out)
}

/// Parses one line like [`parse_line`], into `out`, reusing its vectors. On an error `out` holds an
/// unspecified part of the line.
pub fn parse_line_into<'a>(line: &'a [u8], out: &mut Line<'a>) -> Result<(), LineError> {
    out.clear();
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong { len: line.len(), max: MAX_LINE_BYTES });
    }
    let s = std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8 { column: e.valid_up_to() + 1 })?;
    Parser { s, i: 0 }.line(out).map(|_| ())
}

/// Like [`parse_line_into`], and returns the index of the byte that ended the measurement and tag set: a
/// space (then `line[..=end]` determines how the parser reads them, since it looks at most one byte ahead),
/// or `line.len()` (then the line has no fields and this is an error).
pub(crate) fn parse_line_head_end<'a>(line: &'a [u8], out: &mut Line<'a>) -> Result<usize, LineError> {
    out.clear();
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong { len: line.len(), max: MAX_LINE_BYTES });
    }
    let s = std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8 { column: e.valid_up_to() + 1 })?;
    Parser { s, i: 0 }.line(out)
}

/// Parses only the field set and timestamp of `line`, whose measurement and tag set end at the space at
/// `head_end` (as [`parse_line_head_end`] found for a line with the same bytes up to `head_end`). `out`
/// gets the fields and timestamp; its measurement and tags are left empty.
pub(crate) fn parse_line_tail<'a>(line: &'a [u8], head_end: usize, out: &mut Line<'a>) -> Result<(), LineError> {
    out.clear();
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong { len: line.len(), max: MAX_LINE_BYTES });
    }
    let s = std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8 { column: e.valid_up_to() + 1 })?;
    Parser { s, i: head_end }.tail(out)
}

/// The common tail `value=<number>[ <timestamp>]` after the head ending at the space at `head_end`, read
/// without the general parser: the value and the timestamp in seconds, as [`parse_line_tail`] and
/// [`value_and_time`] would give them. `None` for any other tail, also a bad one: the caller then runs
/// those two, which give the error. The number and the timestamp follow the same rules (the number goes
/// through the same [`number`]); a tail of ASCII bytes keeps the line valid UTF-8 when its head is.
pub(crate) fn fast_value_tail(line: &[u8], head_end: usize, precision: Precision, now: i64) -> Option<(f64, i64)> {
    if line.len() > MAX_LINE_BYTES || !line.get(head_end..)?.is_ascii() {
        return None;
    }
    let mut i = head_end;
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    let rest = line[i..].strip_prefix(b"value=")?;
    if !matches!(rest.first(), Some(b'-' | b'.' | b'0'..=b'9')) {
        return None;
    }
    let end = rest.iter().position(|&c| c == b',' || is_ws(c)).unwrap_or(rest.len());
    if rest.get(end) == Some(&b',') {
        return None;
    }
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let value = number(text, 0).ok()?.as_f64()?;
    let skip_ws = |mut j: usize| {
        while rest.get(j).is_some_and(|&c| is_ws(c)) {
            j += 1;
        }
        j
    };
    let j = skip_ws(end);
    if j == rest.len() {
        return Some((value, now));
    }
    let ts_end = rest[j..].iter().position(|&c| is_ws(c)).map_or(rest.len(), |k| j + k);
    let ts_text = std::str::from_utf8(&rest[j..ts_end]).ok()?;
    let digits = ts_text.strip_prefix('-').unwrap_or(ts_text);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || skip_ws(ts_end) != rest.len() {
        return None;
    }
    let ts: i64 = ts_text.parse().ok()?;
    Some((value, precision.to_unix_seconds(ts)))
}

/// Which escaping rules a name follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Measurement => "measurement",
            Part::TagKey => "tag key",
            Part::TagValue => "tag value",
            Part::FieldKey => "field key",
        }
    }

    /// Whether an unescaped `b` ends the name.
    fn ends_at(self, b: u8) -> bool {
        match self {
            Part::Measurement => matches!(b, b',' | b' '),
            _ => matches!(b, b',' | b'=' | b' '),
        }
    }

    /// Whether `\` followed by `b` is an escape sequence (for `b`). Every byte a name ends at is escapable.
    fn escapes(self, b: u8) -> bool {
        match self {
            Part::Measurement => measurement_special(b),
            _ => key_special(b),
        }
    }
}

/// Removes the backslash of every escape sequence in `raw` (`\` followed by a byte for which `escapes` is
/// true), exactly mirroring how the scanner stepped over them.
fn unescape(raw: &str, escapes: impl Fn(u8) -> bool) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && escapes(b[i + 1]) {
            out.push_str(&raw[start..i]);
            // Keep the escaped (ASCII) byte as the start of the next run.
            start = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[start..]);
    out
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A cursor over one line that is known to be UTF-8. `i` only ever stops on char boundaries: it moves past
/// ASCII bytes one at a time, and past other bytes only inside a token that is sliced at ASCII delimiters.
struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn column(&self) -> usize {
        self.i + 1
    }

    /// The char at the cursor (which is on a char boundary); only called when there is one.
    fn char_here(&self) -> char {
        self.s[self.i..].chars().next().unwrap_or('\u{FFFD}')
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.i += 1;
        }
    }

    /// Parses a whole line; returns the index where the measurement and tag set ended (a space, or the end
    /// of the line).
    fn line(mut self, out: &mut Line<'a>) -> Result<usize, LineError> {
        self.skip_ws();
        if matches!(self.peek(), None | Some(b'#')) {
            return Err(LineError::NotAPoint { column: self.column() });
        }
        let column = self.column();
        out.measurement = self.name(Part::Measurement)?;
        if out.measurement.is_empty() {
            return Err(LineError::EmptyMeasurement { column });
        }
        if self.peek() == Some(b',') {
            self.tags(out)?;
        }
        let head_end = self.i;
        self.tail(out)?;
        Ok(head_end)
    }

    /// Parses what follows the measurement and tag set: the cursor is on the space that ended them (or at
    /// the end of the line).
    fn tail(mut self, out: &mut Line<'a>) -> Result<(), LineError> {
        // The measurement and the tag set end at a space or at the end of the line.
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        if self.rest_is_blank() {
            return Err(LineError::MissingFields { column: self.s.len() + 1 });
        }
        if !self.fields(out)? {
            return Ok(());
        }
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(());
        }
        out.timestamp = Some(self.timestamp()?);
        self.skip_ws();
        if self.peek().is_some() {
            return Err(LineError::TrailingText { column: self.column() });
        }
        Ok(())
    }

    fn rest_is_blank(&self) -> bool {
        self.s.as_bytes()[self.i..].iter().all(|&b| is_ws(b))
    }

    /// Scans a name up to the first unescaped byte it ends at (or the end of the line), borrowing it
    /// unless it contains an escape sequence.
    fn name(&mut self, part: Part) -> Result<Cow<'a, str>, LineError> {
        let b = self.s.as_bytes();
        let start = self.i;
        let mut escaped = false;
        while let Some(&c) = b.get(self.i) {
            if c == b'\\' {
                match b.get(self.i + 1) {
                    None => return Err(LineError::EscapeAtEnd { column: self.column() }),
                    Some(&n) if part.escapes(n) => {
                        escaped = true;
                        self.i += 2;
                    }
                    // A backslash before anything else is an ordinary character.
                    Some(_) => self.i += 1,
                }
                continue;
            }
            if part.ends_at(c) {
                break;
            }
            if c < 0x20 || c == 0x7f {
                return Err(LineError::ControlChar { column: self.column(), found: char::from(c), part: part.name() });
            }
            self.i += 1;
        }
        let raw = &self.s[start..self.i];
        Ok(if escaped { Cow::Owned(unescape(raw, |n| part.escapes(n))) } else { Cow::Borrowed(raw) })
    }

    /// Parses `,key=value` pairs; the cursor is on the first comma. Stops at a space or the end.
    fn tags(&mut self, out: &mut Line<'a>) -> Result<(), LineError> {
        while self.peek() == Some(b',') {
            self.i += 1;
            let column = self.column();
            let key = self.name(Part::TagKey)?;
            if key.is_empty() {
                return Err(LineError::EmptyTagKey { column });
            }
            if self.peek() != Some(b'=') {
                return Err(LineError::TagWithoutEquals { column: self.column(), key: excerpt(&key) });
            }
            self.i += 1;
            let value_column = self.column();
            let value = self.name(Part::TagValue)?;
            if value.is_empty() {
                return Err(LineError::EmptyTagValue { column: value_column, key: excerpt(&key) });
            }
            if self.peek() == Some(b'=') {
                return Err(LineError::UnexpectedChar { column: self.column(), found: '=', after: "tag value" });
            }
            if out.tags.len() == MAX_TAGS {
                return Err(LineError::TooManyTags { column, max: MAX_TAGS });
            }
            if out.tags.iter().any(|(k, _)| *k == key) {
                return Err(LineError::DuplicateTag { column, key: excerpt(&key) });
            }
            out.tags.push((key, value));
        }
        Ok(())
    }

    /// Parses the field set; the cursor is on the first field key. Returns whether the field set ended at
    /// whitespace (a timestamp may follow) rather than at the end of the line.
    fn fields(&mut self, out: &mut Line<'a>) -> Result<bool, LineError> {
        loop {
            let column = self.column();
            let key = self.name(Part::FieldKey)?;
            if key.is_empty() {
                return Err(LineError::EmptyFieldKey { column });
            }
            if self.peek() != Some(b'=') {
                return Err(LineError::FieldWithoutEquals { column: self.column(), key: excerpt(&key) });
            }
            self.i += 1;
            let value = self.field_value(&key)?;
            if out.fields.len() == MAX_FIELDS {
                return Err(LineError::TooManyFields { column, max: MAX_FIELDS });
            }
            if out.fields.iter().any(|(k, _)| *k == key) {
                return Err(LineError::DuplicateField { column, key: excerpt(&key) });
            }
            out.fields.push((key, value));
            match self.peek() {
                None => return Ok(false),
                Some(b',') => self.i += 1,
                Some(b) if is_ws(b) => return Ok(true),
                Some(_) => {
                    return Err(LineError::UnexpectedChar {
                        column: self.column(),
                        found: self.char_here(),
                        after: "field value",
                    })
                }
            }
        }
    }

    /// A bare (unquoted) token: up to `,`, a space, a tab or the end.
    fn bare(&mut self) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.i;
        while let Some(&c) = b.get(self.i) {
            if c == b',' || is_ws(c) {
                break;
            }
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue<'a>, LineError> {
        let column = self.column();
        match self.peek() {
            None | Some(b',' | b' ' | b'\t') => Err(LineError::MissingFieldValue { column, key: excerpt(key) }),
            Some(b'"') => self.string(),
            Some(b't' | b'T' | b'f' | b'F') => match self.bare() {
                "t" | "T" | "true" | "True" | "TRUE" => Ok(FieldValue::Bool(true)),
                "f" | "F" | "false" | "False" | "FALSE" => Ok(FieldValue::Bool(false)),
                text => Err(LineError::InvalidBool { column, text: excerpt(text) }),
            },
            Some(b'-' | b'.' | b'0'..=b'9') => number(self.bare(), column),
            Some(_) => Err(LineError::UnknownValueType { column, found: self.char_here() }),
        }
    }

    /// A quoted string; the cursor is on the opening quote.
    fn string(&mut self) -> Result<FieldValue<'a>, LineError> {
        let b = self.s.as_bytes();
        let open = self.i;
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match b.get(self.i) {
                None | Some(b'\n') => return Err(LineError::UnterminatedString { column: open + 1 }),
                Some(b'\\') if matches!(b.get(self.i + 1), Some(b'"' | b'\\')) => {
                    escaped = true;
                    self.i += 2;
                }
                Some(b'"') => break,
                Some(_) => self.i += 1,
            }
        }
        let raw = &self.s[start..self.i];
        self.i += 1;
        Ok(FieldValue::Str(if escaped { Cow::Owned(unescape(raw, string_special)) } else { Cow::Borrowed(raw) }))
    }

    fn timestamp(&mut self) -> Result<i64, LineError> {
        let column = self.column();
        let text = self.bare_until_ws();
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(LineError::InvalidTimestamp { column, text: excerpt(text) });
        }
        text.parse::<i64>().map_err(|_| LineError::TimestampOutOfRange { column, text: excerpt(text) })
    }

    /// Up to a space, a tab or the end.
    fn bare_until_ws(&mut self) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.i;
        while b.get(self.i).is_some_and(|&c| !is_ws(c)) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
}

/// Whether `t` is `-`? digits (`.` digits)? with at least one digit, followed by an optional exponent
/// `e`/`E` (`+`/`-`)? digits. (Rust's `f64::from_str` accepts more: `inf`, `NaN`, a leading `+`.)
fn is_float_syntax(t: &[u8]) -> bool {
    let mut i = usize::from(t.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while t.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if t.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == t.len()
}

/// Parses a token that starts with `-`, `.` or a digit: `...i`, `...u` or a float.
fn number(text: &str, column: usize) -> Result<FieldValue<'static>, LineError> {
    let invalid = |kind| LineError::InvalidNumber { column, kind, text: excerpt(text) };
    let out_of_range = |kind| LineError::NumberOutOfRange { column, kind, text: excerpt(text) };
    if let Some(body) = text.strip_suffix('i') {
        let digits = body.strip_prefix('-').unwrap_or(body);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(invalid("integer"));
        }
        return body.parse().map(FieldValue::Int).map_err(|_| out_of_range("integer"));
    }
    if let Some(body) = text.strip_suffix('u') {
        if body.is_empty() || !body.bytes().all(|c| c.is_ascii_digit()) {
            return Err(invalid("unsigned integer"));
        }
        return body.parse().map(FieldValue::UInt).map_err(|_| out_of_range("unsigned integer"));
    }
    if !is_float_syntax(text.as_bytes()) {
        return Err(invalid("float"));
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(FieldValue::Float(x)),
        Ok(_) => Err(out_of_range("float")),
        Err(_) => Err(invalid("float")),
    }
}

/// Splits a request body into lines and parses them, tracking 1-based line numbers.
///
/// Lines end at `\n`, and one `\r` before it is dropped. Blank lines (only spaces and tabs) and comment
/// lines (`#` after optional spaces and tabs) are skipped but counted. A bad line does not stop the
/// decoder: the next call goes on with the line after it. As an [`Iterator`] it yields a new [`Line`] per
/// point; [`Decoder::next_into`] refills one instead.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    body: &'a [u8],
    pos: usize,
    line_no: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `body`.
    pub fn new(body: &'a [u8]) -> Decoder<'a> {
        Decoder { body, pos: 0, line_no: 0 }
    }

    /// The 1-based number of the last line returned (0 before the first).
    pub fn line_no(&self) -> usize {
        self.line_no
    }

    /// The next line that is neither blank nor a comment, with its line number, without its line end. It
    /// is not parsed or checked, except that a line over [`MAX_LINE_BYTES`] is always returned (so that
    /// parsing it reports [`LineError::TooLong`]), even when it is a comment.
    pub fn next_raw(&mut self) -> Option<(usize, &'a [u8])> {
        while self.pos < self.body.len() {
            let rest = &self.body[self.pos..];
            let (line, len) = match rest.iter().position(|&b| b == b'\n') {
                Some(n) => (&rest[..n], n + 1),
                None => (rest, rest.len()),
            };
            self.pos += len;
            self.line_no += 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let skip = line.len() <= MAX_LINE_BYTES && matches!(line.iter().find(|&&b| !is_ws(b)), None | Some(&b'#'));
            if !skip {
                return Some((self.line_no, line));
            }
        }
        None
    }

    /// Parses the next point into `line` (reusing its vectors) and returns its line number, or the
    /// error of that line; `None` at the end of the body.
    pub fn next_into(&mut self, line: &mut Line<'a>) -> Option<Result<usize, DecodeError>> {
        let (no, raw) = self.next_raw()?;
        Some(parse_line_into(raw, line).map(|()| no).map_err(|error| DecodeError { line: no, error }))
    }
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Result<(usize, Line<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Line::default();
        let result = self.next_into(&mut line)?;
        Some(result.map(|no| (no, line)))
    }
}

/// One sample in silt's terms, mapped from a line by [`to_sample`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The metric: the line's measurement, checked with [`validate_name`].
    pub metric: Cow<'a, str>,
    /// The series' key.
    pub key: HostKey,
    /// Unix seconds.
    pub ts: i64,
    /// The value.
    pub value: f64,
}

fn invalid_name(part: &'static str) -> impl FnOnce(KeyError) -> LineError {
    move |source| LineError::InvalidName { part, source }
}

/// Records a tag that has two spellings (`hostname`/`host`, `stype`/`subtype`); a second spelling with
/// another value is an error.
fn alias<'l>(slot: &mut Option<(&'static str, &'l str)>, name: &'static str, value: &'l str) -> Result<(), LineError> {
    match *slot {
        Some((first, v)) if v != value => Err(LineError::ConflictingTags { first, second: name }),
        Some(_) => Ok(()),
        None => {
            *slot = Some((name, value));
            Ok(())
        }
    }
}

/// Maps a line onto a sample as cc-metric-store's `decodeLine` does.
///
/// - The metric is the measurement; it must pass [`validate_name`].
/// - The key is [`HostKey`] `<cluster>/<host>[/<type><type-id>[/<stype><stype-id>]]`:
///   - the cluster is the tag `cluster`, else `default_cluster`, else [`LineError::MissingCluster`];
///   - the host is the tag `hostname`, or `host` (if both are given they must agree), else
///     [`LineError::MissingHost`];
///   - `type` and `type-id` give one component, concatenated (`hwthread` + `3` = `hwthread3`); each needs
///     the other ([`LineError::UnpairedTag`]), except that `type=node` means the node itself and its
///     `type-id`, if any, is ignored;
///   - `stype` (or `subtype`, the spelling cc-metric-store reads; both must agree) and `stype-id` give a
///     second component below the first; each needs the other, and both need a `type` other than `node`;
///   - every name must pass [`validate_name`]; a bad one is [`LineError::InvalidName`] naming its tag.
///
///   Other tags are ignored.
/// - The value is the field `value`: floats as they are, integers converted to the nearest `f64`, booleans
///   as `1.0`/`0.0`; a string is [`LineError::ValueIsString`], no such field [`LineError::MissingValue`].
///   Other fields are ignored. (cc-metric-store refuses other fields and booleans; silt is more lenient.)
/// - The time is the timestamp converted from `precision` to unix seconds (rounded down), or `now`
///   (already in seconds) when the line has none.
pub fn to_sample<'a>(
    line: &Line<'a>,
    default_cluster: Option<&str>,
    precision: Precision,
    now: i64,
) -> Result<Sample<'a>, LineError> {
    validate_name("metric", &line.measurement).map_err(invalid_name("measurement"))?;
    let (value, ts) = value_and_time(line, precision, now)?;

    let (mut cluster, mut host, mut kind, mut kind_id, mut sub, mut sub_id) = (None, None, None, None, None, None);
    for (key, v) in &line.tags {
        let v = v.as_ref();
        match key.as_ref() {
            "cluster" => cluster = Some(v),
            "hostname" => alias(&mut host, "hostname", v)?,
            "host" => alias(&mut host, "host", v)?,
            "type" => kind = Some(v),
            "type-id" => kind_id = Some(v),
            "stype" => alias(&mut sub, "stype", v)?,
            "subtype" => alias(&mut sub, "subtype", v)?,
            "stype-id" => sub_id = Some(v),
            _ => {}
        }
    }

    let (cluster_part, cluster) = match (cluster, default_cluster) {
        (Some(c), _) => ("tag \"cluster\"", c),
        (None, Some(c)) => ("default cluster", c),
        (None, None) => return Err(LineError::MissingCluster),
    };
    let (host_tag, host) = host.ok_or(LineError::MissingHost)?;
    let host_part = if host_tag == "host" { "tag \"host\"" } else { "tag \"hostname\"" };
    validate_name("cluster", cluster).map_err(invalid_name(cluster_part))?;
    validate_name("host", host).map_err(invalid_name(host_part))?;
    let mut key = HostKey::new(cluster, host).map_err(invalid_name(host_part))?;

    let has_component = match (kind, kind_id) {
        (Some("node"), _) => false,
        (Some(k), Some(id)) => {
            validate_name("component kind", k).map_err(invalid_name("tag \"type\""))?;
            validate_name("component id", id).map_err(invalid_name("tag \"type-id\""))?;
            key = key.component(k, id).map_err(invalid_name("tags \"type\" + \"type-id\""))?;
            true
        }
        (Some(_), None) => return Err(LineError::UnpairedTag { present: "type", missing: "type-id" }),
        (None, Some(_)) => return Err(LineError::UnpairedTag { present: "type-id", missing: "type" }),
        (None, None) => false,
    };
    match (sub, sub_id) {
        (Some((tag, _)), _) if !has_component => return Err(LineError::SubtypeWithoutType { tag }),
        (None, Some(_)) if !has_component => return Err(LineError::SubtypeWithoutType { tag: "stype-id" }),
        (Some((tag, s)), Some(id)) => {
            let (kind_part, pair_part) = if tag == "subtype" {
                ("tag \"subtype\"", "tags \"subtype\" + \"stype-id\"")
            } else {
                ("tag \"stype\"", "tags \"stype\" + \"stype-id\"")
            };
            validate_name("component kind", s).map_err(invalid_name(kind_part))?;
            validate_name("component id", id).map_err(invalid_name("tag \"stype-id\""))?;
            key = key.component(s, id).map_err(invalid_name(pair_part))?;
        }
        (Some((tag, _)), None) => return Err(LineError::UnpairedTag { present: tag, missing: "stype-id" }),
        (None, Some(_)) => return Err(LineError::UnpairedTag { present: "stype-id", missing: "stype" }),
        (None, None) => {}
    }

    Ok(Sample { metric: line.measurement.clone(), key, ts, value })
}

/// The value (field `value`) and the time in unix seconds of a parsed line, as [`to_sample`] maps them.
pub(crate) fn value_and_time(line: &Line<'_>, precision: Precision, now: i64) -> Result<(f64, i64), LineError> {
    let value = match line.field("value") {
        None => return Err(LineError::MissingValue),
        Some(v) => v.as_f64().ok_or(LineError::ValueIsString)?,
    };
    Ok((value, line.timestamp.map_or(now, |ts| precision.to_unix_seconds(ts))))
}

/// Decodes a whole body into `batch` with [`Decoder`] and [`to_sample`], stopping at the first bad line.
///
/// Returns how many samples were added. On a bad line, returns its number and error and how many samples
/// the lines before it added; those stay in the batch, as cc-metric-store keeps the lines it wrote before
/// an error. The caller decides whether to write the partial batch. Nothing is durable until the batch is
/// written with [`crate::Db::write`], under that write's durability.
pub fn decode_into(
    body: &[u8],
    batch: &mut Batch,
    default_cluster: Option<&str>,
    precision: Precision,
    now: i64,
) -> Result<usize, BatchError> {
    let mut decoder = Decoder::new(body);
    let mut line = Line::default();
    let mut added = 0;
    while let Some(result) = decoder.next_into(&mut line) {
        let sample = result.map_err(|e| BatchError { added, line: e.line, error: e.error }).and_then(|no| {
            to_sample(&line, default_cluster, precision, now).map_err(|error| BatchError { added, line: no, error })
        })?;
        batch.push(&sample.key, &sample.metric, sample.ts, sample.value);
        added += 1;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Key;
    use proptest::prelude::*;

    fn parse(s: &str) -> Line<'_> {
        parse_line(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> LineError {
        match parse_line(s.as_bytes()) {
            Ok(line) => panic!("{s:?} parsed as {line:?}"),
            Err(e) => e,
        }
    }

    fn tags<'a>(line: &'a Line<'_>) -> Vec<(&'a str, &'a str)> {
        line.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect()
    }

    fn value(s: &str) -> FieldValue<'static> {
        parse(&format!("m v={s}")).fields[0].1.clone().into_owned()
    }

    fn value_err(s: &str) -> LineError {
        err(&format!("m v={s}"))
    }

    fn sample(s: &str) -> Result<Sample<'_>, LineError> {
        to_sample(&parse(s), None, Precision::Seconds, 42)
    }

    fn key_text(s: &Sample<'_>) -> String {
        s.key.path().to_string()
    }

    // ---- syntax ----

    #[test]
    fn simple_line() {
        let line = parse("cpu_load,cluster=emmy,hostname=n1 value=0.5 1700000000");
        assert_eq!(line.measurement, "cpu_load");
        assert_eq!(tags(&line), [("cluster", "emmy"), ("hostname", "n1")]);
        assert_eq!(line.fields, [(Cow::Borrowed("value"), FieldValue::Float(0.5))]);
        assert_eq!(line.timestamp, Some(1_700_000_000));
        assert_eq!(line.tag("hostname"), Some("n1"));
        assert_eq!(line.tag("host"), None);
        assert_eq!(line.field("value"), Some(&FieldValue::Float(0.5)));
    }

    #[test]
    fn tokens_without_escapes_are_borrowed() {
        let line = parse(r#"m,t=v f="s",g=1i"#);
        assert!(matches!(line.measurement, Cow::Borrowed(_)));
        assert!(matches!(line.tags[0], (Cow::Borrowed(_), Cow::Borrowed(_))));
        assert!(matches!(line.fields[0], (Cow::Borrowed(_), FieldValue::Str(Cow::Borrowed(_)))));
        // A backslash that escapes nothing keeps the token borrowed too.
        let line = parse(r"m\a,t\b=v\c f\d=1");
        assert_eq!(line.measurement, r"m\a");
        assert!(matches!(line.measurement, Cow::Borrowed(_)));
        assert!(matches!(line.tags[0], (Cow::Borrowed(_), Cow::Borrowed(_))));
        assert_eq!(tags(&line), [(r"t\b", r"v\c")]);
        assert_eq!(line.fields[0].0, r"f\d");
        // Only tokens with escapes are owned.
        let line = parse(r"m,t=a\ b f=1");
        assert!(matches!(line.tags[0], (Cow::Borrowed(_), Cow::Owned(_))));
    }

    #[test]
    fn measurement_escapes() {
        assert_eq!(parse(r"cpu\,load\ x v=1").measurement, "cpu,load x");
        assert_eq!(parse(r"a\\b v=1").measurement, r"a\b");
        assert_eq!(parse(r"a\\ v=1").measurement, r"a\");
        // `=` needs no escape in a measurement; `\=` is an ordinary backslash there.
        assert_eq!(parse(r"a=b v=1").measurement, "a=b");
        assert_eq!(parse(r"a\=b v=1").measurement, r"a\=b");
        assert_eq!(parse(r"\ lead v=1").measurement, " lead");
        assert_eq!(parse("節🦀,t=ü v=1").measurement, "節🦀");
        assert_eq!(parse(r"\#x v=1").measurement, r"\#x");
        assert_eq!(parse(r"x# v=1").measurement, "x#");
    }

    #[test]
    fn tag_escapes() {
        let line = parse(r"m,k\,1\=\ x=v\,1\=\ y\\,plain=a\b v=1");
        assert_eq!(tags(&line), [(r"k,1= x", r"v,1= y\"), ("plain", r"a\b")]);
        assert_eq!(tags(&parse(r"m,t=\\ v=1")), [("t", r"\")]);
        assert_eq!(tags(&parse(r#"m,t="q" v=1"#)), [("t", r#""q""#)]);
    }

    #[test]
    fn field_key_escapes() {
        let line = parse(r"m f\,1\=\ x=1,\\=2i");
        assert_eq!(line.fields[0].0, r"f,1= x");
        assert_eq!(line.fields[1].0, r"\");
    }

    #[test]
    fn string_values() {
        let line = parse(r#"m s="a \"quoted\" b, c=d \\ e",t="",u="x\y",w="\\\"" 5"#);
        let strs: Vec<&str> = line
            .fields
            .iter()
            .map(|(_, v)| match v {
                FieldValue::Str(s) => s.as_ref(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(strs, [r#"a "quoted" b, c=d \ e"#, "", r"x\y", r#"\""#]);
        assert_eq!(line.timestamp, Some(5));
        assert!(matches!(&line.fields[2].1, FieldValue::Str(Cow::Borrowed(_))));
        // Spaces, commas, equals, '#' and tabs are literal inside quotes.
        assert_eq!(value("\"a b,c=d #\te\""), FieldValue::Str("a b,c=d #\te".into()));
        assert_eq!(value(r#""節 🦀""#), FieldValue::Str("節 🦀".into()));
    }

    #[test]
    fn float_values() {
        let cases: &[(&str, f64)] = &[
            ("1", 1.0),
            ("1.5", 1.5),
            ("-1e3", -1000.0),
            ("1e-3", 0.001),
            ("1E+3", 1000.0),
            (".5", 0.5),
            ("-.5", -0.5),
            ("1.", 1.0),
            ("0", 0.0),
            ("1.7976931348623157e308", f64::MAX),
            ("1e-400", 0.0),
        ];
        for &(text, want) in cases {
            assert_eq!(value(text), FieldValue::Float(want), "{text}");
        }
        match value("-0") {
            FieldValue::Float(x) => assert_eq!(x.to_bits(), (-0.0f64).to_bits()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn integer_values() {
        assert_eq!(value("42i"), FieldValue::Int(42));
        assert_eq!(value("-42i"), FieldValue::Int(-42));
        assert_eq!(value("-0i"), FieldValue::Int(0));
        assert_eq!(value("9223372036854775807i"), FieldValue::Int(i64::MAX));
        assert_eq!(value("-9223372036854775808i"), FieldValue::Int(i64::MIN));
        assert_eq!(value("42u"), FieldValue::UInt(42));
        assert_eq!(value("0u"), FieldValue::UInt(0));
        assert_eq!(value("18446744073709551615u"), FieldValue::UInt(u64::MAX));
    }

    #[test]
    fn number_errors() {
        let out_of_range = |s: &str, kind: &str| match value_err(s) {
            LineError::NumberOutOfRange { column: 5, kind: k, .. } => assert_eq!(k, kind, "{s}"),
            other => panic!("{s}: {other:?}"),
        };
        out_of_range("9223372036854775808i", "integer");
        out_of_range("-9223372036854775809i", "integer");
        out_of_range("18446744073709551616u", "unsigned integer");
        out_of_range("1e400", "float");
        out_of_range("-1e400", "float");
        let invalid = |s: &str, kind: &str| match value_err(s) {
            LineError::InvalidNumber { column: 5, kind: k, text } => {
                assert_eq!(k, kind, "{s}");
                assert_eq!(text, s);
            }
            other => panic!("{s}: {other:?}"),
        };
        for s in ["1.5i", "-i", "1ei", "--1i", "1_0i", "0x10i"] {
            invalid(s, "integer");
        }
        for s in ["-1u", "1.0u", "u0"] {
            if s.starts_with('u') {
                assert!(matches!(value_err(s), LineError::UnknownValueType { found: 'u', .. }));
            } else {
                invalid(s, "unsigned integer");
            }
        }
        for s in ["-", ".", "-.", "1e", "1e+", "1.2.3", "1x", "12a", "1e5.0", "1..2", "-inf", "-nan", "0x10"] {
            invalid(s, "float");
        }
        for s in ["+1", "inf", "NaN", "nan", "Infinity"] {
            assert!(matches!(value_err(s), LineError::UnknownValueType { column: 5, .. }), "{s}");
        }
        let e = value_err("1e400");
        assert_eq!(e.to_string(), "column 5: \"1e400\" is out of range for a float");
    }

    #[test]
    fn bool_values() {
        for s in ["t", "T", "true", "True", "TRUE"] {
            assert_eq!(value(s), FieldValue::Bool(true), "{s}");
        }
        for s in ["f", "F", "false", "False", "FALSE"] {
            assert_eq!(value(s), FieldValue::Bool(false), "{s}");
        }
        for s in ["tRUE", "tru", "truee", "yes", "fALSE", "Fa"] {
            match value_err(s) {
                LineError::InvalidBool { column: 5, .. } => {}
                LineError::UnknownValueType { .. } if s == "yes" => {}
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn several_fields_of_every_type() {
        let line = parse(r#"m a=1,b=2i,c=3u,d=t,e="x" -5"#);
        let want = [
            FieldValue::Float(1.0),
            FieldValue::Int(2),
            FieldValue::UInt(3),
            FieldValue::Bool(true),
            FieldValue::Str("x".into()),
        ];
        assert_eq!(line.fields.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), want);
        assert_eq!(line.timestamp, Some(-5));
    }

    #[test]
    fn timestamps_and_whitespace() {
        assert_eq!(parse("m v=1").timestamp, None);
        assert_eq!(parse("m v=1 ").timestamp, None);
        assert_eq!(parse("m v=1 \t ").timestamp, None);
        assert_eq!(parse("m v=1 -1700000000123").timestamp, Some(-1_700_000_000_123));
        assert_eq!(parse("m v=1\t7").timestamp, Some(7));
        assert_eq!(parse("m v=1  7  \t").timestamp, Some(7));
        assert_eq!(parse("m,t=a   v=1").fields.len(), 1);
        assert_eq!(parse("  \tm v=1").measurement, "m");
        assert_eq!(parse("m v=1 9223372036854775807").timestamp, Some(i64::MAX));
        assert_eq!(parse("m v=1 -9223372036854775808").timestamp, Some(i64::MIN));
        assert_eq!(parse(r#"m s="x" 3"#).timestamp, Some(3));
    }

    #[test]
    fn timestamp_errors() {
        assert_eq!(err("m v=1 abc"), LineError::InvalidTimestamp { column: 7, text: "abc".into() });
        assert_eq!(err("m v=1 1.5"), LineError::InvalidTimestamp { column: 7, text: "1.5".into() });
        assert_eq!(err("m v=1 -"), LineError::InvalidTimestamp { column: 7, text: "-".into() });
        assert_eq!(err("m v=1 1i"), LineError::InvalidTimestamp { column: 7, text: "1i".into() });
        assert_eq!(err("m v=1 +1"), LineError::InvalidTimestamp { column: 7, text: "+1".into() });
        assert_eq!(
            err("m v=1 9223372036854775808"),
            LineError::TimestampOutOfRange { column: 7, text: "9223372036854775808".into() }
        );
        assert_eq!(err("m v=1 1 2"), LineError::TrailingText { column: 9 });
        // A comma after the space starts no new field.
        assert_eq!(err("m v=1 ,w=2"), LineError::InvalidTimestamp { column: 7, text: ",w=2".into() });
    }

    #[test]
    fn syntax_errors_name_the_problem_and_column() {
        let cases: &[(&str, LineError)] = &[
            ("cpu", LineError::MissingFields { column: 4 }),
            ("cpu ", LineError::MissingFields { column: 5 }),
            ("cpu,t=a", LineError::MissingFields { column: 8 }),
            ("cpu,t=a  \t", LineError::MissingFields { column: 11 }),
            (",t=a v=1", LineError::EmptyMeasurement { column: 1 }),
            ("  ,t=a v=1", LineError::EmptyMeasurement { column: 3 }),
            (" v=1", LineError::MissingFields { column: 5 }),
            ("m,=a v=1", LineError::EmptyTagKey { column: 3 }),
            ("m,,t=a v=1", LineError::EmptyTagKey { column: 3 }),
            ("m, v=1", LineError::EmptyTagKey { column: 3 }),
            ("m,t=a, v=1", LineError::EmptyTagKey { column: 7 }),
            ("m,t v=1", LineError::TagWithoutEquals { column: 4, key: "t".into() }),
            ("m,t,u=1 v=1", LineError::TagWithoutEquals { column: 4, key: "t".into() }),
            ("m,t= v=1", LineError::EmptyTagValue { column: 5, key: "t".into() }),
            ("m,t=,u=1 v=1", LineError::EmptyTagValue { column: 5, key: "t".into() }),
            ("m,t=a=b v=1", LineError::UnexpectedChar { column: 6, found: '=', after: "tag value" }),
            ("m,t=a,t=b v=1", LineError::DuplicateTag { column: 7, key: "t".into() }),
            ("m =1", LineError::EmptyFieldKey { column: 3 }),
            ("m v=1,", LineError::EmptyFieldKey { column: 7 }),
            ("m v=1,,w=2", LineError::EmptyFieldKey { column: 7 }),
            ("m v", LineError::FieldWithoutEquals { column: 4, key: "v".into() }),
            ("m v w=1", LineError::FieldWithoutEquals { column: 4, key: "v".into() }),
            ("m v=", LineError::MissingFieldValue { column: 5, key: "v".into() }),
            ("m v= 1", LineError::MissingFieldValue { column: 5, key: "v".into() }),
            ("m v=,w=1", LineError::MissingFieldValue { column: 5, key: "v".into() }),
            ("m v=1,v=2", LineError::DuplicateField { column: 7, key: "v".into() }),
            ("m v=x", LineError::UnknownValueType { column: 5, found: 'x' }),
            ("m v=節", LineError::UnknownValueType { column: 5, found: '節' }),
            ("m v='a'", LineError::UnknownValueType { column: 5, found: '\'' }),
            (r#"m v="abc"#, LineError::UnterminatedString { column: 5 }),
            (r#"m v="abc\""#, LineError::UnterminatedString { column: 5 }),
            (r#"m v="abc\"#, LineError::UnterminatedString { column: 5 }),
            (r#"m v="a"b"#, LineError::UnexpectedChar { column: 8, found: 'b', after: "field value" }),
            (r#"m v="a""b""#, LineError::UnexpectedChar { column: 8, found: '"', after: "field value" }),
            (r"m\", LineError::EscapeAtEnd { column: 2 }),
            (r"m,t\", LineError::EscapeAtEnd { column: 4 }),
            (r"m,t=a\", LineError::EscapeAtEnd { column: 6 }),
            (r"m v\", LineError::EscapeAtEnd { column: 4 }),
            ("m\tx v=1", LineError::ControlChar { column: 2, found: '\t', part: "measurement" }),
            ("m,t\0=a v=1", LineError::ControlChar { column: 4, found: '\0', part: "tag key" }),
            ("m,t=a\x7f v=1", LineError::ControlChar { column: 6, found: '\x7f', part: "tag value" }),
            ("m v\r=1", LineError::ControlChar { column: 4, found: '\r', part: "field key" }),
            ("m v=1\r", LineError::InvalidNumber { column: 5, kind: "float", text: "1\r".into() }),
            ("", LineError::NotAPoint { column: 1 }),
            ("  \t", LineError::NotAPoint { column: 4 }),
            ("# comment", LineError::NotAPoint { column: 1 }),
            ("  #x v=1", LineError::NotAPoint { column: 3 }),
            ("m v=1 \u{0}", LineError::InvalidTimestamp { column: 7, text: "\u{0}".into() }),
        ];
        for (line, want) in cases {
            let got = err(line);
            assert_eq!(&got, want, "{line:?}");
            assert_eq!(got.column(), want.column());
            let msg = got.to_string();
            assert!(msg.starts_with(&format!("column {}: ", want.column().unwrap())), "{msg}");
        }
    }

    #[test]
    fn error_messages_read_well() {
        assert_eq!(err("m,t v=1").to_string(), "column 4: tag \"t\" has no '='");
        assert_eq!(err("cpu").to_string(), "column 4: no field set (a point needs a space and at least one field)");
        assert_eq!(err(r#"m v="x"#).to_string(), "column 5: string has no closing '\"' on this line");
        assert_eq!(err(r"m v\").to_string(), "column 4: backslash at the end of the line escapes nothing");
        // Quoted text is bounded.
        let long = format!("m,{}=a,{}=b v=1", "k".repeat(1000), "k".repeat(1000));
        let msg = err(&long).to_string();
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(parse_line(b"m,t=\xff v=1"), Err(LineError::InvalidUtf8 { column: 5 }));
        assert_eq!(parse_line(b"m v=\"\xc3\x28\""), Err(LineError::InvalidUtf8 { column: 6 }));
    }

    #[test]
    fn limits() {
        let tags: String = (0..MAX_TAGS).map(|i| format!(",t{i}=v")).collect();
        assert_eq!(parse(&format!("m{tags} v=1")).tags.len(), MAX_TAGS);
        let column = 1 + tags.len() + 2;
        assert_eq!(err(&format!("m{tags},x=y v=1")), LineError::TooManyTags { column, max: MAX_TAGS });

        let fields: Vec<String> = (0..MAX_FIELDS).map(|i| format!("f{i}=1")).collect();
        let fields = fields.join(",");
        assert_eq!(parse(&format!("m {fields}")).fields.len(), MAX_FIELDS);
        let column = 2 + fields.len() + 2;
        assert_eq!(err(&format!("m {fields},x=1")), LineError::TooManyFields { column, max: MAX_FIELDS });

        let pad = "x".repeat(MAX_LINE_BYTES - "m v=\"\"".len());
        let longest = format!("m v=\"{pad}\"");
        assert_eq!(longest.len(), MAX_LINE_BYTES);
        assert!(parse_line(longest.as_bytes()).is_ok());
        let over = format!("m v=\"{pad}x\"");
        assert_eq!(err(&over), LineError::TooLong { len: MAX_LINE_BYTES + 1, max: MAX_LINE_BYTES });
        assert_eq!(err(&over).to_string(), "line is 65537 bytes long, more than the limit of 65536");
    }

    #[test]
    fn parse_line_into_reuses_the_line() {
        let body = b"a,t=1 v=1 1\nb v=2";
        let mut line = Line::default();
        parse_line_into(&body[..11], &mut line).unwrap();
        assert_eq!(line.tags.len(), 1);
        let capacity = line.tags.capacity();
        parse_line_into(&body[12..], &mut line).unwrap();
        assert_eq!(line, parse("b v=2"));
        assert_eq!(line.tags.capacity(), capacity);
    }

    // ---- decoder ----

    #[test]
    fn decoder_skips_blank_and_comment_lines_and_counts_them() {
        let body = b"# header\r\n\ncpu v=1 1\r\n  \t\n  # indented comment \xff\nmem v=2\n\r\n\nlast v=3";
        let lines: Vec<(usize, String)> = Decoder::new(body)
            .map(|r| {
                let (no, line) = r.unwrap();
                (no, line.measurement.into_owned())
            })
            .collect();
        assert_eq!(lines, [(3, "cpu".into()), (6, "mem".into()), (9, "last".into())]);
    }

    #[test]
    fn decoder_handles_crlf_and_trailing_newline() {
        let lines: Vec<_> = Decoder::new(b"a v=1 5\r\nb v=2\r\n").collect();
        assert_eq!(lines.len(), 2);
        let (no, b) = lines[1].clone().unwrap();
        assert_eq!(no, 2);
        assert_eq!(b.fields[0].1, FieldValue::Float(2.0));
        assert_eq!(lines[0].clone().unwrap().1.timestamp, Some(5));
        assert_eq!(Decoder::new(b"").count(), 0);
        assert_eq!(Decoder::new(b"\n\n\r\n").count(), 0);
        // Only one \r is dropped.
        let e = Decoder::new(b"m v=1\r\r\n").next().unwrap().unwrap_err();
        assert_eq!(e.line, 1);
        assert!(matches!(e.error, LineError::InvalidNumber { .. }));
    }

    #[test]
    fn decoder_reports_line_numbers_and_goes_on() {
        let body = b"ok v=1\n\nbad\n#c\nok2 v=2\nm v=\"open\nclosed\"\n";
        let results: Vec<_> = Decoder::new(body).collect();
        assert_eq!(results.len(), 5);
        assert!(results[0].is_ok());
        assert_eq!(results[1], Err(DecodeError { line: 3, error: LineError::MissingFields { column: 4 } }));
        assert_eq!(
            results[1].as_ref().unwrap_err().to_string(),
            "line 3: column 4: no field set (a point needs a space and at least one field)"
        );
        assert_eq!(results[2].as_ref().unwrap().0, 5);
        // A string cannot span lines.
        assert_eq!(results[3], Err(DecodeError { line: 6, error: LineError::UnterminatedString { column: 5 } }));
        assert_eq!(results[4].as_ref().unwrap_err().line, 7);
    }

    #[test]
    fn decoder_next_into_reuses_one_line() {
        let body = b"a,x=1 v=1\nb,y=2 v=2\n";
        let mut decoder = Decoder::new(body);
        let mut line = Line::default();
        assert_eq!(decoder.next_into(&mut line), Some(Ok(1)));
        assert_eq!(line.measurement, "a");
        assert_eq!(decoder.next_into(&mut line), Some(Ok(2)));
        assert_eq!(line.measurement, "b");
        assert_eq!(tags(&line), [("y", "2")]);
        assert_eq!(decoder.line_no(), 2);
        assert_eq!(decoder.next_into(&mut line), None);
    }

    #[test]
    fn decoder_refuses_long_lines_even_comments() {
        let mut body = b"#".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES));
        body.extend_from_slice(b"\nm v=1");
        let results: Vec<_> = Decoder::new(&body).collect();
        assert_eq!(
            results[0],
            Err(DecodeError { line: 1, error: LineError::TooLong { len: MAX_LINE_BYTES + 1, max: MAX_LINE_BYTES } })
        );
        assert_eq!(results[1].as_ref().unwrap().0, 2);
    }

    // ---- precision ----

    #[test]
    fn precisions_floor_to_seconds() {
        assert_eq!(Precision::Seconds.to_unix_seconds(1_700_000_000), 1_700_000_000);
        assert_eq!(Precision::Milliseconds.to_unix_seconds(1_700_000_000_999), 1_700_000_000);
        assert_eq!(Precision::Microseconds.to_unix_seconds(1_700_000_000_999_999), 1_700_000_000);
        assert_eq!(Precision::Nanoseconds.to_unix_seconds(1_700_000_000_999_999_999), 1_700_000_000);
        assert_eq!(Precision::Milliseconds.to_unix_seconds(-1), -1);
        assert_eq!(Precision::Nanoseconds.to_unix_seconds(-1_000_000_001), -2);
        assert_eq!(Precision::Nanoseconds.to_unix_seconds(i64::MIN), -9_223_372_037);
        assert_eq!(Precision::Seconds.to_unix_seconds(i64::MIN), i64::MIN);
    }

    #[test]
    fn auto_precision_guesses_from_magnitude() {
        for (ts, want) in [
            (1_700_000_000, Precision::Seconds),
            (1_700_000_000_123, Precision::Milliseconds),
            (1_700_000_000_123_456, Precision::Microseconds),
            (1_700_000_000_123_456_789, Precision::Nanoseconds),
            (-1_700_000_000_123, Precision::Milliseconds),
            (0, Precision::Seconds),
            (9_223_372_036, Precision::Seconds),
            (9_223_372_037, Precision::Milliseconds),
        ] {
            assert_eq!(Precision::detect(ts), want, "{ts}");
            let secs = Precision::Auto.to_unix_seconds(ts);
            assert_eq!(secs, want.to_unix_seconds(ts));
        }
        assert_eq!(Precision::Auto.to_unix_seconds(1_700_000_000_123_456_789), 1_700_000_000);
    }

    #[test]
    fn precision_from_param() {
        assert_eq!(Precision::from_param("s"), Some(Precision::Seconds));
        assert_eq!(Precision::from_param("ms"), Some(Precision::Milliseconds));
        assert_eq!(Precision::from_param("us"), Some(Precision::Microseconds));
        assert_eq!(Precision::from_param("u"), Some(Precision::Microseconds));
        assert_eq!(Precision::from_param("ns"), Some(Precision::Nanoseconds));
        assert_eq!(Precision::from_param("n"), Some(Precision::Nanoseconds));
        assert_eq!(Precision::from_param("h"), None);
        assert_eq!(Precision::from_param(""), None);
    }

    #[test]
    fn missing_timestamp_uses_now_and_precision_applies() {
        let line = parse("m,cluster=c,host=h value=1");
        assert_eq!(to_sample(&line, None, Precision::Nanoseconds, 77).unwrap().ts, 77);
        let line = parse("m,cluster=c,host=h value=1 1700000000123");
        assert_eq!(to_sample(&line, None, Precision::Milliseconds, 0).unwrap().ts, 1_700_000_000);
        assert_eq!(to_sample(&line, None, Precision::Auto, 0).unwrap().ts, 1_700_000_000);
        assert_eq!(to_sample(&line, None, Precision::Seconds, 0).unwrap().ts, 1_700_000_000_123);
    }

    // ---- cc-metric-store mapping ----

    #[test]
    fn cc_metric_store_hwthread_line() {
        let s = sample("cpu_load,cluster=emmy,hostname=n1,type=hwthread,type-id=3 value=0.5 1700000000").unwrap();
        assert_eq!(s.metric, "cpu_load");
        assert_eq!(s.key, HostKey::new("emmy", "n1").unwrap().component("hwthread", 3).unwrap());
        assert_eq!(key_text(&s), "host:emmy/n1/hwthread3");
        assert_eq!((s.ts, s.value), (1_700_000_000, 0.5));
    }

    #[test]
    fn cc_metric_store_mapping_cases() {
        let ok = |line: &str, key: &str, value: f64| {
            let s = sample(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(key_text(&s), key, "{line}");
            assert_eq!(s.value.to_bits(), value.to_bits(), "{line}");
        };
        ok("m,cluster=c,hostname=n value=1", "host:c/n", 1.0);
        ok("m,cluster=c,host=n value=2i", "host:c/n", 2.0);
        ok("m,host=n,hostname=n,cluster=c value=3u", "host:c/n", 3.0);
        ok("m,cluster=c,hostname=n value=t", "host:c/n", 1.0);
        ok("m,cluster=c,hostname=n value=FALSE", "host:c/n", 0.0);
        ok("m,cluster=c,hostname=n value=-0", "host:c/n", -0.0);
        ok("m,cluster=c,hostname=n,type=node value=1", "host:c/n", 1.0);
        ok("m,cluster=c,hostname=n,type=node,type-id=0 value=1", "host:c/n", 1.0);
        ok("m,type-id=0,type=socket,hostname=n,cluster=c value=1", "host:c/n/socket0", 1.0);
        ok(
            "m,cluster=c,hostname=n,type=socket,type-id=1,stype=core,stype-id=12 value=1",
            "host:c/n/socket1/core12",
            1.0,
        );
        ok(
            "m,cluster=c,hostname=n,type=socket,type-id=1,subtype=core,stype-id=12 value=1",
            "host:c/n/socket1/core12",
            1.0,
        );
        ok(
            "m,cluster=alex,hostname=a0101,type=accelerator,type-id=00000000:3B:00.0 value=1",
            "host:alex/a0101/accelerator00000000:3B:00.0",
            1.0,
        );
        // Other tags and fields are ignored.
        ok("m,cluster=c,hostname=n,unit=GHz value=4.5,other=\"x\",more=2i", "host:c/n", 4.5);
        ok("m,cluster=c,hostname=n other=\"x\",value=5", "host:c/n", 5.0);
        // Escaped names reach the key unescaped.
        ok(r"m,cluster=my\ cluster,hostname=n\,1 value=1", "host:my cluster/n,1", 1.0);
        // Large integers round to the nearest f64.
        ok("m,cluster=c,hostname=n value=9223372036854775807i", "host:c/n", 9.223372036854776e18);
    }

    #[test]
    fn default_cluster() {
        let line = parse("m,hostname=n value=1");
        assert_eq!(to_sample(&line, None, Precision::Seconds, 0), Err(LineError::MissingCluster));
        let s = to_sample(&line, Some("dflt"), Precision::Seconds, 0).unwrap();
        assert_eq!(key_text(&s), "host:dflt/n");
        // The tag wins over the default.
        let line = parse("m,cluster=c,hostname=n value=1");
        assert_eq!(key_text(&to_sample(&line, Some("dflt"), Precision::Seconds, 0).unwrap()), "host:c/n");
        let line = parse("m,hostname=n value=1");
        assert!(matches!(
            to_sample(&line, Some("a/b"), Precision::Seconds, 0),
            Err(LineError::InvalidName { part: "default cluster", source: KeyError::Separator { .. } })
        ));
    }

    #[test]
    fn cc_metric_store_mapping_errors() {
        let cases: &[(&str, LineError)] = &[
            ("m,cluster=c,hostname=n other=1", LineError::MissingValue),
            ("m,cluster=c,hostname=n value=\"1\"", LineError::ValueIsString),
            ("m,hostname=n value=1", LineError::MissingCluster),
            ("m,cluster=c value=1", LineError::MissingHost),
            ("m,cluster=c,hostname=a,host=b value=1", LineError::ConflictingTags { first: "hostname", second: "host" }),
            (
                "m,cluster=c,hostname=n,type=socket value=1",
                LineError::UnpairedTag { present: "type", missing: "type-id" },
            ),
            (
                "m,cluster=c,hostname=n,type-id=1 value=1",
                LineError::UnpairedTag { present: "type-id", missing: "type" },
            ),
            (
                "m,cluster=c,hostname=n,type=socket,type-id=0,stype=core value=1",
                LineError::UnpairedTag { present: "stype", missing: "stype-id" },
            ),
            (
                "m,cluster=c,hostname=n,type=socket,type-id=0,stype-id=1 value=1",
                LineError::UnpairedTag { present: "stype-id", missing: "stype" },
            ),
            ("m,cluster=c,hostname=n,stype=core,stype-id=1 value=1", LineError::SubtypeWithoutType { tag: "stype" }),
            ("m,cluster=c,hostname=n,stype-id=1 value=1", LineError::SubtypeWithoutType { tag: "stype-id" }),
            (
                "m,cluster=c,hostname=n,type=node,subtype=core,stype-id=1 value=1",
                LineError::SubtypeWithoutType { tag: "subtype" },
            ),
            (
                "m,cluster=c,hostname=n,type=a,type-id=0,stype=x,subtype=y,stype-id=1 value=1",
                LineError::ConflictingTags { first: "stype", second: "subtype" },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&sample(line).unwrap_err(), want, "{line}");
        }
        let invalid = |line: &str, want_part: &str| match sample(line) {
            Err(LineError::InvalidName { part, .. }) => assert_eq!(part, want_part, "{line}"),
            other => panic!("{line}: {other:?}"),
        };
        invalid("a/b,cluster=c,hostname=n value=1", "measurement");
        invalid("..,cluster=c,hostname=n value=1", "measurement");
        invalid("m,cluster=a/b,hostname=n value=1", "tag \"cluster\"");
        invalid("m,cluster=c,hostname=.. value=1", "tag \"hostname\"");
        invalid(r"m,cluster=c,host=n\  value=1", "tag \"host\"");
        invalid("m,cluster=c,hostname=n,type=a/b,type-id=1 value=1", "tag \"type\"");
        invalid("m,cluster=c,hostname=n,type=gpu,type-id=0/1 value=1", "tag \"type-id\"");
        invalid(
            &format!("m,cluster=c,hostname=n,type={},type-id={} value=1", "k".repeat(100), "i".repeat(29)),
            "tags \"type\" + \"type-id\"",
        );
        invalid("m,cluster=c,hostname=n,type=a,type-id=1,stype=x/y,stype-id=1 value=1", "tag \"stype\"");
        invalid("m,cluster=c,hostname=n,type=a,type-id=1,subtype=x/y,stype-id=1 value=1", "tag \"subtype\"");
        invalid("m,cluster=c,hostname=n,type=a,type-id=1,stype=x,stype-id=.. value=1", "tag \"stype-id\"");
        let e = sample("m,cluster=a/b,hostname=n value=1").unwrap_err();
        assert_eq!(e.to_string(), "tag \"cluster\": cluster \"a/b\" contains the separator '/'");
        assert_eq!(e.column(), None);
    }

    #[test]
    fn decode_into_fills_a_batch_and_stops_at_the_first_bad_line() {
        let body = b"# cc-metric-collector\n\
            cpu_load,cluster=emmy,hostname=n1,type=hwthread,type-id=3 value=0.5 1700000000\n\
            mem_used,hostname=n1 value=12i 1700000060\r\n\
            \n\
            flops,cluster=emmy,hostname=n2 value=\"x\" 1700000000\n\
            cpu_load,cluster=emmy,hostname=n3 value=1 1700000000\n";
        let mut batch = Batch::new();
        let e = decode_into(body, &mut batch, Some("emmy"), Precision::Seconds, 0).unwrap_err();
        assert_eq!(e, BatchError { added: 2, line: 5, error: LineError::ValueIsString });
        assert_eq!(e.to_string(), "line 5: field \"value\" is a string, not a number");
        assert_eq!(batch.len(), 2);

        let mut batch = Batch::new();
        let e =
            decode_into(b"a,cluster=c,host=h value=1\nbroken", &mut batch, None, Precision::Seconds, 0).unwrap_err();
        assert_eq!(e, BatchError { added: 1, line: 2, error: LineError::MissingFields { column: 7 } });

        let mut batch = Batch::new();
        let good = b"a,cluster=c,host=h value=1 1\na,cluster=c,host=h value=2 2\nb,cluster=c,host=h value=3\n";
        assert_eq!(decode_into(good, &mut batch, None, Precision::Seconds, 9), Ok(3));
        assert_eq!(batch.len(), 3);
        assert_eq!(decode_into(b"", &mut batch, None, Precision::Seconds, 9), Ok(0));
        assert_eq!(decode_into(b"# only a comment\n", &mut batch, None, Precision::Seconds, 9), Ok(0));
    }

    // ---- formatting ----

    #[test]
    fn display_is_canonical() {
        let line = parse(r#"m\ 1\,x=y,t\=k=v\ w,u=a\b f\,=1.50,g=-0,h=1e300,i=7i,j=8u,k=T,l="q\"\\z" 12"#);
        assert_eq!(
            line.to_string(),
            r#"m\ 1\,x=y,t\=k=v\ w,u=a\\b f\,=1.5,g=-0.0,h=1e300,i=7i,j=8u,k=true,l="q\"\\z" 12"#
        );
        assert!(parse(&line.to_string()).identical(&line));
        assert_eq!(parse("m v=1").to_string(), "m v=1.0");
        assert_eq!(parse("m v=1e-7").to_string(), "m v=1e-7");
    }

    // ---- proptests ----

    /// Chars for names: mostly ones that need escaping somewhere, never an ASCII control.
    fn name_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => prop::sample::select(vec![',', ' ', '=', '\\', '"', '#', 't', 'i', 'u', '-', '.', '0', 'é', '節', '🦀']),
            3 => proptest::char::range('a', 'z'),
            1 => any::<char>().prop_filter("no ASCII control", |c| !c.is_ascii_control()),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(name_char(), 1..12).prop_map(|cs| cs.into_iter().collect())
    }

    fn measurement() -> impl Strategy<Value = String> {
        name().prop_map(|s| if s.starts_with('#') { format!("x{s}") } else { s })
    }

    fn string_value() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            2 => prop::sample::select(vec!['"', '\\', ',', ' ', '=', '\t', '\r', 'a', '節']),
            1 => any::<char>().prop_filter("no newline", |c| *c != '\n'),
        ];
        prop::collection::vec(c, 0..16).prop_map(|cs| cs.into_iter().collect())
    }

    fn field_value() -> impl Strategy<Value = FieldValue<'static>> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(FieldValue::Float),
            prop::sample::select(vec![0.0, -0.0, 1e-3, f64::MAX, f64::MIN_POSITIVE, 5e-324])
                .prop_map(FieldValue::Float),
            any::<i64>().prop_map(FieldValue::Int),
            any::<u64>().prop_map(FieldValue::UInt),
            any::<bool>().prop_map(FieldValue::Bool),
            string_value().prop_map(|s| FieldValue::Str(Cow::Owned(s))),
        ]
    }

    fn dedup_keys<V>(pairs: Vec<(String, V)>) -> Vec<(String, V)> {
        let mut out: Vec<(String, V)> = Vec::new();
        for (k, v) in pairs {
            if !out.iter().any(|(o, _)| *o == k) {
                out.push((k, v));
            }
        }
        out
    }

    fn valid_line() -> impl Strategy<Value = Line<'static>> {
        (
            measurement(),
            prop::collection::vec((name(), name()), 0..6),
            prop::collection::vec((name(), field_value()), 1..6),
            prop::option::of(any::<i64>()),
        )
            .prop_map(|(m, tags, fields, timestamp)| Line {
                measurement: Cow::Owned(m),
                tags: dedup_keys(tags).into_iter().map(|(k, v)| (Cow::Owned(k), Cow::Owned(v))).collect(),
                fields: dedup_keys(fields).into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect(),
                timestamp,
            })
    }

    proptest! {
        #[test]
        fn prop_format_parse_round_trip(line in valid_line()) {
            let text = line.to_string();
            let back = parse_line(text.as_bytes());
            prop_assert!(back.is_ok(), "{:?} does not parse: {:?}", text, back);
            let back = back.unwrap();
            prop_assert!(back.identical(&line), "{:?} parses as {:?}, not {:?}", text, back, line);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn prop_decoder_reads_formatted_bodies(
            lines in prop::collection::vec(valid_line(), 0..6),
            crlf in any::<bool>(),
            end_with_comment in any::<bool>(),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut body = String::from("# generated");
            for line in &lines {
                body.push_str(end);
                body.push_str(&line.to_string());
                body.push_str(end);
            }
            if end_with_comment {
                body.push_str("# end");
            }
            let decoded: Vec<_> = Decoder::new(body.as_bytes()).collect();
            prop_assert_eq!(decoded.len(), lines.len());
            for (i, (got, want)) in decoded.into_iter().zip(&lines).enumerate() {
                let (no, got) = got.unwrap();
                prop_assert_eq!(no, 2 + 2 * i);
                prop_assert!(got.identical(want));
            }
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(line) = parse_line(&bytes) {
                let text = line.to_string();
                prop_assert!(parse_line(text.as_bytes()).unwrap().identical(&line));
            }
            for (_, line) in Decoder::new(&bytes).flatten() {
                let _ = to_sample(&line, Some("c"), Precision::Auto, 0);
            }
            let mut batch = Batch::new();
            let _ = decode_into(&bytes, &mut batch, None, Precision::Nanoseconds, 0);
        }

        #[test]
        fn prop_line_like_bytes_never_panic(
            parts in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec![
                        ",", " ", "=", "\\", "\"", "\n", "\r\n", "#", "\t", "i", "u", "t", "-", ".", "e", "1", "9",
                        "value", "cluster", "hostname", "type", "type-id", "node", "stype", "stype-id",
                    ]).prop_map(str::to_owned),
                    "[a-z0-9]{1,4}",
                ],
                0..40,
            ),
        ) {
            let body = parts.concat();
            for (_, line) in Decoder::new(body.as_bytes()).flatten() {
                let text = line.to_string();
                prop_assert!(parse_line(text.as_bytes()).unwrap().identical(&line), "{:?}", text);
                let _ = to_sample(&line, Some("c"), Precision::Auto, 0);
            }
            let mut batch = Batch::new();
            if let Err(e) = decode_into(body.as_bytes(), &mut batch, Some("c"), Precision::Seconds, 0) {
                prop_assert_eq!(batch.len(), e.added);
            }
        }
    }

    proptest! {
        /// Where the fast tail reader answers, it answers as the general parser does.
        #[test]
        fn fast_value_tail_agrees_with_the_parser(
            spaces in "[ ]{1,3}",
            key in prop::sample::select(vec!["value", "value", "valu", "value2", "v"]),
            number in prop::sample::select(vec![
                "1", "-1", "0.25", "-.5", ".5", "1e3", "1.5E-2", "12i", "-7i", "9u", "1e999", "+1", "inf", "NaN",
                "1.", "-", "t", "true", "\"1\"", "1,x=2", "0x1",
            ]),
            gap in "[ \t]{0,2}",
            ts in prop::sample::select(vec!["", "1700000000", "1700000000000", "-5", "12a", "-", "99999999999999999999"]),
            trailing in prop::sample::select(vec!["", " ", "\t", " x"]),
        ) {
            let line = format!("m,h=a{spaces}{key}={number}{gap}{ts}{trailing}");
            let head_end = line.find(' ').expect("a space");
            let fast = fast_value_tail(line.as_bytes(), head_end, Precision::Auto, 42);
            let mut parsed = Line::default();
            let slow = parse_line_tail(line.as_bytes(), head_end, &mut parsed)
                .and_then(|()| value_and_time(&parsed, Precision::Auto, 42));
            if let Some((v, t)) = fast {
                let (sv, st) = slow.expect("the parser takes what the fast path takes");
                prop_assert_eq!((v.to_bits(), t), (sv.to_bits(), st), "{}", line);
            }
            // The plain form is always taken by the fast path.
            if key == "value" && gap.starts_with(' ') && matches!(number, "1" | "-1" | "0.25" | "12i")
                && matches!(ts, "1700000000") && trailing.is_empty()
            {
                prop_assert!(fast.is_some(), "{}", line);
            }
        }
    }
}
