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

use serde::Serialize;

/// Buckets per window.
pub const BUCKETS: u64 = 12;
/// Names (and clients) each bucket tracks.
pub const CAPACITY: usize = 1000;
/// Entries a report lists.
const TOP: usize = 20;

/// Heavy hitters of a stream of keys, in space for `capacity` of them.
#[derive(Debug)]
struct SpaceSaving {
    capacity: usize,
    /// A min-heap on count; `index` says where each key is.
    heap: Vec<(u64, Box<str>)>,
    index: HashMap<Box<str>, usize>,
}

impl SpaceSaving {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            heap: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn clear(&mut self) {
        self.heap.clear();
        self.index.clear();
    }

    fn add(&mut self, key: &str) {
        if let Some(&i) = self.index.get(key) {
            self.heap[i].0 += 1;
            self.sift_down(i);
            return;
        }
        if self.heap.len() < self.capacity {
            let key: Box<str> = key.into();
            self.heap.push((1, key.clone()));
            let i = self.heap.len() - 1;
            self.index.insert(key, i);
            self.sift_up(i);
            return;
        }
        // Full: the least counted key gives its place (and its count).
        let Some((min, _)) = self.heap.first() else {
            return;
        };
        let count = min + 1;
        let key: Box<str> = key.into();
        let old = std::mem::replace(&mut self.heap[0], (count, key.clone()));
        self.index.remove(&old.1);
        self.index.insert(key, 0);
        self.sift_down(0);
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for i in [a, b] {
            if let Some(slot) = self.index.get_mut(&self.heap[i].1) {
                *slot = i;
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
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
            if l < self.heap.len() && self.heap[l].0 < self.heap[least].0 {
                least = l;
            }
            if r < self.heap.len() && self.heap[r].0 < self.heap[least].0 {
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
        self.heap.iter().map(|(c, k)| (&**k, *c))
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
        assert_eq!(s.heap.len(), 100);
        assert_eq!(s.index.len(), 100);
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
            assert!(b.names.heap.len() <= CAPACITY && b.names.index.len() <= CAPACITY);
        }
        assert_eq!(st.report(1_002_000).top_blocked_names.len(), 20);
    }
}
