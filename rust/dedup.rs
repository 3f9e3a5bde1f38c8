//! The replay table (PROTOCOL.md §7, "duplicate check by message id"): which
//! message IDs each peer has already delivered, remembered for as long as a
//! replay of them could still pass the receive step's age check.
//!
//! # Theory of operation
//!
//! **What is remembered, and keyed by what.** Every frame opens only under the
//! key of one pair of nodes, so a recorded frame can only ever be replayed
//! through a connection to the peer that sent it. The table is therefore split
//! into *partitions*, one per sender (the authenticated peer of the connection,
//! `FrameReceiver(sender=...)`), and an entry is the pair (sender, message ID).
//! A partition holds the sender's IDs (a hash map ID → expiry) and, in arrival
//! order, a FIFO of (sequence number, expiry, stamp, ID). Besides the peers'
//! partitions there is the *local* partition: the IDs of messages this node
//! sealed itself (`mark`, called on send). A frame whose ID is in the local
//! partition is refused from every sender (a reflection of our own frame).
//!
//! **Two peers, one ID.** The same message ID from two different peers is two
//! entries and both frames are delivered: a peer cannot suppress another
//! peer's message by sending its ID first (with a shared key it could, and
//! did: first one won). The table answers "has this frame already come over
//! this pair's key", not "has the application seen this message": a message
//! relayed to us by two peers arrives twice, and an application that relays
//! deduplicates by (`from`, `id`) itself. IDs this node sealed are the
//! exception: they are refused from anyone.
//!
//! **Expiry.** An entry lives until max(arrival + ttl, ts + max_age) (the end
//! of the frame's replay window, passed in by the receive step). `ttl` is the
//! same for every entry, so each FIFO is ordered by expiry up to the clock skew
//! a `ts` may have; expired entries are popped from the fronts: a couple per
//! call in the partition being touched (amortised O(1)), all of them in
//! `sweep`. Nothing on the per-frame path scans a table.
//!
//! **Bounded memory.** Three limits: `per_peer` IDs per partition (and for the
//! local one), `max_entries` IDs over all peers' partitions, `max_peers`
//! partitions. IDs longer than [`MAX_KEY_LEN`] bytes are stored as their
//! SHA-256, so an entry costs at most about 200 bytes of memory whatever a
//! peer sends (measured: ~155 for a UUID, ~185 for a 64-byte or longer ID).
//!
//! * A partition at `per_peer` evicts *its own* oldest entry: a peer that
//!   floods only ever pushes out its own IDs.
//! * When all peers' partitions together hold `max_entries`, the oldest entry of
//!   the whole table is evicted (a lazy min-heap of the partitions' FIFO fronts
//!   finds it). Every peer then keeps at least the IDs that arrived after the
//!   oldest one still held anywhere: evictions cost every peer its *oldest*
//!   IDs, never the newest.
//! * The local partition is never evicted by peers' traffic.
//!
//! **Horizons: evicted is not forgotten.** An entry evicted while still live
//! raises its partition's *horizon* to the entry's stamp (the sender's own
//! `ts`), kept until the entry would have expired. The receive step refuses a
//! frame from that sender whose `ts` is not later than the horizon ("stale"):
//! an evicted ID still cannot be replayed. The horizon is per partition, so a
//! peer that dates 200k IDs a minute ahead only makes *its own* older frames
//! stale, never another peer's: the shared horizon of the old design let one
//! peer make every honest frame stale. The local partition's horizon (our own
//! sends evicted) applies only to frames whose `from` is this node.
//!
//! **Partitions are bounded too.** A partition whose IDs have all expired or
//! been evicted is an empty record; it is freed by `sweep` once its horizon is
//! dead. When a new sender needs a partition and `max_peers` are in use, the
//! oldest empty record is dropped (else the table's oldest entries are evicted
//! until a partition empties). A dropped record's horizon is folded into one
//! of [`BUCKETS`] buckets chosen by a keyed hash of the sender (the key is
//! random per table, so a peer cannot aim at a bucket), *capped at the time it
//! is dropped*, and a new partition starts from its bucket's horizon. Capping
//! is what keeps one peer from pushing other peers' horizons into the future
//! through the buckets; its price, documented in docs/security.md: when more
//! than `max_peers` senders are active within one replay window, a forgotten
//! peer's frame dated *ahead of* the moment it was forgotten (its clock ran
//! ahead, at most max_future) could be replayed once.
//!
//! **The clock.** `now` must not step back far: a step back of Δ re-admits,
//! for Δ, what was forgotten because it had expired (every time-window replay
//! check has this limit; the fuzz target `fuzz_receive_step` checks the
//! replay guarantee only while the clock is at its highest).
//!
//! **The floor.** `floor` (−∞ by default) refuses every frame whose `ts` is
//! earlier than it, from anyone. It is set after an unclean restart, when the
//! table could not be restored (see python/smsgnet/replay.py).
//!
//! **Persistence.** `to_bytes` writes every live entry, horizon and the floor
//! in a versioned binary format ending in a SHA-256 of the rest; `from_bytes`
//! checks that digest and every length before using anything, and rebuilds the
//! table under the limits given at load time (entries beyond them are evicted
//! as usual, raising horizons). Forgotten peers' buckets are saved as one
//! value (their maximum), applied to every bucket on load.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// IDs and sender names longer than this are stored as `#` + hex SHA-256.
pub const MAX_KEY_LEN: usize = 64;
/// Buckets holding the horizons of forgotten peers.
pub const BUCKETS: usize = 1024;
/// Expired entries removed per check, at most, in each partition touched.
const POPS_PER_CHECK: usize = 2;

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// First time: the ID is now marked.
    Fresh,
    /// Already seen from this sender, or sealed by this node.
    Duplicate,
    /// `ts` is earlier than the table's floor (restart without saved state).
    BeforeFloor,
    /// `ts` is not later than an ID this sender had evicted (its horizon).
    BehindHorizon,
}

