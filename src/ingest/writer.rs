//! [`LineWriter`]: line-protocol bodies into the store, with the series of repeated lines resolved from a
//! cache instead of being parsed, validated and looked up again.
//!
//! A collector sends the same series every interval, so almost every line's measurement and tag set has
//! been seen before. The cache maps the exact bytes of a line's measurement and tag set, up to and
//! including the space that ends them, plus the request's default cluster, to the series id they resolved
//! to. The parser reads a line left to right looking at most one byte ahead, so two lines that agree on
//! those bytes have the same measurement and tags: a hit needs only the field set and timestamp parsed.
//! Which space a line is probed at does not matter for correctness: only keys recorded from a full parse
//! are in the cache, so a probe at the wrong place just misses.
//!
//! A collector also sends the same lines in the same order every interval, so a hash lookup per line (two
//! cache misses on a table of 100,000 series) is more than needed: each body of at least
//! [`TEMPLATE_MIN_LINES`] lines is remembered as a *template*, its heads back to back and their ids, under
//! the key of its first line. The next body that starts with the same head is compared line by line
//! against the template, sequentially in memory; a line that differs falls back to the hash cache.
//!
//! Series ids are never reused, so entries never go stale. The caches are bounded
//! ([`CACHE_MAX_ENTRIES`], [`TEMPLATE_MAX_BYTES`]) and start over when full.

use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::db::{Batch, Db, WriteAck};
use crate::error::Error;
use crate::ingest::lineproto::{
    fast_value_tail, parse_line_head_end, parse_line_tail, to_sample, value_and_time, Decoder, Line, LineError,
    Precision, MAX_LINE_BYTES,
};
use crate::keys::Key;
use crate::storage::SeriesId;

/// Most cached series before the cache starts over (about 100 bytes each).
pub const CACHE_MAX_ENTRIES: usize = 4 << 20;

/// Bodies with fewer lines are not kept as templates.
pub const TEMPLATE_MIN_LINES: usize = 8;

/// Most bytes of template heads kept before the templates start over.
pub const TEMPLATE_MAX_BYTES: usize = 256 << 20;

/// A body's lines as last seen: their heads back to back, and the series each resolved to.
#[derive(Debug, Default)]
struct Template {
    heads: Vec<u8>,
    /// `heads[ends[i-1]..ends[i]]` is line i's head (`ends[-1]` = 0).
    ends: Vec<u32>,
    /// `None` for a line of an undeclared metric: it is looked up again each time.
    ids: Vec<Option<SeriesId>>,
}

impl Template {
    /// Line `i`'s head, if the template has that many lines.
    fn head(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.heads[start..end])
    }

    /// If `line` starts with line `i`'s head (which ends with the space that ends it) and that line's series
    /// is known: the index of that space in `line`, and the series. The scan for a head's end reads only
    /// the bytes up to it, so `line`'s head ends at the same place: no need to scan `line` again.
    fn prefix_match(&self, i: usize, line: &[u8]) -> Option<(usize, SeriesId)> {
        let head = self.head(i)?;
        let id = self.ids[i]?;
        line.starts_with(head).then(|| (head.len() - 1, id))
    }

    fn matches(&self, i: usize, head: &[u8]) -> Option<SeriesId> {
        if self.head(i)? == head {
            self.ids[i]
        } else {
            None
        }
    }
}

#[derive(Debug, Default)]
struct Templates {
    by_first: FxHashMap<Box<[u8]>, Arc<Template>>,
    bytes: usize,
}

/// What writing one body did.
#[derive(Debug)]
pub struct LineWriteReport {
    /// Samples decoded and written (stored or counted as not stored in `ack`).
    pub added: usize,
    /// The write's acknowledgement; `None` when no line gave a sample.
    pub ack: Option<WriteAck>,
    /// The first bad line (1-based) and its error; the lines before it were written.
    pub error: Option<(usize, LineError)>,
}

/// A body decoded by [`LineWriter::decode`], not written yet.
#[derive(Debug)]
pub struct DecodedBody {
    batch: Batch,
    added: usize,
    error: Option<(usize, LineError)>,
}

impl DecodedBody {
    /// Samples decoded (lines up to the first bad one).
    pub fn samples(&self) -> usize {
        self.added
    }

