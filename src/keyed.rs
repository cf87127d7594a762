//! A keyed 64-bit hash for maps whose keys come from the network (query
//! names, client addresses): a folded 64×64→128 multiply, 8 bytes at a
//! time (the wyhash/foldhash core), with a seed and a multiplier drawn at
//! random per instance. About a fifth of SipHash's instructions on a short
//! name, and nobody outside can aim many keys at one bucket without the
//! key. Not a MAC: where a hash must keep a secret (`log.client: hashed`),
//! HMAC-SHA256 is used instead.

use std::hash::Hasher;

/// A random hash key.
#[derive(Debug, Clone, Copy)]
pub struct Keyed {
    seed: u64,
    k: u64,
}

#[inline(always)]
fn mix(x: u64, k: u64) -> u64 {
    let m = u128::from(x) * u128::from(k);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Keyed {
    pub fn random() -> Self {
        Self {
            seed: rand::random(),
            // Odd, so no bit of the multiplier is wasted.
            k: rand::random::<u64>() | 1,
        }
    }

    /// The hash of `bytes`.
    #[inline]
    pub fn hash(&self, bytes: &[u8]) -> u64 {
        let mut h = self.seed ^ bytes.len() as u64;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = mix(h ^ u64::from_le_bytes(w), self.k);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = mix(h ^ u64::from_le_bytes(w), self.k);
        }
        mix(h, self.k.rotate_left(32) | 1)
    }
}

/// A map key that is already a keyed hash: passed through as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in case that changes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The `BuildHasher` of maps keyed by [`Keyed::hash`] values.
pub type PassThroughState = std::hash::BuildHasherDefault<PassThrough>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_same_hash_other_key_other_hash() {
        let a = Keyed::random();
        let b = Keyed::random();
        assert_eq!(a.hash(b"zoom.us"), a.hash(b"zoom.us"));
        assert_ne!(a.hash(b"zoom.us"), a.hash(b"zoom.uS"));
        assert_ne!(a.hash(b"zoom.us"), b.hash(b"zoom.us"));
        // Lengths are part of the hash: a short key is not its zero-padded self.
        assert_ne!(a.hash(b"ab"), a.hash(b"ab\0"));
    }
}
