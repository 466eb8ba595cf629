//! Base62 with the alphabet `0-9A-Za-z`, the one the key format fixes.

use rand::Rng;

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters drawn uniformly from the alphabet by the OS-seeded CSPRNG.
pub fn random(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
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
    id.push_str(&random(random_len));
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
    }
}
