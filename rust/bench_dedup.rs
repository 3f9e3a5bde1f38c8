//! Micro-benchmarks of the replay table (`cargo test --release -- --ignored --nocapture bench_dedup`).
//! Each figure is the minimum over several repeats (the machine is shared).

use std::hint::black_box;
use std::time::Instant;

use crate::dedup::{Deduplicator, Limits, SlotHint};

fn ids(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i:08x}-0000-4000-8000-000000000000")).collect()
}

/// ns per call of `f(i)` over `n` calls, best of `repeats` (each on a fresh table from `make`).
fn per_call<M: FnMut() -> Deduplicator, F: FnMut(&mut Deduplicator, usize)>(name: &str, n: usize, repeats: u32, mut make: M, mut f: F) {
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let mut d = make();
        let t = Instant::now();
        for i in 0..n {
            f(&mut d, i);
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
        black_box(&d);
    }
    println!("{name:<52} {:>8.1} ns/call", best * 1e9);
}

#[test]
#[ignore]
fn bench_dedup() {
    let n = 200_000;
    let fresh = ids(n, "a");
    let more = ids(n, "b");
    per_call("check_and_mark, new IDs, table not full", n, 5, || Deduplicator::new(360.0, 400_000).unwrap(), |d, i| {
        black_box(d.check_and_mark("peer", &fresh[i], 1e9 + i as f64 * 1e-4));
    });
    per_call("check_and_mark, new IDs, table full (evicts)", n, 5, || {
        let mut d = Deduplicator::new(360.0, n).unwrap();
        for (i, id) in fresh.iter().enumerate() {
            d.check_and_mark("peer", id, 1e9 + i as f64 * 1e-5);
        }
        d
    }, |d, i| {
        black_box(d.check_and_mark("peer", &more[i], 1e9 + 2.0 + i as f64 * 1e-5));
    });
    per_call("check_and_mark, duplicate IDs", n, 5, || {
        let mut d = Deduplicator::new(360.0, 400_000).unwrap();
        for (i, id) in fresh.iter().enumerate() {
            d.check_and_mark("peer", id, 1e9 + i as f64 * 1e-5);
        }
        d
    }, |d, i| {
        black_box(d.check_and_mark("peer", &fresh[i], 1e9 + 2.0));
    });
    let senders: Vec<String> = (0..200).map(|i| format!("{i:032x}")).collect();
    per_call("check_frame, one sender, new IDs, table full", n, 5, || {
        let mut d = Deduplicator::with_limits(Limits::new(360.0, n, None, None).unwrap());
        for (i, id) in fresh.iter().enumerate() {
            d.check_frame("peer", id, 1e9, 1e9 + i as f64 * 1e-5, 1e9 + 300.0, false);
        }
        d
    }, |d, i| {
        let ts = 1e9 + 2.0 + i as f64 * 1e-5;
        black_box(d.check_frame("peer", &more[i], ts, ts, ts + 300.0, false));
    });
    per_call("check_frame, 200 senders, new IDs, table full", n, 5, || {
        let mut d = Deduplicator::with_limits(Limits::new(360.0, n, Some(n / 4), None).unwrap());
        for (i, id) in fresh.iter().enumerate() {
            d.check_frame(&senders[i % 200], id, 1e9, 1e9 + i as f64 * 1e-5, 1e9 + 300.0, false);
        }
        d
    }, |d, i| {
        let ts = 1e9 + 2.0 + i as f64 * 1e-5;
        black_box(d.check_frame(&senders[i % 200], &more[i], ts, ts, ts + 300.0, false));
    });
    let mut hint = SlotHint::default();
    per_call("check_frame_hinted, one sender, new IDs, table full", n, 5, || {
        let mut d = Deduplicator::with_limits(Limits::new(360.0, n, None, None).unwrap());
        for (i, id) in fresh.iter().enumerate() {
            d.check_frame("peer", id, 1e9, 1e9 + i as f64 * 1e-5, 1e9 + 300.0, false);
        }
        d
    }, |d, i| {
        let ts = 1e9 + 2.0 + i as f64 * 1e-5;
        black_box(d.check_frame_hinted(&mut hint, "peer", &more[i], ts, ts, ts + 300.0, false));
    });
}
