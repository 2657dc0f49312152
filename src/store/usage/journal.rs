//! The journal: usage records on their way to PostgreSQL, in segment files under
//! `data_dir/usage-journal/`.
//!
//! The writer appends each batch as one segment: written to a temporary file, fsync'd, renamed
//! to `<seq>-<records>.seg` and the directory fsync'd, so a segment is either whole or absent
//! (a crash mid-write leaves a `.tmp` that the next start removes; those records were not yet
//! journaled, which is the "last second" a crash may lose). The delivery thread reads segments
//! oldest first and deletes each only after its delivery committed. Sequence numbers grow
//! with every segment and survive restarts (the next one is past the highest on disk).
//!
//! Each line of a segment is one [`UsageRecord`] as JSON. The journal is bounded by
//! [`MAX_JOURNAL_BYTES`] (or [`super::LedgerOptions::journal_max_bytes`]): a batch that would
//! take it past the bound is not journaled, and its records are counted as dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::UsageRecord;

/// The journal's directory inside `data_dir`.
pub const JOURNAL_DIR: &str = "usage-journal";

/// The journal's default bound: 256 MiB, about a million records (a record is ~250 bytes),
/// which is hours of a busy node's traffic.
pub const MAX_JOURNAL_BYTES: u64 = 256 * 1024 * 1024;

/// Longest line read back from a segment. The writer's lines are far shorter (every field
/// is bounded upstream: request ids at 128 bytes); a longer one is not ours and is skipped.
const MAX_LINE_BYTES: u64 = 64 * 1024;

const SEGMENT_SUFFIX: &str = ".seg";
const TEMP_SUFFIX: &str = ".tmp";

/// What the journal holds, shared by the writer (which adds) and the delivery thread (which
/// removes); read by `/metrics` and tests.
#[derive(Debug, Default)]
pub(super) struct JournalLevel {
    /// Records journaled and not yet delivered.
    pub records: Arc<AtomicU64>,
    /// Bytes of the segments on disk.
    pub bytes: AtomicU64,
}

/// One segment on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its sequence number: segments are delivered in this order.
    pub seq: u64,
    /// How many records it holds (from its name).
    pub records: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its path.
    pub path: PathBuf,
}

/// The journal directory, as the writer sees it.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    next_seq: u64,
    max_bytes: u64,
    level: Arc<JournalLevel>,
}

/// What became of a batch handed to [`Journal::append`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Appended {
    /// Journaled as segment `seq`.
    Written,
    /// Not journaled: it would have taken the journal past its bound.
    Full,
}

impl Journal {
    /// Opens (creating) the journal in `data_dir`, removes half-written segments left by a
    /// crash, and counts what is waiting into `level`.
    pub fn open(data_dir: &Path, max_bytes: u64, level: Arc<JournalLevel>) -> io::Result<Journal> {
        let dir = data_dir.join(JOURNAL_DIR);
        fs::create_dir_all(&dir)?;
        // Who spent what is nobody else's business.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.to_str().is_some_and(|p| p.ends_with(TEMP_SUFFIX)) {
                fs::remove_file(&path)?;
            }
        }
        let segments = segments(&dir)?;
        let next_seq = segments.last().map_or(1, |s| s.seq + 1);
        level
            .records
            .store(segments.iter().map(|s| s.records).sum(), Ordering::Relaxed);
        level
            .bytes
            .store(segments.iter().map(|s| s.bytes).sum(), Ordering::Relaxed);
        Ok(Journal {
            dir,
            next_seq,
            max_bytes,
            level,
        })
    }

    /// The directory segments are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Journals `records` as one segment, durably (fsync'd) before returning, unless that
    /// would take the journal past its bound.
    pub fn append(&mut self, records: &[UsageRecord]) -> io::Result<Appended> {
        if records.is_empty() {
            return Ok(Appended::Written);
        }
        let mut text = Vec::with_capacity(records.len() * 256);
        for record in records {
            serde_json::to_writer(&mut text, record).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        let size = text.len() as u64;
        if self.level.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
            return Ok(Appended::Full);
        }
        let seq = self.next_seq;
        let name = format!("{seq:020}-{}", records.len());
        let temp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let result = write_durably(&temp, &text)
            .and_then(|()| fs::rename(&temp, self.dir.join(format!("{name}{SEGMENT_SUFFIX}"))));
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        // From here the segment exists: the batch must not be journaled again even if the
        // directory's fsync fails (that only risks the rename on power loss).
        self.next_seq += 1;
        self.level.bytes.fetch_add(size, Ordering::Relaxed);
        self.level
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            log::warn!("usage journal: fsync of {}: {e}", self.dir.display());
        }
        Ok(Appended::Written)
    }
}

fn write_durably(path: &Path, text: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text)?;
    file.sync_all()
}

/// The segments in the journal directory `dir`, oldest first. Files that are not segments
/// are left alone.
pub fn segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some((seq, records)) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|stem| stem.split_once('-'))
            .and_then(|(seq, n)| Some((seq.parse().ok()?, n.parse().ok()?)))
        else {
            continue;
        };
        found.push(Segment {
            seq,
            records,
            bytes: entry.metadata()?.len(),
            path: entry.path(),
        });
    }
    found.sort_by_key(|s| s.seq);
    Ok(found)
}

