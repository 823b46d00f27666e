//! The typed key space: which series a client may name, and how a name becomes a canonical path.
//!
//! # What this module owns
//!
//! Clients never build series paths by hand. They build a typed key ([`HostKey`], [`JobKey`],
//! [`ServiceKey`]), and the [`Key`] trait turns it into a [`SeriesPath`]: a [`Namespace`] plus an
//! ordered list of validated segments. The metric name is not part of the path; it is checked with
//! the same rules through [`validate_name`]. This module owns:
//!
//! - the namespaces and their one-byte tags ([`Namespace`]);
//! - the naming rules ([`validate_name`]) and the limits ([`MAX_NAME_BYTES`], [`MAX_SEGMENTS`]);
//! - the canonical byte encoding of a path ([`SeriesPath::encode`], [`SeriesPath::decode`]);
//! - the canonical text form ([`SeriesPath`]'s `Display` and `FromStr`);
//! - the layout of each namespace's paths (the typed keys).
//!
//! # Paths per namespace
//!
//! | Namespace | Tag | Segments | Example |
//! |-----------|-----|----------|---------|
//! | `host`    | 1   | cluster, host, then 0 to `MAX_SEGMENTS - 2` components | `host:emmy/n0001/socket0/hwthread3` |
//! | `job`     | 2   | job, operator, subtask index (decimal) | `job:wordcount/map/7` |
//! | `service` | 3   | service, instance | `service:ingest/0` |
//!
//! A host component is a kind plus an id and becomes the single segment `<kind><id>`, exactly as
//! ClusterCockpit's cc-metric-store concatenates `type` and `type-id` into one selector element:
//! `("hwthread", 3)` gives `hwthread3`, `("accelerator", "00000000:3B:00.0")` gives
//! `accelerator00000000:3B:00.0`. Like cc-metric-store, the split between kind and id is not kept.
//!
//! # Canonical byte encoding
//!
//! ```text
//! +--------+--------+--------+---------------+-----+--------+---------------+
//! | ns tag | count  | len 0  | segment 0     | ... | len n-1| segment n-1   |
//! | u8     | u8     | u8     | len 0 bytes   |     | u8     | len n-1 bytes |
//! +--------+--------+--------+---------------+-----+--------+---------------+
//! ```
//!
//! `count` is in `1..=MAX_SEGMENTS`, each `len` in `1..=MAX_NAME_BYTES`, and each segment is UTF-8
//! that passes [`validate_name`]. There is exactly one encoding per path, so equal paths have equal
//! bytes and paths in different namespaces never share bytes (the first byte differs). Decoding
//! treats its input as untrusted: every field is checked, and any violation is a [`KeyError`],
//! never a panic.
//!
//! # Canonical text form
//!
//! `<namespace>:<segment>/<segment>/...`, e.g. `host:emmy/n0001/hwthread3`. Segments may contain
//! `:` but never `/`, so splitting at the first `:` and then at every `/` is unambiguous, and
//! parsing the text form gives back the same path.
//!
//! # Naming rules
//!
//! A name (a path segment, a key part, or a metric name) must:
//!
//! - be non-empty and at most [`MAX_NAME_BYTES`] bytes of UTF-8;
//! - not contain `/`, the separator;
//! - not contain NUL or any other character for which [`char::is_control`] is true;
//! - not be exactly `.` or `..`;
//! - not start or end with whitespace ([`char::is_whitespace`]).
//!
//! Everything else is allowed, including non-ASCII text, inner spaces, and `:`, `.`, `-`, `_`
//! inside names such as `1234.batch` or the PCI id `00000000:3B:00.0`.
//!
//! # Limits
//!
//! - [`MAX_NAME_BYTES`] = 128 bytes per segment and per metric name (so a length fits one byte);
//! - [`MAX_SEGMENTS`] = 8 segments per path (so a host path has at most 6 components);
//! - hence an encoded path is at most `2 + 8 * (1 + 128)` = 1034 bytes ([`MAX_ENCODED_LEN`]).
//!
//! This module holds no locks and does no I/O.

use std::fmt;
use std::str::FromStr;

/// Longest name in bytes, for every path segment and for metric names.
pub const MAX_NAME_BYTES: usize = 128;

/// Most segments in one path.
pub const MAX_SEGMENTS: usize = 8;

/// Longest canonical encoding of a [`SeriesPath`], in bytes.
pub const MAX_ENCODED_LEN: usize = 2 + MAX_SEGMENTS * (1 + MAX_NAME_BYTES);

/// Longest excerpt of untrusted text quoted in a [`KeyError::Malformed`] message, in chars.
const EXCERPT_CHARS: usize = 64;

/// The namespace of a series path; each typed key lives in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Namespace {
    /// Cluster hardware: [`HostKey`].
    Host = 1,
    /// Stream-engine subtasks: [`JobKey`].
    Job = 2,
    /// silt's own services: [`ServiceKey`].
    Service = 3,
}

