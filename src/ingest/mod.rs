//! Ingestion front ends: decoders that turn client request bodies into [`crate::Batch`]es. They are pure
//! (no I/O, no locks); the server feeds them bodies and writes the batches they fill.

pub mod lineproto;
