//! The PostgreSQL statements of deposits (addresses, the watcher's cursor, deposits from seen to
//! credited). Several instances watch the same chain: every write is an upsert or a guarded update, and
//! a claim locks the account's held deposits (`FOR UPDATE`), so each deposit is claimed once.

use super::pool::{PostgresStore, err};
use crate::model::{BlockRef, DepositClaim, DepositRow, NewDeposit};
use crate::store::backend::StoreResult;
use crate::store::columns::{DEPOSIT_COLUMNS, DepositColumns, to_i64, to_u64};

/// The deposits tables (appended to the store's migrations).
pub(super) const MIGRATION: &str = "CREATE TABLE deposit_addresses (
         account_id TEXT PRIMARY KEY REFERENCES accounts(id),
         address TEXT NOT NULL UNIQUE
     );
     CREATE TABLE deposits (
         account_id TEXT NOT NULL REFERENCES accounts(id),
         tx_hash TEXT NOT NULL,
         address TEXT NOT NULL,
         amount_ngonka BIGINT NOT NULL,
         credit_ngonka BIGINT NOT NULL,
         height BIGINT NOT NULL,
         block_hash TEXT NOT NULL,
         status TEXT NOT NULL,
         credit_reference TEXT,
         seen_at BIGINT NOT NULL,
         credited_at BIGINT,
         PRIMARY KEY (account_id, tx_hash)
     );
     CREATE INDEX deposits_by_status ON deposits(status, height);
     CREATE TABLE deposit_cursor (
         id INT PRIMARY KEY CHECK (id = 1),
         height BIGINT NOT NULL,
         block_hash TEXT NOT NULL
     );";

fn deposit_from_row(r: &postgres::Row) -> StoreResult<DepositRow> {
    DepositColumns {
        account_id: r.get(0),
        tx_hash: r.get(1),
        address: r.get(2),
        amount_ngonka: r.get(3),
        credit_ngonka: r.get(4),
        height: r.get(5),
        block_hash: r.get(6),
        status: r.get(7),
        credit_reference: r.get(8),
        seen_at: r.get(9),
        credited_at: r.get(10),
    }
    .decode()
    .map_err(|e| crate::store::StoreError::Other(e.to_string()))
}

