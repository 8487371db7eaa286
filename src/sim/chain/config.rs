//! The simulated chain's flags on the `sim` command, with their defaults.

use super::ledger;

/// A genesis balance: `ADDR=AMOUNT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fund {
    pub address: String,
    pub amount: u128,
}

impl std::str::FromStr for Fund {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, amount) = s.split_once('=').ok_or_else(|| format!("{s}: expected ADDR=AMOUNT"))?;
        let address = address.trim();
        if !ledger::valid_address(address) {
            return Err(format!("{address} is not a gonka1… address"));
        }
        let amount = amount.trim().parse().map_err(|_| format!("{amount}: not an amount"))?;
        Ok(Self { address: address.to_owned(), amount })
    }
}

/// The chain's flags on the `sim` command.
#[derive(Debug, Clone, clap::Args)]
pub struct ChainConfig {
    /// The simulated chain's id (what transactions are signed for).
    #[arg(long, default_value = "gonka-mainnet")]
    pub chain_id: String,
    /// The denom of balances, fees and transfers.
    #[arg(long, default_value = "ngonka")]
    pub chain_denom: String,
    /// What signed inference costs, in the denom per token.
    #[arg(long, default_value_t = 1)]
    pub chain_price: u128,
    /// Block time, ms: accepted transactions are applied in the next block.
    #[arg(long, default_value_t = 200)]
    pub chain_block_ms: u64,
    /// The smallest fee a transaction may pay (CheckTx refuses less with code 13).
    #[arg(long, default_value_t = 0)]
    pub chain_min_fee: u128,
    /// A genesis balance, `gonka1…=AMOUNT` (repeatable).
    #[arg(long = "chain-fund", value_name = "ADDR=AMOUNT")]
    pub chain_fund: Vec<Fund>,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            chain_id: "gonka-mainnet".into(),
            chain_denom: "ngonka".into(),
            chain_price: 1,
            chain_block_ms: 200,
            chain_min_fee: 0,
            chain_fund: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_funds_parse_and_bad_ones_are_refused() {
        let f: Fund = "gonka1qxhrux2n9fj5yf6p0snkgq9248kj3gdjtzmfaf=1000".parse().unwrap();
        assert_eq!(f.amount, 1000);
        assert!("gonka1qxhrux2n9fj5yf6p0snkgq9248kj3gdjtzmfaf".parse::<Fund>().is_err());
        assert!("cosmos1xyz=5".parse::<Fund>().is_err());
        assert!("gonka1qxhrux2n9fj5yf6p0snkgq9248kj3gdjtzmfaf=-1".parse::<Fund>().is_err());
    }
}