/// A segment's records. Lines that are not records (a segment edited by hand, or damaged)
/// are skipped and counted in the second value.
pub fn read_segment(segment: &Segment) -> io::Result<(Vec<UsageRecord>, u64)> {
    let mut reader = BufReader::new(File::open(&segment.path)?);
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded: a line longer than MAX_LINE_BYTES is read only that far, then skipped.
        let read = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && read as u64 > MAX_LINE_BYTES {
            skipped += 1;
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let n = (&mut reader)
                    .take(MAX_LINE_BYTES)
                    .read_until(b'\n', &mut rest)?;
                if n == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        match serde_json::from_slice::<UsageRecord>(&line) {
            Ok(record) => records.push(record),
            Err(_) => skipped += 1,
        }
    }
    Ok((records, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::UsageEvent;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("cf-journal-{}", crate::store::ids::new_key_id()));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(n: u64) -> UsageRecord {
        UsageRecord {
            id: format!("r-{n}"),
            node: "edge-1".into(),
            event: UsageEvent {
                ts_ms: n as i64,
                request_id: format!("req-{n}"),
                key_id: Some("key_a".into()),
                team: String::new(),
                model: None,
                prompt: None,
                route: None,
                status: 200,
                prompt_tokens: n,
                completion_tokens: 1,
                cached_tokens: 0,
                cost_nano_usd: 7,
            },
        }
    }

    #[test]
    fn appended_segments_read_back_in_order() {
        let dir = TempDir::new();
        let level = Arc::new(JournalLevel::default());
        let mut journal = Journal::open(&dir.0, MAX_JOURNAL_BYTES, level.clone()).unwrap();
        assert_eq!(
            journal.append(&[record(1), record(2)]).unwrap(),
            Appended::Written
        );
        assert_eq!(journal.append(&[record(3)]).unwrap(), Appended::Written);
        assert_eq!(level.records.load(Ordering::Relaxed), 3);
        let found = segments(journal.dir()).unwrap();
        assert_eq!(
            found.iter().map(|s| (s.seq, s.records)).collect::<Vec<_>>(),
            [(1, 2), (2, 1)]
        );
        assert_eq!(
            read_segment(&found[0]).unwrap(),
            (vec![record(1), record(2)], 0)
        );
        assert_eq!(
            level.bytes.load(Ordering::Relaxed),
            found.iter().map(|s| s.bytes).sum::<u64>()
        );
    }

    #[test]
    fn reopening_counts_leftovers_continues_the_sequence_and_removes_temp_files() {
        let dir = TempDir::new();
        let mut journal = Journal::open(&dir.0, MAX_JOURNAL_BYTES, Arc::default()).unwrap();
        journal.append(&[record(1), record(2)]).unwrap();
        let temp = journal
            .dir()
            .join(format!("00000000000000000009-1{TEMP_SUFFIX}"));
        fs::write(&temp, b"half a reco").unwrap();
        let level = Arc::new(JournalLevel::default());
        let mut again = Journal::open(&dir.0, MAX_JOURNAL_BYTES, level.clone()).unwrap();
        assert!(!temp.exists());
        assert_eq!(level.records.load(Ordering::Relaxed), 2);
        again.append(&[record(3)]).unwrap();
        let seqs: Vec<u64> = segments(again.dir())
            .unwrap()
            .iter()
            .map(|s| s.seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn a_batch_past_the_bound_is_refused_and_nothing_is_written() {
        let dir = TempDir::new();
        let level = Arc::new(JournalLevel::default());
        let mut journal = Journal::open(&dir.0, 400, level.clone()).unwrap();
        assert_eq!(journal.append(&[record(1)]).unwrap(), Appended::Written);
        assert_eq!(
            journal.append(&[record(2), record(3)]).unwrap(),
            Appended::Full
        );
        assert_eq!(segments(journal.dir()).unwrap().len(), 1);
        assert_eq!(level.records.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn damaged_and_overlong_lines_are_skipped_and_counted() {
        let dir = TempDir::new();
        let mut journal = Journal::open(&dir.0, MAX_JOURNAL_BYTES, Arc::default()).unwrap();
        journal.append(&[record(1)]).unwrap();
        let segment = &segments(journal.dir()).unwrap()[0];
        let mut file = OpenOptions::new().append(true).open(&segment.path).unwrap();
        file.write_all(b"{not json}\n").unwrap();
        file.write_all(&vec![b'x'; 3 * MAX_LINE_BYTES as usize])
            .unwrap();
        file.write_all(b"\n").unwrap();
        let good = serde_json::to_string(&record(2)).unwrap();
        file.write_all(format!("{good}\n").as_bytes()).unwrap();
        let (records, skipped) = read_segment(segment).unwrap();
        assert_eq!(records, [record(1), record(2)]);
        assert_eq!(skipped, 2);
    }
}
