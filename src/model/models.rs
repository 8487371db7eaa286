//! The models served: their specs (prices, context, tokenizer, aliases) and the table the cores read.

use std::path::PathBuf;
use std::sync::Arc;

/// A validated model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub id: String,
    pub context_length: Option<u64>,
    pub price_prompt_ngonka: u64,
    pub price_completion_ngonka: u64,
    /// Its `tokenizer.json`, when configured.
    pub tokenizer: Option<PathBuf>,
    /// Other names requests may give it (an id without `/`, for clients that refuse slashed ids); a
    /// request naming one is served, billed and recorded as [`ModelSpec::id`]. Shared, so that cloning a
    /// spec on the request path copies no strings.
    pub aliases: Arc<[String]>,
}

/// The models served, by id, with their prices.
#[derive(Debug, Default, Clone)]
pub struct ModelTable {
    pub list: Vec<ModelEntry>,
}

/// One model of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub spec: ModelSpec,
    /// In the config's `[[models]]` (a stored price only overrides its prices); otherwise the model
    /// exists because a price for it is stored.
    pub configured: bool,
    /// Unix seconds, the OpenAI `created`: the process start for a configured model, the stored price's
    /// `updated_at` for a model only the store has.
    pub created: i64,
}

/// When this process built its first model table (at start-up), Unix seconds.
static STARTED_UNIX_SECS: std::sync::LazyLock<i64> =
    std::sync::LazyLock::new(|| i64::try_from(crate::time::unix_secs()).unwrap_or(i64::MAX));

impl ModelTable {
    /// The model a request names: by its id, else by one of its aliases. Every request's model is looked
    /// up here.
    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.lookup(name).map(|e| &e.spec)
    }

    /// [`ModelTable::get`]'s entry.
    pub fn lookup(&self, name: &str) -> Option<&ModelEntry> {
        self.entry(name).or_else(|| self.list.iter().find(|m| m.spec.aliases.iter().any(|a| a == name)))
    }

    /// The entry of exactly this id (prices are stored by id, never by alias).
    pub fn entry(&self, id: &str) -> Option<&ModelEntry> {
        self.list.iter().find(|m| m.spec.id == id)
    }

    /// The configured models with stored prices laid over them (a stored price for a model the file
    /// does not list adds that model).
    pub fn from_config_and_prices(config: &[ModelSpec], prices: &[PriceRow]) -> Self {
        let started = *STARTED_UNIX_SECS;
        let mut list: Vec<ModelEntry> = config
            .iter()
            .map(|m| ModelEntry { spec: m.clone(), configured: true, created: started })
            .collect();
        for p in prices {
            match list.iter_mut().find(|m| m.spec.id == p.model) {
                Some(m) => {
                    m.spec.price_prompt_ngonka = p.price_prompt_ngonka;
                    m.spec.price_completion_ngonka = p.price_completion_ngonka;
                }
                None => list.push(ModelEntry {
                    spec: ModelSpec {
                        id: p.model.clone(),
                        context_length: None,
                        price_prompt_ngonka: p.price_prompt_ngonka,
                        price_completion_ngonka: p.price_completion_ngonka,
                        tokenizer: None,
                        aliases: Arc::from([]),
                    },
                    configured: false,
                    created: p.updated_at,
                }),
            }
        }
        Self { list }
    }
}

/// A model's prices as stored (overriding the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRow {
    pub model: String,
    pub price_prompt_ngonka: u64,
    pub price_completion_ngonka: u64,
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_is_the_process_start_for_configured_models_and_the_price_time_for_stored_ones() {
        let spec = |id: &str| ModelSpec {
            id: id.into(),
            context_length: Some(8),
            price_prompt_ngonka: 1,
            price_completion_ngonka: 2,
            tokenizer: None,
            aliases: Arc::from(["a-alias".to_owned()]),
        };
        let price = |model: &str, at: i64| PriceRow {
            model: model.into(),
            price_prompt_ngonka: 5,
            price_completion_ngonka: 6,
            updated_at: at,
        };
        let t = ModelTable::from_config_and_prices(&[spec("a")], &[price("a", 100), price("b", 200)]);
        let (a, b) = (t.entry("a").unwrap(), t.entry("b").unwrap());
        assert!(a.configured && !b.configured);
        assert!(a.created > 1_700_000_000, "the process start: {}", a.created);
        assert_eq!(b.created, 200);
        assert_eq!((a.spec.price_prompt_ngonka, a.spec.context_length), (5, Some(8)), "prices overridden");
        assert_eq!(t.get("b").map(|m| m.price_completion_ngonka), Some(6));
        assert_eq!(t.get("a-alias").map(|m| m.id.as_str()), Some("a"), "requests may name an alias");
        assert!(t.entry("a-alias").is_none(), "prices are by id only");
    }
}
