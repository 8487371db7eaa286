//! Random secrets (tokens and keys) from the operating system's CSPRNG, and secret files kept in the
//! data directory.

use std::io;
use std::path::Path;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` base62 characters from the OS CSPRNG (rejection sampling, so every character is uniform).
pub fn random_base62(n: usize) -> io::Result<String> {
    let mut out = String::with_capacity(n);
    let mut bytes = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
        for &b in &bytes {
            // 248 = 4 * 62: values at or above it would bias the first characters.
            if b < 248 && out.len() < n {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// Equal-length comparison that does not stop at the first difference (secrets, MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the secret in `path`, or creates it (mode 0600) with `make` when the file does not exist.
#[expect(clippy::disallowed_methods, reason = "start-up, before the cores exist")]
pub fn load_or_create(path: &Path, make: impl FnOnce() -> io::Result<String>) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::rt::data_dir::create_private(dir)?;
    }
    let secret = make()?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_has_the_length_and_alphabet() {
        let s = random_base62(40).unwrap();
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(s, random_base62(40).unwrap());
    }

    #[test]
    fn secret_files_persist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/secret");
        let a = load_or_create(&p, || Ok("abc".into())).unwrap();
        let b = load_or_create(&p, || Ok("def".into())).unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("abc", "abc"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