    /// Writes the samples as one batch under the database's durability (nothing when no line gave one).
    pub fn write(self, db: &Db) -> Result<LineWriteReport, Error> {
        let ack = if self.added > 0 { Some(db.write(&self.batch)?) } else { None };
        Ok(LineWriteReport { added: self.added, ack, error: self.error })
    }
}

/// Writes line-protocol bodies into a [`Db`], caching series lookups across bodies. Share one per database.
#[derive(Debug, Default)]
pub struct LineWriter {
    cache: RwLock<FxHashMap<Box<[u8]>, SeriesId>>,
    templates: RwLock<Templates>,
}

/// A sample whose series is either known or the index of a new (measurement, tag set) in this body.
enum Pending {
    Known(SeriesId),
    New(usize),
}

struct NewSeries {
    cache_key: Box<[u8]>,
    path: Vec<u8>,
    metric: String,
}

/// Where the measurement and tag set of `line` probably end: the first space not escaped by a backslash.
fn probe_head_end(line: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'\\' => i += 2,
            b' ' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

impl LineWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Series currently cached.
    pub fn cached_series(&self) -> usize {
        self.cache.read().len()
    }

    /// Decodes `body` (see [`crate::ingest::lineproto::decode_into`] for the mapping) and writes what it
    /// decoded up to the first bad line as one batch, under the database's durability. A storage error is
    /// `Err`; a bad line is reported in [`LineWriteReport::error`] after the lines before it were written.
    /// The same as [`LineWriter::decode`] then [`DecodedBody::write`].
    pub fn write(
        &self,
        db: &Db,
        body: &[u8],
        default_cluster: Option<&str>,
        precision: Precision,
        now: i64,
    ) -> Result<LineWriteReport, Error> {
        self.decode(db, body, default_cluster, precision, now)?.write(db)
    }

    /// The CPU-bound half of [`LineWriter::write`]: decodes `body` up to its first bad line and resolves
    /// its series (defining new ones, which does not wait for the WAL), without writing the samples. The
    /// server runs this under its limit of writes decoded at once, and the write, which mostly waits for
    /// the WAL, outside it.
    pub fn decode(
        &self,
        db: &Db,
        body: &[u8],
        default_cluster: Option<&str>,
        precision: Precision,
        now: i64,
    ) -> Result<DecodedBody, Error> {
        // The cache key: the default cluster, length-prefixed, then the line's head bytes.
        let mut key = Vec::with_capacity(128);
        let cluster = default_cluster.unwrap_or("").as_bytes();
        key.extend_from_slice(&(cluster.len() as u32).to_le_bytes());
        key.extend_from_slice(cluster);
        let prefix = key.len();

        let mut pending: Vec<(Pending, i64, f64)> = Vec::new();
        // The byte range of each pending line's head in `body`, for the template.
        let mut heads: Vec<(usize, usize)> = Vec::new();
        let mut template: Option<Arc<Template>> = None;
        let mut template_hits = 0;
        let mut new: Vec<NewSeries> = Vec::new();
        let mut new_index: FxHashMap<Box<[u8]>, usize> = FxHashMap::default();
        let mut line = Line::default();
        let mut error = None;
        let mut decoder = Decoder::new(body);
        {
            let cache = self.cache.read();
            while let Some((no, raw)) = decoder.next_raw() {
                let i = pending.len();
                let offset = raw.as_ptr() as usize - body.as_ptr() as usize;
                // Fast path: a known head, so only the fields and the timestamp are parsed.
                if raw.len() <= MAX_LINE_BYTES {
                    // The template's line i, when this line starts with it, needs no scan for the head's end.
                    let hit = if i > 0 { template.as_ref().and_then(|t| t.prefix_match(i, raw)) } else { None };
                    if let Some(end) = hit.map(|(end, _)| end).or_else(|| probe_head_end(raw)) {
                        let head = &raw[..=end];
                        if i == 0 {
                            key.truncate(prefix);
                            key.extend_from_slice(head);
                            template = self.templates.read().by_first.get(key.as_slice()).cloned();
                        }
                        let mut id = match hit {
                            Some((_, id)) => Some(id),
                            None => template.as_ref().and_then(|t| t.matches(i, head)),
                        };
                        if id.is_some() {
                            template_hits += 1;
                        } else {
                            key.truncate(prefix);
                            key.extend_from_slice(head);
                            id = cache.get(key.as_slice()).copied();
                        }
                        if let Some(id) = id {
                            let parsed = match fast_value_tail(raw, end, precision, now) {
                                Some(v) => Ok(v),
                                None => parse_line_tail(raw, end, &mut line)
                                    .and_then(|()| value_and_time(&line, precision, now)),
                            };
                            match parsed {
                                Ok((value, ts)) => pending.push((Pending::Known(id), ts, value)),
                                Err(e) => {
                                    error = Some((no, e));
                                    break;
                                }
                            }
                            heads.push((offset, offset + end + 1));
                            continue;
                        }
                    }
                }
                // Slow path: the whole line, mapped and validated.
                let sample = parse_line_head_end(raw, &mut line)
                    .and_then(|end| to_sample(&line, default_cluster, precision, now).map(|s| (end, s)));
                let (end, sample) = match sample {
                    Ok(v) => v,
                    Err(e) => {
                        error = Some((no, e));
                        break;
                    }
                };
                key.truncate(prefix);
                key.extend_from_slice(&raw[..=end]);
                let n = match new_index.get(key.as_slice()) {
                    Some(&n) => n,
                    None => {
                        new.push(NewSeries {
                            cache_key: key.as_slice().into(),
                            path: sample.key.path().to_bytes(),
                            metric: sample.metric.into_owned(),
                        });
                        new_index.insert(key.as_slice().into(), new.len() - 1);
                        new.len() - 1
                    }
                };
                pending.push((Pending::New(n), sample.ts, sample.value));
                heads.push((offset, offset + end + 1));
            }
        }

        let mut new_ids = Vec::new();
        if !new.is_empty() {
            let wanted: Vec<(&[u8], &str)> = new.iter().map(|n| (n.path.as_slice(), n.metric.as_str())).collect();
            new_ids = db.intern_paths(&wanted)?;
            let mut cache = self.cache.write();
            if cache.len() + new.len() > CACHE_MAX_ENTRIES {
                cache.clear();
            }
            for (n, id) in new.into_iter().zip(&new_ids) {
                // Lines of undeclared metrics are not cached: the metric may be declared later.
                if let Some(id) = id {
                    cache.insert(n.cache_key, *id);
                }
            }
        }

        let ids: Vec<Option<SeriesId>> = pending
            .iter()
            .map(|(p, _, _)| match *p {
                Pending::Known(id) => Some(id),
                Pending::New(n) => new_ids[n],
            })
            .collect();
        if pending.len() >= TEMPLATE_MIN_LINES && template_hits < pending.len() {
            self.remember(&key[..prefix], body, &heads, ids.clone());
        }

        let mut batch = Batch::new();
        let mut unknown = 0;
        for (id, (_, ts, value)) in ids.iter().zip(&pending) {
            match id {
                Some(id) => batch.push_id(*id, *ts, *value),
                None => unknown += 1,
            }
        }
        batch.add_unknown(unknown);
        Ok(DecodedBody { batch, added: pending.len(), error })
    }

    /// Keeps `body`'s heads and ids as the template for bodies that start like it.
    fn remember(&self, cluster_prefix: &[u8], body: &[u8], heads: &[(usize, usize)], ids: Vec<Option<SeriesId>>) {
        // Sized exactly: grown line by line, the heads would hold up to twice their bytes.
        let bytes = heads.iter().map(|&(a, b)| b - a).sum();
        let mut t = Template { heads: Vec::with_capacity(bytes), ends: Vec::with_capacity(heads.len()), ids };
        for &(a, b) in heads {
            t.heads.extend_from_slice(&body[a..b]);
            t.ends.push(t.heads.len() as u32);
        }
        let (a, b) = heads[0];
        let first: Box<[u8]> = [cluster_prefix, &body[a..b]].concat().into();
        let mut templates = self.templates.write();
        if templates.bytes + t.heads.len() > TEMPLATE_MAX_BYTES {
            templates.by_first.clear();
            templates.bytes = 0;
        }
        templates.bytes += t.heads.len();
        if let Some(old) = templates.by_first.insert(first, Arc::new(t)) {
            templates.bytes -= old.heads.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Aggregation, HostKey, MetricConfig, Options};

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Options { checkpoint_interval: None, ..Options::default() }).unwrap();
        db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).unwrap();
        (dir, db)
    }

    fn values(db: &Db, host: &str, from: i64, to: i64) -> Vec<Option<f64>> {
        let r = db.read(&HostKey::new("c", host).unwrap(), "load", from, to).unwrap();
        r.values.iter().map(|v| if v.is_nan() { None } else { Some(*v) }).collect()
    }

    #[test]
    fn second_body_hits_the_cache_and_stores_the_same() {
        let (_d, db) = db();
        let w = LineWriter::new();
        let r = w.write(
            &db,
            b"load,hostname=a value=1 100\nload,hostname=b value=2 100\n",
            Some("c"),
            Precision::Seconds,
            0,
        );
        let r = r.unwrap();
        assert_eq!((r.added, r.error.is_none()), (2, true));
        assert_eq!(w.cached_series(), 2);
        let r = w.write(
            &db,
            b"load,hostname=a value=3 110\nload,hostname=b value=4 110\n",
            Some("c"),
            Precision::Seconds,
            0,
        );
        assert_eq!(r.unwrap().added, 2);
        assert_eq!(w.cached_series(), 2);
        assert_eq!(values(&db, "a", 100, 120), vec![Some(1.0), Some(3.0)]);
        assert_eq!(values(&db, "b", 100, 120), vec![Some(2.0), Some(4.0)]);
    }

    #[test]
    fn default_cluster_is_part_of_the_key() {
        let (_d, db) = db();
        let w = LineWriter::new();
        w.write(&db, b"load,hostname=a value=1 100\n", Some("c"), Precision::Seconds, 0).unwrap();
        w.write(&db, b"load,hostname=a value=2 100\n", Some("d"), Precision::Seconds, 0).unwrap();
        assert_eq!(values(&db, "a", 100, 110), vec![Some(1.0)]);
        let r = db.read(&HostKey::new("d", "a").unwrap(), "load", 100, 110).unwrap();
        assert_eq!(r.values, vec![2.0]);
    }

    #[test]
    fn a_bad_tail_after_a_cached_head_is_the_same_error_as_uncached() {
        let (_d, db) = db();
        let w = LineWriter::new();
        w.write(&db, b"load,hostname=a value=1 100\n", Some("c"), Precision::Seconds, 0).unwrap();
        for bad in
            [&b"load,hostname=a value=\"x\" 110"[..], b"load,hostname=a other=1 110", b"load,hostname=a value=1 x"]
        {
            let body = [&b"load,hostname=a value=5 120\n"[..], bad].concat();
            let cached = w.write(&db, &body, Some("c"), Precision::Seconds, 0).unwrap();
            let fresh = LineWriter::new().write(&db, &body, Some("c"), Precision::Seconds, 0).unwrap();
            let (no, e) = cached.error.expect("bad line reported");
            let (no2, e2) = fresh.error.expect("bad line reported");
            assert_eq!((no, e.to_string()), (no2, e2.to_string()));
            assert_eq!(no, 2);
            assert_eq!(cached.added, 1);
        }
    }

    #[test]
    fn escaped_space_in_a_tag_is_not_taken_for_the_end_of_the_head() {
        let (_d, db) = db();
        let w = LineWriter::new();
        // `a\ b` is the host "a b"... which validate_name refuses; an escaped comma in the measurement is
        // fine for the parser but not a valid metric either. Use an ignored tag with an escaped space.
        let body = b"load,hostname=a,note=x\\ y value=1 100\nload,hostname=a,note=x\\ y value=2 110\n";
        let r = w.write(&db, body, Some("c"), Precision::Seconds, 0).unwrap();
        assert_eq!((r.added, r.error.is_none()), (2, true));
        assert_eq!(w.cached_series(), 1);
        assert_eq!(values(&db, "a", 100, 120), vec![Some(1.0), Some(2.0)]);
    }

    #[test]
    fn undeclared_metric_is_counted_not_cached_and_found_once_declared() {
        let (_d, db) = db();
        let w = LineWriter::new();
        let r = w.write(&db, b"temp,hostname=a value=1 100\n", Some("c"), Precision::Seconds, 0).unwrap();
        assert_eq!(r.ack.unwrap().outcome.unknown_metric, 1);
        assert_eq!(w.cached_series(), 0);
        db.declare_metric("temp", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).unwrap();
        let r = w.write(&db, b"temp,hostname=a value=1 100\n", Some("c"), Precision::Seconds, 0).unwrap();
        assert_eq!(r.ack.unwrap().outcome.unknown_metric, 0);
        assert_eq!(w.cached_series(), 1);
    }

    #[test]
    fn order_of_lines_is_kept_for_one_slot() {
        let (_d, db) = db();
        let w = LineWriter::new();
        // First line new, second cached by then? No: the cache is filled after the body; both go the slow
        // path, and the later line must still win.
        let r = w.write(
            &db,
            b"load,hostname=a value=1 100\nload,hostname=a value=2 100\n",
            Some("c"),
            Precision::Seconds,
            0,
        );
        assert_eq!(r.unwrap().added, 2);
        assert_eq!(values(&db, "a", 100, 110), vec![Some(2.0)]);
        w.write(&db, b"load,hostname=a value=3 100\nload,hostname=a value=4 100\n", Some("c"), Precision::Seconds, 0)
            .unwrap();
        assert_eq!(values(&db, "a", 100, 110), vec![Some(4.0)]);
    }

    use crate::ingest::lineproto::decode_into;
    use proptest::prelude::*;

    const HEADS: [&str; 10] = [
        "load,hostname=a",
        "load,hostname=a,note=x\\ y",
        "load,host=a",
        " load,hostname=b",
        "load,hostname=b,type=node",
        "load,hostname=a,type=hwthread,type-id=1",
        "load,hostname=a,note=q\\\\",
        "lo\\ ad,hostname=a",
        "temp,hostname=a",
        "load,hostname=a,note=p\\",
    ];
    const SEPS: [&str; 3] = [" ", "  ", "\t"];
    const TAILS: [&str; 9] = [
        "value=1 100",
        "value=2.5 110",
        "value=3i",
        "value=\"s\" 100",
        "other=1 100",
        "value=1 abc",
        "value=1,x=2 120",
        "",
        "value=4 105",
    ];

    fn body(lines: &[(usize, usize, usize)]) -> Vec<u8> {
        let mut b = String::new();
        for &(h, s, t) in lines {
            // Most lines are good, so that bodies get long enough to become templates.
            let (h, t) =
                (if h < HEADS.len() { h } else { h % 7 }, if t < TAILS.len() { t } else { [0, 1, 2, 6, 8][t % 5] });
            b.push_str(HEADS[h]);
            b.push_str(SEPS[s]);
            b.push_str(TAILS[t]);
            b.push('\n');
        }
        b.into_bytes()
    }

    fn snapshot(db: &Db) -> Vec<Vec<Option<f64>>> {
        ["a", "b"].iter().map(|h| values(db, h, 90, 130)).collect()
    }

    proptest! {
        /// Writing bodies through the cache stores and reports exactly what decoding each body afresh does.
        #[test]
        fn cached_writes_match_plain_decoding(
            bodies in prop::collection::vec(prop::collection::vec((0..HEADS.len() * 2, 0..SEPS.len(), 0..TAILS.len() * 4), 0..24), 1..6)
        ) {
            let (_d1, cached_db) = db();
            let (_d2, plain_db) = db();
            let w = LineWriter::new();
            for lines in &bodies {
                let body = body(lines);
                let got = w.write(&cached_db, &body, Some("c"), Precision::Seconds, 7).unwrap();
                let mut batch = Batch::new();
                let want = decode_into(&body, &mut batch, Some("c"), Precision::Seconds, 7);
                if !batch.is_empty() {
                    plain_db.write(&batch).unwrap();
                }
                match want {
                    Ok(n) => {
                        prop_assert_eq!(got.added, n);
                        prop_assert!(got.error.is_none());
                    }
                    Err(e) => {
                        prop_assert_eq!(got.added, e.added);
                        let (line, err) = got.error.expect("error reported");
                        prop_assert_eq!((line, err.to_string()), (e.line, e.error.to_string()));
                    }
                }
                prop_assert_eq!(snapshot(&cached_db), snapshot(&plain_db));
            }
        }
    }
}
