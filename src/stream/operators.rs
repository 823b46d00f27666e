//! Operators: what a subtask runs. A [`Source`] produces batches; an [`Operator`] turns each input batch
//! into zero or more output batches through a [`Collector`] and may emit more when its inputs end.

use arrow_array::{BooleanArray, RecordBatch};

use super::StreamError;

/// Where an operator's output goes (the next operator of its chain, or the channels after it).
pub trait Collector {
    /// Emits a batch.
    fn emit(&mut self, batch: RecordBatch) -> Result<(), StreamError>;
}

/// Produces the batches of one source subtask.
pub trait Source: Send {
    /// The next batch, `None` at the end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, StreamError>;
}

/// Transforms batches.
pub trait Operator: Send {
    /// Processes one batch from input `input` (the index of the edge among the node's inputs).
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut dyn Collector) -> Result<(), StreamError>;
    /// Called once when every input has ended; may emit what it still holds.
    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), StreamError> {
        Ok(())
    }
}

/// A source over batches given up front.
pub struct VecSource(pub std::vec::IntoIter<RecordBatch>);

impl Source for VecSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, StreamError> {
        Ok(self.0.next())
    }
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
