//! Downsampling of a time series for the query layer, with the semantics of ClusterCockpit
//! cc-metric-store's `resampler` package (as used by `MemoryStore.Read`).
//!
//! Input is a regular series: `values[i]` stands for time `from + i * frequency` and NaN means "missing".
//! [`resample`] reduces it to the requested `resolution` (seconds) and returns the values together with the
//! resolution actually used, so the caller can always tell what was done.
//!
//! Rules, checked in this order:
//!
//! 1. `frequency <= 0` or `resolution < 0`: [`ResolutionError::NotPositive`] (carrying `frequency` if that is
//!    the bad one, otherwise `resolution`).
//! 2. `resolution == 0` (meaning "native") or `resolution == frequency`: the series is returned unchanged with
//!    `frequency`.
//! 3. `resolution % frequency != 0` (this includes `0 < resolution < frequency`):
//!    [`ResolutionError::NotMultiple`]. Errors are reported whatever the length of the series.
//! 4. With `k = resolution / frequency` and the target point count `n_out = ceil(len / k)`
//!    (equal to `ceil(len * frequency / resolution)`, computed without overflow): if
//!    `len < MIN_POINTS_TO_RESAMPLE` or `n_out >= len`, the series is returned unchanged with `frequency`.
//! 5. Otherwise the series is reduced and `resolution` is returned:
//!    * [`Resampler::Average`]: output point `i` is the mean of the non-NaN values of the bucket
//!      `[i*k, (i+1)*k)`; the last bucket may be partial, so there are exactly `n_out` points. A bucket without
//!      non-NaN values gives NaN. A bucket holding both `+inf` and `-inf` gives NaN; one holding only one sign of
//!      infinity gives that infinity. Otherwise the mean is clamped to the bucket's `[min, max]` (guards against
//!      rounding and overflow of the running sum).
//!    * [`Resampler::Lttb`]: Largest-Triangle-Three-Buckets to `max(n_out, 3)` points (so a request for fewer
//!      than 3 points still yields 3). The first and the last input points are always kept (even if NaN). The
//!      `len - 2` middle points are split into `m - 2` consecutive buckets (`m` = output length), bucket `b`
//!      being `[floor(b * (len-2) / (m-2)) + 1, floor((b+1) * (len-2) / (m-2)) + 1)`; the bucket after the last
//!      middle bucket is the last point. From each bucket the point with the largest score is chosen, where
//!      x is the input index and:
//!      - the *anchor* A is the most recently chosen non-NaN point (the first point if it is not NaN; none
//!        if no non-NaN point has been chosen yet);
//!      - C is the average (mean index, mean of non-NaN values as for `Average`) of the non-NaN points of the
//!        next bucket; none if that bucket has no non-NaN point or the mean is NaN;
//!      - the score of a non-NaN candidate B is twice the triangle area `|(Ax-Cx)(By-Ay) - (Ax-Bx)(Cy-Ay)|`
//!        if A and C exist, `|By-Ay|` if only A exists, `|By-Cy|` if only C exists, and 0 if neither does;
//!        a NaN score (from infinities) counts as `-inf`;
//!      - NaN candidates are never chosen; ties go to the earliest point. If a whole bucket is NaN its output
//!        point is NaN, which keeps gaps visible.
//!
//!      Every non-NaN output value is therefore bitwise one of the input values, in input order.
//!
//! Timestamps stay implicit: output point `i` stands for time `from + i * returned_resolution`. For `Average`
//! that is exact (the bucket's start). For `Lttb` it is an approximation: LTTB picks real points at irregular
//! times within their buckets (and its buckets are not aligned to `k`), but, like cc-metric-store, the result is
//! reported on the regular grid.

use std::fmt;

/// How to reduce points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Resampler {
    /// Largest-Triangle-Three-Buckets: keeps real points that preserve the visual shape (spikes survive).
    #[default]
    Lttb,
    /// Mean of the non-NaN values of each bucket of `resolution / frequency` input points.
    Average,
}

/// Why a resolution is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolutionError {
    /// The requested resolution is not a whole multiple of the series' frequency.
    NotMultiple {
        /// The requested resolution in seconds.
        resolution: i64,
        /// The series' frequency in seconds.
        frequency: i64,
    },
    /// A negative resolution or a non-positive frequency; carries the offending value
    /// (the frequency if it is the bad one, otherwise the resolution).
    NotPositive(i64),
}

