//! Files a command run as root leaves in a data directory belong to the directory's owner.
//!
//! The gateway runs as a service user that owns its `data_dir`; an operator often runs the
//! store commands through `sudo`. SQLite, the audit log and the usage ledger create their
//! files (`keys.db-wal`, `keys.db-shm`, `audit.log`, `usage.db`, the journal) with the
//! creating process's owner, so a root-run `keys create` could leave files the service can
//! no longer open. After such a command, [`give_to_directory_owner`] hands every root-owned
//! entry under `data_dir` to the directory's owner (user and group).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How deep below `data_dir` entries are looked at: the store keeps its files at the top
/// and one level down (the usage journal's folder); a little room beyond that costs
/// nothing.
const MAX_DEPTH: usize = 3;

/// At most this many entries are looked at, so a data directory that holds something else
/// by mistake (a huge tree) cannot make a store command walk it for long.
const MAX_ENTRIES: usize = 10_000;

/// When this process runs as root and `data_dir` is owned by someone else, gives every
/// entry under `data_dir` that root owns to `data_dir`'s owner and group. Returns how many
/// entries changed owner (0 when not root, or when root owns the directory itself: a
/// gateway running as root reads root's files).
///
/// Entries owned by anyone but root are left alone: root did not create them here.
/// Symbolic links are not followed (`lchown`), so a link planted in the directory cannot
/// hand some other file to the service user.
pub fn give_to_directory_owner(data_dir: &Path) -> io::Result<usize> {
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    if unsafe { libc::geteuid() } != 0 {
        return Ok(0);
    }
    let owner = std::fs::metadata(data_dir)?;
    if owner.uid() == 0 {
        return Ok(0);
    }
    let mut budget = MAX_ENTRIES;
    hand_over(data_dir, owner.uid(), owner.gid(), MAX_DEPTH, &mut budget)
}

/// The entries of `dir` (and, `depth` levels down, of its folders) that root owns, handed
/// to `uid:gid`.
fn hand_over(
    dir: &Path,
    uid: u32,
    gid: u32,
    depth: usize,
    budget: &mut usize,
) -> io::Result<usize> {
    let mut changed = 0;
    for entry in std::fs::read_dir(dir)? {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let entry = entry?;
        let path = entry.path();
        // A file SQLite removed between the listing and here is simply gone.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() == 0 {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            changed += 1;
        }
        if meta.is_dir() && depth > 1 {
            changed += hand_over(&path, uid, gid, depth - 1, budget)?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_root_owns_is_left_as_it_is() {
        let dir = std::env::temp_dir().join(format!("cf-ownership-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keys.db"), b"x").unwrap();
        let before = std::fs::metadata(dir.join("keys.db")).unwrap().uid();
        // Whoever runs this test owns `dir`: as root nothing is handed over (root owns
        // the directory), and as anyone else nothing can be.
        assert_eq!(give_to_directory_owner(&dir).unwrap(), 0);
        assert_eq!(
            std::fs::metadata(dir.join("keys.db")).unwrap().uid(),
            before
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