impl Namespace {
    /// Every namespace, in tag order.
    pub const ALL: [Namespace; 3] = [Namespace::Host, Namespace::Job, Namespace::Service];

    /// The one-byte tag that starts the canonical encoding.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The namespace with this tag, or `None` for an unknown tag.
    pub fn from_tag(t: u8) -> Option<Namespace> {
        match t {
            1 => Some(Namespace::Host),
            2 => Some(Namespace::Job),
            3 => Some(Namespace::Service),
            _ => None,
        }
    }

    /// The name used in the text form: `"host"`, `"job"` or `"service"`.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Host => "host",
            Namespace::Job => "job",
            Namespace::Service => "service",
        }
    }

    /// The namespace with this text-form name, or `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Namespace> {
        Namespace::ALL.into_iter().find(|ns| ns.name() == name)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a name, a path, or its canonical bytes or text were refused.
///
/// `what` says which part was wrong (`"cluster"`, `"host"`, `"component kind"`, `"metric"`,
/// `"segment"`, ...). Offending names are at most [`MAX_NAME_BYTES`] bytes (longer ones are
/// reported as [`KeyError::TooLong`] without the value) and are shown escaped with `{:?}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which part was wrong.
        what: &'static str,
    },
    /// The name is longer than `max` bytes.
    #[error("{what} is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Which part was wrong.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name contains the separator `/`.
    #[error("{what} {name:?} contains the separator '/'")]
    Separator {
        /// Which part was wrong.
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// The name contains NUL or another control character.
    #[error("{what} {name:?} contains a control character")]
    Control {
        /// Which part was wrong.
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// The name is exactly `.` or `..`.
    #[error("{what} {name:?} is not allowed (\".\" and \"..\" are reserved)")]
    DotName {
        /// Which part was wrong.
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// The name starts or ends with whitespace.
    #[error("{what} {name:?} starts or ends with whitespace")]
    Whitespace {
        /// Which part was wrong.
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// The path has more than `max` segments.
    #[error("path has {len} segments, more than the limit of {max}")]
    TooManySegments {
        /// The number of segments.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The path has no segments.
    #[error("path has no segments")]
    NoSegments,
    /// The canonical bytes or text form are malformed, or a path does not fit its key's layout.
    #[error("malformed series path: {0}")]
    Malformed(String),
}

/// Checks one name (a path segment, a key part, or a metric name) against the naming rules.
///
/// `what` names the part in the error, e.g. `"cluster"` or `"metric"`. The rules are listed in the
/// module documentation; the checks run in the order of [`KeyError`]'s variants, so a name that is
/// too long is never copied into the error.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::Empty { what });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(KeyError::TooLong { what, len: name.len(), max: MAX_NAME_BYTES });
    }
    if name.contains('/') {
        return Err(KeyError::Separator { what, name: name.to_owned() });
    }
    if name.chars().any(char::is_control) {
        return Err(KeyError::Control { what, name: name.to_owned() });
    }
    if name == "." || name == ".." {
        return Err(KeyError::DotName { what, name: name.to_owned() });
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(KeyError::Whitespace { what, name: name.to_owned() });
    }
    Ok(())
}

/// Canonical path of a series' level, without the metric.
///
/// Invariant: `1..=MAX_SEGMENTS` segments, each passing [`validate_name`]. Ordering is by
/// namespace, then segment by segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesPath {
    ns: Namespace,
    segments: Vec<String>,
}

impl SeriesPath {
    /// Builds a path, validating every segment and the segment count (`1..=MAX_SEGMENTS`).
    pub fn new(ns: Namespace, segments: Vec<String>) -> Result<SeriesPath, KeyError> {
        check_segment_count(segments.len())?;
        for segment in &segments {
            validate_name("segment", segment)?;
        }
        Ok(SeriesPath { ns, segments })
    }

    /// Builds a path from segments the caller has already validated, count included.
    fn from_valid(ns: Namespace, segments: Vec<String>) -> SeriesPath {
        debug_assert!(check_segment_count(segments.len()).is_ok());
        debug_assert!(segments.iter().all(|s| validate_name("segment", s).is_ok()));
        SeriesPath { ns, segments }
    }

    /// The namespace this path lives in.
    pub fn namespace(&self) -> Namespace {
        self.ns
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Appends the canonical bytes: `[u8 namespace tag][u8 segment count]`, then per segment
    /// `[u8 len][bytes]`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.ns.tag());
        // The invariant bounds the count by MAX_SEGMENTS and each length by MAX_NAME_BYTES, both
        // below 256, so these casts never truncate.
        out.push(self.segments.len() as u8);
        for segment in &self.segments {
            out.push(segment.len() as u8);
            out.extend_from_slice(segment.as_bytes());
        }
    }

    /// The canonical bytes as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// The number of bytes [`SeriesPath::encode`] appends; at most [`MAX_ENCODED_LEN`].
    pub fn encoded_len(&self) -> usize {
        2 + self.segments.iter().map(|s| 1 + s.len()).sum::<usize>()
    }

    /// Decodes exactly what [`SeriesPath::encode`] wrote from the start of `bytes`, returning the
    /// path and the number of bytes consumed. Trailing bytes are left alone.
    ///
    /// `bytes` is untrusted (it comes from disk): the tag, the count, every length, the UTF-8 and
    /// every naming rule are checked, and any violation is a [`KeyError`].
    pub fn decode(bytes: &[u8]) -> Result<(SeriesPath, usize), KeyError> {
        let (&tag, rest) =
            bytes.split_first().ok_or_else(|| KeyError::Malformed("empty input, expected a namespace tag".into()))?;
        let ns =
            Namespace::from_tag(tag).ok_or_else(|| KeyError::Malformed(format!("unknown namespace tag {tag:#04x}")))?;
        let (&count, mut rest) =
            rest.split_first().ok_or_else(|| KeyError::Malformed("truncated before the segment count".into()))?;
        let count = usize::from(count);
        check_segment_count(count)?;
        let mut segments = Vec::with_capacity(count);
        for index in 0..count {
            let (&len, after_len) = rest
                .split_first()
                .ok_or_else(|| KeyError::Malformed(format!("truncated before the length of segment {index}")))?;
            let len = usize::from(len);
            if len > after_len.len() {
                return Err(KeyError::Malformed(format!(
                    "segment {index} claims {len} bytes but only {} remain",
                    after_len.len()
                )));
            }
            let (raw, after_segment) = after_len.split_at(len);
            let segment = std::str::from_utf8(raw)
                .map_err(|e| KeyError::Malformed(format!("segment {index} is not valid UTF-8: {e}")))?;
            validate_name("segment", segment)?;
            segments.push(segment.to_owned());
            rest = after_segment;
        }
        let consumed = bytes.len() - rest.len();
        Ok((SeriesPath::from_valid(ns, segments), consumed))
    }

    /// Whether `prefix` is in the same namespace and its segments are a prefix of this path's
    /// (every path starts with itself).
    pub fn starts_with(&self, prefix: &SeriesPath) -> bool {
        self.ns == prefix.ns && self.segments.starts_with(&prefix.segments)
    }
}

/// Refuses a segment count outside `1..=MAX_SEGMENTS`.
fn check_segment_count(len: usize) -> Result<(), KeyError> {
    if len == 0 {
        return Err(KeyError::NoSegments);
    }
    if len > MAX_SEGMENTS {
        return Err(KeyError::TooManySegments { len, max: MAX_SEGMENTS });
    }
    Ok(())
}

/// The start of untrusted text, escaped, for error messages.
fn excerpt(s: &str) -> String {
    if s.chars().nth(EXCERPT_CHARS).is_some() {
        let head: String = s.chars().take(EXCERPT_CHARS).collect();
        format!("{head:?}...")
    } else {
        format!("{s:?}")
    }
}

impl fmt::Display for SeriesPath {
    /// Writes the canonical text form, e.g. `host:emmy/n0001/hwthread3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.ns)?;
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(segment)?;
        }
        Ok(())
    }
}

