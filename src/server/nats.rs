//! NATS ingest, as cc-metric-store's `ReceiveNats`: subscribe to each of `metric-store.nats-subscriptions`,
//! decode every message as line protocol (the subscription's `cluster-tag` is the cluster of lines without
//! a `cluster` tag) and write it through the same [`crate::ingest::writer::LineWriter`] as `/api/write`.
//!
//! The client (`async-nats`) reconnects on its own, forever, with a delay that grows to 2 s, and
//! re-subscribes; start-up does not wait for the NATS server either. A bad line is logged and counted, and
//! the lines before it are stored, as over HTTP.
//!
//! **Flow control.** Core NATS has none: the server pushes messages as they are published, and a consumer
//! that cannot keep up loses messages (at-most-once delivery; only JetStream acknowledges). silt keeps what
//! it holds bounded and counts what it loses:
//! - each subscription's buffer in the client holds at most [`NatsLimits::subscription_capacity`] messages
//!   (async-nats's default is 65,536, of up to the server's `max_payload`, 1 MiB by default, each); a
//!   message that finds it full is dropped by the client and counted in `silt_nats_slow_consumer_total`;
//! - from there messages go over a queue bounded in messages and in bytes ([`NatsLimits::queue_messages`],
//!   [`NatsLimits::queue_bytes`]; `silt_nats_queued_messages`) to [`WORKERS`] threads that decode and
//!   write them, at the lower priority of HTTP writes' decoding ([`crate::server::DECODE_NICE`]);
//! - a worker holds back, polling every [`NatsLimits::hold_poll`], while the head is over its memory cap
//!   ([`crate::Db::over_memory_cap`], the condition under which HTTP writes are answered 503;
//!   `silt_nats_workers_holding`), so the queue and then the subscription buffers fill, and further
//!   messages are dropped rather than held in memory.
//!
//! So silt holds at most `subscriptions × subscription_capacity` messages in the client, `queue_bytes` in
//! the queue and one message per worker. A publisher that must not lose messages needs JetStream (not
//! supported yet) or to publish no faster than silt commits. At shutdown the workers stop holding back and
//! write what was received.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::ingest::lineproto::Precision;
use crate::server::config::{NatsConfig, NatsSubscription};
use crate::server::AppState;

/// Threads that decode and write NATS messages.
pub const WORKERS: usize = 2;

/// How much NATS ingest holds in memory ([`NatsLimits::DEFAULT`]); see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct NatsLimits {
    /// Messages each subscription's buffer in the client holds before the client drops further ones.
    pub subscription_capacity: usize,
    /// Messages queued between the subscriptions and the workers.
    pub queue_messages: usize,
    /// Payload bytes queued between the subscriptions and the workers (a larger message waits for all).
    pub queue_bytes: usize,
    /// How often a worker holding back looks at the head's memory again.
    pub hold_poll: Duration,
}

impl NatsLimits {
    /// 256 messages per subscription, a queue of 1024 messages or 64 MiB, polled every 20 ms.
    pub const DEFAULT: NatsLimits = NatsLimits {
        subscription_capacity: 256,
        queue_messages: 1024,
        queue_bytes: 64 << 20,
        hold_poll: Duration::from_millis(20),
    };
}

impl Default for NatsLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A running NATS ingest; [`NatsIngest::stop`] drains it.
pub struct NatsIngest {
    client: async_nats::Client,
    /// Set by [`NatsIngest::stop`]: the workers stop holding back for the memory cap.
    stopping: Arc<AtomicBool>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct Job {
    payload: axum::body::Bytes,
    cluster: Option<Arc<str>>,
    subject: Arc<str>,
    /// The payload's share of [`NatsLimits::queue_bytes`], given back once the message is written.
    _bytes: tokio::sync::OwnedSemaphorePermit,
}

impl NatsIngest {
    /// Connects (retrying in the background if the server is not up yet) and subscribes.
    pub async fn start(config: &NatsConfig, subs: &[NatsSubscription], state: AppState) -> Result<NatsIngest, Error> {
        Self::start_with(config, subs, state, NatsLimits::DEFAULT).await
    }

