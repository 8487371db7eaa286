//! The key table as an rkyv snapshot, so a start with many keys does not wait on a full table scan.
//!
//! # Design
//! File: magic, payload length, SHA-256 of the payload, then the rkyv archive of the rows together with
//! the key table's `(max_version, count)` at the time of writing. On start the snapshot is used only when
//! its checksum and rkyv validation pass *and* the store's key table still has that exact state; anything
//! else (stale, truncated, corrupt, another format) is ignored, and the table is read from the store and
//! a fresh snapshot written. Written atomically (temporary file, fsync, rename) on clean shutdown and
//! periodically.

use super::backend::KeyTableState;

use crate::model::FitPolicy;
use crate::model::KeyRow;
use crate::model::{KeyHash, KeyKind, KeyStatus};
use rkyv::rancor::Error as RkyvError;
use rkyv::{Archive, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"GGKEYS03";
const HEADER: usize = 8 + 8 + 32;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct SnapKey {
    id: String,
    account_id: String,
    kind: u8,
    name: String,
    prefix: String,
    hash: [u8; 32],
    status: u8,
    parent_id: Option<String>,
    limit_daily_ngonka: Option<u64>,
    limit_monthly_ngonka: Option<u64>,
    rate_limit_rpm: Option<u32>,
    expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    version: i64,
    /// 0 = the config's default, then `FitPolicy` by `fit_code`.
    fit_max_tokens: u8,
    allowed_models: Option<Vec<String>>,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct Payload {
    max_version: i64,
    count: i64,
    keys: Vec<SnapKey>,
}

fn kind_code(k: KeyKind) -> u8 {
    match k {
        KeyKind::Managed => 0,
        KeyKind::Management => 1,
        KeyKind::Child => 2,
        KeyKind::AccountToken => 3,
        KeyKind::DashboardSession => 4,
    }
}

const FIT_POLICIES: [FitPolicy; 3] = [FitPolicy::Unset, FitPolicy::Always, FitPolicy::Never];

fn fit_code(p: Option<FitPolicy>) -> u8 {
    p.and_then(|p| FIT_POLICIES.iter().position(|q| *q == p)).map_or(0, |i| i as u8 + 1)
}

fn status_code(s: KeyStatus) -> u8 {
    match s {
        KeyStatus::Active => 0,
        KeyStatus::Paused => 1,
        KeyStatus::Archived => 2,
    }
}

impl SnapKey {
    fn from_row(r: &KeyRow) -> Self {
        Self {
            id: r.id.clone(),
            account_id: r.account_id.clone(),
            kind: kind_code(r.kind),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            hash: r.hash.0,
            status: status_code(r.status),
            parent_id: r.parent_id.clone(),
            limit_daily_ngonka: r.limit_daily_ngonka,
            limit_monthly_ngonka: r.limit_monthly_ngonka,
            rate_limit_rpm: r.rate_limit_rpm,
            expires_at: r.expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            fit_max_tokens: fit_code(r.fit_max_tokens),
            allowed_models: r.allowed_models.clone(),
        }
    }

    fn into_row(self) -> Option<KeyRow> {
        let kind = KeyKind::ALL.into_iter().find(|k| kind_code(*k) == self.kind)?;
        let status = [KeyStatus::Active, KeyStatus::Paused, KeyStatus::Archived]
            .into_iter()
            .find(|s| status_code(*s) == self.status)?;
        Some(KeyRow {
            id: self.id,
            account_id: self.account_id,
            kind,
            name: self.name,
            prefix: self.prefix,
            hash: KeyHash(self.hash),
            status,
            parent_id: self.parent_id,
            limit_daily_ngonka: self.limit_daily_ngonka,
            limit_monthly_ngonka: self.limit_monthly_ngonka,
            rate_limit_rpm: self.rate_limit_rpm,
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            fit_max_tokens: match self.fit_max_tokens {
                0 => None,
                code => Some(*FIT_POLICIES.get(usize::from(code) - 1)?),
            },
            allowed_models: self.allowed_models,
        })
    }
}

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot")]
    Missing,
    #[error("snapshot unreadable: {0}")]
    Io(#[from] io::Error),
    #[error("snapshot corrupt: {0}")]
    Corrupt(String),
    #[error("snapshot stale (snapshot at version {snap:?}, store at {store:?})")]
    Stale { snap: KeyTableState, store: KeyTableState },
}

/// Encodes the rows and the table state they were read at.
pub fn encode(rows: &[KeyRow], state: KeyTableState) -> io::Result<Vec<u8>> {
    let payload = Payload {
        max_version: state.max_version,
        count: state.count,
        keys: rows.iter().map(SnapKey::from_row).collect(),
    };
    let bytes = rkyv::to_bytes::<RkyvError>(&payload).map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&bytes));
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// Decodes a snapshot file's bytes, validating everything.
pub fn decode(file: &[u8]) -> Result<(Vec<KeyRow>, KeyTableState), SnapshotError> {
    let corrupt = |m: &str| SnapshotError::Corrupt(m.to_owned());
    if file.len() < HEADER || &file[..8] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let len = u64::from_le_bytes(file[8..16].try_into().map_err(|_| corrupt("bad length"))?);
    let payload = &file[HEADER..];
    if payload.len() as u64 != len {
        return Err(corrupt("truncated"));
    }
    if Sha256::digest(payload).as_slice() != &file[16..48] {
        return Err(corrupt("checksum mismatch"));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let archived = rkyv::access::<ArchivedPayload, RkyvError>(&aligned)
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    let p: Payload = rkyv::deserialize::<Payload, RkyvError>(archived)
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    let state = KeyTableState { max_version: p.max_version, count: p.count };
    let rows: Option<Vec<KeyRow>> = p.keys.into_iter().map(SnapKey::into_row).collect();
    let rows = rows.ok_or_else(|| corrupt("unknown kind or status"))?;
    if rows.len() as i64 != state.count {
        return Err(corrupt("row count mismatch"));
    }
    Ok((rows, state))
}

/// Writes a snapshot atomically.
#[expect(clippy::disallowed_methods, reason = "the control plane owns snapshot files")]
pub fn write(path: &Path, rows: &[KeyRow], state: KeyTableState) -> io::Result<()> {
    let bytes = encode(rows, state)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::rt::data_dir::create_private(dir)?;
    }
    let tmp = path.with_extension("tmp");
    // Key hashes and limits: 0600, like every data file.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::rt::data_dir::FILE_MODE)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reads a snapshot and checks it is current against `store_state`.
#[expect(clippy::disallowed_methods, reason = "the control plane owns snapshot files")]
pub fn read(path: &Path, store_state: KeyTableState) -> Result<Vec<KeyRow>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SnapshotError::Missing),
        Err(e) => return Err(e.into()),
    };
    let (rows, state) = decode(&bytes)?;
    if state != store_state {
        return Err(SnapshotError::Stale { snap: state, store: store_state });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64) -> KeyRow {
        KeyRow {
            id: format!("key_{i}"),
            account_id: "acc_1".into(),
            kind: KeyKind::Child,
            name: format!("k{i}"),
            prefix: "gc-abcd".into(),
            hash: KeyHash([i as u8; 32]),
            status: KeyStatus::Paused,
            parent_id: Some("key_0".into()),
            limit_daily_ngonka: Some(5),
            limit_monthly_ngonka: None,
            rate_limit_rpm: Some(7),
            expires_at: Some(1_900_000_000),
            fit_max_tokens: [None, Some(FitPolicy::Always), Some(FitPolicy::Never)][i as usize % 3],
            allowed_models: (i % 2 == 0).then(|| vec![format!("model-{i}"), "moonshotai/Kimi-K2.6".into()]),
            created_at: 1,
            updated_at: 2,
            version: i,
        }
    }

    #[test]
    fn round_trips() {
        let rows: Vec<KeyRow> = (1..=3).map(row).collect();
        let state = KeyTableState { max_version: 3, count: 3 };
        let (back, s) = decode(&encode(&rows, state).unwrap()).unwrap();
        assert_eq!((back, s), (rows, state));
    }

    #[test]
    fn any_flipped_byte_or_truncation_is_detected() {
        let rows: Vec<KeyRow> = (1..=3).map(row).collect();
        let bytes = encode(&rows, KeyTableState { max_version: 3, count: 3 }).unwrap();
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn stale_snapshots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.snapshot");
        let rows: Vec<KeyRow> = (1..=2).map(row).collect();
        write(&p, &rows, KeyTableState { max_version: 2, count: 2 }).unwrap();
        assert!(read(&p, KeyTableState { max_version: 2, count: 2 }).is_ok());
        assert!(matches!(
            read(&p, KeyTableState { max_version: 3, count: 2 }),
            Err(SnapshotError::Stale { .. })
        ));
        assert!(matches!(
            read(&dir.path().join("none"), KeyTableState { max_version: 0, count: 0 }),
            Err(SnapshotError::Missing)
        ));
    }
}