impl FromStr for SeriesPath {
    type Err = KeyError;

    /// Parses the canonical text form written by `Display`, validating every segment.
    fn from_str(s: &str) -> Result<SeriesPath, KeyError> {
        let (ns_name, rest) = s
            .split_once(':')
            .ok_or_else(|| KeyError::Malformed(format!("{} has no \"<namespace>:\" prefix", excerpt(s))))?;
        let ns = Namespace::from_name(ns_name)
            .ok_or_else(|| KeyError::Malformed(format!("unknown namespace {}", excerpt(ns_name))))?;
        if rest.is_empty() {
            return Err(KeyError::NoSegments);
        }
        // Count before allocating, so hostile input cannot make us build a huge vector.
        check_segment_count(rest.split('/').count())?;
        SeriesPath::new(ns, rest.split('/').map(str::to_owned).collect())
    }
}

/// A typed key: something that names one series level in exactly one namespace.
pub trait Key {
    /// The canonical path of this key.
    fn path(&self) -> SeriesPath;
}

impl Key for SeriesPath {
    fn path(&self) -> SeriesPath {
        self.clone()
    }
}

/// Host hierarchy as in ClusterCockpit's cc-metric-store: cluster, host, then up to
/// `MAX_SEGMENTS - 2` component levels, giving `host:<cluster>/<host>/<component>...`.
///
/// A component is a kind plus an id (cc-metric-store's `type`/`type-id`, `stype`/`stype-id`) and
/// becomes one path segment `<kind><id>`, e.g. `("hwthread", 3)` gives `hwthread3` and
/// `("accelerator", "00000000:3B:00.0")` gives `accelerator00000000:3B:00.0`, exactly as
/// cc-metric-store concatenates type and type-id into one selector element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostKey {
    cluster: String,
    host: String,
    /// Already concatenated component segments, outermost first; at most `MAX_SEGMENTS - 2`.
    components: Vec<String>,
}

