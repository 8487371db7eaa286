//! The data directory: private to the gateway's user, and held by one process at a time.
//!
//! # Design
//! `<data_dir>/gateway.lock` is locked with `flock(LOCK_EX | LOCK_NB)` before the process opens anything
//! else there or binds an address, and stays locked for the life of the process (the runtime's `Running`
//! owns the lock). The kernel releases it however the process ends, `kill -9` included, so a lock file
//! left behind never blocks a restart. The holder writes its pid into the file so that a second process
//! can say who holds the directory.
//!
//! The directory is created 0700 and every file the gateway creates in it is 0600 (the store, the key
//! snapshot, the journal, secrets): tokens, key hashes and usage are nobody else's business.
//!
//! # Errors
//! A directory held by another process is [`io::ErrorKind::ResourceBusy`], with a message naming the
//! directory and, when it wrote it, the holder's pid.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "gateway.lock";

/// Mode of the directories the gateway creates for its data.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files the gateway creates in them.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700. An existing directory is left as it is.
pub fn create_private(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// The exclusive hold of a data directory; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked open file: the lock lives as long as it is open.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates the directory when missing (0700) and locks it, or fails at once when another process
    /// holds it.
    #[expect(clippy::disallowed_methods, reason = "start-up, before the cores exist")]
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("data directory {}: {e}", dir.display()));
        create_private(dir).map_err(context)?;
        let path = dir.join(LOCK_FILE);
        // Not truncated before it is locked: the holder's pid is in it.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(context)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("another process (pid {pid})"),
                    Err(_) => "another process".to_owned(),
                };
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!("data directory {} is in use by {holder}", dir.display()),
                ));
            }
            Err(e) => return Err(context(e.into())),
        }
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE)).map_err(context)?;
        file.set_len(0).map_err(context)?;
        file.rewind().map_err(context)?;
        writeln!(file, "{}", std::process::id()).map_err(context)?;
        Ok(Self { _file: file, dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_refused_naming_it_and_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let held = DataDirLock::acquire(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, DIR_MODE);
        let lock = dir.join(LOCK_FILE);
        assert_eq!(std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777, FILE_MODE);
        // flock locks belong to an open file, so a second open in the same process is refused too.
        let err = DataDirLock::acquire(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        let msg = err.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        drop(held);
        let again = DataDirLock::acquire(&dir).unwrap();
        assert_eq!(again.dir(), dir);
    }
}
