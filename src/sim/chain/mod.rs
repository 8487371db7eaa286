//! The simulated Gonka chain, on the simulator's own listeners: the Cosmos SDK REST API a node serves
//! (at `/chain-api/cosmos/...` and at `/cosmos/...`), accounts and bank balances in one denom, CheckTx
//! and blocks ([`ledger`]), a test control (`POST /sim/chain`), and the escrow signed inference pays
//! from ([`Chain::escrow`]).
//!
//! # REST
//! - `GET /cosmos/auth/v1beta1/accounts/{addr}` → `{"account": {"@type": BaseAccount, "address",
//!   "pub_key": {"@type": secp256k1 PubKey, "key": base64} | null, "account_number", "sequence"}}`;
//!   404 `{"code": 5, ...}` for an account the chain does not know.
//! - `GET /cosmos/bank/v1beta1/balances/{addr}/by_denom?denom=D` → `{"balance": {"denom", "amount"}}`;
//!   `GET /cosmos/bank/v1beta1/balances/{addr}` → `{"balances": [...], "pagination": ...}`.
//! - `GET /cosmos/base/tendermint/v1beta1/blocks/latest` and `.../blocks/{height}` → `{"block_id":
//!   {"hash": base64, ...}, "block": {"header": {"chain_id", "height", "time", "last_block_id", ...},
//!   "data": {"txs": [base64 TxRaw, ...]}, ...}, "sdk_block": ...}`; a height past the latest is 400
//!   `{"code": 3}`, as the SDK answers it.
//! - `POST /cosmos/tx/v1beta1/txs` `{"tx_bytes": base64, "mode"}` → `{"tx_response": {"txhash", "code",
//!   "codespace", "raw_log", "height": "0", ...}}` (only the fields of the SDK's `TxResponse`, so strict
//!   protobuf-JSON clients read it).
//! - `GET /cosmos/tx/v1beta1/txs/{hash}` → `{"tx_response": {"txhash", "height", "code", "raw_log", ...}}`
//!   once the transaction is in a block; 404 `{"code": 5}` before (or when it never will be).
//!
//! While the chain is down (`POST /sim/chain {"down": true}`), every REST call answers 503; signed
//! inference keeps serving from the balances. `{"fund": {"address", "amount"}}` adds funds (creating
//! the account); `{"forget_pending": true}` drops the transactions not yet in a block; `{"reorg": N}`
//! replaces the last N blocks by empty ones with other hashes (a reorganisation: their transactions are
//! undone and gone).
//!
//! # Signed inference
//! The chain governs signed inference for a requester that has an account on it (genesis funds, a
//! funding, or a transfer received): the account's public key must be on chain (published by its first
//! transaction; 401 otherwise), `(prompt chars / 4 + max_tokens (5000 when not set)) × price` is taken
//! from its balance before the answer (402 `{"error": "Insufficient balance"}` when it cannot be), and
//! after the answer (or when the client leaves) the tokens generated × price are charged to the node's
//! account and the rest refunded. A requester the chain has never seen is served as before the chain
//! existed (the signature check alone), so simulations without a chain keep working.

mod config;
pub mod ledger;
mod rest;
mod state;

pub use config::{ChainConfig, Fund};
pub use rest::answer as rest_answer;
pub use state::{Chain, Escrow, Refusal};
