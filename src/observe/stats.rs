//! `/stats`: the most blocked names, categories and clients over a
//! sliding window, in memory fixed by configuration.
//!
//! The window (`stats.window`) is cut into [`BUCKETS`] buckets; each holds
//! exact counts per category (categories come from the configuration) and
//! a Space-Saving summary (Metwally, Agrawal, El Abbadi 2005) of at most
//! [`CAPACITY`] names and as many clients. Space-Saving keeps the heavy
//! hitters of any stream in fixed space: an item not yet tracked replaces
//! the one with the smallest count and inherits that count plus one, so a
//! count can be over by at most that minimum, never under. A report adds
//! up the buckets still inside the window: the window slides a bucket at a
//! time (five minutes of an hour).
//!
//! Updated by the audit writer's thread, off the query path.

use std::collections::HashMap;

use crate::keyed::{Keyed, PassThroughState};

use serde::Serialize;

/// Buckets per window.
pub const BUCKETS: u64 = 12;
/// Names (and clients) each bucket tracks.
pub const CAPACITY: usize = 1000;
/// Entries a report lists.
const TOP: usize = 20;

/// Heavy hitters of a stream of keys, in space for `capacity` of them.
///
/// Layout, and why: tracked keys live in a slab (`slots`) that never moves;
/// the min-heap holds slot numbers, and each slot knows where it is in the
/// heap, so moving an entry in the heap touches no hash map. A key is
/// hashed once per event (keyed, see `crate::keyed`) to find its slot. An
/// evicted slot's string buffer is reused for its successor, so after
/// warm-up counting allocates nothing.
#[derive(Debug)]
struct SpaceSaving {
    capacity: usize,
    keyed: Keyed,
    /// Slot numbers, a min-heap on their counts.
    heap: Vec<u32>,
    slots: Vec<Slot>,
    /// A key's hash → its slot. Two keys that share all 64 bits share a
    /// slot, as if the second had evicted the first: within the sketch's
    /// error, and never aimed (the hash is keyed).
    index: HashMap<u64, u32, PassThroughState>,
}

#[derive(Debug)]
struct Slot {
    key: String,
    hash: u64,
    count: u64,
    /// Where this slot is in `heap`.
    at: u32,
}

