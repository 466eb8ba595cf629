//! Base62 with the alphabet `0-9A-Za-z`, the one the key format fixes.

use rand::Rng;

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters drawn uniformly from the alphabet by the OS-seeded CSPRNG.
pub fn random(len: usize) -> String {
    let mut s = String::with_capacity(len);
    push_random(&mut s, len);
    s
}

/// Below this a random byte maps onto the alphabet uniformly (`b % 62`):
/// the largest multiple of 62 a byte holds. Bytes at or above it are
/// drawn again.
const UNIFORM_BELOW: u8 = 248;

/// Appends `len` characters drawn uniformly from the alphabet by the
/// OS-seeded CSPRNG to `s`. Random bytes are drawn a block at a time
/// (about 3 % of them are thrown away to keep the draw uniform) rather
/// than one bounded draw per character.
pub fn push_random(s: &mut String, len: usize) {
    let mut rng = rand::rng();
    let mut bytes = [0u8; 64];
    let mut left = len;
    while left > 0 {
        // A few more than needed, so that one block usually does.
        let block = &mut bytes[..(left + left / 16 + 2).min(64)];
        rng.fill(&mut block[..]);
        for &b in block.iter().filter(|&&b| b < UNIFORM_BELOW).take(left) {
            s.push(char::from(ALPHABET[usize::from(b % 62)]));
            left -= 1;
        }
    }
}

/// `value` in base62, most significant digit first, left-padded with `0` to
/// `width` digits. `width` must be large enough for `value`.
pub fn encode_padded(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    debug_assert_eq!(value, 0, "width too small for value");
    // The alphabet is ASCII, so the bytes are valid UTF-8.
    String::from_utf8(digits).expect("base62 digits are ASCII")
}

/// An id that sorts by time: `millis` (since the epoch; 8 digits last
/// until the year 8888) then `random_len` random digits. A store's index
/// takes such ids at its end rather than all over it: one page written
/// per batch of inserts instead of one per id.
pub fn time_ordered(millis: i64, random_len: usize) -> String {
    let mut id = encode_padded(millis.max(0) as u64, 8);
    id.reserve_exact(random_len);
    push_random(&mut id, random_len);
    id
}

pub fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_most_significant_digit_first_with_zero_padding() {
        let check = |value, width, expected: &str| assert_eq!(encode_padded(value, width), expected);
        check(0, 6, "000000");
        check(61, 6, "00000z");
        check(62, 6, "000010");
        check(u32::MAX as u64, 6, "4gfFC3");
    }

    #[test]
    fn time_ordered_ids_sort_as_their_times_do() {
        let (earlier, later) = (time_ordered(1_764_000_000_000, 14), time_ordered(1_764_000_000_001, 14));
        assert_eq!((earlier.len(), later.len()), (22, 22));
        assert!(earlier < later, "{earlier} < {later}");
        assert!(time_ordered(0, 4).starts_with("00000000"));
        assert_ne!(time_ordered(5, 14), time_ordered(5, 14), "same millisecond, different ids");
        assert!(is_base62(&later));
    }

    #[test]
    fn random_strings_use_only_the_alphabet() {
        let s = random(1000);
        assert_eq!(s.len(), 1000);
        assert!(is_base62(&s));
        for len in [0, 1, 20, 63, 64, 65, 200] {
            assert_eq!(random(len).len(), len, "{len}");
        }
    }

    #[test]
    fn every_character_is_drawn_about_as_often() {
        // 620,000 draws: 10,000 expected per character, a standard
        // deviation of about 99; the bounds are eight deviations wide. A
        // modulo bias (bytes ≥ 248 kept) would give the first eight
        // characters about 12,100 and the others about 9,700.
        let mut seen = [0u32; 62];
        for b in random(620_000).bytes() {
            seen[ALPHABET.iter().position(|&a| a == b).expect("in the alphabet")] += 1;
        }
        for (c, n) in ALPHABET.iter().zip(seen) {
            assert!((9_200..=10_800).contains(&n), "{} drawn {n} times", char::from(*c));
        }
    }
}
