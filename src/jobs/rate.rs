//! Rates from counters, smoothed, kept in a fixed ring (Arroyo's `RateMetric` and `CircularBuffer`).
//!
//! A [`RateMetric`] is fed a monotonic counter's value every [`COLLECTION_RATE`]. The first value gives
//! no rate (there is nothing to take a difference from). Each later one gives
//! `rate = (value - previous) / seconds between them`, where a counter that went down (a restarted
//! pipeline starts its counters again at zero) counts as no increase, rate 0, and then the smoothed value
//! `ewma = EWMA_ALPHA * rate + (1 - EWMA_ALPHA) * last ewma` (the first rate is taken as it is). A value
//! whose time is not after the previous one is ignored. The smoothed values are kept, with their times, in
//! a [`CircularBuffer`] of [`NUM_BUCKETS`]: five minutes at one every two seconds; older ones are
//! overwritten. History beyond that lives in the store ([`super::store`]).

use std::time::Duration;

/// How often counters are sampled.
pub const COLLECTION_RATE: Duration = Duration::from_secs(2);

/// How much history a ring keeps.
pub const COLLECTION_TIME: Duration = Duration::from_secs(5 * 60);

/// Slots in a ring: 150.
pub const NUM_BUCKETS: usize = (COLLECTION_TIME.as_secs() / COLLECTION_RATE.as_secs()) as usize;

/// Weight of the newest rate in the smoothed value.
pub const EWMA_ALPHA: f64 = 0.1;

/// A ring of the last `N` values pushed, oldest overwritten first.
#[derive(Clone, Debug)]
pub struct CircularBuffer<T: Copy + Default, const N: usize> {
    values: [T; N],
    /// Where the next value goes.
    next: usize,
    /// Values pushed over the ring's life (so `min(len, N)` are held).
    pushed: u64,
}

impl<T: Copy + Default, const N: usize> Default for CircularBuffer<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> CircularBuffer<T, N> {
    /// An empty ring.
    pub fn new() -> Self {
        assert!(N > 0, "a ring needs at least one slot");
        CircularBuffer { values: [T::default(); N], next: 0, pushed: 0 }
    }

    /// Adds a value, overwriting the oldest when full.
    pub fn push(&mut self, v: T) {
        self.values[self.next] = v;
        self.next = (self.next + 1) % N;
        self.pushed += 1;
    }

    /// Values held (at most `N`).
    pub fn len(&self) -> usize {
        self.pushed.min(N as u64) as usize
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// The newest value.
    pub fn last(&self) -> Option<T> {
        (!self.is_empty()).then(|| self.values[(self.next + N - 1) % N])
    }

    /// The values held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        let len = self.len();
        let start = (self.next + N - len) % N;
        (0..len).map(move |i| self.values[(start + i) % N])
    }
}

/// A smoothed per-second rate of a monotonic counter, with its recent history.
#[derive(Clone, Debug, Default)]
pub struct RateMetric {
    values: CircularBuffer<(i64, f64), NUM_BUCKETS>,
    /// The previous counter reading: `(unix ms, value)`.
    prev: Option<(i64, u64)>,
}

impl RateMetric {
    /// A rate with no readings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the counter's value at `time_ms` (unix milliseconds); returns the new smoothed rate, if this
    /// reading gave one.
    pub fn add(&mut self, time_ms: i64, value: u64) -> Option<f64> {
        let mut out = None;
        if let Some((prev_t, prev_v)) = self.prev {
            if time_ms <= prev_t {
                return None;
            }
            let secs = (time_ms - prev_t) as f64 / 1e3;
            let rate = value.saturating_sub(prev_v) as f64 / secs;
            let ewma = match self.values.last() {
                Some((_, last)) => EWMA_ALPHA * rate + (1.0 - EWMA_ALPHA) * last,
                None => rate,
            };
            self.values.push((time_ms, ewma));
            out = Some(ewma);
        }
        self.prev = Some((time_ms, value));
        out
    }

    /// Whether no rate was computed yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The newest smoothed rate.
    pub fn last(&self) -> Option<f64> {
        self.values.last().map(|(_, v)| v)
    }

    /// The smoothed rates held, `(unix ms, per second)`, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.values.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_holds_the_last_n_in_order() {
        let mut r: CircularBuffer<u32, 3> = CircularBuffer::new();
        assert!(r.is_empty());
        assert_eq!(r.last(), None);
        assert_eq!(r.iter().count(), 0);
        r.push(1);
        r.push(2);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![1, 2]);
        r.push(3);
        r.push(4);
        r.push(5);
        assert_eq!(r.len(), 3);
        assert_eq!(r.last(), Some(5));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![3, 4, 5]);
        for i in 6..=100 {
            r.push(i);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![98, 99, 100]);
    }

    #[test]
    fn arroyo_sizes() {
        assert_eq!(NUM_BUCKETS, 150);
        let mut m = RateMetric::new();
        for i in 0..400u64 {
            m.add(i as i64 * 2000, i * 10);
        }
        // 399 rates were made; the ring keeps the last 150.
        let held: Vec<_> = m.iter().collect();
        assert_eq!(held.len(), 150);
        assert_eq!(held[0].0, 250 * 2000);
        assert_eq!(held[149].0, 399 * 2000);
    }

    #[test]
    fn first_reading_gives_no_rate_then_ewma() {
        let mut m = RateMetric::new();
        assert_eq!(m.add(0, 100), None);
        assert!(m.is_empty());
        // 200 more in 2 s: 100/s, taken as it is.
        assert_eq!(m.add(2000, 300), Some(100.0));
        // 40 more in 2 s: 20/s; 0.1 * 20 + 0.9 * 100 = 92.
        let r = m.add(4000, 340).expect("rate");
        assert!((r - 92.0).abs() < 1e-9, "{r}");
        // Nothing more: 0.9 * 92 = 82.8.
        let r = m.add(6000, 340).expect("rate");
        assert!((r - 82.8).abs() < 1e-9, "{r}");
        // 4 s gap, 400 more: 100/s; 0.1 * 100 + 0.9 * 82.8 = 84.52.
        let r = m.add(10_000, 740).expect("rate");
        assert!((r - 84.52).abs() < 1e-9, "{r}");
        assert_eq!(m.iter().map(|(t, _)| t).collect::<Vec<_>>(), vec![2000, 4000, 6000, 10_000]);
    }

    #[test]
    fn a_counter_that_goes_down_counts_as_zero() {
        let mut m = RateMetric::new();
        m.add(0, 1000);
        assert_eq!(m.add(2000, 1200), Some(100.0));
        // Reset to 50: no increase, rate 0 -> 0.9 * 100.
        let r = m.add(4000, 50).expect("rate");
        assert!((r - 90.0).abs() < 1e-9, "{r}");
        // Counting resumes from the new base: 100 in 2 s = 50/s -> 0.1 * 50 + 0.9 * 90 = 86.
        let r = m.add(6000, 150).expect("rate");
        assert!((r - 86.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_reading_not_after_the_previous_is_ignored() {
        let mut m = RateMetric::new();
        m.add(2000, 10);
        assert_eq!(m.add(2000, 50), None);
        assert_eq!(m.add(1000, 50), None);
        // The base is still (2000, 10).
        assert_eq!(m.add(4000, 30), Some(10.0));
    }
}
