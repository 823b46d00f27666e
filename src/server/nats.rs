//! NATS ingest, as cc-metric-store's `ReceiveNats`: subscribe to each of `metric-store.nats-subscriptions`,
//! decode every message as line protocol (the subscription's `cluster-tag` is the cluster of lines without
//! a `cluster` tag) and write it through the same [`crate::ingest::writer::LineWriter`] as `/api/write`.
//!
//! The client (`async-nats`) reconnects on its own, forever, with a delay that grows to 2 s, and
//! re-subscribes; start-up does not wait for the NATS server either. Messages go from each subscription
//! over a bounded channel to [`WORKERS`] threads that decode and write them, so a slow disk holds messages
//! back in NATS's buffers instead of growing silt's memory. A bad line is logged and counted, and the
//! lines before it are stored, as over HTTP.

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

/// Messages queued between the subscriptions and the workers.
const QUEUE: usize = 1024;

/// A running NATS ingest; [`NatsIngest::stop`] drains it.
pub struct NatsIngest {
    client: async_nats::Client,
    readers: Vec<tokio::task::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct Job {
    payload: axum::body::Bytes,
    cluster: Option<Arc<str>>,
    subject: Arc<str>,
}

impl NatsIngest {
    /// Connects (retrying in the background if the server is not up yet) and subscribes.
    pub async fn start(config: &NatsConfig, subs: &[NatsSubscription], state: AppState) -> Result<NatsIngest, Error> {
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
        let quiet = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = opts
            .name("silt")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(2000)))
            .event_callback(move |event| {
                let address = logged.clone();
                let quiet = quiet.clone();
                async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    match event {
                        async_nats::Event::Connected => {
                            quiet.store(false, Relaxed);
                            tracing::info!(%address, "NATS connected");
                        }
                        async_nats::Event::Disconnected => tracing::warn!(%address, "NATS disconnected"),
                        async_nats::Event::ClientError(e) => {
                            if !quiet.swap(true, Relaxed) {
                                tracing::warn!(%address, error = %e, "NATS unreachable; retrying until it is back");
                            }
                        }
                        other => tracing::warn!(%address, event = %other, "NATS"),
                    }
                }
            })
            .connect(address.as_str())
            .await
            .map_err(|e| Error::InvalidArgument(format!("nats.address {address:?}: {e}")))?;

        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..WORKERS)
            .map(|i| {
                let rx = rx.clone();
                let state = state.clone();
                std::thread::Builder::new()
                    .name(format!("silt-nats-{i}"))
                    .spawn(move || worker(&rx, &state))
                    .map_err(|e| Error::InvalidArgument(format!("starting a NATS worker: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

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
            readers.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(msg) = subscriber.next().await {
                    let job = Job { payload: msg.payload, cluster: cluster.clone(), subject: subject.clone() };
                    if tx.send(job).await.is_err() {
                        break;
                    }
                }
            }));
        }
        Ok(NatsIngest { client, readers, workers })
    }

    /// Unsubscribes, writes the messages already received, and stops the workers.
    pub async fn stop(self) {
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

fn worker(rx: &Mutex<mpsc::Receiver<Job>>, state: &AppState) {
    loop {
        let Some(job) = rx.lock().blocking_recv() else { return };
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
    }
}