impl fmt::Display for ResolutionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolutionError::NotMultiple { resolution, frequency } => {
                write!(f, "resolution {resolution}s is not a multiple of the frequency {frequency}s")
            }
            ResolutionError::NotPositive(value) => write!(f, "resolution or frequency {value}s is not positive"),
        }
    }
}

impl std::error::Error for ResolutionError {}

/// Points below which a series is returned unchanged (cc-metric-store's rule).
pub const MIN_POINTS_TO_RESAMPLE: usize = 1000;

/// Downsamples `values` (one every `frequency` seconds, NaN = missing) to `resolution` seconds.
///
/// Returns the values and the resolution actually used: `frequency` when the series is returned unchanged,
/// `resolution` when it was reduced. See the module documentation for the exact rules.
///
/// # Errors
///
/// [`ResolutionError::NotPositive`] if `frequency <= 0` or `resolution < 0`;
/// [`ResolutionError::NotMultiple`] if `resolution` (non-zero, not equal to `frequency`) is not a multiple of
/// `frequency`.
pub fn resample(
    values: &[f64],
    frequency: i64,
    resolution: i64,
    how: Resampler,
) -> Result<(Vec<f64>, i64), ResolutionError> {
    if frequency <= 0 {
        return Err(ResolutionError::NotPositive(frequency));
    }
    if resolution < 0 {
        return Err(ResolutionError::NotPositive(resolution));
    }
    if resolution == 0 || resolution == frequency {
        return Ok((values.to_vec(), frequency));
    }
    if resolution % frequency != 0 {
        return Err(ResolutionError::NotMultiple { resolution, frequency });
    }
    // resolution > frequency > 0 here, so k >= 2.
    let k = usize::try_from(resolution / frequency).unwrap_or(usize::MAX).max(1);
    let len = values.len();
    let n_out = len.div_ceil(k);
    if len < MIN_POINTS_TO_RESAMPLE || n_out >= len {
        return Ok((values.to_vec(), frequency));
    }
    let out = match how {
        Resampler::Lttb => lttb_indices(values, n_out.max(3))
            .into_iter()
            .map(|idx| idx.and_then(|i| values.get(i).copied()).unwrap_or(f64::NAN))
            .collect(),
        Resampler::Average => values.chunks(k).map(mean_ignoring_nan).collect(),
    };
    Ok((out, resolution))
}

/// Mean of the non-NaN values: NaN if there are none or if both infinities occur, the infinity if only one sign
/// occurs, otherwise the mean clamped to `[min, max]` (robust against rounding and overflow of the sum).
fn mean_ignoring_nan(values: &[f64]) -> f64 {
    let mut count = 0usize;
    let mut sum = 0.0f64;
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    for &v in values.iter().filter(|v| !v.is_nan()) {
        count += 1;
        sum += v;
        min = min.min(v);
        max = max.max(v);
    }
    if count == 0 || (min == f64::NEG_INFINITY && max == f64::INFINITY) {
        return f64::NAN;
    }
    if max == f64::INFINITY || min == f64::NEG_INFINITY {
        return if max == f64::INFINITY { f64::INFINITY } else { f64::NEG_INFINITY };
    }
    let n = count as f64;
    let mean = if sum.is_finite() {
        sum / n
    } else {
        // The running sum of finite values overflowed: sum pre-scaled values instead.
        values.iter().filter(|v| !v.is_nan()).map(|v| v / n).sum()
    };
    mean.max(min).min(max)
}

/// Start of LTTB middle bucket `b` (of `buckets`, over `middle` points starting at index 1).
fn bucket_start(b: usize, middle: usize, buckets: usize) -> usize {
    let start = (b as u128) * (middle as u128) / (buckets.max(1) as u128) + 1;
    usize::try_from(start).unwrap_or(usize::MAX)
}

/// Mean point (mean index, mean value) of the non-NaN values of `values`, whose first index is `offset`.
fn mean_point(values: &[f64], offset: usize) -> Option<(f64, f64)> {
    let y = mean_ignoring_nan(values);
    if y.is_nan() {
        return None;
    }
    let (count, index_sum) = values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .fold((0usize, 0.0f64), |(c, s), (i, _)| (c + 1, s + (offset + i) as f64));
    if count == 0 {
        return None;
    }
    Some((index_sum / count as f64, y))
}

