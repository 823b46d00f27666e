//! Ingestion front ends: decoders that turn client request bodies into [`crate::Batch`]es, and
//! [`writer::LineWriter`], which writes line-protocol bodies into a [`crate::Db`] with a cache of the
//! series it has seen. The decoders are pure (no I/O, no locks).

pub mod lineproto;
pub mod writer;