impl PostgresStore {
    pub(super) fn set_addresses(&self, rows: &[(String, String)]) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        for (account, address) in rows {
            tx.execute(
                "INSERT INTO deposit_addresses (account_id, address) VALUES ($1, $2)
                 ON CONFLICT (account_id) DO UPDATE SET address = excluded.address",
                &[account, address],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub(super) fn addresses(&self) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query("SELECT account_id, address FROM deposit_addresses ORDER BY account_id", &[])
            .map_err(err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(super) fn accounts_of(&self, addresses: &[String]) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query("SELECT address, account_id FROM deposit_addresses WHERE address = ANY($1)", &[&addresses])
            .map_err(err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(super) fn cursor(&self) -> StoreResult<Option<BlockRef>> {
        let mut conn = self.conn()?;
        let row =
            conn.query_opt("SELECT height, block_hash FROM deposit_cursor WHERE id = 1", &[]).map_err(err)?;
        Ok(row.map(|r| BlockRef { height: to_u64(r.get(0)), hash: r.get(1) }))
    }

    pub(super) fn record_block(&self, block: &BlockRef, found: &[NewDeposit], at: i64) -> StoreResult<()> {
        let h = to_i64(block.height, "height")?;
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let elsewhere = tx
            .query(
                "SELECT account_id, tx_hash FROM deposits
                 WHERE status = 'pending' AND height = $1 AND block_hash <> $2 FOR UPDATE",
                &[&h, &block.hash],
            )
            .map_err(err)?;
        for r in &elsewhere {
            let (account, hash): (String, String) = (r.get(0), r.get(1));
            if !found.iter().any(|d| d.account_id == account && d.tx_hash == hash) {
                tx.execute(
                    "UPDATE deposits SET status = 'dropped'
                     WHERE account_id = $1 AND tx_hash = $2 AND status = 'pending'",
                    &[&account, &hash],
                )
                .map_err(err)?;
            }
        }
        for d in found {
            tx.execute(
                "INSERT INTO deposits (account_id, tx_hash, address, amount_ngonka, credit_ngonka, height,
                     block_hash, status, credit_reference, seen_at, credited_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', NULL, $8, NULL)
                 ON CONFLICT (account_id, tx_hash) DO UPDATE SET height = excluded.height,
                     block_hash = excluded.block_hash, status = 'pending'
                 WHERE deposits.status IN ('pending', 'dropped')",
                &[
                    &d.account_id,
                    &d.tx_hash,
                    &d.address,
                    &d.amount_ngonka,
                    &d.credit_ngonka,
                    &h,
                    &block.hash,
                    &at,
                ],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT INTO deposit_cursor (id, height, block_hash) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET height = excluded.height, block_hash = excluded.block_hash
             WHERE deposit_cursor.height <= excluded.height",
            &[&h, &block.hash],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    pub(super) fn rewind(&self, to: u64) -> StoreResult<()> {
        let to = to_i64(to, "height")?;
        let mut conn = self.conn()?;
        conn.execute(
            "UPDATE deposit_cursor SET height = $1, block_hash = '' WHERE id = 1 AND height > $1",
            &[&to],
        )
        .map_err(err)?;
        Ok(())
    }

    pub(super) fn pending(&self) -> StoreResult<Vec<DepositRow>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE status = 'pending' ORDER BY height, tx_hash"
                ),
                &[],
            )
            .map_err(err)?;
        rows.iter().map(deposit_from_row).collect()
    }

    pub(super) fn drop_pending(&self, account_id: &str, tx_hash: &str) -> StoreResult<()> {
        let mut conn = self.conn()?;
        conn.execute(
            "UPDATE deposits SET status = 'dropped' WHERE account_id = $1 AND tx_hash = $2 AND status = 'pending'",
            &[&account_id, &tx_hash],
        )
        .map_err(err)?;
        Ok(())
    }

    pub(super) fn confirm(&self, account_id: &str, tx_hash: &str, min: i64) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        tx.execute(
            "UPDATE deposits SET status = 'held' WHERE account_id = $1 AND tx_hash = $2 AND status = 'pending'",
            &[&account_id, &tx_hash],
        )
        .map_err(err)?;
        // Locked until commit: another instance claiming now waits, then finds them claimed.
        let held = tx
            .query(
                "SELECT tx_hash, amount_ngonka FROM deposits WHERE account_id = $1 AND status = 'held'
                 ORDER BY height, tx_hash FOR UPDATE",
                &[&account_id],
            )
            .map_err(err)?;
        let held: Vec<(String, i64)> = held.iter().map(|r| (r.get(0), r.get(1))).collect();
        let total = held.iter().fold(0i64, |a, (_, n)| a.saturating_add(*n));
        if let Some((reference, _)) = held.last().filter(|_| total >= min) {
            for (hash, _) in &held {
                tx.execute(
                    "UPDATE deposits SET status = 'crediting', credit_reference = $3
                     WHERE account_id = $1 AND tx_hash = $2 AND status = 'held'",
                    &[&account_id, hash, reference],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub(super) fn claims(&self) -> StoreResult<Vec<DepositClaim>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query(
                "SELECT account_id, credit_reference, SUM(credit_ngonka)::BIGINT FROM deposits
                 WHERE status = 'crediting' AND credit_reference IS NOT NULL
                 GROUP BY account_id, credit_reference ORDER BY account_id, credit_reference",
                &[],
            )
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| DepositClaim { account_id: r.get(0), reference: r.get(1), credit_ngonka: r.get(2) })
            .collect())
    }

    pub(super) fn finish_claim(&self, account_id: &str, reference: &str, at: i64) -> StoreResult<()> {
        let mut conn = self.conn()?;
        conn.execute(
            "UPDATE deposits SET status = 'credited', credited_at = $3
             WHERE account_id = $1 AND credit_reference = $2 AND status = 'crediting'",
            &[&account_id, &reference, &at],
        )
        .map_err(err)?;
        Ok(())
    }

    pub(super) fn list(&self, account_id: Option<&str>, limit: usize) -> StoreResult<Vec<DepositRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.conn()?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE $1::TEXT IS NULL OR account_id = $1
                     ORDER BY height DESC, tx_hash DESC LIMIT $2"
                ),
                &[&account_id, &limit],
            )
            .map_err(err)?;
        rows.iter().map(deposit_from_row).collect()
    }
}
