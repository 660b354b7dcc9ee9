//! The last N message ids, for duplicate detection.

use std::collections::{HashSet, VecDeque};

/// The last N message ids, for duplicate detection. Kept as SHA-256
/// digests, so the memory they take does not depend on how long ids are.
pub(super) struct RecentIds {
    order: VecDeque<IdKey>,
    set: HashSet<IdKey>,
    capacity: usize,
}

type IdKey = [u8; 32];

impl RecentIds {
    pub(super) fn new(capacity: usize) -> Self {
        RecentIds { order: VecDeque::new(), set: HashSet::new(), capacity }
    }

    /// `Some(key)` if `id` is new (and now remembered under `key`).
    pub(super) fn claim(&mut self, id: &str) -> Option<IdKey> {
        let key = Self::key(id);
        if self.capacity == 0 {
            return Some(key);
        }
        if !self.set.insert(key) {
            return None;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        Some(key)
    }

    pub(super) fn key(id: &str) -> IdKey {
        use sha2::Digest;
        sha2::Sha256::digest(id.as_bytes()).into()
    }

    pub(super) fn release(&mut self, key: &IdKey) {
        if self.set.remove(key) {
            self.order.retain(|x| x != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut r = RecentIds::new(2);
        assert!(r.claim("a").is_some() && r.claim("b").is_some());
        assert!(r.claim("a").is_none());
        assert!(r.claim("c").is_some());
        let a = r.claim("a").expect("a fell out of the window");
        r.release(&a);
        assert!(r.claim("a").is_some());
    }
}
