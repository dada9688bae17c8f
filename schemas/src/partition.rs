//! Which partition a license's events live in.
//!
//! The collectors key every message by license and let librdkafka's
//! `murmur2_random` partitioner place it, which is the Java client's default
//! (and kafka-python's): any producer keyed by license, in any language, puts a
//! license in the same partition. The detector needs the same function to
//! rebuild the state of a partition it is handed from the archive, where it
//! selects the licenses of that partition in SQL.

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), as an unsigned value.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `partitions`, as the Java default partitioner
/// and librdkafka's `murmur2_random` choose it.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_java_client() {
        // Values from kafka-python's `murmur2` (itself checked against Java's).
        let cases: [(&[u8], u32, i32); 5] =
            [(b"21", 3_321_034_988, 0), (b"foobar", 3_504_634_814, 2), (b"abc", 479_470_107, 3), (b"CA-R-0001", 1_411_402_293, 1), (b"", 275_646_681, 1)];
        for (key, hash, partition_of_4) in cases {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
            assert_eq!(partition_for(key, 4), partition_of_4, "{}", String::from_utf8_lossy(key));
        }
    }
}
