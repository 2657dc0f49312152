//! Key ids and key secrets.

use zeroize::Zeroizing;

/// What every key secret starts with, so leaked keys are easy to recognise and scan for.
pub const SECRET_PREFIX: &str = "cf_";

/// Characters of a secret kept for display (`cf_` and 9 more): enough to tell keys apart,
/// far too few (about 53 bits of the 256) to help guess the rest.
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// Random bytes in a secret (issue 3: at least 32, from the OS CSPRNG).
const SECRET_BYTES: usize = 32;

/// Base62 digits of a 256-bit number: 62^43 > 2^256 > 62^42.
const SECRET_DIGITS: usize = 43;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the OS has no usable random source; issuing a guessable credential would be worse.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the OS random source is unavailable");
}

/// A new key id: `key_` and 20 lowercase base32 characters (100 random bits). Ids are not
/// secret; they only need to be unique.
pub fn new_key_id() -> String {
    let mut bytes = [0u8; 13];
    fill_random(&mut bytes);
    let mut id = String::with_capacity(24);
    id.push_str("key_");
    for i in 0..20 {
        let bit = i * 5;
        let pair = u16::from(bytes[bit / 8]) << 8 | u16::from(bytes[bit / 8 + 1]);
        let index = (pair >> (11 - bit % 8)) & 0x1f;
        id.push(BASE32_LOWER[index as usize] as char);
    }
    id
}

/// A new key secret: `cf_` and the base62 form of 32 bytes from the OS CSPRNG, always 46
/// characters. Zeroized when dropped.
pub fn new_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
    fill_random(bytes.as_mut());
    let mut digits = Zeroizing::new([0u8; SECRET_DIGITS]);
    // Schoolbook division of the big-endian number by 62, least significant digit first.
    for digit in digits.iter_mut().rev() {
        let mut remainder: u32 = 0;
        for byte in bytes.iter_mut() {
            let value = remainder << 8 | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        *digit = BASE62[remainder as usize];
    }
    let mut secret = Zeroizing::new(String::with_capacity(SECRET_PREFIX.len() + SECRET_DIGITS));
    secret.push_str(SECRET_PREFIX);
    secret.extend(digits.iter().map(|&d| d as char));
    secret
}

/// The part of a secret kept for display.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(DISPLAY_PREFIX_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_key_underscore_and_20_lowercase_base32() {
        let id = new_key_id();
        assert_eq!(id.len(), 24);
        assert!(id.starts_with("key_"));
        assert!(id[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(new_key_id(), id);
    }

    #[test]
    fn secrets_are_cf_and_43_base62_characters() {
        let secret = new_secret();
        assert_eq!(secret.len(), 46);
        assert!(secret.starts_with("cf_"));
        assert!(secret[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(*new_secret(), *secret);
    }

    #[test]
    fn secrets_use_the_whole_alphabet_evenly_enough() {
        // 200 secrets' digits after the first (which is biased small): every base62 digit
        // appears, so the encoding is not stuck on a sub-range.
        let mut seen = [false; 128];
        for _ in 0..200 {
            for b in new_secret()[4..].bytes() {
                seen[b as usize] = true;
            }
        }
        assert!(BASE62.iter().all(|&b| seen[b as usize]));
    }

    #[test]
    fn display_prefix_is_the_first_12_characters() {
        assert_eq!(display_prefix("cf_AbCdEfGhIjKlMn"), "cf_AbCdEfGhI");
    }
}
