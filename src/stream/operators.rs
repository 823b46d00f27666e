//! Operators: what a subtask runs. A [`Source`] produces batches; an [`Operator`] turns each input batch
//! into zero or more output batches through a [`Collector`] and may emit more when its inputs end.

use arrow_array::{Array, BooleanArray, Int64Array, RecordBatch};

use super::StreamError;

/// Where an operator's output goes (the next operator of its chain, or the channels after it).
pub trait Collector {
    /// Emits a batch.
    fn emit(&mut self, batch: RecordBatch) -> Result<(), StreamError>;
}

/// What a source has now.
#[derive(Debug)]
pub enum SourcePoll {
    /// A batch.
    Batch(RecordBatch),
    /// Nothing yet (a live source between writes); the task waits a little and polls again.
    Idle,
    /// The end: the source will produce nothing more.
    End,
}

/// Produces the batches of one source subtask. Called from a worker slot's thread among other tasks, so
/// `poll` must not block for long: a source waiting for data returns [`SourcePoll::Idle`].
pub trait Source: Send {
    /// The next batch, if there is one now.
    fn poll(&mut self) -> Result<SourcePoll, StreamError>;
    /// The event time up to which this source has emitted everything (a watermark), asked after every
    /// batch and after an idle poll; `None` if it tracks none.
    fn watermark(&self) -> Option<i64> {
        None
    }
    /// The source's position, for a checkpoint: restoring it makes the source emit what follows. Empty for
    /// a source that cannot be replayed (it resumes wherever it is).
    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        Ok(Vec::new())
    }
    /// Moves the source to a position [`Source::snapshot`] returned.
    fn restore(&mut self, _state: &[u8]) -> Result<(), StreamError> {
        Ok(())
    }
}

/// Transforms batches.
pub trait Operator: Send {
    /// Processes one batch from input `input` (the index of the edge among the node's inputs).
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut dyn Collector) -> Result<(), StreamError>;
    /// The watermark advanced: no row with an earlier event time will come any more. Called before the
    /// watermark is passed on downstream.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut dyn Collector) -> Result<(), StreamError> {
        Ok(())
    }
    /// Called once when every input has ended; may emit what it still holds.
    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), StreamError> {
        Ok(())
    }
    /// The operator's state at a checkpoint barrier (every input before the barrier processed, nothing
    /// after). A sink makes what it wrote so far durable before returning. Empty for a stateless operator.
    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        Ok(Vec::new())
    }
    /// Restores the state [`Operator::snapshot`] returned, before any input.
    fn restore(&mut self, _state: &[u8]) -> Result<(), StreamError> {
        Ok(())
    }
}

/// Reads the position a vector source saved.
fn restore_position(state: &[u8], len: usize) -> Result<usize, StreamError> {
    let bytes: [u8; 8] = state
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StreamError::Operator(format!("source state is {} bytes, want at least 8", state.len())))?;
    let pos = u64::from_le_bytes(bytes);
    usize::try_from(pos)
        .ok()
        .filter(|&p| p <= len)
        .ok_or_else(|| StreamError::Operator(format!("source position {pos} is past its {len} batches")))
}

/// A source over batches given up front; its state is the number of batches emitted.
pub struct VecSource {
    batches: Vec<RecordBatch>,
    pos: usize,
}

impl VecSource {
    /// A source emitting `batches` in order.
    pub fn new(batches: Vec<RecordBatch>) -> Self {
        VecSource { batches, pos: 0 }
    }
}

impl Source for VecSource {
    fn poll(&mut self) -> Result<SourcePoll, StreamError> {
        let Some(b) = self.batches.get(self.pos) else { return Ok(SourcePoll::End) };
        self.pos += 1;
        Ok(SourcePoll::Batch(b.clone()))
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        Ok((self.pos as u64).to_le_bytes().to_vec())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), StreamError> {
        self.pos = restore_position(state, self.batches.len())?;
        Ok(())
    }
}

/// A source over batches given up front, in event-time order, whose watermark is the largest event time
/// (an `Int64` column) emitted so far. Its state is the number of batches emitted and that watermark.
pub struct OrderedVecSource {
    batches: Vec<RecordBatch>,
    pos: usize,
    time_column: String,
    max_time: Option<i64>,
}

impl OrderedVecSource {
    /// A source emitting `batches` in order, with event times in `time_column`.
    pub fn new(batches: Vec<RecordBatch>, time_column: &str) -> Self {
        OrderedVecSource { batches, pos: 0, time_column: time_column.to_owned(), max_time: None }
    }
}