impl HostKey {
    /// Most component levels under a host.
    pub const MAX_COMPONENTS: usize = MAX_SEGMENTS - 2;

    /// The key of a whole node: `host:<cluster>/<host>`.
    pub fn new(cluster: &str, host: &str) -> Result<HostKey, KeyError> {
        validate_name("cluster", cluster)?;
        validate_name("host", host)?;
        Ok(HostKey { cluster: cluster.to_owned(), host: host.to_owned(), components: Vec::new() })
    }

    /// Descends one component level, adding the segment `<kind><id>`.
    ///
    /// `kind` and the text of `id` are each checked with [`validate_name`] (as `"component kind"`
    /// and `"component id"`, so both must be non-empty), then their concatenation (as
    /// `"component"`, which matters for the length limit), then the segment count.
    pub fn component(mut self, kind: &str, id: impl fmt::Display) -> Result<HostKey, KeyError> {
        validate_name("component kind", kind)?;
        let id = id.to_string();
        validate_name("component id", &id)?;
        let segment = format!("{kind}{id}");
        validate_name("component", &segment)?;
        let len = 2 + self.components.len() + 1;
        if len > MAX_SEGMENTS {
            return Err(KeyError::TooManySegments { len, max: MAX_SEGMENTS });
        }
        self.components.push(segment);
        Ok(self)
    }

    /// Rebuilds a key from its path. The namespace must be [`Namespace::Host`] with at least two
    /// segments; segments after the host are kept as opaque components (kind and id are not split
    /// apart again).
    pub fn from_path(p: &SeriesPath) -> Result<HostKey, KeyError> {
        if p.namespace() != Namespace::Host {
            return Err(wrong_namespace(p, Namespace::Host));
        }
        match p.segments() {
            [cluster, host, components @ ..] => {
                Ok(HostKey { cluster: cluster.clone(), host: host.clone(), components: components.to_vec() })
            }
            _ => Err(KeyError::Malformed(format!("host path {p} needs a cluster and a host segment"))),
        }
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The host (node) name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The component segments below the host, outermost first, each already `<kind><id>`.
    pub fn components(&self) -> &[String] {
        &self.components
    }
}

impl Key for HostKey {
    fn path(&self) -> SeriesPath {
        let mut segments = Vec::with_capacity(2 + self.components.len());
        segments.push(self.cluster.clone());
        segments.push(self.host.clone());
        segments.extend(self.components.iter().cloned());
        SeriesPath::from_valid(Namespace::Host, segments)
    }
}

/// A stream-engine subtask: job, operator, subtask index, giving
/// `job:<job>/<operator>/<subtask>` with the index in decimal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobKey {
    job: String,
    operator: String,
    subtask: u32,
}

impl JobKey {
    /// The key of one subtask of one operator of a job.
    pub fn new(job: &str, operator: &str, subtask: u32) -> Result<JobKey, KeyError> {
        validate_name("job", job)?;
        validate_name("operator", operator)?;
        Ok(JobKey { job: job.to_owned(), operator: operator.to_owned(), subtask })
    }

    /// Rebuilds a key from its path: namespace [`Namespace::Job`], exactly three segments, and a
    /// subtask index written as canonical decimal (no sign, no leading zeros).
    pub fn from_path(p: &SeriesPath) -> Result<JobKey, KeyError> {
        if p.namespace() != Namespace::Job {
            return Err(wrong_namespace(p, Namespace::Job));
        }
        match p.segments() {
            [job, operator, subtask] => {
                let index = subtask.parse::<u32>().ok().filter(|i| i.to_string() == *subtask).ok_or_else(|| {
                    KeyError::Malformed(format!("job path {p} has subtask {subtask:?}, not a decimal u32"))
                })?;
                Ok(JobKey { job: job.clone(), operator: operator.clone(), subtask: index })
            }
            _ => Err(KeyError::Malformed(format!("job path {p} needs exactly job, operator and subtask segments"))),
        }
    }

    /// The job name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The operator name.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// The subtask index.
    pub fn subtask(&self) -> u32 {
        self.subtask
    }
}

impl Key for JobKey {
    fn path(&self) -> SeriesPath {
        SeriesPath::from_valid(Namespace::Job, vec![self.job.clone(), self.operator.clone(), self.subtask.to_string()])
    }
}

/// One of silt's own services: service, instance, giving `service:<service>/<instance>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    service: String,
    instance: String,
}

impl ServiceKey {
    /// The key of one instance of a service.
    pub fn new(service: &str, instance: &str) -> Result<ServiceKey, KeyError> {
        validate_name("service", service)?;
        validate_name("instance", instance)?;
        Ok(ServiceKey { service: service.to_owned(), instance: instance.to_owned() })
    }