/// The table's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub ttl: f64,
    pub max_entries: usize,
    pub per_peer: usize,
    pub max_peers: usize,
}

impl Limits {
    /// `per_peer` and `max_peers` default to `max_entries`.
    pub fn new(ttl: f64, max_entries: usize, per_peer: Option<usize>, max_peers: Option<usize>) -> Result<Limits, &'static str> {
        if !ttl.is_finite() || ttl <= 0.0 {
            return Err("ttl must be a finite number > 0");
        }
        if max_entries == 0 {
            return Err("max_entries must be at least 1");
        }
        let per_peer = per_peer.unwrap_or(max_entries);
        if per_peer == 0 {
            return Err("per_peer must be at least 1");
        }
        let max_peers = max_peers.unwrap_or(max_entries);
        if max_peers == 0 {
            return Err("max_peers must be at least 1");
        }
        Ok(Limits { ttl, max_entries, per_peer, max_peers })
    }
}

/// The key under which an ID or a sender is stored: itself, or `#` + hex
/// SHA-256 when longer than [`MAX_KEY_LEN`] (a literal key that long is hashed
/// too, so the two forms cannot collide).
pub fn table_key(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_KEY_LEN {
        return Cow::Borrowed(s);
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(65);
    out.push('#');
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Cow::Owned(out)
}

/// Where a sender's partition was last found (see `check_frame_hinted`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotHint(Option<(u32, u32)>);

#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    expiry: f64,
    stamp: f64,
    id: Arc<str>,
}

#[derive(Debug)]
struct Partition {
    name: Arc<str>,
    gen: u32,
    live: bool,
    seen: HashMap<Arc<str>, f64>,
    fifo: VecDeque<Pending>,
    horizon: f64,
    horizon_until: f64,
    /// Sequence number when it last became empty (validates `empties` entries).
    empty_mark: u64,
}

impl Partition {
    fn new(name: Arc<str>, gen: u32) -> Partition {
        Partition {
            name,
            gen,
            live: true,
            seen: HashMap::new(),
            fifo: VecDeque::new(),
            horizon: f64::NEG_INFINITY,
            horizon_until: f64::NEG_INFINITY,
            empty_mark: 0,
        }
    }

    fn horizon_at(&self, now: f64) -> f64 {
        if self.horizon_until > now {
            self.horizon
        } else {
            f64::NEG_INFINITY
        }
    }

    fn has(&self, id: &str, now: f64) -> bool {
        self.seen.get(id).is_some_and(|e| *e > now)
    }

    fn raise_horizon(&mut self, stamp: f64, until: f64, now: f64) {
        if self.horizon_until <= now {
            self.horizon = stamp;
            self.horizon_until = until;
        } else {
            self.horizon = self.horizon.max(stamp);
            self.horizon_until = self.horizon_until.max(until);
        }
    }

    /// Pop the FIFO front. Returns (removed a live map entry?, was it still
    /// unexpired at `now`?); None when the FIFO is empty.
    fn pop_front(&mut self, now: f64, evicting: bool) -> Option<(bool, bool)> {
        let e = self.fifo.pop_front()?;
        if self.seen.get(&e.id) != Some(&e.expiry) {
            return Some((false, false)); // superseded by a later refresh
        }
        self.seen.remove(&e.id);
        let unexpired = e.expiry > now;
        if evicting && unexpired {
            self.raise_horizon(e.stamp, e.expiry, now);
        }
        Some((true, evicting && unexpired))
    }

    /// Drop FIFO entries superseded by refreshes; true if the front changed.
    fn compact_if_needed(&mut self) -> bool {
        if self.fifo.len() <= 2 * self.seen.len() + 16 {
            return false;
        }
        let before = self.fifo.front().map(|e| e.seq);
        let seen = &self.seen;
        self.fifo.retain(|e| seen.get(&e.id) == Some(&e.expiry));
        self.fifo.front().map(|e| e.seq) != before
    }
}

#[derive(Debug)]
pub struct Deduplicator {
    limits: Limits,
    index: HashMap<Arc<str>, u32>,
    slots: Vec<Partition>,
    free: Vec<u32>,
    /// (front seq, slot, gen) of every non-empty peer FIFO; stale ones skipped.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Partitions that became empty, oldest first: (slot, gen, empty_mark).
    empties: VecDeque<(u32, u32, u64)>,
    local: Partition,
    buckets: Vec<(f64, f64)>,
    hasher: RandomState,
    seq: u64,
    /// IDs held in peers' partitions (expired ones until popped).
    total: usize,
    evicted: u64,
    forgotten: u64,
    floor: f64,
}