impl Source for OrderedVecSource {
    fn poll(&mut self) -> Result<SourcePoll, StreamError> {
        let Some(b) = self.batches.get(self.pos) else { return Ok(SourcePoll::End) };
        self.pos += 1;
        let t = int64_column(b, &self.time_column)?;
        if let Some(m) = (0..t.len()).map(|i| t.value(i)).max() {
            self.max_time = Some(self.max_time.map_or(m, |x| x.max(m)));
        }
        Ok(SourcePoll::Batch(b.clone()))
    }

    fn watermark(&self) -> Option<i64> {
        self.max_time
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut s = (self.pos as u64).to_le_bytes().to_vec();
        if let Some(m) = self.max_time {
            s.extend_from_slice(&m.to_le_bytes());
        }
        Ok(s)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), StreamError> {
        self.pos = restore_position(state, self.batches.len())?;
        self.max_time = match state.len() {
            8 => None,
            16 => Some(i64::from_le_bytes(state[8..16].try_into().unwrap_or_default())),
            n => return Err(StreamError::Operator(format!("ordered source state is {n} bytes, want 8 or 16"))),
        };
        Ok(())
    }
}

fn int64_column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Int64Array, StreamError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| StreamError::Operator(format!("no Int64 column {name:?}")))
}

/// An aggregate of a window's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Number of rows.
    Count,
    /// Sum.
    Sum,
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// The value of the row with the latest event time (the last such row seen on ties).
    Last,
}

#[derive(Clone, Copy, Debug)]
struct Acc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: (i64, f64),
}

impl Acc {
    fn new() -> Self {
        Acc { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, last: (i64::MIN, f64::NAN) }
    }
    fn add(&mut self, t: i64, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if t >= self.last.0 {
            self.last = (t, v);
        }
    }
    fn get(&self, a: Aggregate) -> f64 {
        match a {
            Aggregate::Count => self.count as f64,
            Aggregate::Sum => self.sum,
            Aggregate::Avg => self.sum / self.count as f64,
            Aggregate::Min => self.min,
            Aggregate::Max => self.max,
            Aggregate::Last => self.last.1,
        }
    }
}

/// Tumbling (or, with [`TumblingWindow::sliding`], sliding) event-time windows per key: input columns `key` (`Int64`), `time` (`Int64`, seconds) and
/// `value` (`Float64`); output `key`, `window_start`, `value` (the aggregate), one row per key and window,
/// emitted when the watermark passes the window's end (and the rest at the end of input), in window order.
/// A row whose window has already been emitted is late: it is counted in [`TumblingWindow::late`], not
/// aggregated. So is a row so close to `i64::MIN` that its window would start before `i64::MIN`.
pub struct TumblingWindow {
    /// Window length in seconds.
    pub width: i64,
    /// Seconds between window starts (`width` for tumbling windows; less for sliding, overlapping ones).
    pub slide: i64,
    /// The aggregate.
    pub aggregate: Aggregate,
    /// Names of the key, time and value columns.
    pub columns: [String; 3],
    /// Open windows by (start, key).
    open: std::collections::BTreeMap<(i64, i64), Acc>,
    /// Windows ending at or before this are emitted.
    emitted_to: i64,
    /// Late rows dropped (and rows whose window would start before `i64::MIN`).
    pub late: u64,
}

impl TumblingWindow {
    /// A window operator.
    pub fn new(width: i64, aggregate: Aggregate, key: &str, time: &str, value: &str) -> Self {
        TumblingWindow {
            width: width.max(1),
            slide: width.max(1),
            aggregate,
            columns: [key.to_owned(), time.to_owned(), value.to_owned()],
            open: std::collections::BTreeMap::new(),
            emitted_to: i64::MIN,
            late: 0,
        }
    }

    /// Sliding windows: `width` long, one starting every `slide` seconds (`1 ≤ slide ≤ width`), so each row
    /// counts in `ceil(width / slide)` windows or so.
    pub fn sliding(width: i64, slide: i64, aggregate: Aggregate, key: &str, time: &str, value: &str) -> Self {
        let mut w = Self::new(width, aggregate, key, time, value);
        w.slide = slide.clamp(1, w.width);
        w
    }

