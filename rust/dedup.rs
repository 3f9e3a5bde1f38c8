//! The duplicate-message table (PROTOCOL.md §7): message IDs remembered for a
//! TTL.
//!
//! Theory of operation: every ID goes into a hash map (ID → expiry) and, in
//! arrival order, into a FIFO of (expiry, ID). The TTL is the same for every
//! entry and `now` only moves forward in practice, so the FIFO is ordered by
//! expiry and expired entries are always at its front. Each `check_and_mark`
//! pops at most a couple of expired entries from the front (amortised O(1));
//! `sweep` pops all that have expired. Nothing ever scans the whole table.
//!
//! When the table holds `max_entries` live IDs, the oldest is evicted to make
//! room (memory stays bounded). The eviction is counted, and the largest stamp
//! (the message's own `ts` when the receive step marks it, else the arrival
//! time) of any evicted entry is kept as `evicted_horizon`: the receive step
//! refuses frames whose `ts` is not later than it, so an ID pushed out of a
//! full table still cannot be replayed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Debug)]
pub struct Deduplicator {
    ttl: f64,
    max_entries: usize,
    seen: HashMap<Arc<str>, f64>,
    order: VecDeque<(f64, f64, Arc<str>)>,
    evicted: u64,
    evicted_horizon: f64,
}

/// Expired entries removed per `check_and_mark` call, at most.
const POPS_PER_CHECK: usize = 2;

impl Deduplicator {
    pub fn new(ttl: f64, max_entries: usize) -> Result<Deduplicator, &'static str> {
        if !ttl.is_finite() || ttl <= 0.0 {
            return Err("ttl must be a finite number > 0");
        }
        if max_entries == 0 {
            return Err("max_entries must be at least 1");
        }
        Ok(Deduplicator {
            ttl,
            max_entries,
            seen: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
            evicted_horizon: f64::NEG_INFINITY,
        })
    }

    /// True the first time `id` is seen within the TTL (and marks it); false
    /// for a duplicate. One lookup, one insert: atomic under the caller's lock.
    pub fn check_and_mark(&mut self, id: &str, now: f64) -> bool {
        self.expire(now, POPS_PER_CHECK);
        if let Some(expiry) = self.seen.get(id) {
            if *expiry > now {
                return false;
            }
        }
        self.insert(id, now, now);
        true
    }

    /// `check_and_mark` with the message's own timestamp as the entry's stamp,
    /// remembered at least until `keep_until` (the end of the frame's replay
    /// window) even when that is later than `now + ttl`.
    pub fn check_and_mark_stamped(&mut self, id: &str, now: f64, stamp: f64, keep_until: f64) -> bool {
        self.expire(now, POPS_PER_CHECK);
        if let Some(expiry) = self.seen.get(id) {
            if *expiry > now {
                return false;
            }
        }
        self.insert_until(id, now, stamp, (now + self.ttl).max(keep_until));
        true
    }

    /// Mark `id` as seen without asking (IDs of messages this node sent).
    pub fn mark(&mut self, id: &str, now: f64) {
        self.expire(now, POPS_PER_CHECK);
        self.insert(id, now, now);
    }

    /// True when `id` is remembered and not expired at `now`.
    pub fn contains(&self, id: &str, now: f64) -> bool {
        self.seen.get(id).is_some_and(|e| *e > now)
    }

    /// Remove every expired entry; returns how many left.
    pub fn sweep(&mut self, now: f64) -> usize {
        self.expire(now, usize::MAX)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn ttl(&self) -> f64 {
        self.ttl
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// How many live entries were evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Largest stamp of any entry evicted while still live (−∞ if none).
    pub fn evicted_horizon(&self) -> f64 {
        self.evicted_horizon
    }

    fn insert(&mut self, id: &str, now: f64, stamp: f64) {
        self.insert_until(id, now, stamp, now + self.ttl)
    }

    fn insert_until(&mut self, id: &str, now: f64, stamp: f64, expiry: f64) {
        if let Some(slot) = self.seen.get_mut(id) {
            *slot = expiry;
            // The old FIFO entry stays; when it reaches the front its expiry no
            // longer matches the map and it is skipped.
            let key = match self.seen.get_key_value(id) {
                Some((k, _)) => Arc::clone(k),
                None => Arc::from(id),
            };
            self.order.push_back((expiry, stamp, key));
        } else {
            while self.seen.len() >= self.max_entries {
                self.evict_oldest(now);
            }
            let key: Arc<str> = Arc::from(id);
            self.seen.insert(Arc::clone(&key), expiry);
            self.order.push_back((expiry, stamp, key));
        }
        // Stale FIFO entries (from refreshed IDs) must not grow without bound.
        if self.order.len() > 2 * self.max_entries + 16 {
            self.compact();
        }
    }

    /// Make room for one entry: drop the oldest FIFO entry that is still in
    /// the map. Only an entry still live at `now` counts as evicted.
    fn evict_oldest(&mut self, now: f64) {
        while let Some((expiry, stamp, key)) = self.order.pop_front() {
            if self.seen.get(&key) == Some(&expiry) {
                self.seen.remove(&key);
                if expiry > now {
                    self.evicted += 1;
                    self.evicted_horizon = self.evicted_horizon.max(stamp);
                }
                return;
            }
        }
    }

    fn compact(&mut self) {
        let seen = &self.seen;
        self.order.retain(|(expiry, _, key)| seen.get(key) == Some(expiry));
    }

    fn expire(&mut self, now: f64, limit: usize) -> usize {
        let mut removed = 0;
        let mut popped = 0;
        while popped < limit {
            match self.order.front() {
                Some((expiry, _, _)) if *expiry <= now => {}
                _ => break,
            }
            if let Some((expiry, _, key)) = self.order.pop_front() {
                popped += 1;
                if self.seen.get(&key) == Some(&expiry) {
                    self.seen.remove(&key);
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_time_true_then_false_until_expiry() {
        let mut d = Deduplicator::new(10.0, 100).unwrap();
        assert!(d.check_and_mark("a", 0.0));
        assert!(!d.check_and_mark("a", 9.9));
        assert!(d.check_and_mark("a", 10.0));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn sweep_and_capacity() {
        let mut d = Deduplicator::new(10.0, 3).unwrap();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(d.check_and_mark(id, i as f64));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted(), 1);
        assert_eq!(d.evicted_horizon(), 0.0);
        assert!(!d.contains("a", 4.0));
        assert_eq!(d.sweep(12.5), 2); // b (exp 11) and c (exp 12)
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn refreshed_ids_do_not_grow_the_fifo_forever() {
        let mut d = Deduplicator::new(1.0, 4).unwrap();
        for i in 0..10_000 {
            d.mark("same", i as f64 * 0.001);
        }
        assert!(d.order.len() <= 2 * 4 + 16 + 1);
        assert_eq!(d.len(), 1);
    }
}