impl Deduplicator {
    /// A table with `per_peer` and `max_peers` equal to `max_entries`.
    pub fn new(ttl: f64, max_entries: usize) -> Result<Deduplicator, &'static str> {
        Ok(Deduplicator::with_limits(Limits::new(ttl, max_entries, None, None)?))
    }

    pub fn with_limits(limits: Limits) -> Deduplicator {
        Deduplicator {
            limits,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            empties: VecDeque::new(),
            local: Partition::new(Arc::from(""), 0),
            buckets: vec![(f64::NEG_INFINITY, f64::NEG_INFINITY); BUCKETS],
            hasher: RandomState::new(),
            seq: 0,
            total: 0,
            evicted: 0,
            forgotten: 0,
            floor: f64::NEG_INFINITY,
        }
    }

    // -- the checks --------------------------------------------------------------------

    /// True the first time `id` is seen from `sender` within the TTL (and marks
    /// it); false for a duplicate or an ID this node sealed. No horizon or
    /// floor applies: those need the message's `ts` (see [`Self::check_frame`]).
    pub fn check_and_mark(&mut self, sender: &str, id: &str, now: f64) -> bool {
        let ttl = self.limits.ttl;
        self.check(&mut SlotHint::default(), sender, id, now, None, now + ttl, false) == Check::Fresh
    }

    /// The receive step's check of one frame: floor, own IDs, the sender's
    /// horizon and IDs; marks the ID when fresh. The entry is kept until at
    /// least `keep_until` (the end of the frame's replay window). `from_local`:
    /// the frame claims to come from this node (our own horizon applies).
    pub fn check_frame(&mut self, sender: &str, id: &str, now: f64, ts: f64, keep_until: f64, from_local: bool) -> Check {
        self.check(&mut SlotHint::default(), sender, id, now, Some(ts), keep_until, from_local)
    }

    /// `check_frame` for a caller that checks many frames of one sender: `hint`
    /// remembers where its partition is, which saves hashing the sender.
    #[allow(clippy::too_many_arguments)]
    pub fn check_frame_hinted(
        &mut self,
        hint: &mut SlotHint,
        sender: &str,
        id: &str,
        now: f64,
        ts: f64,
        keep_until: f64,
        from_local: bool,
    ) -> Check {
        self.check(hint, sender, id, now, Some(ts), keep_until, from_local)
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        hint: &mut SlotHint,
        sender: &str,
        id: &str,
        now: f64,
        ts: Option<f64>,
        keep_until: f64,
        from_local: bool,
    ) -> Check {
        if let Some(ts) = ts {
            if ts < self.floor {
                return Check::BeforeFloor;
            }
        }
        let id = table_key(id);
        if !self.local.seen.is_empty() || from_local {
            self.expire_local(now, POPS_PER_CHECK);
            if self.local.has(&id, now) {
                return Check::Duplicate;
            }
            if let Some(ts) = ts {
                if from_local && ts <= self.local.horizon_at(now) {
                    return Check::BehindHorizon;
                }
            }
        }
        let sender = table_key(sender);
        let hinted = hint.0.filter(|&(s, gen)| {
            let p = &self.slots.get(s as usize);
            p.is_some_and(|p| p.live && p.gen == gen && *p.name == *sender)
        });
        let found = hinted.map(|(s, _)| s).or_else(|| self.index.get(&*sender).copied());
        let (slot, known) = match found {
            Some(slot) => {
                self.expire_slot(slot, now, POPS_PER_CHECK);
                let p = &self.slots[slot as usize];
                let known = match p.seen.get(&*id) {
                    Some(expiry) if *expiry > now => return Check::Duplicate,
                    Some(_) => true,
                    None => false,
                };
                if ts.is_some_and(|ts| ts <= p.horizon_at(now)) {
                    return Check::BehindHorizon;
                }
                (slot, known)
            }
            None => {
                if ts.is_some_and(|ts| ts <= self.bucket_horizon(&sender, now)) {
                    return Check::BehindHorizon;
                }
                (self.create_partition(&sender, now), false)
            }
        };
        hint.0 = Some((slot, self.slots[slot as usize].gen));
        let expiry = (now + self.limits.ttl).max(keep_until);
        self.insert_known(Some(slot), &id, known, now, ts.unwrap_or(now), expiry);
        Check::Fresh
    }

    /// Mark `id` as sealed by this node: refused from every sender for the TTL.
    pub fn mark(&mut self, id: &str, now: f64) {
        let id = table_key(id);
        self.expire_local(now, POPS_PER_CHECK);
        self.insert(None, &id, now, now, now + self.limits.ttl);
    }

    /// True when `id` is remembered and live at `now`: sealed by this node, or
    /// received from `sender` (from any sender when None).
    pub fn contains(&self, sender: Option<&str>, id: &str, now: f64) -> bool {
        let id = table_key(id);
        if self.local.has(&id, now) {
            return true;
        }
        match sender {
            Some(sender) => {
                let sender = table_key(sender);
                self.index.get(&*sender).is_some_and(|&s| self.slots[s as usize].has(&id, now))
            }
            None => self.slots.iter().any(|p| p.live && p.has(&id, now)),
        }
    }

    /// Remove every expired entry, free empty partitions whose horizon is
    /// dead; returns how many IDs were removed.
    pub fn sweep(&mut self, now: f64) -> usize {
        let mut removed = self.expire_local(now, usize::MAX);
        for slot in 0..self.slots.len() as u32 {
            if !self.slots[slot as usize].live {
                continue;
            }
            removed += self.expire_slot(slot, now, usize::MAX);
            let p = &self.slots[slot as usize];
            if p.seen.is_empty() && p.horizon_until <= now {
                self.drop_partition(slot, now);
            }
        }
        for b in self.buckets.iter_mut() {
            if b.1 <= now {
                *b = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            }
        }
        self.compact_queues();
        removed
    }

    // -- accessors ---------------------------------------------------------------------

    /// IDs held, the local partition's included (expired ones until popped).
    pub fn len(&self) -> usize {
        self.total + self.local.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn ttl(&self) -> f64 {
        self.limits.ttl
    }

    pub fn max_entries(&self) -> usize {
        self.limits.max_entries
    }

    /// Live IDs evicted because a limit was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Partitions dropped while their horizon was live (folded into buckets).
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Peers' partitions in use.
    pub fn partitions(&self) -> usize {
        self.index.len()
    }

    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// Refuse every frame whose `ts` is earlier than `floor` (−∞: none).
    pub fn set_floor(&mut self, floor: f64) {
        self.floor = floor;
    }

    /// The live horizon `sender`'s frames must be later than (−∞ when none);
    /// `None` asks for the local partition's.
    pub fn horizon(&self, sender: Option<&str>, now: f64) -> f64 {
        match sender {
            None => self.local.horizon_at(now),
            Some(sender) => {
                let sender = table_key(sender);
                match self.index.get(&*sender) {
                    Some(&s) => self.slots[s as usize].horizon_at(now),
                    None => self.bucket_horizon(&sender, now),
                }
            }
        }
    }

    // -- internals ---------------------------------------------------------------------

    fn part(&mut self, slot: Option<u32>) -> &mut Partition {
        match slot {
            Some(s) => &mut self.slots[s as usize],
            None => &mut self.local,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn insert(&mut self, slot: Option<u32>, id: &str, now: f64, stamp: f64, expiry: f64) {
        let known = self.part(slot).seen.contains_key(id);
        self.insert_known(slot, id, known, now, stamp, expiry)
    }

    /// Insert `id`; `known`: the map holds it already (expired, not popped).
    fn insert_known(&mut self, slot: Option<u32>, id: &str, known: bool, now: f64, stamp: f64, expiry: f64) {
        let seq = self.next_seq();
        let p = self.part(slot);
        let refreshed = if known { p.seen.get_key_value(id).map(|(k, _)| Arc::clone(k)) } else { None };
        if let Some(key) = refreshed {
            if p.seen.get(&key) == Some(&expiry) {
                // the same ID again with the same expiry (marked twice at one
                // clock reading): nothing changes. Pushing it anyway left FIFO
                // entries that compaction cannot tell apart from the live one,
                // so every later insert rescanned them all (quadratic).
                return;
            }
            // an expired entry not popped yet (or one of ours marked again):
            // refresh it; the old FIFO entry no longer matches the map and is
            // skipped when it reaches the front
            p.seen.insert(Arc::clone(&key), expiry);
            p.fifo.push_back(Pending { seq, expiry, stamp, id: key });
        } else {
            let per_peer = self.limits.per_peer;
            while self.part(slot).seen.len() >= per_peer {
                if self.pop_front(slot, now, true).is_none() {
                    break;
                }
            }
            if slot.is_some() {
                while self.total >= self.limits.max_entries {
                    if !self.evict_oldest(now) {
                        break;
                    }
                }
            }
            let p = self.part(slot);
            let key: Arc<str> = Arc::from(id);
            p.seen.insert(Arc::clone(&key), expiry);
            let was_empty = p.fifo.is_empty();
            p.fifo.push_back(Pending { seq, expiry, stamp, id: key });
            if let Some(s) = slot {
                self.total += 1;
                if was_empty {
                    let gen = self.slots[s as usize].gen;
                    self.heap.push(Reverse((seq, s, gen)));
                }
            }
        }
        if self.part(slot).compact_if_needed() {
            self.push_front_of(slot);
        }
    }

    fn push_front_of(&mut self, slot: Option<u32>) {
        if let Some(s) = slot {
            let p = &self.slots[s as usize];
            if let Some(front) = p.fifo.front() {
                self.heap.push(Reverse((front.seq, s, p.gen)));
                if self.heap.len() > self.queue_bound() {
                    self.compact_queues();
                }
            }
        }
    }

    /// Stale heap and empties entries are dropped when a queue outgrows this:
    /// a rebuild costs O(partitions) and comes after as many pushes.
    fn queue_bound(&self) -> usize {
        2 * self.index.len() + 64
    }

    /// Pop one FIFO entry of a partition, with the bookkeeping: `total`,
    /// `evicted`, the heap and the empties queue. None when the FIFO is empty.
    fn pop_front(&mut self, slot: Option<u32>, now: f64, evicting: bool) -> Option<bool> {
        let (removed, counted) = self.part(slot).pop_front(now, evicting)?;
        if counted {
            self.evicted += 1;
        }
        if let Some(s) = slot {
            if removed {
                self.total -= 1;
            }
            self.push_front_of(slot);
            let mark = self.seq;
            let p = &mut self.slots[s as usize];
            if removed && p.seen.is_empty() {
                p.empty_mark = mark;
                self.empties.push_back((s, p.gen, mark));
                if self.empties.len() > self.queue_bound() {
                    self.compact_queues();
                }
            }
        }
        Some(removed)
    }

    /// Evict the oldest live entry of all peers' partitions; false when none.
    fn evict_oldest(&mut self, now: f64) -> bool {
        while let Some(Reverse((seq, s, gen))) = self.heap.pop() {
            let p = &self.slots[s as usize];
            if !p.live || p.gen != gen || p.fifo.front().map(|e| e.seq) != Some(seq) {
                continue; // stale heap entry
            }
            if self.pop_front(Some(s), now, true) == Some(true) {
                return true;
            }
        }
        false
    }

    fn expire_slot(&mut self, slot: u32, now: f64, limit: usize) -> usize {
        let mut removed = 0;
        let mut popped = 0;
        while popped < limit {
            match self.slots[slot as usize].fifo.front() {
                Some(e) if e.expiry <= now => {}
                _ => break,
            }
            popped += 1;
            if self.pop_front(Some(slot), now, false) == Some(true) {
                removed += 1;
            }
        }
        removed
    }

    fn expire_local(&mut self, now: f64, limit: usize) -> usize {
        let mut removed = 0;
        let mut popped = 0;
        while popped < limit {
            match self.local.fifo.front() {
                Some(e) if e.expiry <= now => {}
                _ => break,
            }
            popped += 1;
            if self.pop_front(None, now, false) == Some(true) {
                removed += 1;
            }
        }
        removed
    }

    fn bucket_of(&self, sender: &str) -> usize {
        (self.hasher.hash_one(sender) as usize) % BUCKETS
    }

    fn bucket_horizon(&self, sender: &str, now: f64) -> f64 {
        let (h, until) = self.buckets[self.bucket_of(sender)];
        if until > now {
            h
        } else {
            f64::NEG_INFINITY
        }
    }

    fn create_partition(&mut self, sender: &str, now: f64) -> u32 {
        while self.index.len() >= self.limits.max_peers {
            if let Some(slot) = self.pop_empty() {
                self.drop_partition(slot, now);
            } else if !self.evict_oldest(now) {
                // every partition is empty yet none is queued: cannot happen,
                // but never loop forever
                match (0..self.slots.len() as u32).find(|&s| self.slots[s as usize].live) {
                    Some(slot) => self.drop_partition(slot, now),
                    None => break,
                }
            }
        }
        let name: Arc<str> = Arc::from(sender);
        let slot = match self.free.pop() {
            Some(slot) => {
                let gen = self.slots[slot as usize].gen.wrapping_add(1);
                self.slots[slot as usize] = Partition::new(Arc::clone(&name), gen);
                slot
            }
            None => {
                self.slots.push(Partition::new(Arc::clone(&name), 0));
                (self.slots.len() - 1) as u32
            }
        };
        let (h, until) = self.buckets[self.bucket_of(sender)];
        if until > now {
            let p = &mut self.slots[slot as usize];
            p.horizon = h;
            p.horizon_until = until;
        }
        self.index.insert(name, slot);
        slot
    }

    /// The oldest partition that is still empty, if any.
    fn pop_empty(&mut self) -> Option<u32> {
        while let Some((s, gen, mark)) = self.empties.pop_front() {
            let p = &self.slots[s as usize];
            if p.live && p.gen == gen && p.empty_mark == mark && p.seen.is_empty() {
                return Some(s);
            }
        }
        None
    }

    /// Forget a partition (its IDs are evicted first); a live horizon goes to
    /// its bucket, capped at `now`.
    fn drop_partition(&mut self, slot: u32, now: f64) {
        while self.pop_front(Some(slot), now, true).is_some() {}
        let (name, h, until) = {
            let p = &self.slots[slot as usize];
            (Arc::clone(&p.name), p.horizon_at(now), p.horizon_until)
        };
        if h > f64::NEG_INFINITY {
            self.forgotten += 1;
            let b = self.bucket_of(&name);
            let bucket = &mut self.buckets[b];
            if bucket.1 <= now {
                *bucket = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            }
            bucket.0 = bucket.0.max(h.min(now));
            bucket.1 = bucket.1.max(until);
        }
        self.index.remove(&name);
        let p = &mut self.slots[slot as usize];
        let gen = p.gen;
        *p = Partition::new(Arc::from(""), gen);
        p.live = false;
        self.free.push(slot);
    }

    fn compact_queues(&mut self) {
        let bound = self.queue_bound();
        if self.heap.len() > bound {
            let mut heap = BinaryHeap::with_capacity(self.index.len());
            for (s, p) in self.slots.iter().enumerate() {
                if let (true, Some(front)) = (p.live, p.fifo.front()) {
                    heap.push(Reverse((front.seq, s as u32, p.gen)));
                }
            }
            self.heap = heap;
        }
        if self.empties.len() > bound {
            let slots = &self.slots;
            self.empties.retain(|&(s, gen, mark)| {
                let p = &slots[s as usize];
                p.live && p.gen == gen && p.empty_mark == mark && p.seen.is_empty()
            });
        }
    }

    // -- persistence -------------------------------------------------------------------

    /// Every live entry, horizon, the floor and the counters, in the format
    /// `from_bytes` reads (see the module header).
    pub fn to_bytes(&self, now: f64) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 64 * self.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        for v in [now, self.floor] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.evicted.to_be_bytes());
        out.extend_from_slice(&self.forgotten.to_be_bytes());
        let (mut fh, mut fu) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &(h, until) in &self.buckets {
            if until > now {
                fh = fh.max(h);
                fu = fu.max(until);
            }
        }
        out.extend_from_slice(&fh.to_be_bytes());
        out.extend_from_slice(&fu.to_be_bytes());
        let parts: Vec<&Partition> = std::iter::once(&self.local)
            .chain(self.slots.iter().filter(|p| p.live))
            .collect();
        let count_at = out.len();
        out.extend_from_slice(&0u32.to_be_bytes());
        let mut count = 0u32;
        for (i, p) in parts.iter().enumerate() {
            let live: Vec<&Pending> = p
                .fifo
                .iter()
                .filter(|e| e.expiry > now && p.seen.get(&e.id) == Some(&e.expiry))
                .collect();
            let horizon = p.horizon_at(now);
            if i > 0 && live.is_empty() && horizon == f64::NEG_INFINITY {
                continue;
            }
            count += 1;
            out.push(u8::from(i > 0));
            put_str(&mut out, &p.name);
            out.extend_from_slice(&horizon.to_be_bytes());
            out.extend_from_slice(&p.horizon_until.to_be_bytes());
            out.extend_from_slice(&(live.len() as u32).to_be_bytes());
            for e in live {
                out.extend_from_slice(&e.seq.to_be_bytes());
                out.extend_from_slice(&e.expiry.to_be_bytes());
                out.extend_from_slice(&e.stamp.to_be_bytes());
                put_str(&mut out, &e.id);
            }
        }
        out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Rebuild a table saved by `to_bytes` under `limits`, dropping what has
    /// expired at `now`. Any damage (digest, lengths, values) is an error and
    /// nothing is used.
    pub fn from_bytes(data: &[u8], limits: Limits, now: f64) -> Result<Deduplicator, String> {
        let saved = Saved::parse(data)?;
        let mut d = Deduplicator::with_limits(limits);
        d.floor = saved.floor;
        d.evicted = saved.evicted;
        d.forgotten = saved.forgotten;
        if saved.forgotten_until > now {
            d.buckets.fill((saved.forgotten_horizon, saved.forgotten_until));
        }
        // every entry in its original arrival order, so eviction under smaller
        // limits takes the oldest first
        let mut entries: Vec<(u64, usize, f64, f64, &str)> = Vec::new();
        for (i, p) in saved.partitions.iter().enumerate() {
            for &(seq, expiry, stamp, id) in &p.entries {
                if expiry > now {
                    entries.push((seq, i, expiry, stamp, id));
                }
            }
        }
        entries.sort_unstable_by_key(|e| e.0);
        let mut slot_of: Vec<Option<u32>> = vec![None; saved.partitions.len()];
        let mut created: Vec<bool> = vec![false; saved.partitions.len()];
        for (_, i, expiry, stamp, id) in entries {
            let p = &saved.partitions[i];
            let slot = if p.local {
                None
            } else {
                // (re)create it when new, or when the limits made room by dropping it
                if slot_of[i].is_none_or(|s| !d.slot_is(s, p.name)) {
                    let s = d.create_partition(p.name, now);
                    d.restore_horizon(Some(s), p.horizon, p.horizon_until, now);
                    slot_of[i] = Some(s);
                    created[i] = true;
                }
                slot_of[i]
            };
            d.insert(slot, id, now, stamp, expiry);
        }
        for (i, p) in saved.partitions.iter().enumerate() {
            if p.local {
                d.restore_horizon(None, p.horizon, p.horizon_until, now);
            } else if !created[i] && p.horizon_until > now {
                let s = d.create_partition(p.name, now);
                d.restore_horizon(Some(s), p.horizon, p.horizon_until, now);
                let mark = d.next_seq();
                let part = &mut d.slots[s as usize];
                part.empty_mark = mark;
                d.empties.push_back((s, part.gen, mark));
            }
        }
        Ok(d)
    }

    fn slot_is(&self, slot: u32, name: &str) -> bool {
        let p = &self.slots[slot as usize];
        p.live && &*p.name == name
    }

    fn restore_horizon(&mut self, slot: Option<u32>, horizon: f64, until: f64, now: f64) {
        if until > now && horizon > f64::NEG_INFINITY {
            self.part(slot).raise_horizon(horizon, until, now);
        }
    }
}

const MAGIC: &[u8; 10] = b"SMSGREPLAY";
const FORMAT_VERSION: u8 = 1;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // keys are at most 65 bytes (see table_key)
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct SavedPartition<'a> {
    local: bool,
    name: &'a str,
    horizon: f64,
    horizon_until: f64,
    entries: Vec<(u64, f64, f64, &'a str)>,
}

struct Saved<'a> {
    floor: f64,
    evicted: u64,
    forgotten: u64,
    forgotten_horizon: f64,
    forgotten_until: f64,
    partitions: Vec<SavedPartition<'a>>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("truncated")?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn f64(&mut self, what: &str, allow_neg_inf: bool) -> Result<f64, String> {
        let v = f64::from_bits(self.u64()?);
        if v.is_finite() || (allow_neg_inf && v == f64::NEG_INFINITY) {
            Ok(v)
        } else {
            Err(format!("{what} is not a finite number"))
        }
    }

    fn key(&mut self) -> Result<&'a str, String> {
        let n = usize::from(self.u16()?);
        if n > MAX_KEY_LEN + 1 {
            return Err(format!("key of {n} bytes (at most {})", MAX_KEY_LEN + 1));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| "key is not UTF-8".to_string())
    }
}