    /// The schema it reads with its default column names: `key`, `time`, `value` (`Int64`, `Int64`, `Float64`).
    pub fn input_schema() -> arrow_schema::SchemaRef {
        use arrow_schema::{DataType, Field, Schema};
        std::sync::Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("time", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]))
    }

    /// The schema of what it emits.
    pub fn output_schema() -> arrow_schema::SchemaRef {
        use arrow_schema::{DataType, Field, Schema};
        std::sync::Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("window_start", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]))
    }

    fn emit_until(&mut self, end: i64, out: &mut dyn Collector) -> Result<(), StreamError> {
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut values = Vec::new();
        while let Some((&(start, key), acc)) = self.open.first_key_value() {
            if start.saturating_add(self.width) > end {
                break;
            }
            keys.push(key);
            starts.push(start);
            values.push(acc.get(self.aggregate));
            self.open.pop_first();
        }
        self.emitted_to = self.emitted_to.max(end);
        if keys.is_empty() {
            return Ok(());
        }
        let cols: Vec<arrow_array::ArrayRef> = vec![
            std::sync::Arc::new(Int64Array::from(keys)),
            std::sync::Arc::new(Int64Array::from(starts)),
            std::sync::Arc::new(arrow_array::Float64Array::from(values)),
        ];
        out.emit(RecordBatch::try_new(Self::output_schema(), cols)?)
    }
}