    /// Rebuilds a key from its path: namespace [`Namespace::Service`], exactly two segments.
    pub fn from_path(p: &SeriesPath) -> Result<ServiceKey, KeyError> {
        if p.namespace() != Namespace::Service {
            return Err(wrong_namespace(p, Namespace::Service));
        }
        match p.segments() {
            [service, instance] => Ok(ServiceKey { service: service.clone(), instance: instance.clone() }),
            _ => Err(KeyError::Malformed(format!("service path {p} needs exactly service and instance segments"))),
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

impl Key for ServiceKey {
    fn path(&self) -> SeriesPath {
        SeriesPath::from_valid(Namespace::Service, vec![self.service.clone(), self.instance.clone()])
    }
}

/// The error for a path handed to the wrong key type.
fn wrong_namespace(p: &SeriesPath, expected: Namespace) -> KeyError {
    KeyError::Malformed(format!("path {p} is not in the {expected} namespace"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path(ns: Namespace, segments: &[&str]) -> SeriesPath {
        SeriesPath::new(ns, segments.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    // ---- naming rules ----

    #[test]
    fn rejects_empty() {
        assert_eq!(validate_name("metric", ""), Err(KeyError::Empty { what: "metric" }));
    }

    #[test]
    fn rejects_separator() {
        assert_eq!(validate_name("host", "a/b"), Err(KeyError::Separator { what: "host", name: "a/b".into() }));
    }

    #[test]
    fn rejects_nul_and_control() {
        for bad in ["a\0b", "a\nb", "\u{7f}", "a\u{9b}b", "tab\there"] {
            assert_eq!(
                validate_name("cluster", bad),
                Err(KeyError::Control { what: "cluster", name: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_dot_names() {
        for bad in [".", ".."] {
            assert_eq!(validate_name("segment", bad), Err(KeyError::DotName { what: "segment", name: bad.into() }));
        }
    }

    #[test]
    fn rejects_leading_and_trailing_whitespace() {
        for bad in [" x", "x ", " ", "\u{a0}x", "x\u{3000}"] {
            assert_eq!(
                validate_name("host", bad),
                Err(KeyError::Whitespace { what: "host", name: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_too_long() {
        let name = "a".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(validate_name("metric", &name), Err(KeyError::TooLong { what: "metric", len: 129, max: 128 }));
        // The limit is in bytes, not chars: 43 three-byte chars are 129 bytes.
        let wide = "\u{20ac}".repeat(43);
        assert!(matches!(validate_name("metric", &wide), Err(KeyError::TooLong { len: 129, .. })));
    }

    #[test]
    fn accepts_edge_cases() {
        for good in [
            "a".repeat(MAX_NAME_BYTES).as_str(),
            "1234.batch",
            "00000000:3B:00.0",
            "...",
            ".hidden",
            "a b",
            "knoten-ü",
            "節点",
            "🦀",
            "cpu_load",
        ] {
            assert_eq!(validate_name("segment", good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn error_messages_name_the_part_and_escape_the_value() {
        let err = validate_name("component kind", "a\nb").unwrap_err();
        assert_eq!(err.to_string(), "component kind \"a\\nb\" contains a control character");
        let err = validate_name("metric", "").unwrap_err();
        assert_eq!(err.to_string(), "metric is empty");
    }

    // ---- segment counts ----

    #[test]
    fn rejects_nine_segments_and_none() {
        let nine: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
        assert_eq!(SeriesPath::new(Namespace::Host, nine), Err(KeyError::TooManySegments { len: 9, max: 8 }));
        assert_eq!(SeriesPath::new(Namespace::Job, Vec::new()), Err(KeyError::NoSegments));
        let eight: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
        assert!(SeriesPath::new(Namespace::Host, eight).is_ok());
    }

    #[test]
    fn new_validates_each_segment() {
        assert_eq!(
            SeriesPath::new(Namespace::Host, vec!["ok".into(), "..".into()]),
            Err(KeyError::DotName { what: "segment", name: "..".into() })
        );
    }

    // ---- encoding ----

    #[test]
    fn encoding_layout() {
        let p = path(Namespace::Job, &["wc", "map", "7"]);
        assert_eq!(p.to_bytes(), [2, 3, 2, b'w', b'c', 3, b'm', b'a', b'p', 1, b'7']);
        assert_eq!(p.encoded_len(), 11);
        let mut trailing = p.to_bytes();
        trailing.extend_from_slice(b"tail");
        assert_eq!(SeriesPath::decode(&trailing), Ok((p, 11)));
    }

    #[test]
    fn longest_path_fits_max_encoded_len() {
        let segments = vec!["x".repeat(MAX_NAME_BYTES); MAX_SEGMENTS];
        let p = SeriesPath::new(Namespace::Service, segments).unwrap();
        assert_eq!(p.encoded_len(), MAX_ENCODED_LEN);
        assert_eq!(p.to_bytes().len(), MAX_ENCODED_LEN);
        assert_eq!(SeriesPath::decode(&p.to_bytes()), Ok((p, MAX_ENCODED_LEN)));
    }

    #[test]
    fn decode_rejects_named_cases() {
        let cases: &[(&str, &[u8])] = &[
            ("empty", &[]),
            ("tag 0", &[0, 1, 1, b'a']),
            ("tag 4", &[4, 1, 1, b'a']),
            ("no count", &[1]),
            ("zero count", &[1, 0]),
            ("count 9", &[1, 9]),
            ("no length", &[1, 1]),
            ("short segment", &[1, 1, 3, b'a', b'b']),
            ("empty segment", &[1, 1, 0]),
            ("bad utf-8", &[1, 1, 2, 0xc3, 0x28]),
            ("separator", &[1, 1, 3, b'a', b'/', b'b']),
            ("nul", &[1, 1, 1, 0]),
            ("dot dot", &[1, 1, 2, b'.', b'.']),
            ("whitespace", &[1, 1, 2, b' ', b'x']),
            ("second segment missing", &[1, 2, 1, b'a']),
            ("length over limit", &[1, 1, 129]),
        ];
        for (name, bytes) in cases {
            assert!(SeriesPath::decode(bytes).is_err(), "{name}");
        }
        let mut long = vec![1, 1, 129];
        long.extend(std::iter::repeat_n(b'a', 129));
        assert_eq!(SeriesPath::decode(&long), Err(KeyError::TooLong { what: "segment", len: 129, max: 128 }));
    }

    // ---- text form ----

    #[test]
    fn display_and_parse() {
        let key = HostKey::new("emmy", "n0001").unwrap().component("hwthread", 3).unwrap();
        let p = key.path();
        assert_eq!(p.to_string(), "host:emmy/n0001/hwthread3");
        assert_eq!("host:emmy/n0001/hwthread3".parse::<SeriesPath>(), Ok(p));
        let pci = "host:alex/a0101/accelerator00000000:3B:00.0".parse::<SeriesPath>().unwrap();
        assert_eq!(pci.segments()[2], "accelerator00000000:3B:00.0");
    }

    #[test]
    fn parse_rejects_named_cases() {
        assert!(matches!("emmy/n0001".parse::<SeriesPath>(), Err(KeyError::Malformed(_))));
        assert!(matches!("node:emmy".parse::<SeriesPath>(), Err(KeyError::Malformed(_))));
        assert_eq!("host:".parse::<SeriesPath>(), Err(KeyError::NoSegments));
        assert!(matches!("host:emmy//x".parse::<SeriesPath>(), Err(KeyError::Empty { .. })));
        assert!(matches!("host:emmy/".parse::<SeriesPath>(), Err(KeyError::Empty { .. })));
        assert_eq!("host:a/b/c/d/e/f/g/h/i".parse::<SeriesPath>(), Err(KeyError::TooManySegments { len: 9, max: 8 }));
        assert!(matches!("job:a/../b".parse::<SeriesPath>(), Err(KeyError::DotName { .. })));
        let huge = format!("{}:x", "n".repeat(10_000));
        match huge.parse::<SeriesPath>() {
            Err(KeyError::Malformed(msg)) => assert!(msg.len() < 200, "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn starts_with() {
        let node = path(Namespace::Host, &["emmy", "n0001"]);
        let thread = path(Namespace::Host, &["emmy", "n0001", "hwthread3"]);
        let other = path(Namespace::Host, &["emmy", "n00011"]);
        assert!(thread.starts_with(&node));
        assert!(node.starts_with(&node));
        assert!(!node.starts_with(&thread));
        assert!(!other.starts_with(&node));
        assert!(!path(Namespace::Job, &["emmy", "n0001", "x"]).starts_with(&node));
    }

    #[test]
    fn namespace_tags_and_names() {
        for ns in Namespace::ALL {
            assert_eq!(Namespace::from_tag(ns.tag()), Some(ns));
            assert_eq!(Namespace::from_name(ns.name()), Some(ns));
        }
        assert_eq!(Namespace::Host.name(), "host");
        assert_eq!(Namespace::Job.name(), "job");
        assert_eq!(Namespace::Service.name(), "service");
        assert_eq!(Namespace::from_tag(0), None);
        assert_eq!(Namespace::from_tag(4), None);
        assert_eq!(Namespace::from_name("Host"), None);
    }

    // ---- typed keys ----

    #[test]
    fn host_component_concatenation() {
        let node = HostKey::new("emmy", "n0001").unwrap();
        let thread = node.clone().component("hwthread", 3).unwrap();
        assert_eq!(thread.components(), ["hwthread3"]);
        let gpu = HostKey::new("alex", "a0101").unwrap().component("accelerator", "00000000:3B:00.0").unwrap();
        assert_eq!(gpu.components(), ["accelerator00000000:3B:00.0"]);
        assert_eq!(gpu.path().to_string(), "host:alex/a0101/accelerator00000000:3B:00.0");
        let nested = node.component("socket", 0).unwrap().component("core", 12).unwrap();
        assert_eq!(nested.path().to_string(), "host:emmy/n0001/socket0/core12");
        assert_eq!(nested.cluster(), "emmy");
        assert_eq!(nested.host(), "n0001");
    }

    #[test]
    fn host_component_validation() {
        let node = HostKey::new("emmy", "n0001").unwrap();
        assert_eq!(node.clone().component("", 3), Err(KeyError::Empty { what: "component kind" }));
        assert_eq!(node.clone().component("hwthread", ""), Err(KeyError::Empty { what: "component id" }));
        assert!(matches!(node.clone().component("gpu", "0/1"), Err(KeyError::Separator { what: "component id", .. })));
        assert!(matches!(node.clone().component("hw ", 1), Err(KeyError::Whitespace { what: "component kind", .. })));
        assert_eq!(
            node.clone().component(&"k".repeat(100), "i".repeat(29)),
            Err(KeyError::TooLong { what: "component", len: 129, max: 128 })
        );
        let mut key = node;
        for i in 0..HostKey::MAX_COMPONENTS {
            key = key.component("level", i).unwrap();
        }
        assert_eq!(key.component("level", 99), Err(KeyError::TooManySegments { len: 9, max: 8 }));
        assert!(matches!(HostKey::new("emmy", ""), Err(KeyError::Empty { what: "host" })));
        assert!(matches!(HostKey::new("a/b", "n1"), Err(KeyError::Separator { what: "cluster", .. })));
    }

    #[test]
    fn host_from_path() {
        let key = HostKey::new("emmy", "n0001").unwrap().component("socket", 1).unwrap();
        assert_eq!(HostKey::from_path(&key.path()), Ok(key));
        assert!(HostKey::from_path(&path(Namespace::Host, &["emmy"])).is_err());
        assert!(HostKey::from_path(&path(Namespace::Job, &["a", "b"])).is_err());
    }

    #[test]
    fn job_and_service_keys() {
        let job = JobKey::new("1234.batch", "map", 7).unwrap();
        assert_eq!(job.path().to_string(), "job:1234.batch/map/7");
        assert_eq!(JobKey::from_path(&job.path()), Ok(job.clone()));
        assert_eq!((job.job(), job.operator(), job.subtask()), ("1234.batch", "map", 7));
        assert!(JobKey::from_path(&path(Namespace::Job, &["j", "op", "07"])).is_err());
        assert!(JobKey::from_path(&path(Namespace::Job, &["j", "op", "-1"])).is_err());
        assert!(JobKey::from_path(&path(Namespace::Job, &["j", "op"])).is_err());
        assert!(matches!(JobKey::new("j", "", 0), Err(KeyError::Empty { what: "operator" })));

        let svc = ServiceKey::new("ingest", "0").unwrap();
        assert_eq!(svc.path().to_string(), "service:ingest/0");
        assert_eq!(ServiceKey::from_path(&svc.path()), Ok(svc.clone()));
        assert_eq!((svc.service(), svc.instance()), ("ingest", "0"));
        assert!(ServiceKey::from_path(&path(Namespace::Host, &["ingest", "0"])).is_err());
        assert!(matches!(ServiceKey::new("ingest", " 0"), Err(KeyError::Whitespace { what: "instance", .. })));
    }

    #[test]
    fn same_strings_in_different_namespaces_encode_differently() {
        let host = HostKey::new("a", "b").unwrap().path().to_bytes();
        let svc = ServiceKey::new("a", "b").unwrap().path().to_bytes();
        let job = JobKey::new("a", "b", 0).unwrap().path().to_bytes();
        // Host and service paths differ only in the tag byte.
        assert_eq!(host[1..], svc[1..]);
        assert_ne!(host, svc);
        assert_ne!(host, job);
        assert_ne!(svc, job);
    }

    // ---- proptests ----

    /// Chars allowed anywhere in a name (whitespace only inside, which `valid_name` ensures).
    fn name_char() -> impl Strategy<Value = char> {
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            2 => proptest::char::range('0', '9'),
            2 => prop::sample::select(vec![':', '.', '-', '_', ' ', 'A', 'Z', 'ü', '節', '🦀', '\u{a0}']),
            1 => any::<char>().prop_filter("allowed char", |c| !c.is_control() && *c != '/'),
        ]
    }

    /// Names that pass `validate_name`, up to the byte limit. Built valid rather than filtered,
    /// so high `PROPTEST_CASES` never hits the reject limit.
    fn valid_name() -> impl Strategy<Value = String> {
        prop::collection::vec(name_char(), 1..=MAX_NAME_BYTES).prop_map(|chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > MAX_NAME_BYTES {
                    break;
                }
                s.push(c);
            }
            let s = s.trim_matches(char::is_whitespace);
            if s.is_empty() || s == "." || s == ".." {
                format!("{s}x")
            } else {
                s.to_owned()
            }
        })
    }

    #[test]
    fn valid_name_strategy_only_yields_valid_names() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::default();
        for _ in 0..2000 {
            let name = valid_name().new_tree(&mut runner).unwrap().current();
            assert_eq!(validate_name("segment", &name), Ok(()), "{name:?}");
        }
    }

    fn any_namespace() -> impl Strategy<Value = Namespace> {
        prop::sample::select(Namespace::ALL.to_vec())
    }

    fn valid_path() -> impl Strategy<Value = SeriesPath> {
        (any_namespace(), prop::collection::vec(valid_name(), 1..=MAX_SEGMENTS))
            .prop_map(|(ns, segments)| SeriesPath::from_valid(ns, segments))
    }

    proptest! {
        #[test]
        fn prop_encode_decode_round_trip(p in valid_path(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = p.to_bytes();
            prop_assert_eq!(bytes.len(), p.encoded_len());
            prop_assert!(bytes.len() <= MAX_ENCODED_LEN);
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(SeriesPath::decode(&bytes), Ok((p, len)));
        }

        #[test]
        fn prop_display_parse_round_trip(p in valid_path()) {
            let text = p.to_string();
            prop_assert_eq!(text.parse::<SeriesPath>(), Ok(p));
        }

        #[test]
        fn prop_new_accepts_valid_segments(ns in any_namespace(), segments in prop::collection::vec(valid_name(), 1..=MAX_SEGMENTS)) {
            let p = SeriesPath::new(ns, segments.clone());
            prop_assert_eq!(p.map(|p| p.segments().to_vec()), Ok(segments));
        }

        #[test]
        fn prop_truncated_encoding_is_rejected(p in valid_path(), cut in any::<prop::sample::Index>()) {
            let bytes = p.to_bytes();
            let cut = cut.index(bytes.len());
            prop_assert!(SeriesPath::decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn prop_decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((p, used)) = SeriesPath::decode(&bytes) {
                // Whatever decodes is canonical: it re-encodes to exactly the bytes consumed.
                prop_assert_eq!(p.to_bytes(), &bytes[..used]);
            }
        }

        #[test]
        fn prop_decode_plausible_headers_never_panics(
            tag in 0u8..5,
            count in 0u8..10,
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = vec![tag, count];
            bytes.extend_from_slice(&body);
            if let Ok((p, used)) = SeriesPath::decode(&bytes) {
                prop_assert_eq!(p.to_bytes(), &bytes[..used]);
            }
        }

        #[test]
        fn prop_decode_mutated_encoding_never_panics(p in valid_path(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = p.to_bytes();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            if let Ok((q, used)) = SeriesPath::decode(&bytes) {
                prop_assert_eq!(q.to_bytes(), &bytes[..used]);
            }
        }

        #[test]
        fn prop_parse_arbitrary_text_never_panics(s in "((host|job|service):)?.{0,200}") {
            if let Ok(p) = s.parse::<SeriesPath>() {
                prop_assert_eq!(p.to_string(), s);
            }
        }

        #[test]
        fn prop_different_namespaces_never_encode_equal(a in valid_path(), b in valid_path(), shift in 1usize..Namespace::ALL.len()) {
            // Move b into a namespace other than a's, keeping its segments.
            let other = Namespace::ALL[(a.namespace().tag() as usize - 1 + shift) % Namespace::ALL.len()];
            let b = SeriesPath::new(other, b.segments().to_vec()).unwrap();
            prop_assert_ne!(a.namespace(), b.namespace());
            prop_assert_ne!(a.to_bytes(), b.to_bytes());
            let same_segments = SeriesPath::new(other, a.segments().to_vec()).unwrap();
            prop_assert_ne!(a.to_bytes(), same_segments.to_bytes());
        }

        #[test]
        fn prop_typed_keys_in_different_namespaces_differ(
            x in valid_name(),
            y in valid_name(),
            subtask in any::<u32>(),
        ) {
            let host = HostKey::new(&x, &y).map(|k| k.path().to_bytes());
            let job = JobKey::new(&x, &y, subtask).map(|k| k.path().to_bytes());
            let svc = ServiceKey::new(&x, &y).map(|k| k.path().to_bytes());
            let (host, job, svc) = (host.unwrap(), job.unwrap(), svc.unwrap());
            prop_assert_ne!(&host, &job);
            prop_assert_ne!(&host, &svc);
            prop_assert_ne!(&job, &svc);
        }

        #[test]
        fn prop_host_key_round_trips_through_path(
            cluster in valid_name(),
            host in valid_name(),
            components in prop::collection::vec(("[a-z]{1,12}", any::<u32>()), 0..=HostKey::MAX_COMPONENTS),
        ) {
            let mut key = HostKey::new(&cluster, &host).unwrap();
            for (kind, id) in &components {
                key = key.component(kind, id).unwrap();
            }
            let p = key.path();
            prop_assert_eq!(p.segments().len(), 2 + components.len());
            for (segment, (kind, id)) in p.segments()[2..].iter().zip(&components) {
                prop_assert_eq!(segment, &format!("{kind}{id}"));
            }
            prop_assert_eq!(HostKey::from_path(&p), Ok(key));
        }
    }
}
