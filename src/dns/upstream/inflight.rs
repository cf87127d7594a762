//! The table of queries waiting for an upstream: a slab bounded by
//! configuration, an index from (socket, ID) to its entry, and one from
//! question to entry.
//!
//! An entry holds everything its answer needs (the held query and where to
//! send the answer), so a reply is matched with one hash lookup and
//! answered without reading the client's packet again. Entries are reused:
//! after warm-up, forwarding a query allocates nothing here.
//!
//! A query whose question is already waiting joins that entry as a
//! follower instead of going upstream again (Unbound's mesh does the same):
//! a thousand clients asking for a name that just expired cost one upstream
//! query, and a query that comes back to us through a forwarding loop
//! joins itself instead of going round again, which is what bounds the work
//! one client query can cause. Followers count against the same capacity.

use std::collections::HashMap;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::{HeldQuery, Kept, ReplyTo};
use crate::dns::wire::MAX_QUESTION_LEN;
use crate::keyed::{Keyed, PassThroughState};

/// Most followers one waiting query takes; past it a query of the same
/// question goes upstream on its own (the list's memory stays bounded per
/// entry, and one slow answer does not hold an unbounded crowd).
pub const MAX_FOLLOWERS: usize = 256;

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
    /// Queries for the same question that wait on this one's answer.
    pub(super) followers: Vec<(HeldQuery, ReplyTo)>,
    /// This entry's key in the question index, when it is there.
    pub(super) question_key: Option<u64>,
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
    /// Question (keyed hash: names come from clients) → entry.
    by_question: HashMap<u64, u32, PassThroughState>,
    keyed: Keyed,
    capacity: usize,
    /// Entries and their followers.
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
            by_question: HashMap::default(),
            keyed: Keyed::random(),
            capacity,
            live: 0,
        }
    }

    /// The question index's key for `held`: its question without regard to
    /// case, and the DO and CD bits (they change the answer).
    pub fn question_key(&self, held: &HeldQuery) -> u64 {
        let q = held.query();
        let mut buf = [0u8; MAX_QUESTION_LEN + 1];
        let n = q.question.len().min(MAX_QUESTION_LEN);
        for (b, c) in buf.iter_mut().zip(&q.question[..n]) {
            *b = c.to_ascii_lowercase();
        }
        buf[n] = u8::from(q.dnssec_ok()) << 1 | u8::from(q.cd());
        self.keyed.hash(&buf[..=n])
    }

    /// The entry `held` may follow: one waiting for the same question,
    /// with room for another follower.
    pub fn leader_for(&self, key: u64, held: &HeldQuery) -> Option<u32> {
        if !self.has_room() {
            return None;
        }
        let index = *self.by_question.get(&key)?;
        let w = self.get(index)?;
        let (a, b) = (w.held.query(), held.query());
        let same = a.question.eq_ignore_ascii_case(b.question)
            && a.dnssec_ok() == b.dnssec_ok()
            && a.cd() == b.cd();
        (same && w.followers.len() < MAX_FOLLOWERS).then_some(index)
    }

    /// Adds a follower to entry `index` (from [`Inflight::leader_for`]).
    pub fn follow(&mut self, index: u32, held: HeldQuery, reply_to: ReplyTo) {
        if let Some(w) = self.get_mut(index) {
            w.followers.push((held, reply_to));
            self.live += 1;
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
        let key = w.question_key;
        let e = &mut self.entries[index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.waiting = Some(w);
        self.live += 1;
        if let Some(key) = key {
            match self.by_question.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(index);
                }
                // Another entry (full of followers) has it: this one is
                // not in the index.
                std::collections::hash_map::Entry::Occupied(_) => {
                    if let Some(w) = self.get_mut(index) {
                        w.question_key = None;
                    }
                }
            }
        }
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

    /// Removes an entry with its followers (its UDP attempt must already
    /// be unbound).
    pub fn take(&mut self, index: u32) -> Option<Waiting> {
        let w = self.entries.get_mut(index as usize)?.waiting.take()?;
        self.free.push(index);
        self.live -= 1 + w.followers.len();
        if let Some(key) = w.question_key {
            self.by_question.remove(&key);
        }
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
