//! The SQLite statements of deposits (addresses, the watcher's cursor, deposits from seen to credited),
//! on the store's connection. Errors are the driver's; `sqlite` maps them like its own.

use super::columns::{DEPOSIT_COLUMNS, DepositColumns};
use crate::model::{BlockRef, DepositClaim, DepositRow, NewDeposit};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// The deposits tables (appended to the store's migrations).
pub(super) const MIGRATION: &str = "CREATE TABLE deposit_addresses (
         account_id TEXT PRIMARY KEY REFERENCES accounts(id),
         address TEXT NOT NULL UNIQUE
     );
     CREATE TABLE deposits (
         account_id TEXT NOT NULL REFERENCES accounts(id),
         tx_hash TEXT NOT NULL,
         address TEXT NOT NULL,
         amount_ngonka INTEGER NOT NULL,
         credit_ngonka INTEGER NOT NULL,
         height INTEGER NOT NULL,
         block_hash TEXT NOT NULL,
         status TEXT NOT NULL,
         credit_reference TEXT,
         seen_at INTEGER NOT NULL,
         credited_at INTEGER,
         PRIMARY KEY (account_id, tx_hash)
     );
     CREATE INDEX deposits_by_status ON deposits(status, height);
     CREATE TABLE deposit_cursor (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         height INTEGER NOT NULL,
         block_hash TEXT NOT NULL
     );";

fn height(h: u64) -> i64 {
    i64::try_from(h).unwrap_or(i64::MAX)
}

fn deposit_from_row(r: &Row<'_>) -> rusqlite::Result<DepositRow> {
    DepositColumns {
        account_id: r.get(0)?,
        tx_hash: r.get(1)?,
        address: r.get(2)?,
        amount_ngonka: r.get(3)?,
        credit_ngonka: r.get(4)?,
        height: r.get(5)?,
        block_hash: r.get(6)?,
        status: r.get(7)?,
        credit_reference: r.get(8)?,
        seen_at: r.get(9)?,
        credited_at: r.get(10)?,
    }
    .decode()
    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e)))
}

pub(super) fn set_addresses(conn: &mut Connection, rows: &[(String, String)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (account, address) in rows {
        tx.execute(
            "INSERT INTO deposit_addresses (account_id, address) VALUES (?1, ?2)
             ON CONFLICT (account_id) DO UPDATE SET address = excluded.address",
            params![account, address],
        )?;
    }
    tx.commit()
}

pub(super) fn addresses(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT account_id, address FROM deposit_addresses ORDER BY account_id")?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

pub(super) fn accounts_of(
    conn: &Connection,
    addresses: &[String],
) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT address, account_id FROM deposit_addresses WHERE address = ?1")?;
    let mut out = Vec::new();
    for a in addresses {
        if let Some(found) = stmt.query_row([a], |r| Ok((r.get(0)?, r.get(1)?))).optional()? {
            out.push(found);
        }
    }
    Ok(out)
}

pub(super) fn cursor(conn: &Connection) -> rusqlite::Result<Option<BlockRef>> {
    conn.query_row("SELECT height, block_hash FROM deposit_cursor WHERE id = 1", [], |r| {
        Ok(BlockRef { height: super::columns::to_u64(r.get(0)?), hash: r.get(1)? })
    })
    .optional()
}

pub(super) fn record_block(
    conn: &mut Connection,
    block: &BlockRef,
    found: &[NewDeposit],
    at: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let h = height(block.height);
    let elsewhere: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT account_id, tx_hash FROM deposits WHERE status = 'pending' AND height = ?1 AND block_hash <> ?2",
        )?;
        stmt.query_map(params![h, block.hash], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    for (account, hash) in elsewhere {
        if !found.iter().any(|d| d.account_id == account && d.tx_hash == hash) {
            tx.execute(
                "UPDATE deposits SET status = 'dropped' WHERE account_id = ?1 AND tx_hash = ?2",
                params![account, hash],
            )?;
        }
    }
    for d in found {
        tx.execute(
            "INSERT INTO deposits (account_id, tx_hash, address, amount_ngonka, credit_ngonka, height, block_hash,
                 status, credit_reference, seen_at, credited_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', NULL, ?8, NULL)
             ON CONFLICT (account_id, tx_hash) DO UPDATE SET height = excluded.height,
                 block_hash = excluded.block_hash, status = 'pending'
             WHERE deposits.status IN ('pending', 'dropped')",
            params![d.account_id, d.tx_hash, d.address, d.amount_ngonka, d.credit_ngonka, h, block.hash, at],
        )?;
    }
    tx.execute(
        "INSERT INTO deposit_cursor (id, height, block_hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET height = excluded.height, block_hash = excluded.block_hash
         WHERE deposit_cursor.height <= excluded.height",
        params![h, block.hash],
    )?;
    tx.commit()
}

pub(super) fn rewind(conn: &Connection, to: u64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE deposit_cursor SET height = ?1, block_hash = '' WHERE id = 1 AND height > ?1",
        [height(to)],
    )?;
    Ok(())
}

