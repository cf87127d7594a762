//! The table of queries waiting for an upstream: a slab bounded by
//! configuration, and an index from (socket, ID) to its entry.
//!
//! An entry holds everything its answer needs (the held query and where to
//! send the answer), so a reply is matched with one hash lookup and
//! answered without reading the client's packet again. Entries are reused:
//! after warm-up, forwarding a query allocates nothing here.

use std::time::Instant;

use rustc_hash::FxHashMap;

use super::{HeldQuery, Kept, ReplyTo};

/// One query waiting, and where its current attempt stands.
pub struct Waiting {
    pub held: HeldQuery,
    pub reply_to: ReplyTo,
    /// Index of the server being tried, in failover order.
    pub(super) server: usize,
    pub(super) attempt: Attempt,
    /// When the current attempt was sent, and when it times out.
    pub(super) sent: Instant,
    pub(super) deadline: Instant,
    /// The last answer with an error RCODE, relayed if no server does better.
    pub(super) last: Option<Box<Kept>>,
}

/// Where a waiting query's current attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// To be sent at the end of this turn.
    Queued,
    /// Sent over UDP from pool socket `slot` with query ID `id`.
    Udp { slot: u16, id: u16 },
    /// Retried over TCP (the UDP reply was truncated); a task is on it.
    Tcp,
}

struct Entry {
    /// Bumped each time the entry is reused, so a late TCP result for an
    /// earlier query cannot land on a later one.
    generation: u32,
    waiting: Option<Waiting>,
}

pub struct Inflight {
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// (pool slot << 16 | query ID) → entry. Keys are our own random IDs,
    /// not attacker input, so the fast unkeyed hash is fine.
    by_id: FxHashMap<u32, u32>,
    capacity: usize,
    live: usize,
}

fn key(slot: u16, id: u16) -> u32 {
    u32::from(slot) << 16 | u32::from(id)
}

impl Inflight {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            by_id: FxHashMap::default(),
            capacity,
            live: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn has_room(&self) -> bool {
        self.live < self.capacity
    }

    /// Stores `w` and returns its index, or `None` (dropping `w`) when the
    /// table is full: callers ask [`Inflight::has_room`] first.
    pub fn insert(&mut self, w: Waiting) -> Option<u32> {
        if !self.has_room() {
            return None;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    waiting: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let e = &mut self.entries[index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.waiting = Some(w);
        self.live += 1;
        Some(index)
    }

    pub fn get(&self, index: u32) -> Option<&Waiting> {
        self.entries.get(index as usize)?.waiting.as_ref()
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut Waiting> {
        self.entries.get_mut(index as usize)?.waiting.as_mut()
    }

    pub fn generation(&self, index: u32) -> u32 {
        self.entries.get(index as usize).map_or(0, |e| e.generation)
    }

    /// Removes an entry (its UDP attempt must already be unbound).
    pub fn take(&mut self, index: u32) -> Option<Waiting> {
        let w = self.entries.get_mut(index as usize)?.waiting.take()?;
        self.free.push(index);
        self.live -= 1;
        Some(w)
    }

    /// Ties (slot, id) to `index`; false when the pair is in use.
    pub fn bind(&mut self, index: u32, slot: u16, id: u16) -> bool {
        match self.by_id.entry(key(slot, id)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(index);
                true
            }
        }
    }

    pub fn unbind(&mut self, slot: u16, id: u16) {
        self.by_id.remove(&key(slot, id));
    }

    pub fn find(&self, slot: u16, id: u16) -> Option<u32> {
        self.by_id.get(&key(slot, id)).copied()
    }

    /// Indices of entries whose UDP attempt has timed out by `now`, and
    /// the earliest deadline of those still running.
    pub fn expired(&self, now: Instant, into: &mut Vec<u32>) -> Option<Instant> {
        into.clear();
        let mut earliest: Option<Instant> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let Some(w) = &e.waiting else { continue };
            if !matches!(w.attempt, Attempt::Udp { .. }) {
                continue;
            }
            if w.deadline <= now {
                into.push(i as u32);
            } else {
                earliest = Some(earliest.map_or(w.deadline, |t| t.min(w.deadline)));
            }
        }
        earliest
    }
}
