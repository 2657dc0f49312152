//! The pepper: 32 secret bytes, kept in `data_dir/pepper`, under which every key secret is
//! hashed (HMAC-SHA256, RFC 2104). A stolen `keys.db` without the pepper file gives an
//! attacker nothing to test guesses against.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::ids::fill_random;

/// File name of the pepper inside the data directory.
pub const PEPPER_FILE: &str = "pepper";

const PEPPER_BYTES: usize = 32;

/// The pepper. Zeroized on drop (every copy: the credential cache holds one beside its
/// store's); its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Pepper([u8; PEPPER_BYTES]);

impl Pepper {
    /// Loads `data_dir/pepper`, or creates it (mode 0600, 32 bytes from the OS CSPRNG) when
    /// absent. Two processes starting at once agree on one pepper: the file is written under
    /// a temporary name and published with a hard link, which fails if another won the race.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Pepper> {
        let path = data_dir.join(PEPPER_FILE);
        match Self::load(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            loaded => return loaded,
        }
        let mut pepper = Pepper([0; PEPPER_BYTES]);
        fill_random(&mut pepper.0);
        let temp = data_dir.join(format!(".{PEPPER_FILE}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            let hex = Zeroizing::new(to_hex(&pepper.0));
            file.write_all(hex.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::hard_link(&temp, &path)
        })();
        let _ = fs::remove_file(&temp);
        match written {
            Ok(()) => Ok(pepper),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(&path),
            Err(e) => Err(e),
        }
    }

    /// Loads `data_dir/pepper` without creating it: for readers of a store that must leave
    /// it as they found it (`store migrate`). A missing file is `NotFound`.
    pub fn load_existing(data_dir: &Path) -> std::io::Result<Pepper> {
        Self::load(&data_dir.join(PEPPER_FILE))
    }

    /// Reads a pepper file: 64 hex characters (whitespace around them ignored).
    fn load(path: &Path) -> std::io::Result<Pepper> {
        let text = Zeroizing::new(fs::read_to_string(path)?);
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            log::warn!(
                "{} is readable by other users (mode {:o}); it should be 0600",
                path.display(),
                mode & 0o777
            );
        }
        let mut pepper = Pepper([0; PEPPER_BYTES]);
        if from_hex(text.trim(), &mut pepper.0).is_err() {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("{} is not 64 hex characters", path.display()),
            ));
        }
        Ok(pepper)
    }

    /// Parses a pepper given as 64 hex characters (whitespace around them ignored): the pepper
    /// file's own format, so the pepper of a single host can become a fleet's shared pepper
    /// (`[store] pepper`) and the keys hashed under it keep working. The error never quotes
    /// the text.
    pub fn from_hex(text: &str) -> Result<Pepper, &'static str> {
        let mut pepper = Pepper([0; PEPPER_BYTES]);
        from_hex(text.trim(), &mut pepper.0)
            .map_err(|()| "the pepper must be 64 hex characters (32 bytes)")?;
        Ok(pepper)
    }

    /// HMAC-SHA256(pepper, presented): the only form in which a key secret is stored or
    /// looked up.
    pub fn hash(&self, presented: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(presented);
        mac.finalize().into_bytes().into()
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; PEPPER_BYTES]) -> Pepper {
        Pepper(bytes)
    }
}

impl Drop for Pepper {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    hex
}

fn from_hex(text: &str, out: &mut [u8]) -> Result<(), ()> {
    if text.len() != out.len() * 2 {
        return Err(());
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8).ok_or(());
    for (slot, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        *slot = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cf-pepper-{name}-{}-{}",
            std::process::id(),
            super::super::ids::new_key_id()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pepper_file_is_created_with_mode_0600() {
        let dir = temp_dir("mode");
        Pepper::load_or_create(&dir).unwrap();
        let mode = fs::metadata(dir.join(PEPPER_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pepper_is_reused_across_loads() {
        let dir = temp_dir("reuse");
        let first = Pepper::load_or_create(&dir).unwrap();
        let second = Pepper::load_or_create(&dir).unwrap();
        assert_eq!(first.hash(b"cf_x"), second.hash(b"cf_x"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn different_peppers_hash_differently() {
        let (a, b) = (temp_dir("a"), temp_dir("b"));
        let hash_a = Pepper::load_or_create(&a).unwrap().hash(b"cf_x");
        let hash_b = Pepper::load_or_create(&b).unwrap().hash(b"cf_x");
        assert_ne!(hash_a, hash_b);
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn hash_is_hmac_sha256_of_the_presented_bytes() {
        // RFC 4231 test case 1's message with a 32-byte key of 0x0b, checked against
        // `printf 'Hi There' | openssl dgst -sha256 -mac HMAC -macopt hexkey:0b..0b`.
        let pepper = Pepper::from_bytes([0x0b; 32]);
        assert_eq!(
            to_hex(&pepper.hash(b"Hi There")),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn corrupt_pepper_file_is_an_error_not_a_new_pepper() {
        let dir = temp_dir("corrupt");
        fs::write(dir.join(PEPPER_FILE), "not hex").unwrap();
        let err = Pepper::load_or_create(&dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn from_hex_reads_the_pepper_file_format_and_never_quotes_bad_text() {
        let hex = "0b".repeat(32);
        let pepper = Pepper::from_hex(&format!(" {hex}\n")).unwrap();
        assert_eq!(
            pepper.hash(b"Hi There"),
            Pepper::from_bytes([0x0b; 32]).hash(b"Hi There")
        );
        for bad in ["", "zz", &"0b".repeat(31), &"0g".repeat(32)] {
            let err = Pepper::from_hex(bad).err().unwrap();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
    }

    #[test]
    fn load_existing_reads_the_file_and_never_creates_one() {
        let dir = temp_dir("existing");
        let err = Pepper::load_existing(&dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(!dir.join(PEPPER_FILE).exists());
        let created = Pepper::load_or_create(&dir).unwrap();
        let loaded = Pepper::load_existing(&dir).unwrap();
        assert_eq!(created.hash(b"cf_x"), loaded.hash(b"cf_x"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let pepper = Pepper::from_bytes([0xab; 32]);
        let shown = format!("{pepper:?}");
        assert_eq!(shown, "Pepper(<redacted>)");
        assert!(!shown.contains("ab"));
    }
}
