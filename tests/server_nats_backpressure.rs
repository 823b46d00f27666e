//! NATS flow control against a real `nats-server` (Debian package `nats-server`), with the ingest in this
//! process: while the head is far over its memory cap the workers hold back instead of writing, what silt
//! holds stays within its limits, the messages it cannot hold are dropped and counted as slow-consumer
//! events, and once the head is back under the cap every message it kept is written.
//!
//! The head is kept over its cap by pausing the engine's writer (`Engine::pause`): head pages are only
//! released by a checkpoint, which the writer completes, so the maintenance thread cannot bring the head
//! down meanwhile. Nothing here depends on timing: every wait is for a state the ingest must reach.
//!
//! Without `nats-server` on the machine the test says so and passes, unless `SILT_REQUIRE_NATS=1`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, nats_or_skip, nats_publish};
use silt::ingest::lineproto::Precision;
use silt::server::config::{NatsConfig, NatsSubscription};
use silt::server::nats::{NatsIngest, NatsLimits, WORKERS};
use silt::server::AppState;
use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Db, HostKey, MetricConfig, Options};

const T: i64 = 1_700_000_000;

/// The value of a metric line (with its labels, if any) on `/metrics`; 0 if absent.
fn metric(st: &AppState, name: &str) -> u64 {
    let text = st.metrics.render(&st.db, None);
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

fn has_value(db: &Db, host: &str) -> bool {
    let r = db.read(&HostKey::new("c", host).expect("key"), "load", T, T + 10).expect("read");
    r.values.iter().any(|v| !v.is_nan())
}

const OK: &str = "silt_nats_messages_total{result=\"ok\"}";
const ERRORS: &str = "silt_nats_messages_total{result=\"error\"}";
const SLOW: &str = "silt_nats_slow_consumer_total";
const QUEUED: &str = "silt_nats_queued_messages";
const HOLDING: &str = "silt_nats_workers_holding";

#[test]
fn nats_workers_hold_back_while_the_head_is_over_its_memory_cap_and_drop_what_they_cannot_hold() {
    let Some((mut nats, port)) = nats_or_skip() else { return };

    // A head memory cap of 8 pages of 4 KiB; the background pass runs only when a write nudges it.
    let db = Db::open(
        "/db",
        Options {
            vfs: Arc::new(SimVfs::new()),
            checkpoint_interval: None,
            pages_per_file: 64,
            memory_cap_bytes: 8 * 4096,
            maintenance_interval: Duration::from_secs(3600),
            ..Options::default()
        },
    )
    .expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    let st = AppState::new(Arc::new(db));
    let limits = NatsLimits {
        subscription_capacity: 4,
        queue_messages: 4,
        queue_bytes: 1 << 20,
        hold_poll: Duration::from_millis(5),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let config = NatsConfig {
        address: format!("nats://127.0.0.1:{port}"),
        username: None,
        password: None,
        creds_file_path: None,
    };
    let subs = [NatsSubscription { subscribe_to: "silt-flood".into(), cluster_tag: Some("c".into()) }];
    let ingest = rt.block_on(NatsIngest::start_with(&config, &subs, st.clone(), limits)).expect("start");

    // Core NATS delivers only to subscriptions the server knows: publish until one message is stored.
    let probe = format!("load,hostname=probe value=1 {T}");
    let seen =
        eventually(30, || nats_publish(port, "silt-flood", std::slice::from_ref(&probe)) && metric(&st, OK) >= 1);
    assert!(seen, "the probe never arrived over NATS");
    // (A late probe may still be counted; the flood below is checked by what is stored.)

    // Put the head over its cap (13 series, a page each) and pause the writer, so that it stays
    // there. The maintenance pass the write nudges may bring it down before the pause: then again.
    let mut round = 0;
    let pause = loop {
        round += 1;
        assert!(round <= 50, "the head never stayed over its cap");
        let lines: String = (0..13).map(|h| format!("load,hostname=r{round}h{h} value=1 {T}\n")).collect();
        st.lines.write(&st.db, lines.as_bytes(), Some("c"), Precision::Auto, T).expect("write");
        let pause = st.db.engine().pause().expect("pause");
        if st.db.over_memory_cap() {
            break pause;
        }
    };

    // 60 messages of a new series each: the workers take one each and hold back; the queue and the
    // subscription's buffer fill; the client drops the rest and counts them.
    let sent = 60;
    let flood: Vec<String> = (0..sent).map(|i| format!("load,hostname=f{i} value=1 {T}")).collect();
    let stored = |db: &Db| (0..sent).filter(|i| has_value(db, &format!("f{i}"))).count() as u64;
    assert!(nats_publish(port, "silt-flood", &flood));
    // At most: one per worker, the queue, one in a reader's hand, the subscription's buffer.
    let held = WORKERS + limits.queue_messages + 1 + limits.subscription_capacity;
    let mut max_queued = 0;
    let settled = eventually(30, || {
        max_queued = max_queued.max(metric(&st, QUEUED));
        metric(&st, HOLDING) == WORKERS as u64 && metric(&st, SLOW) >= (sent - held) as u64
    });
    assert!(
        settled,
        "workers holding {}, dropped {}, queued {}",
        metric(&st, HOLDING),
        metric(&st, SLOW),
        metric(&st, QUEUED)
    );
    max_queued = max_queued.max(metric(&st, QUEUED));
    // Counted from the reader's hand (one per subscription) to written: the workers' and the queue's.
    assert!(max_queued <= (WORKERS + limits.queue_messages + 1) as u64, "{max_queued} queued");
    // Reads go on meanwhile (the writer's pause alone would also keep the flood out of the head: what
    // shows the hold is the workers' gauge above).
    assert_eq!(stored(&st.db), 0);
    assert!(has_value(&st.db, "probe"));

    // Under the cap again: the messages kept are written, and only those; every message was either
    // written or counted as dropped (60 drops fit the client's queue of 128 events, so none is lost).
    drop(pause);
    st.db.enforce_memory_cap().expect("enforce the cap");
    let done = eventually(60, || {
        metric(&st, QUEUED) == 0 && metric(&st, HOLDING) == 0 && stored(&st.db) + metric(&st, SLOW) == sent as u64
    });
    let (written, dropped) = (stored(&st.db), metric(&st, SLOW));
    assert!(done, "{written} written + {dropped} dropped != {sent}; queued {}", metric(&st, QUEUED));
    assert!(written >= WORKERS as u64 && dropped >= (sent - held) as u64, "{written} written, {dropped} dropped");
    assert_eq!(metric(&st, ERRORS), 0);

    rt.block_on(ingest.stop());
    nats.kill().expect("kill nats");
    let _ = nats.wait();
}