pub(super) fn pending(conn: &Connection) -> rusqlite::Result<Vec<DepositRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE status = 'pending' ORDER BY height, tx_hash"
    ))?;
    stmt.query_map([], deposit_from_row)?.collect()
}

pub(super) fn drop_pending(conn: &Connection, account_id: &str, tx_hash: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE deposits SET status = 'dropped' WHERE account_id = ?1 AND tx_hash = ?2 AND status = 'pending'",
        params![account_id, tx_hash],
    )?;
    Ok(())
}

pub(super) fn confirm(
    conn: &mut Connection,
    account_id: &str,
    tx_hash: &str,
    min: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE deposits SET status = 'held' WHERE account_id = ?1 AND tx_hash = ?2 AND status = 'pending'",
        params![account_id, tx_hash],
    )?;
    let held: Vec<(String, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT tx_hash, amount_ngonka FROM deposits WHERE account_id = ?1 AND status = 'held'
             ORDER BY height, tx_hash",
        )?;
        stmt.query_map([account_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    let total = held.iter().fold(0i64, |a, (_, n)| a.saturating_add(*n));
    if let Some((reference, _)) = held.last().filter(|_| total >= min) {
        for (hash, _) in &held {
            tx.execute(
                "UPDATE deposits SET status = 'crediting', credit_reference = ?3
                 WHERE account_id = ?1 AND tx_hash = ?2 AND status = 'held'",
                params![account_id, hash, reference],
            )?;
        }
    }
    tx.commit()
}

pub(super) fn claims(conn: &Connection) -> rusqlite::Result<Vec<DepositClaim>> {
    let mut stmt = conn.prepare(
        "SELECT account_id, credit_reference, SUM(credit_ngonka) FROM deposits
         WHERE status = 'crediting' AND credit_reference IS NOT NULL
         GROUP BY account_id, credit_reference ORDER BY account_id, credit_reference",
    )?;
    stmt.query_map([], |r| {
        Ok(DepositClaim { account_id: r.get(0)?, reference: r.get(1)?, credit_ngonka: r.get(2)? })
    })?
    .collect()
}

pub(super) fn finish_claim(
    conn: &Connection,
    account_id: &str,
    reference: &str,
    at: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE deposits SET status = 'credited', credited_at = ?3
         WHERE account_id = ?1 AND credit_reference = ?2 AND status = 'crediting'",
        params![account_id, reference, at],
    )?;
    Ok(())
}

pub(super) fn list(
    conn: &Connection,
    account_id: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<DepositRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE ?1 IS NULL OR account_id = ?1
         ORDER BY height DESC, tx_hash DESC LIMIT ?2"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    stmt.query_map(params![account_id, limit], deposit_from_row)?.collect()
}