impl<'a> Saved<'a> {
    fn parse(data: &'a [u8]) -> Result<Saved<'a>, String> {
        let fixed = MAGIC.len() + 1 + 6 * 8 + 4;
        if data.len() < fixed + 32 {
            return Err(format!("truncated: {} bytes", data.len()));
        }
        if &data[..MAGIC.len()] != MAGIC {
            return Err("not a replay table (bad magic)".into());
        }
        if data[MAGIC.len()] != FORMAT_VERSION {
            return Err(format!("unsupported replay table version {}", data[MAGIC.len()]));
        }
        let (body, digest) = data.split_at(data.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err("checksum mismatch: the file is corrupt or truncated".into());
        }
        let mut r = Reader { data: body, pos: MAGIC.len() + 1 };
        let _saved_at = r.f64("saved_at", false)?;
        let floor = r.f64("floor", true)?;
        let evicted = r.u64()?;
        let forgotten = r.u64()?;
        let forgotten_horizon = r.f64("forgotten horizon", true)?;
        let forgotten_until = r.f64("forgotten until", true)?;
        let count = r.u32()?;
        let mut partitions = Vec::new();
        let mut names = std::collections::HashSet::new();
        for i in 0..count {
            let kind = r.u8()?;
            let local = match kind {
                0 if i == 0 => true,
                1 if i > 0 => false,
                _ => return Err(format!("partition {i}: bad kind {kind}")),
            };
            let name = r.key()?;
            if !local && !names.insert(name) {
                return Err(format!("partition {name:?} appears twice"));
            }
            let horizon = r.f64("horizon", true)?;
            let horizon_until = r.f64("horizon_until", true)?;
            let n = r.u32()?;
            let mut entries = Vec::new();
            let mut ids = std::collections::HashSet::new();
            for _ in 0..n {
                let seq = r.u64()?;
                let expiry = r.f64("expiry", false)?;
                let stamp = r.f64("stamp", false)?;
                let id = r.key()?;
                if !ids.insert(id) {
                    return Err(format!("id {id:?} appears twice in one partition"));
                }
                entries.push((seq, expiry, stamp, id));
            }
            partitions.push(SavedPartition { local, name, horizon, horizon_until, entries });
        }
        if r.pos != body.len() {
            return Err(format!("{} unexpected bytes after the last partition", body.len() - r.pos));
        }
        if partitions.first().is_none_or(|p| !p.local) {
            return Err("the local partition is missing".into());
        }
        Ok(Saved { floor, evicted, forgotten, forgotten_horizon, forgotten_until, partitions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_entries: usize, per_peer: usize, max_peers: usize) -> Limits {
        Limits::new(300.0, max_entries, Some(per_peer), Some(max_peers)).unwrap()
    }

    #[test]
    fn first_time_true_then_false_until_expiry() {
        let mut d = Deduplicator::new(10.0, 100).unwrap();
        assert!(d.check_and_mark("", "a", 0.0));
        assert!(!d.check_and_mark("", "a", 9.9));
        assert!(d.check_and_mark("", "a", 10.0));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn sweep_and_capacity() {
        let mut d = Deduplicator::new(10.0, 3).unwrap();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(d.check_and_mark("", id, i as f64));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted(), 1);
        assert_eq!(d.horizon(Some(""), 4.0), 0.0);
        assert!(!d.contains(None, "a", 4.0));
        assert_eq!(d.sweep(12.5), 2); // b (exp 11) and c (exp 12)
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn refreshed_ids_do_not_grow_the_fifo_forever() {
        let mut d = Deduplicator::new(1.0, 4).unwrap();
        for i in 0..10_000 {
            d.mark("same", i as f64 * 0.001);
        }
        assert!(d.local.fifo.len() <= 2 * 4 + 16 + 1);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn same_id_from_two_senders_is_two_entries_but_own_ids_are_refused_from_all() {
        let mut d = Deduplicator::new(300.0, 100).unwrap();
        assert_eq!(d.check_frame("p", "x", 0.0, 0.0, 300.0, false), Check::Fresh);
        assert_eq!(d.check_frame("q", "x", 0.0, 0.0, 300.0, false), Check::Fresh);
        assert_eq!(d.check_frame("p", "x", 1.0, 0.0, 300.0, false), Check::Duplicate);
        d.mark("mine", 0.0);
        assert_eq!(d.check_frame("p", "mine", 1.0, 0.0, 300.0, false), Check::Duplicate);
        assert_eq!(d.check_frame("r", "mine", 1.0, 0.0, 300.0, false), Check::Duplicate);
    }

    #[test]
    fn a_peer_at_its_quota_evicts_only_its_own_entries() {
        let mut d = Deduplicator::with_limits(limits(1000, 10, 100));
        assert_eq!(d.check_frame("honest", "h", 0.0, 0.0, 300.0, false), Check::Fresh);
        for i in 0..1000 {
            let (id, ts) = (format!("flood-{i}"), 59.0 + i as f64 * 1e-3);
            assert_eq!(d.check_frame("flood", &id, 0.0, ts, ts + 300.0, false), Check::Fresh);
        }
        assert_eq!(d.len(), 11);
        assert_eq!(d.evicted(), 990);
        assert_eq!(d.horizon(Some("flood"), 1.0), 59.0 + 989.0 * 1e-3);
        assert_eq!(d.horizon(Some("honest"), 1.0), f64::NEG_INFINITY);
        assert_eq!(d.check_frame("honest", "h2", 1.0, 1.0, 301.0, false), Check::Fresh);
        assert_eq!(d.check_frame("flood", "new", 1.0, 1.0, 301.0, false), Check::BehindHorizon);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_entry_of_any_peer() {
        let mut d = Deduplicator::with_limits(limits(4, 4, 100));
        for (i, (s, id)) in [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4"), ("c", "5")].iter().enumerate() {
            assert_eq!(d.check_frame(s, id, i as f64, i as f64, 300.0, false), Check::Fresh);
        }
        assert_eq!(d.len(), 4);
        assert!(!d.contains(Some("a"), "1", 5.0));
        assert_eq!(d.horizon(Some("a"), 5.0), 0.0);
        assert_eq!(d.horizon(Some("b"), 5.0), f64::NEG_INFINITY);
    }

    #[test]
    fn too_many_peers_forget_the_oldest_empty_one_with_a_capped_horizon() {
        let mut d = Deduplicator::with_limits(limits(2, 1, 2));
        // "a" evicts its own entry: its horizon is 50 (ts ahead of arrival)
        assert_eq!(d.check_frame("a", "1", 0.0, 50.0, 350.0, false), Check::Fresh);
        assert_eq!(d.check_frame("a", "2", 1.0, 51.0, 351.0, false), Check::Fresh);
        assert_eq!(d.horizon(Some("a"), 1.0), 50.0);
        assert_eq!(d.check_frame("b", "1", 2.0, 2.0, 302.0, false), Check::Fresh);
        // a third peer: the table is full (2 IDs), the oldest ("a"/"2") goes,
        // "a" is then empty and is dropped; its horizon survives capped at now
        assert_eq!(d.check_frame("c", "1", 3.0, 3.0, 303.0, false), Check::Fresh);
        assert_eq!(d.partitions(), 2);
        assert_eq!(d.forgotten(), 1);
        assert_eq!(d.horizon(Some("a"), 3.0), 3.0);
        assert_eq!(d.check_frame("a", "2", 4.0, 3.0, 303.0, false), Check::BehindHorizon);
    }

    #[test]
    fn floor_and_own_horizon() {
        let mut d = Deduplicator::with_limits(limits(10, 1, 10));
        d.set_floor(100.0);
        assert_eq!(d.check_frame("p", "x", 200.0, 99.9, 400.0, false), Check::BeforeFloor);
        assert_eq!(d.check_frame("p", "x", 200.0, 100.0, 400.0, false), Check::Fresh);
        d.mark("m1", 150.0);
        d.mark("m2", 151.0); // evicts m1: our own horizon is 150
        assert_eq!(d.check_frame("p", "m1", 200.0, 150.0, 450.0, true), Check::BehindHorizon);
        assert_eq!(d.check_frame("p", "other", 200.0, 150.0, 450.0, false), Check::Fresh);
    }

    #[test]
    fn long_ids_are_stored_hashed() {
        let mut d = Deduplicator::new(10.0, 10).unwrap();
        let long = "x".repeat(10_000);
        assert!(d.check_and_mark("", &long, 0.0));
        assert!(!d.check_and_mark("", &long, 1.0));
        assert!(d.check_and_mark("", &long[..9_999], 1.0));
        assert_eq!(table_key(&long).len(), 65);
    }

    #[test]
    fn round_trip_and_damage() {
        let mut d = Deduplicator::with_limits(limits(100, 3, 10));
        d.mark("mine", 0.0);
        for i in 0..5 {
            assert_eq!(d.check_frame("p", &format!("p{i}"), 1.0, 1.0 + i as f64, 301.0, false), Check::Fresh);
        }
        assert_eq!(d.check_frame("q", "q0", 2.0, 2.0, 302.0, false), Check::Fresh);
        d.set_floor(-5.0);
        let bytes = d.to_bytes(3.0);
        let e = Deduplicator::from_bytes(&bytes, d.limits(), 3.0).unwrap();
        assert_eq!(e.len(), 5);
        assert_eq!(e.floor(), -5.0);
        assert_eq!(e.evicted(), 2);
        assert_eq!(e.horizon(Some("p"), 3.0), 2.0);
        assert!(e.contains(Some("p"), "p4", 3.0) && e.contains(Some("q"), "q0", 3.0));
        assert!(e.contains(Some("zz"), "mine", 3.0));
        for cut in 0..bytes.len() {
            assert!(Deduplicator::from_bytes(&bytes[..cut], d.limits(), 3.0).is_err());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Deduplicator::from_bytes(&bad, d.limits(), 3.0).is_err());
        }
    }

    #[test]
    fn marking_one_id_at_one_clock_reading_many_times_stays_cheap() {
        // cause: each mark of a live ID pushed a FIFO entry with the same expiry,
        // which compaction could not drop, so every insert rescanned them all
        // (the fix: such a mark changes nothing); the FIFO length is the measure
        let mut d = Deduplicator::new(300.0, 1000).expect("table");
        for _ in 0..10_000 {
            d.mark("same", 1000.0);
        }
        assert!(d.local.fifo.len() <= 2, "fifo grew to {}", d.local.fifo.len());
        assert!(d.contains(None, "same", 1000.0));
        d.mark("same", 1001.0); // a later clock reading still refreshes it
        assert!(d.contains(None, "same", 1300.5));
    }
}
