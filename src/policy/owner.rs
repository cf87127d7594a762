//! Which list owns a rule index.
//!
//! Rules are numbered list by list, so a rule's list follows from its index
//! alone and a blocked query never has to read the (large, uncached) rule
//! table. A binary search over the lists' start indices cost ~45
//! instructions a hit; a page table makes the usual case one load.

use super::ListId;

/// Indices per page. 1M rules make ~1,000 pages: 2 KiB of `u16`s.
const PAGE_SHIFT: u32 = 10;

pub(super) struct Owners {
    /// `starts[i]`: the first index of list `i` (lists may be empty, so
    /// neighbours may be equal).
    starts: Box<[u32]>,
    /// `pages[p]`: the list owning the first index of page `p`; one more
    /// entry at the end for the last rule. A page's rules belong to lists
    /// `pages[p]..=pages[p + 1]`.
    pages: Box<[u16]>,
}

impl Owners {
    /// `starts` as pushed by the builder (sorted, the first 0); `rules` the
    /// total count. List ids fit `u16` (the builder enforces it).
    pub(super) fn new(starts: Vec<u32>, rules: usize) -> Self {
        let pages = if rules == 0 {
            Box::default()
        } else {
            let owner = |i: usize| (starts.partition_point(|s| *s as usize <= i) - 1) as u16;
            let last_page = (rules - 1) >> PAGE_SHIFT;
            (0..=last_page)
                .map(|p| owner(p << PAGE_SHIFT))
                .chain(std::iter::once(owner(rules - 1)))
                .collect()
        };
        Self {
            starts: starts.into_boxed_slice(),
            pages,
        }
    }

    /// The list owning `index`, which must be a rule's (below the count
    /// given to `new`).
    #[inline(always)]
    pub(super) fn owner(&self, index: usize) -> ListId {
        let page = index >> PAGE_SHIFT;
        let first = usize::from(self.pages[page]);
        let last = usize::from(self.pages[page + 1]);
        if first == last {
            return ListId(first as u16);
        }
        // Some lists start inside this page: count those starting at or
        // before `index`.
        let later = self.starts[first + 1..=last].partition_point(|s| *s as usize <= index);
        ListId((first + later) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: the last list whose start is at or before the index.
    fn reference(starts: &[u32], index: usize) -> u16 {
        (starts.partition_point(|s| *s as usize <= index) - 1) as u16
    }

    fn check(sizes: &[usize]) {
        let mut starts = Vec::new();
        let mut total = 0;
        for size in sizes {
            starts.push(total as u32);
            total += size;
        }
        let owners = Owners::new(starts.clone(), total);
        for index in 0..total {
            assert_eq!(
                owners.owner(index).0,
                reference(&starts, index),
                "index {index} of lists sized {sizes:?}"
            );
        }
    }

    #[test]
    fn one_list() {
        check(&[1]);
        check(&[1 << PAGE_SHIFT]);
        check(&[3000]);
    }

    #[test]
    fn lists_starting_inside_pages_and_on_their_edges() {
        let page = 1 << PAGE_SHIFT;
        check(&[page, page, 1]);
        check(&[page - 1, 2, page, 5, 5, 5, page + 1]);
        check(&[7; 500]);
    }

    #[test]
    fn empty_lists_anywhere() {
        let page = 1 << PAGE_SHIFT;
        check(&[0, 0, 5, 0, page, 0, 0, 1, 0]);
        check(&[0, page, 0]);
    }

    #[test]
    fn no_rules_no_pages() {
        assert!(Owners::new(vec![0, 0], 0).pages.is_empty());
        assert!(Owners::new(vec![], 0).pages.is_empty());
    }
}
