//! The peer benchmark's workload (issue #9): cc-metric-store's test shape, 82 hosts × (128 hwthreads × 10
//! metrics + 10 node metrics) at 60 s, values that move like real gauges and counters (bounded random walks
//! at the precision collectors send), rendered as InfluxDB line protocol or handed over as numbers.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// Hardware threads per host.
pub const THREADS: usize = 128;
/// Seconds between samples.
pub const FREQ: i64 = 60;

/// A metric's values: a random walk in integer units of `10^-dec`, within `[lo, hi]`, moving by at most
/// `step` units per sample, and only with probability `moves`.
pub struct Shape {
    pub name: &'static str,
    lo: i64,
    hi: i64,
    step: i64,
    dec: u32,
    moves: f64,
}

const fn shape(name: &'static str, lo: i64, hi: i64, step: i64, dec: u32, moves: f64) -> Shape {
    Shape { name, lo, hi, step, dec, moves }
}

/// The hwthread metrics.
pub const HW: [Shape; 10] = [
    shape("cpu_load", 0, 100, 8, 2, 1.0),
    shape("cpu_user", 0, 1000, 40, 1, 1.0),
    shape("flops_any", 0, 500_000, 5_000, 2, 1.0),
    shape("flops_dp", 0, 250_000, 2_500, 2, 1.0),
    shape("flops_sp", 0, 500_000, 5_000, 2, 1.0),
    shape("ipc", 0, 4_000, 100, 3, 1.0),
    shape("clock", 1_000, 3_500, 100, 0, 0.1),
    shape("cpu_power", 0, 3_000, 50, 1, 1.0),
    shape("mem_bw", 0, 20_000, 500, 2, 1.0),
    shape("vectorization_ratio", 0, 1_000, 30, 1, 1.0),
];

/// The node metrics.
pub const NODE: [Shape; 10] = [
    shape("mem_used", 0, 25_600, 200, 2, 1.0),
    shape("mem_cached", 0, 6_400, 50, 2, 1.0),
    shape("net_bytes_in", 0, 1_000_000_000, 20_000_000, 0, 1.0),
    shape("net_bytes_out", 0, 1_000_000_000, 20_000_000, 0, 1.0),
    shape("ib_recv", 0, 1_000_000_000, 50_000_000, 0, 1.0),
    shape("ib_xmit", 0, 1_000_000_000, 50_000_000, 0, 1.0),
    shape("lustre_read_bw", 0, 500_000, 10_000, 2, 1.0),
    shape("lustre_write_bw", 0, 500_000, 10_000, 2, 1.0),
    shape("nfs_ops", 0, 10_000, 300, 0, 1.0),
    shape("cpu_temp", 30, 90, 2, 0, 0.3),
];

/// Appends `v` (in units of `10^-dec`) in decimal.
pub fn push_fixed(out: &mut Vec<u8>, v: i64, dec: u32) {
    let mut digits = [0u8; 24];
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    let mut i = digits.len();
    let mut written = 0;
    while n > 0 || written <= dec {
        if written == dec && dec > 0 {
            i -= 1;
            digits[i] = b'.';
        }
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        written += 1;
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// The series state of the hosts one writer sends, and its line prefixes.
pub struct Writer {
    /// The hosts this writer sends.
    pub hosts: Vec<usize>,
    /// Per host: `[thread][metric]` then node metrics, current values.
    values: Vec<Vec<i64>>,
    /// Per host: the line prefixes (measurement and tags, up to the space before `value=`), same order.
    prefixes: Vec<Vec<Vec<u8>>>,
    rng: rand::rngs::StdRng,
}

impl Writer {
    /// Writer `w` of `writers`, for hosts `w, w + writers, …` below `hosts`.
    pub fn new(w: usize, writers: usize, hosts: usize) -> Writer {
        let hosts: Vec<usize> = (w..hosts).step_by(writers).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5117 + w as u64);
        let mut values = Vec::new();
        let mut prefixes = Vec::new();
        for &h in &hosts {
            let mut v = Vec::with_capacity(THREADS * HW.len() + NODE.len());
            let mut p = Vec::with_capacity(v.capacity());
            for t in 0..THREADS {
                for s in &HW {
                    v.push(rng.gen_range(s.lo..=s.hi));
                    p.push(format!("{},cluster=bench,hostname=n{h:04},type=hwthread,type-id={t}", s.name).into_bytes());
                }
            }
            for s in &NODE {
                v.push(rng.gen_range(s.lo..=s.hi));
                p.push(format!("{},cluster=bench,hostname=n{h:04},type=node", s.name).into_bytes());
            }
            values.push(v);
            prefixes.push(p);
        }
        Writer { hosts, values, prefixes, rng }
    }

    /// Advances host `i`'s values one step and calls `each(series index, prefix, value, decimals)` for every
    /// series (hwthreads by thread then metric, then node metrics).
    pub fn step(&mut self, i: usize, mut each: impl FnMut(usize, &[u8], i64, u32)) {
        let shapes = HW.iter().cycle().take(THREADS * HW.len()).chain(NODE.iter());
        for (k, ((v, p), s)) in self.values[i].iter_mut().zip(&self.prefixes[i]).zip(shapes).enumerate() {
            if s.moves >= 1.0 || self.rng.gen_bool(s.moves) {
                *v = (*v + self.rng.gen_range(-s.step..=s.step)).clamp(s.lo, s.hi);
            }
            each(k, p, *v, s.dec);
        }
    }

    /// The body of host `i` (of this writer) at time `ts`, advancing its values.
    pub fn body(&mut self, i: usize, ts: i64, out: &mut Vec<u8>) {
        out.clear();
        let mut ts_text = Vec::new();
        push_fixed(&mut ts_text, ts, 0);
        self.step(i, |_, p, v, dec| {
            out.extend_from_slice(p);
            out.extend_from_slice(b" value=");
            push_fixed(out, v, dec);
            out.push(b' ');
            out.extend_from_slice(&ts_text);
            out.push(b'\n');
        });
    }
}

/// The entropy in bits of `s`'s next value given its current one, `x` (units of `10^-dec`): with probability
/// `1 - moves` it stays; otherwise it moves by a step drawn uniformly from `-step..=step` and is clamped to
/// `[lo, hi]`, so `lo` and `hi` take the mass of every step past them. What any lossless encoding of the walk
/// must spend on average, at least, whatever it knows of the walk.
pub fn next_value_entropy_bits(s: &Shape, x: i64) -> f64 {
    let n = (2 * s.step + 1) as f64;
    let p = s.moves;
    // Steps that land at or below lo, at or above hi, and strictly between them.
    let at_lo = (s.lo - (x - s.step) + 1).clamp(0, 2 * s.step + 1);
    let at_hi = ((x + s.step) - s.hi + 1).clamp(0, 2 * s.step + 1);
    let inner = (s.step * 2 + 1) - at_lo - at_hi;
    let term = |pv: f64| if pv > 0.0 { -pv * pv.log2() } else { 0.0 };
    let stay = 1.0 - p;
    let mut h = 0.0;
    h += term(p * at_lo as f64 / n + if x == s.lo { stay } else { 0.0 });
    h += term(p * at_hi as f64 / n + if x == s.hi { stay } else { 0.0 });
    if x > s.lo && x < s.hi {
        // x itself is one of the inner values.
        h += term(p / n + stay) + (inner - 1) as f64 * term(p / n);
    } else {
        h += inner as f64 * term(p / n);
    }
    h
}