impl Operator for TumblingWindow {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut dyn Collector) -> Result<(), StreamError> {
        let [k, t, v] = &self.columns;
        let keys = int64_column(&batch, k)?;
        let times = int64_column(&batch, t)?;
        let values = batch
            .column_by_name(v)
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::Float64Array>())
            .ok_or_else(|| StreamError::Operator(format!("no Float64 column {v:?}")))?;
        for i in 0..batch.num_rows() {
            let time = times.value(i);
            // The windows holding `time`: starts on the slide grid in (time - width, time]. Within one slide
            // of i64::MIN the latest such start is below i64::MIN: no window can hold the row.
            let Some(last) = time.div_euclid(self.slide).checked_mul(self.slide) else {
                self.late += 1;
                continue;
            };
            let mut start = last;
            let mut counted = false;
            while start > time.saturating_sub(self.width) {
                if start.saturating_add(self.width) > self.emitted_to {
                    self.open.entry((start, keys.value(i))).or_insert_with(Acc::new).add(time, values.value(i));
                    counted = true;
                }
                // Near i64::MIN there is no earlier window start.
                let Some(prev) = start.checked_sub(self.slide) else { break };
                start = prev;
            }
            if !counted {
                self.late += 1;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut dyn Collector) -> Result<(), StreamError> {
        // No row earlier than the watermark will come: windows ending at or before it are complete.
        self.emit_until(watermark, out)
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<(), StreamError> {
        self.emit_until(i64::MAX, out)
    }

    /// Window state v1 (`format/checkpoint.md`, "Operator states"): the configuration (checked on restore),
    /// `emitted_to`, `late` and every open window with its accumulator, f64s as bits.
    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        let count = u32::try_from(self.open.len())
            .map_err(|_| StreamError::Operator(format!("window: {} open windows do not fit a u32", self.open.len())))?;
        let mut s = Vec::with_capacity(WINDOW_STATE_HEADER + WINDOW_STATE_ENTRY * self.open.len());
        s.push(WINDOW_STATE_VERSION);
        s.extend_from_slice(&self.width.to_le_bytes());
        s.extend_from_slice(&self.slide.to_le_bytes());
        s.push(aggregate_tag(self.aggregate));
        s.extend_from_slice(&self.emitted_to.to_le_bytes());
        s.extend_from_slice(&self.late.to_le_bytes());
        s.extend_from_slice(&count.to_le_bytes());
        for (&(start, key), acc) in &self.open {
            for word in [
                start as u64,
                key as u64,
                acc.count,
                acc.sum.to_bits(),
                acc.min.to_bits(),
                acc.max.to_bits(),
                acc.last.0 as u64,
                acc.last.1.to_bits(),
            ] {
                s.extend_from_slice(&word.to_le_bytes());
            }
        }
        Ok(s)
    }

    /// Restores window state v1. Refuses (changing nothing) a state of another version, width, slide or
    /// aggregate than this operator's, a length that does not match its window count, and open windows
    /// that could not exist: out of order, off the slide grid, already emitted, or empty.
    fn restore(&mut self, state: &[u8]) -> Result<(), StreamError> {
        let err = |what: String| StreamError::Operator(format!("window state: {what}"));
        if state.len() < WINDOW_STATE_HEADER {
            return Err(err(format!("{} bytes, shorter than its {WINDOW_STATE_HEADER}-byte header", state.len())));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&state[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if state[0] != WINDOW_STATE_VERSION {
            return Err(err(format!("version {} (this build reads {WINDOW_STATE_VERSION})", state[0])));
        }
        let (width, slide, tag) = (word(1) as i64, word(9) as i64, state[17]);
        let aggregate = aggregate_of(tag).ok_or_else(|| err(format!("unknown aggregate tag {tag}")))?;
        if (width, slide, aggregate) != (self.width, self.slide, self.aggregate) {
            return Err(err(format!(
                "taken with width {width}, slide {slide}, {aggregate:?}; this operator has width {}, slide {}, {:?}",
                self.width, self.slide, self.aggregate
            )));
        }
        let emitted_to = word(18) as i64;
        let late = word(26);
        let count = u32::from_le_bytes([state[34], state[35], state[36], state[37]]) as usize;
        let want = (count as u64) * WINDOW_STATE_ENTRY as u64 + WINDOW_STATE_HEADER as u64;
        if state.len() as u64 != want {
            return Err(err(format!("{} bytes, but {count} open windows need {want}", state.len())));
        }
        let mut open = std::collections::BTreeMap::new();
        let mut prev: Option<(i64, i64)> = None;
        for i in 0..count {
            let at = WINDOW_STATE_HEADER + i * WINDOW_STATE_ENTRY;
            let w = |k: usize| word(at + 8 * k);
            let (start, key) = (w(0) as i64, w(1) as i64);
            if prev.is_some_and(|p| p >= (start, key)) {
                return Err(err(format!("open window ({start}, {key}) is out of order")));
            }
            if start.checked_rem_euclid(self.slide) != Some(0) || start.saturating_add(self.width) <= emitted_to {
                return Err(err(format!(
                    "open window at {start} is off the slide grid or was emitted (emitted to {emitted_to})"
                )));
            }
            let acc = Acc {
                count: w(2),
                sum: f64::from_bits(w(3)),
                min: f64::from_bits(w(4)),
                max: f64::from_bits(w(5)),
                last: (w(6) as i64, f64::from_bits(w(7))),
            };
            if acc.count == 0 {
                return Err(err(format!("open window ({start}, {key}) has no rows")));
            }
            open.insert((start, key), acc);
            prev = Some((start, key));
        }
        self.open = open;
        self.emitted_to = emitted_to;
        self.late = late;
        Ok(())
    }
}

/// The version byte of [`TumblingWindow`]'s state.
const WINDOW_STATE_VERSION: u8 = 1;
/// Bytes of that state before the open windows.
const WINDOW_STATE_HEADER: usize = 38;
/// Bytes per open window in that state.
const WINDOW_STATE_ENTRY: usize = 64;

/// An aggregate's tag in window state.
fn aggregate_tag(a: Aggregate) -> u8 {
    match a {
        Aggregate::Count => 0,
        Aggregate::Sum => 1,
        Aggregate::Avg => 2,
        Aggregate::Min => 3,
        Aggregate::Max => 4,
        Aggregate::Last => 5,
    }
}

/// The aggregate of a tag in window state.
fn aggregate_of(tag: u8) -> Option<Aggregate> {
    Some(match tag {
        0 => Aggregate::Count,
        1 => Aggregate::Sum,
        2 => Aggregate::Avg,
        3 => Aggregate::Min,
        4 => Aggregate::Max,
        5 => Aggregate::Last,
        _ => return None,
    })
}

/// Keeps the rows a predicate selects.
pub struct Filter<F>(pub F);

impl<F> Operator for Filter<F>
where
    F: FnMut(&RecordBatch) -> Result<BooleanArray, StreamError> + Send,
{
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut dyn Collector) -> Result<(), StreamError> {
        let keep = (self.0)(&batch)?;
        let kept = arrow_select::filter::filter_record_batch(&batch, &keep)?;
        if kept.num_rows() > 0 {
            out.emit(kept)?;
        }
        Ok(())
    }
}

/// Maps each batch to another (projection, derived columns).
pub struct Map<F>(pub F);

impl<F> Operator for Map<F>
where
    F: FnMut(RecordBatch) -> Result<RecordBatch, StreamError> + Send,
{
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut dyn Collector) -> Result<(), StreamError> {
        out.emit((self.0)(batch)?)
    }
}

/// Sends every batch it gets, with its subtask index, to a channel (a sink for tests and embedding).
pub struct ChannelSink {
    /// The subtask this sink runs as.
    pub subtask: usize,
    /// Where batches go.
    pub tx: crossbeam_channel::Sender<(usize, RecordBatch)>,
}

impl Operator for ChannelSink {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut dyn Collector) -> Result<(), StreamError> {
        self.tx.send((self.subtask, batch)).map_err(|_| StreamError::Operator("the sink's receiver is gone".into()))
    }
}