    /// [`NatsIngest::start`] with other limits.
    pub async fn start_with(
        config: &NatsConfig,
        subs: &[NatsSubscription],
        state: AppState,
        limits: NatsLimits,
    ) -> Result<NatsIngest, Error> {
        let mut opts = match (&config.username, &config.password) {
            (Some(u), Some(p)) if !u.is_empty() => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            _ => async_nats::ConnectOptions::new(),
        };
        if let Some(path) = config.creds_file_path.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| Error::InvalidArgument(format!("nats.creds-file-path {}: {e}", path.display())))?;
        }
        let address = config.address.clone();
        let logged = address.clone();
        // Errors repeat at every reconnect attempt: log the first of each outage only.
        let quiet = Arc::new(AtomicBool::new(false));
        let metrics = state.metrics.clone();
        let client = opts
            .name("silt")
            .subscription_capacity(limits.subscription_capacity.max(1))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(2000)))
            .event_callback(move |event| {
                let address = logged.clone();
                let quiet = quiet.clone();
                let metrics = metrics.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            quiet.store(false, Ordering::Relaxed);
                            tracing::info!(%address, "NATS connected");
                        }
                        async_nats::Event::Disconnected => tracing::warn!(%address, "NATS disconnected"),
                        async_nats::Event::ClientError(e) => {
                            if !quiet.swap(true, Ordering::Relaxed) {
                                tracing::warn!(%address, error = %e, "NATS unreachable; retrying until it is back");
                            }
                        }
                        // One event per message dropped (the client's events are themselves a bounded
                        // queue of 128, so a burst may count fewer than were dropped).
                        async_nats::Event::SlowConsumer(sid) => {
                            let n = metrics.nats_slow_consumer();
                            if n.is_power_of_two() {
                                tracing::warn!(%address, subscription = sid, dropped = n,
                                    "NATS slow consumer: silt cannot keep up, messages dropped");
                            }
                        }
                        other => tracing::warn!(%address, event = %other, "NATS"),
                    }
                }
            })
            .connect(address.as_str())
            .await
            .map_err(|e| Error::InvalidArgument(format!("nats.address {address:?}: {e}")))?;

        let (tx, rx) = mpsc::channel::<Job>(limits.queue_messages.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let stopping = Arc::new(AtomicBool::new(false));
        let workers = (0..WORKERS)
            .map(|i| {
                let rx = rx.clone();
                let state = state.clone();
                let stopping = stopping.clone();
                std::thread::Builder::new()
                    .name(format!("silt-nats-{i}"))
                    .spawn(move || worker(&rx, &state, &stopping, limits.hold_poll))
                    .map_err(|e| Error::InvalidArgument(format!("starting a NATS worker: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let budget = (limits.queue_bytes >> 10).max(1);
        let bytes = Arc::new(tokio::sync::Semaphore::new(budget));
        let mut readers = Vec::new();
        for sub in subs {
            let mut subscriber = client
                .subscribe(sub.subscribe_to.clone())
                .await
                .map_err(|e| Error::InvalidArgument(format!("subscribing to {:?}: {e}", sub.subscribe_to)))?;
            tracing::info!(subject = %sub.subscribe_to, cluster = ?sub.cluster_tag, "NATS subscribed");
            let tx = tx.clone();
            let cluster: Option<Arc<str>> = sub.cluster_tag.as_deref().map(Arc::from);
            let subject: Arc<str> = Arc::from(sub.subscribe_to.as_str());
            let (bytes, queued) = (bytes.clone(), state.metrics.nats_queued.clone());
            readers.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(msg) = subscriber.next().await {
                    // Its share of the queue's bytes, in KiB (a message larger than the queue waits for all).
                    let kib = u32::try_from(msg.payload.len().div_ceil(1024).clamp(1, budget)).unwrap_or(u32::MAX);
                    let Ok(permit) = bytes.clone().acquire_many_owned(kib).await else { break };
                    let job = Job {
                        payload: msg.payload,
                        cluster: cluster.clone(),
                        subject: subject.clone(),
                        _bytes: permit,
                    };
                    queued.inc();
                    if tx.send(job).await.is_err() {
                        queued.dec();
                        break;
                    }
                }
            }));
        }
        Ok(NatsIngest { client, stopping, readers, workers })
    }

    /// Unsubscribes, writes the messages already received, and stops the workers.
    pub async fn stop(self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Err(e) = self.client.drain().await {
            tracing::warn!(error = %e, "draining NATS");
        }
        for r in self.readers {
            let _ = r.await;
        }
        // The readers held the senders: the workers see the channel close once it is empty.
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>, state: &AppState, stopping: &AtomicBool, poll: Duration) {
    // Decoding yields to reads, as for HTTP writes.
    crate::storage::io::lower_thread_priority(crate::server::DECODE_NICE);
    loop {
        let Some(job) = rx.lock().blocking_recv() else { return };
        // Hold back while the head is far over its memory cap (HTTP writes are refused with 503 then), so
        // the queue backs up instead of the head growing; at shutdown, write what was received.
        if state.db.over_memory_cap() && !stopping.load(Ordering::Relaxed) {
            state.metrics.nats_workers_holding.inc();
            while state.db.over_memory_cap() && !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(poll);
            }
            state.metrics.nats_workers_holding.dec();
        }
        let report =
            state.lines.write(&state.db, &job.payload, job.cluster.as_deref(), Precision::Auto, crate::db::unix_now());
        match report {
            Ok(r) => {
                let refused = r.ack.map_or(0, |a| a.outcome.too_old + a.outcome.out_of_range);
                state.metrics.nats_message(r.error.is_none() && refused == 0);
                if let Some((line, e)) = r.error {
                    tracing::warn!(subject = %job.subject, line, error = %e, "NATS message: bad line");
                }
                if refused > 0 {
                    tracing::warn!(subject = %job.subject, refused, "NATS message: samples older than the data kept");
                }
            }
            Err(e) => {
                state.metrics.nats_message(false);
                tracing::error!(subject = %job.subject, error = %e, "NATS message not written");
            }
        }
        drop(job);
        state.metrics.nats_queued.dec();
    }
}