/// LTTB selection: for each of the `n` output points, the input index chosen, or `None` for an all-NaN bucket.
///
/// Returns every index unchanged if `n >= values.len()`, `n < 3` or the series has fewer than 3 points.
fn lttb_indices(values: &[f64], n: usize) -> Vec<Option<usize>> {
    let len = values.len();
    if n >= len || n < 3 || len < 3 {
        return (0..len).map(Some).collect();
    }
    let buckets = n - 2;
    let middle = len - 2;
    let last = len - 1;
    let mut out = Vec::with_capacity(n);
    out.push(Some(0));
    let mut anchor: Option<(f64, f64)> = values.first().copied().filter(|v| !v.is_nan()).map(|v| (0.0, v));
    for b in 0..buckets {
        let start = bucket_start(b, middle, buckets);
        let end = bucket_start(b + 1, middle, buckets).min(last);
        let (next_start, next_end) =
            if b + 1 < buckets { (end, bucket_start(b + 2, middle, buckets).min(last)) } else { (last, len) };
        let next = mean_point(values.get(next_start..next_end).unwrap_or(&[]), next_start);
        let bucket = values.get(start..end).unwrap_or(&[]);
        let mut best: Option<(usize, f64)> = None;
        for (offset, &y) in bucket.iter().enumerate() {
            if y.is_nan() {
                continue;
            }
            let j = start + offset;
            let x = j as f64;
            let score = match (anchor, next) {
                (Some((ax, ay)), Some((cx, cy))) => ((ax - cx) * (y - ay) - (ax - x) * (cy - ay)).abs(),
                (Some((_, ay)), None) => (y - ay).abs(),
                (None, Some((_, cy))) => (y - cy).abs(),
                (None, None) => 0.0,
            };
            let score = if score.is_nan() { f64::NEG_INFINITY } else { score };
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((j, score));
            }
        }
        match best {
            Some((j, _)) => {
                out.push(Some(j));
                anchor = values.get(j).map(|&v| (j as f64, v));
            }
            None => out.push(None),
        }
    }
    out.push(Some(last));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;

    // ---- LTTB, hand-computed ----

    #[test]
    fn lttb_small_hand_computed() {
        // len 7, n 4: buckets [1,3) and [3,6), then the last point 6.
        // Bucket 0: A=(0,0), C=(4,5/3): areas idx1 = 7/3, idx2 = 50/3 -> idx2 (5).
        // Bucket 1: A=(2,5), C=(6,0): areas idx3 = 7, idx4 = 10, idx5 = 7 -> idx4 (0).
        let v = [0.0, 1.0, 5.0, 2.0, 0.0, 3.0, 0.0];
        assert_eq!(lttb_indices(&v, 4), vec![Some(0), Some(2), Some(4), Some(6)]);
    }

    #[test]
    fn lttb_all_nan_bucket_gives_gap() {
        // Bucket 1 is all NaN -> None; bucket 0 has no C, so score |y - Ay| picks idx2 (5).
        let v = [0.0, 1.0, 5.0, NAN, NAN, NAN, 0.0];
        assert_eq!(lttb_indices(&v, 4), vec![Some(0), Some(2), None, Some(6)]);
    }

    #[test]
    fn lttb_never_picks_nan_over_value() {
        let v = [0.0, NAN, 1.0, 2.0, NAN, NAN, 0.0];
        assert_eq!(lttb_indices(&v, 4), vec![Some(0), Some(2), Some(3), Some(6)]);
    }

    #[test]
    fn lttb_nan_first_point_has_no_anchor() {
        // No A: score |y - Cy| with Cy = 5/3 -> idx2 (5); then as in the hand-computed case.
        let v = [NAN, 1.0, 5.0, 2.0, 0.0, 3.0, 0.0];
        assert_eq!(lttb_indices(&v, 4), vec![Some(0), Some(2), Some(4), Some(6)]);
    }

    #[test]
    fn lttb_infinite_scores_do_not_panic_and_pick_a_value() {
        let v = [INF, -INF, INF, NAN, -INF, INF, 1.0];
        let idx = lttb_indices(&v, 4);
        assert_eq!(idx.len(), 4);
        assert!(idx.iter().all(|i| i.is_some()));
    }

    #[test]
    fn lttb_degenerate_inputs_are_identity() {
        assert_eq!(lttb_indices(&[], 3), Vec::<Option<usize>>::new());
        assert_eq!(lttb_indices(&[1.0, 2.0], 3), vec![Some(0), Some(1)]);
        assert_eq!(lttb_indices(&[1.0, 2.0, 3.0, 4.0], 2), vec![Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn lttb_long_series_keeps_ends_and_spike() {
        let mut v: Vec<f64> = (0..1200).map(|i| 1.0 + (i % 7) as f64 * 0.01).collect();
        v[0] = -5.0;
        v[1199] = 7.0;
        v[601] = 100.0;
        let (out, res) = resample(&v, 10, 100, Resampler::Lttb).unwrap();
        assert_eq!(res, 100);
        assert_eq!(out.len(), 120);
        assert_eq!(out[0], -5.0);
        assert_eq!(out[119], 7.0);
        assert_eq!(out.iter().filter(|&&x| x == 100.0).count(), 1);
        // The spike is reported near its place on the grid (601 / 10 = 60.1).
        let pos = out.iter().position(|&x| x == 100.0).unwrap();
        assert!((59..=61).contains(&pos), "spike at {pos}");
    }

    #[test]
    fn lttb_fewer_than_three_targets_gives_three_points() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let (out, res) = resample(&v, 1, 1000, Resampler::Lttb).unwrap();
        assert_eq!(res, 1000);
        assert_eq!(out.len(), 3);
        assert_eq!((out[0], out[2]), (0.0, 999.0));
        let (avg, res) = resample(&v, 1, 1000, Resampler::Average).unwrap();
        assert_eq!((avg, res), (vec![499.5], 1000));
    }

    // ---- Average, hand-computed ----

    #[test]
    fn average_partial_last_bucket() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let (out, res) = resample(&v, 1, 3, Resampler::Average).unwrap();
        assert_eq!(res, 3);
        assert_eq!(out.len(), 334);
        for (i, &x) in out[..333].iter().enumerate() {
            assert_eq!(x, (3 * i + 1) as f64);
        }
        assert_eq!(out[333], 999.0);
    }

    #[test]
    fn average_buckets_with_nan() {
        let mut v = vec![2.0; 1000];
        v[0] = 1.0;
        v[1] = NAN;
        v[2] = 3.0;
        v[3] = NAN;
        v[4] = NAN;
        v[5] = NAN;
        v[998] = NAN;
        v[999] = 4.0;
        let (out, res) = resample(&v, 60, 180, Resampler::Average).unwrap();
        assert_eq!(res, 180);
        assert_eq!(out.len(), 334);
        assert_eq!(out[0], 2.0);
        assert!(out[1].is_nan());
        assert_eq!(out[2], 2.0);
        // Last bucket is [999] alone -> 4; the one before is [996, 997, 998] -> mean(2, 2) = 2.
        assert_eq!(out[333], 4.0);
        assert_eq!(out[332], 2.0);
    }

    #[test]
    fn mean_edge_cases() {
        assert!(mean_ignoring_nan(&[]).is_nan());
        assert!(mean_ignoring_nan(&[NAN, NAN]).is_nan());
        assert_eq!(mean_ignoring_nan(&[1.0, NAN, 2.0]), 1.5);
        assert_eq!(mean_ignoring_nan(&[INF, 1.0]), INF);
        assert_eq!(mean_ignoring_nan(&[-INF, 1.0, NAN]), -INF);
        assert!(mean_ignoring_nan(&[INF, -INF]).is_nan());
        assert_eq!(mean_ignoring_nan(&[f64::MAX, f64::MAX, f64::MAX]), f64::MAX);
        assert_eq!(mean_ignoring_nan(&[f64::MAX, -f64::MAX]), 0.0);
        assert_eq!(mean_ignoring_nan(&[0.1, 0.1, 0.1]), 0.1);
    }

    // ---- Rules ----

    #[test]
    fn short_series_unchanged() {
        let v: Vec<f64> = (0..999).map(|i| if i % 5 == 0 { NAN } else { i as f64 }).collect();
        for how in [Resampler::Lttb, Resampler::Average] {
            let (out, res) = resample(&v, 10, 100, how).unwrap();
            assert_eq!(res, 10);
            assert_eq!(bits(&out), bits(&v));
        }
        assert_eq!(resample(&[], 10, 100, Resampler::Lttb).unwrap(), (vec![], 10));
    }

    #[test]
    fn exactly_min_points_is_resampled() {
        let v = vec![1.0; MIN_POINTS_TO_RESAMPLE];
        let (out, res) = resample(&v, 10, 20, Resampler::Average).unwrap();
        assert_eq!((out.len(), res), (500, 20));
        let (out, res) = resample(&v, 10, 20, Resampler::Lttb).unwrap();
        assert_eq!((out.len(), res), (500, 20));
    }

    #[test]
    fn zero_or_equal_resolution_unchanged() {
        let v: Vec<f64> = (0..2000).map(|i| i as f64).collect();
        for how in [Resampler::Lttb, Resampler::Average] {
            assert_eq!(resample(&v, 60, 0, how).unwrap(), (v.clone(), 60));
            assert_eq!(resample(&v, 60, 60, how).unwrap(), (v.clone(), 60));
        }
    }

    #[test]
    fn not_multiple() {
        let v = vec![1.0; 2000];
        let e = resample(&v, 10, 15, Resampler::Lttb).unwrap_err();
        assert_eq!(e, ResolutionError::NotMultiple { resolution: 15, frequency: 10 });
        let e = resample(&v, 10, 5, Resampler::Average).unwrap_err();
        assert_eq!(e, ResolutionError::NotMultiple { resolution: 5, frequency: 10 });
        // Reported for short series too.
        let e = resample(&[1.0], 10, 25, Resampler::Average).unwrap_err();
        assert_eq!(e, ResolutionError::NotMultiple { resolution: 25, frequency: 10 });
        assert_eq!(e.to_string(), "resolution 25s is not a multiple of the frequency 10s");
    }

    #[test]
    fn not_positive() {
        let v = vec![1.0; 2000];
        assert_eq!(resample(&v, 10, -10, Resampler::Lttb), Err(ResolutionError::NotPositive(-10)));
        assert_eq!(resample(&v, 0, 10, Resampler::Lttb), Err(ResolutionError::NotPositive(0)));
        assert_eq!(resample(&v, -5, 0, Resampler::Average), Err(ResolutionError::NotPositive(-5)));
        assert_eq!(resample(&v, -5, -10, Resampler::Average), Err(ResolutionError::NotPositive(-5)));
        assert_eq!(resample(&v, i64::MIN, i64::MIN, Resampler::Lttb), Err(ResolutionError::NotPositive(i64::MIN)));
        let e: Box<dyn std::error::Error> = Box::new(ResolutionError::NotPositive(-10));
        assert_eq!(e.to_string(), "resolution or frequency -10s is not positive");
    }

    #[test]
    fn huge_resolution_does_not_overflow() {
        let v = vec![1.0; 1500];
        let (out, res) = resample(&v, 1, i64::MAX, Resampler::Average).unwrap();
        assert_eq!((out, res), (vec![1.0], i64::MAX));
        let (out, _) = resample(&v, 1, i64::MAX, Resampler::Lttb).unwrap();
        assert_eq!(out, vec![1.0; 3]);
    }

    #[test]
    fn default_is_lttb() {
        assert_eq!(Resampler::default(), Resampler::Lttb);
    }

    // ---- Properties ----

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => -1e6..1e6f64,
            2 => Just(NAN),
            1 => Just(INF),
            1 => Just(-INF),
            1 => any::<u64>().prop_map(f64::from_bits),
        ]
    }

    /// Series of length `len` with an optional run forced to NaN (to get all-NaN buckets).
    fn series(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f64>> {
        (prop::collection::vec(value(), len), any::<usize>(), 0usize..400, any::<bool>()).prop_map(
            |(mut v, start, run, all_nan)| {
                if all_nan && run == 0 {
                    v.iter_mut().for_each(|x| *x = NAN);
                } else if !v.is_empty() {
                    let s = start % v.len();
                    let e = (s + run).min(v.len());
                    v[s..e].iter_mut().for_each(|x| *x = NAN);
                }
                v
            },
        )
    }

    fn how() -> impl Strategy<Value = Resampler> {
        prop_oneof![Just(Resampler::Lttb), Just(Resampler::Average)]
    }

    proptest! {
        #[test]
        fn prop_output_length(v in series(0..3000), freq in 1i64..=60, k in 1i64..=1500, how in how()) {
            let res = freq * k;
            let (out, got) = resample(&v, freq, res, how).unwrap();
            let n_out = v.len().div_ceil(k as usize);
            if k == 1 || v.len() < MIN_POINTS_TO_RESAMPLE || n_out >= v.len() {
                prop_assert_eq!(got, freq);
                prop_assert_eq!(bits(&out), bits(&v));
            } else {
                prop_assert_eq!(got, res);
                let want = if how == Resampler::Lttb { n_out.max(3) } else { n_out };
                prop_assert_eq!(out.len(), want);
            }
        }

        #[test]
        fn prop_lttb_subsequence(v in series(MIN_POINTS_TO_RESAMPLE..3000), k in 2usize..800) {
            let (out, _) = resample(&v, 1, k as i64, Resampler::Lttb).unwrap();
            prop_assert_eq!(out.len(), v.len().div_ceil(k).max(3));
            prop_assert_eq!(out[0].to_bits(), v[0].to_bits());
            prop_assert_eq!(out[out.len() - 1].to_bits(), v[v.len() - 1].to_bits());
            // Black box: non-NaN outputs are bitwise input values, in input order.
            let mut p = 1;
            for &o in &out[1..out.len() - 1] {
                if o.is_nan() {
                    continue;
                }
                while p < v.len() - 1 && v[p].to_bits() != o.to_bits() {
                    p += 1;
                }
                prop_assert!(p < v.len() - 1, "output {} is not a later input value", o);
                p += 1;
            }
            // White box: each choice lies in its bucket, is not NaN, and None means an all-NaN bucket.
            let n = out.len();
            let idx = lttb_indices(&v, n);
            let (middle, buckets) = (v.len() - 2, n - 2);
            for b in 0..buckets {
                let (s, e) = (bucket_start(b, middle, buckets), bucket_start(b + 1, middle, buckets));
                prop_assert!(s < e);
                match idx[b + 1] {
                    Some(j) => {
                        prop_assert!(s <= j && j < e);
                        prop_assert!(!v[j].is_nan());
                        prop_assert_eq!(out[b + 1].to_bits(), v[j].to_bits());
                    }
                    None => {
                        prop_assert!(v[s..e].iter().all(|x| x.is_nan()));
                        prop_assert!(out[b + 1].is_nan());
                    }
                }
            }
        }

        #[test]
        fn prop_average_within_bucket(v in series(MIN_POINTS_TO_RESAMPLE..3000), k in 2usize..800) {
            let (out, _) = resample(&v, 1, k as i64, Resampler::Average).unwrap();
            prop_assert_eq!(out.len(), v.len().div_ceil(k));
            for (o, bucket) in out.iter().zip(v.chunks(k)) {
                let vals: Vec<f64> = bucket.iter().copied().filter(|x| !x.is_nan()).collect();
                let lo = vals.iter().copied().fold(INF, f64::min);
                let hi = vals.iter().copied().fold(-INF, f64::max);
                if vals.is_empty() || (lo == -INF && hi == INF) {
                    prop_assert!(o.is_nan());
                } else {
                    prop_assert!(lo <= *o && *o <= hi, "{} not in [{}, {}]", o, lo, hi);
                }
            }
        }

        #[test]
        fn prop_no_panics_arbitrary(
            v in prop::collection::vec(any::<u64>().prop_map(f64::from_bits), 0..3000),
            freq in any::<i64>(),
            res in any::<i64>(),
            how in how(),
        ) {
            if let Ok((out, got)) = resample(&v, freq, res, how) {
                prop_assert!(got == freq || got == res);
                prop_assert!(out.len() <= v.len().max(3));
            }
        }

        #[test]
        fn prop_no_panics_small_params(
            v in series(0..3000),
            freq in -3i64..=5,
            res in -10i64..=5000,
            how in how(),
        ) {
            if let Ok((out, got)) = resample(&v, freq, res, how) {
                prop_assert!(got == freq || got == res);
                prop_assert!(out.len() <= v.len().max(3));
            }
        }

        #[test]
        fn prop_all_nan(len in 0usize..3000, k in 2i64..100, how in how()) {
            let v = vec![NAN; len];
            let (out, _) = resample(&v, 1, k, how).unwrap();
            prop_assert!(out.iter().all(|x| x.is_nan()));
        }
    }
}