impl SpaceSaving {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            keyed: Keyed::random(),
            heap: Vec::new(),
            slots: Vec::new(),
            index: HashMap::default(),
        }
    }

    fn clear(&mut self) {
        // Slots (and their buffers) stay for reuse; the heap and index go.
        self.heap.clear();
        self.index.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }

    fn add(&mut self, key: &str) {
        let hash = self.keyed.hash(key.as_bytes());
        if let Some(&id) = self.index.get(&hash) {
            let slot = &mut self.slots[id as usize];
            if slot.key != key {
                slot.key.clear();
                slot.key.push_str(key);
            }
            slot.count += 1;
            let at = slot.at as usize;
            self.sift_down(at);
            return;
        }
        if self.heap.len() < self.capacity {
            // A free slot: one cleared earlier, or a new one.
            let id = self.heap.len();
            if id == self.slots.len() {
                self.slots.push(Slot {
                    key: String::with_capacity(key.len()),
                    hash,
                    count: 0,
                    at: 0,
                });
            }
            let slot = &mut self.slots[id];
            slot.key.clear();
            slot.key.push_str(key);
            slot.hash = hash;
            slot.count = 1;
            slot.at = id as u32;
            self.heap.push(id as u32);
            self.index.insert(hash, id as u32);
            self.sift_up(id);
            return;
        }
        // Full: the least counted key gives its slot, and its count.
        let Some(&id) = self.heap.first() else {
            return;
        };
        let slot = &mut self.slots[id as usize];
        self.index.remove(&slot.hash);
        slot.key.clear();
        slot.key.push_str(key);
        slot.hash = hash;
        slot.count += 1;
        self.index.insert(hash, id);
        self.sift_down(0);
    }

    fn count_at(&self, at: usize) -> u64 {
        self.slots[self.heap[at] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.slots[self.heap[a] as usize].at = a as u32;
        self.slots[self.heap[b] as usize].at = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.count_at(parent) <= self.count_at(i) {
                break;
            }
            self.swap(parent, i);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.count_at(l) < self.count_at(least) {
                least = l;
            }
            if r < self.heap.len() && self.count_at(r) < self.count_at(least) {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }

    fn entries(&self) -> impl Iterator<Item = (&str, u64)> {
        self.heap.iter().map(|&id| {
            let s = &self.slots[id as usize];
            (s.key.as_str(), s.count)
        })
    }
}

#[derive(Debug)]
struct Bucket {
    /// Which bucket-length period of time this holds (`u64::MAX`: none).
    epoch: u64,
    names: SpaceSaving,
    clients: SpaceSaving,
    categories: Vec<u64>,
}

/// The sliding window of blocked queries.
#[derive(Debug)]
pub struct Stats {
    window_seconds: u64,
    bucket_seconds: u64,
    buckets: Vec<Bucket>,
    categories: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NameCount {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CategoryCount {
    pub category: String,
    pub count: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ClientCount {
    pub client: String,
    pub count: u64,
}

/// What `GET /stats` answers.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    pub window_seconds: u64,
    pub top_blocked_names: Vec<NameCount>,
    pub top_categories: Vec<CategoryCount>,
    pub top_clients: Vec<ClientCount>,
}

impl Stats {
    /// `categories` by `CategoryId`.
    pub fn new(window_seconds: u64, categories: Vec<String>) -> Self {
        let window_seconds = window_seconds.max(BUCKETS);
        Self {
            window_seconds,
            bucket_seconds: window_seconds.div_ceil(BUCKETS),
            buckets: (0..BUCKETS)
                .map(|_| Bucket {
                    epoch: u64::MAX,
                    names: SpaceSaving::new(CAPACITY),
                    clients: SpaceSaving::new(CAPACITY),
                    categories: vec![0; categories.len()],
                })
                .collect(),
            categories,
        }
    }

    /// Counts one blocked query at `now` (Unix seconds).
    pub fn count(&mut self, now: u64, name: &str, category: usize, client: Option<&str>) {
        let epoch = now / self.bucket_seconds;
        let b = &mut self.buckets[(epoch % BUCKETS) as usize];
        if b.epoch != epoch {
            b.epoch = epoch;
            b.names.clear();
            b.clients.clear();
            b.categories.fill(0);
        }
        b.names.add(name);
        if let Some(c) = client {
            b.clients.add(c);
        }
        if let Some(n) = b.categories.get_mut(category) {
            *n += 1;
        }
    }

    /// The top entries over the window ending at `now`.
    pub fn report(&self, now: u64) -> Report {
        let current = now / self.bucket_seconds;
        let live = || {
            self.buckets.iter().filter(move |b| {
                b.epoch != u64::MAX && b.epoch + BUCKETS > current && b.epoch <= current
            })
        };
        let top = |pick: &dyn Fn(&Bucket) -> &SpaceSaving| {
            let mut sum: HashMap<&str, u64> = HashMap::new();
            for b in live() {
                for (k, c) in pick(b).entries() {
                    *sum.entry(k).or_default() += c;
                }
            }
            let mut v: Vec<(&str, u64)> = sum.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            v.truncate(TOP);
            v
        };
        let mut categories: Vec<(usize, u64)> = (0..self.categories.len())
            .map(|i| (i, live().map(|b| b.categories[i]).sum()))
            .filter(|(_, c)| *c > 0)
            .collect();
        categories.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        categories.truncate(TOP);
        Report {
            window_seconds: self.window_seconds,
            top_blocked_names: top(&|b| &b.names)
                .into_iter()
                .map(|(name, count)| NameCount {
                    name: name.to_owned(),
                    count,
                })
                .collect(),
            top_categories: categories
                .into_iter()
                .map(|(i, count)| CategoryCount {
                    category: self.categories[i].clone(),
                    count,
                })
                .collect(),
            top_clients: top(&|b| &b.clients)
                .into_iter()
                .map(|(client, count)| ClientCount {
                    client: client.to_owned(),
                    count,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_saving_keeps_the_heavy_hitters_in_fixed_space() {
        // Space-Saving tracks every key seen more than N/capacity times:
        // here N = 11,750 and capacity 100, so anything over 118.
        let mut s = SpaceSaving::new(100);
        // Three heavy names among 10,000 distinct light ones.
        for i in 0..10_000 {
            s.add(&format!("light{i}"));
            if i % 10 == 0 {
                s.add("heavy-a");
            }
            if i % 20 == 0 {
                s.add("heavy-b");
            }
            if i % 40 == 0 {
                s.add("heavy-c");
            }
        }
        assert_eq!(s.len(), 100);
        assert_eq!(s.index.len(), 100);
        assert_eq!(s.slots.len(), 100);
        let mut top: Vec<(&str, u64)> = s.entries().collect();
        top.sort_by_key(|e| std::cmp::Reverse(e.1));
        let names: Vec<&str> = top.iter().take(3).map(|e| e.0).collect();
        assert_eq!(names, ["heavy-a", "heavy-b", "heavy-c"]);
        // Never under: the true counts are 1000, 500, 250.
        assert!(top[0].1 >= 1000 && top[1].1 >= 500 && top[2].1 >= 250);
    }

    #[test]
    fn the_window_slides_a_bucket_at_a_time() {
        let mut st = Stats::new(120, vec!["video".into(), "ads".into()]);
        // 120 s in 12 buckets of 10 s.
        for _ in 0..3 {
            st.count(1_000, "zoom.us", 0, Some("10.0.0.1"));
        }
        st.count(1_005, "ads.test", 1, Some("10.0.0.2"));
        let r = st.report(1_005);
        assert_eq!(r.window_seconds, 120);
        assert_eq!(
            r.top_blocked_names,
            vec![
                NameCount {
                    name: "zoom.us".into(),
                    count: 3
                },
                NameCount {
                    name: "ads.test".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(r.top_categories[0].category, "video");
        assert_eq!(r.top_clients[0].client, "10.0.0.1");
        // 120 s later the first bucket has left the window.
        assert!(st.report(1_130).top_blocked_names.is_empty());
        // A bucket reused for a later period starts from zero.
        st.count(1_120, "new.test", 1, None);
        let r = st.report(1_120);
        assert_eq!(r.top_blocked_names.len(), 1);
        assert!(r.top_clients.is_empty());
    }

    #[test]
    fn memory_does_not_grow_with_distinct_names() {
        let mut st = Stats::new(3600, vec!["c".into()]);
        for i in 0..200_000u64 {
            st.count(
                1_000_000 + i / 100,
                &format!("n{i}.test"),
                0,
                Some("10.0.0.1"),
            );
        }
        for b in &st.buckets {
            assert!(b.names.len() <= CAPACITY && b.names.slots.len() <= CAPACITY);
        }
        assert_eq!(st.report(1_002_000).top_blocked_names.len(), 20);
    }
}
