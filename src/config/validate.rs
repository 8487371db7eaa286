//! Validation: a [`ConfigFile`] checked and converted into [`Settings`]. The environment variables the
//! file names (keys, tokens) are read through a parameter, so validation is a pure function of the file
//! and that environment.

use super::error::{ConfigError, invalid};
use super::file::{ClusterFile, ConfigFile};
use super::settings::{
    BillingSettings, ChainSettings, ClusterSettings, DepositSettings, GonkaSettings, KeySettings, NodeKind,
    NodeSpec, NodeUrl, NotificationSettings, PostgresSettings, Secret, ServerTimeouts, Settings,
    SignupSettings, StoreSettings, Synchronous, UpstreamSettings, WaitFor,
};
use crate::http::{HttpLimits, request::MAX_HEADERS_CAP};
use crate::model::ModelSpec;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

impl ConfigFile {
    /// Validates and converts, reading the variables the file names from the process environment.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        self.validate_with(&|name| std::env::var(name).ok())
    }

    /// Validates and converts; `env` gives the value of an environment variable (`None`: unset).
    pub fn validate_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let workers = match self.workers {
            0 => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            n => NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
        };
        let s = &self.server;
        if s.max_headers == 0 || s.max_headers > MAX_HEADERS_CAP {
            return Err(invalid(format!("server.max_headers must be 1..={MAX_HEADERS_CAP}")));
        }
        if s.max_head_bytes < 256 {
            return Err(invalid("server.max_head_bytes must be at least 256"));
        }
        if s.body_memory_bytes < s.max_body_bytes {
            return Err(invalid("server.body_memory_bytes must be at least server.max_body_bytes"));
        }
        if self.admin.max_connections == 0 {
            return Err(invalid("admin.max_connections must be at least 1"));
        }
        if s.read_buffer_bytes < 512 || s.relay_buffer_bytes < 1024 {
            return Err(invalid("server.read_buffer_bytes must be ≥ 512 and relay_buffer_bytes ≥ 1024"));
        }
        let http = HttpLimits {
            max_head_bytes: s.max_head_bytes,
            max_headers: s.max_headers,
            max_body_bytes: s.max_body_bytes,
        };
        let timeouts = ServerTimeouts {
            head: ms(s.head_timeout_ms, "server.head_timeout_ms")?,
            body: ms(s.body_timeout_ms, "server.body_timeout_ms")?,
            idle: ms(s.idle_timeout_ms, "server.idle_timeout_ms")?,
            write: ms(s.write_timeout_ms, "server.write_timeout_ms")?,
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
        };

        let mut models = Vec::new();
        for m in &self.models {
            if m.id.is_empty() || m.id.len() > 256 {
                return Err(invalid("models.id must be 1–256 characters"));
            }
            if models.iter().any(|x: &ModelSpec| x.id == m.id) {
                return Err(invalid(format!("model {:?} is listed twice", m.id)));
            }
            models.push(ModelSpec {
                id: m.id.clone(),
                context_length: m.context_length,
                price_prompt_ngonka: m.price_prompt_ngonka,
                price_completion_ngonka: m.price_completion_ngonka,
                tokenizer: (!m.tokenizer.is_empty()).then(|| PathBuf::from(&m.tokenizer)),
                aliases: m.aliases.iter().cloned().collect(),
            });
        }
        check_aliases(&models)?;

        let u = &self.upstream;
        let mut nodes = Vec::new();
        for n in &u.nodes {
            let kind = match n.kind.as_str() {
                "openai" => NodeKind::OpenAi,
                "gonka" => NodeKind::Gonka,
                other => return Err(invalid(format!("node kind {other:?} is not openai or gonka"))),
            };
            let api_key = match &n.api_key_env {
                Some(var) => Some(Secret(env(var).ok_or_else(|| {
                    invalid(format!("node {}: environment variable {var} is not set", n.url))
                })?)),
                None => None,
            };
            if kind == NodeKind::Gonka
                && !n.transfer_address.as_deref().is_some_and(|a| a.starts_with("gonka1") && a.len() > 10)
            {
                return Err(invalid(format!("gonka node {} needs its transfer_address (gonka1…)", n.url)));
            }
            for m in &n.models {
                if !models.iter().any(|x| &x.id == m) {
                    return Err(invalid(format!("node {} serves {m:?}, which is not in [[models]]", n.url)));
                }
            }
            nodes.push(NodeSpec {
                url: NodeUrl::parse(&n.url)?,
                kind,
                api_key,
                models: n.models.clone(),
                transfer_address: n.transfer_address.clone(),
            });
        }
        let g = &u.gonka;
        let gonka = if nodes.iter().any(|n| n.kind == NodeKind::Gonka) || !g.seeds.is_empty() {
            let key = env(&g.private_key_env)
                .ok_or_else(|| invalid(format!("gonka nodes need a signing key in {}", g.private_key_env)))?;
            crate::gonka::signer::GonkaSigner::from_hex(&key)
                .map_err(|e| invalid(format!("{}: {e}", g.private_key_env)))?;
            Some(GonkaSettings {
                private_key: Secret(key),
                seeds: g.seeds.iter().map(|s| NodeUrl::parse(s)).collect::<Result<_, _>>()?,
                use_allowlist: g.use_allowlist,
                refresh: ms(g.refresh_ms, "upstream.gonka.refresh_ms")?,
            })
        } else {
            None
        };
        let upstream = UpstreamSettings {
            connect_timeout: ms(u.connect_timeout_ms, "upstream.connect_timeout_ms")?,
            head_timeout: ms(u.response_head_timeout_ms, "upstream.response_head_timeout_ms")?,
            read_timeout: ms(u.read_timeout_ms, "upstream.read_timeout_ms")?,
            max_attempts: NonZeroU32::new(u.max_attempts)
                .ok_or_else(|| invalid("upstream.max_attempts must be at least 1"))?,
            pool_max_idle_per_node: u.pool_max_idle_per_node,
            pool_idle_timeout: ms(u.pool_idle_timeout_ms, "upstream.pool_idle_timeout_ms")?,
            eject_after_failures: NonZeroU32::new(u.eject_after_failures)
                .ok_or_else(|| invalid("upstream.eject_after_failures must be at least 1"))?,
            eject_for: ms(u.eject_ms, "upstream.eject_ms")?,
            probe_interval: ms(u.probe_interval_ms, "upstream.probe_interval_ms")?,
            nodes,
            gonka,
            tls_system_roots: u.tls.system_roots,
            tls_extra_ca: (!u.tls.extra_ca_path.is_empty()).then(|| PathBuf::from(&u.tls.extra_ca_path)),
        };

        let log_level = match self.log.level.as_str() {
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            other => return Err(invalid(format!("log.level {other:?} is not a level"))),
        };
        let admin_token = env(&self.admin.token_env).filter(|t| !t.is_empty());
        let data_dir = PathBuf::from(&self.data_dir);
        let mut cluster = self.cluster.validate()?;
        if !self.limits.redis_url.is_empty() {
            if cluster.instances < 2 || self.store.kind != "postgres" {
                return Err(invalid(
                    "limits.redis_url shares budgets between instances: it needs cluster.instances > 1 \
                     and store.kind = \"postgres\"",
                ));
            }
            cluster.redis_url = Some(self.limits.redis_url.clone());
        }
        let store = match self.store.kind.as_str() {
            "sqlite" => {
                let path = if self.store.path.is_empty() {
                    data_dir.join("gateway.db")
                } else {
                    PathBuf::from(&self.store.path)
                };
                let synchronous = match self.store.sqlite_synchronous.as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    other => {
                        return Err(invalid(format!(
                            "store.sqlite_synchronous {other:?} is not full or normal"
                        )));
                    }
                };
                StoreSettings::Sqlite { path, synchronous }
            }
            "postgres" => {
                if self.store.url.is_empty() {
                    return Err(invalid("store.url must be set when store.kind is postgres"));
                }
                let schema_ok = !self.store.schema.is_empty()
                    && self.store.schema.len() <= 48
                    && self
                        .store
                        .schema
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !self.store.schema.as_bytes()[0].is_ascii_digit();
                if !schema_ok {
                    return Err(invalid(format!(
                        "store.schema {:?} must be 1-48 of a-z, 0-9 and _, not starting with a digit",
                        self.store.schema
                    )));
                }
                if self.store.pool_size == 0 {
                    return Err(invalid("store.pool_size must be at least 1"));
                }
                StoreSettings::Postgres(PostgresSettings {
                    url: self.store.url.clone(),
                    schema: self.store.schema.clone(),
                    instance_id: cluster.instance_id.clone(),
                    pool_size: self.store.pool_size,
                })
            }
            other => return Err(invalid(format!("store.kind {other:?} is not sqlite or postgres"))),
        };
        if cluster.instances > 1 && matches!(store, StoreSettings::Sqlite { .. }) {
            return Err(invalid("cluster.instances > 1 needs a shared store: store.kind = \"postgres\""));
        }
        let hash_secret = env(&self.keys.hash_secret_env).filter(|t| !t.is_empty());
        if hash_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(invalid(format!("{} must hold at least 32 bytes", self.keys.hash_secret_env)));
        }
        if self.limits.default_max_tokens == 0 {
            return Err(invalid("limits.default_max_tokens must be at least 1"));
        }
        let billing = BillingSettings {
            default_rpm: self.limits.default_rpm,
            default_max_tokens: self.limits.default_max_tokens,
            fit_max_tokens: crate::model::FitPolicy::parse(&self.limits.fit_max_tokens).ok_or_else(|| {
                invalid(format!(
                    "limits.fit_max_tokens {:?} is not unset, always or never",
                    self.limits.fit_max_tokens
                ))
            })?,
            min_fit_tokens: self.limits.min_fit_tokens.max(1),
            drain_after_client_gone: Duration::from_millis(self.billing.drain_after_client_gone_ms),
            drain_after_client_gone_bytes: self.billing.drain_after_client_gone_bytes,
            progress_tokens: if self.journal.progress_tokens == 0 {
                return Err(invalid("journal.progress_tokens must be at least 1"));
            } else {
                self.journal.progress_tokens
            },
            journal_dir: if self.journal.dir.is_empty() {
                data_dir.join("journal")
            } else {
                PathBuf::from(&self.journal.dir)
            },
            journal_wait: match self.journal.wait.as_str() {
                "write" => WaitFor::Write,
                "fsync" => WaitFor::Fsync,
                other => return Err(invalid(format!("journal.wait {other:?} is not write or fsync"))),
            },
            journal_fsync_interval: ms(self.journal.fsync_interval_ms, "journal.fsync_interval_ms")?,
        };
        let keys = KeySettings {
            hash_secret,
            max_keys_per_account: self.keys.max_keys_per_account,
            snapshot_interval: ms(self.keys.snapshot_interval_ms, "keys.snapshot_interval_ms")?,
            reconcile_interval: ms(self.keys.reconcile_interval_ms, "keys.reconcile_interval_ms")?,
            dashboard_session_ttl: match self.keys.dashboard_session_ttl_ms {
                ttl if ttl < 60_000 => {
                    return Err(invalid("keys.dashboard_session_ttl_ms must be at least 60000 (a minute)"));
                }
                ttl => Duration::from_millis(ttl),
            },
        };

        Ok(Settings {
            workers,
            data_dir,
            listen: addr(&s.listen, "server.listen")?,
            admin_listen: addr(&self.admin.listen, "admin.listen")?,
            admin_token,
            http,
            timeouts,
            read_buffer_bytes: s.read_buffer_bytes,
            relay_buffer_bytes: s.relay_buffer_bytes,
            backlog: s.backlog,
            max_connections: s.max_connections,
            admin_max_connections: self.admin.max_connections,
            body_memory_bytes: s.body_memory_bytes,
            body_memory_wait: Duration::from_millis(s.body_memory_wait_ms),
            tls: match (s.tls.cert_path.is_empty(), s.tls.key_path.is_empty()) {
                (true, true) => None,
                (false, false) => Some((PathBuf::from(&s.tls.cert_path), PathBuf::from(&s.tls.key_path))),
                _ => return Err(invalid("server.tls needs both cert_path and key_path")),
            },
            upstream,
            models,
            store,
            cluster,
            keys,
            billing,
            responses_retention: match self.responses.retention_days {
                0 | 36_501.. => return Err(invalid("responses.retention_days must be 1 to 36500")),
                days => Duration::from_secs(u64::from(days) * 86_400),
            },
            chain: self.validate_chain(env)?,
            referrals: self.validate_referrals()?,
            signup: self.validate_signup()?,
            deposits: self.validate_deposits(env)?,
            notifications: self.validate_notifications(env)?,
            log_level,
            access_log: self.log.access_log,
            cors_allow_origin: cors_allow_origin(&s.cors_allow_origins)?,
        })
    }
}

/// Every alias names one model: 1–256 characters, not another model's id or alias.
fn check_aliases(models: &[ModelSpec]) -> Result<(), ConfigError> {
    let mut names: std::collections::HashSet<&str> = models.iter().map(|m| m.id.as_str()).collect();
    for m in models {
        for a in m.aliases.iter() {
            if a.is_empty() || a.len() > 256 {
                return Err(invalid(format!("model {:?}: aliases must be 1–256 characters", m.id)));
            }
            if !names.insert(a) {
                return Err(invalid(format!(
                    "model {:?}: alias {a:?} is already the id or an alias of a model",
                    m.id
                )));
            }
        }
    }
    Ok(())
}

impl ClusterFile {
    fn validate(&self) -> Result<ClusterSettings, ConfigError> {
        let id = if self.instance_id.is_empty() { "default" } else { self.instance_id.as_str() };
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid(format!(
                "cluster.instance_id {id:?} must be 1-64 of A-Z, a-z, 0-9, - and _"
            )));
        }
        if self.instances == 0 || self.instances > 1024 {
            return Err(invalid("cluster.instances must be between 1 and 1024"));
        }
        Ok(ClusterSettings { instance_id: id.to_owned(), instances: self.instances, redis_url: None })
    }
}

/// `server.cors_allow_origins` as the one `Access-Control-Allow-Origin` value it gives.
fn cors_allow_origin(origins: &[String]) -> Result<Option<String>, ConfigError> {
    match origins {
        [] => Ok(None),
        [one] if one == "*" => Ok(Some(one.clone())),
        [one] => {
            let (scheme, host) = one.split_once("://").unwrap_or(("", ""));
            let valid = matches!(scheme, "http" | "https")
                && !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if valid {
                Ok(Some(one.clone()))
            } else {
                Err(invalid(format!(
                    "server.cors_allow_origins: {one:?} is not an origin (scheme://host[:port], no path)"
                )))
            }
        }
        // The answer must name the request's own origin when several are allowed, and the gateway does
        // not read a request's Origin header (yet).
        _ => Err(invalid(
            "server.cors_allow_origins: give [\"*\"], one origin, or [] (several origins are not supported)",
        )),
    }
}

impl ConfigFile {
    /// `[notifications]`: `None` without a `url`; with one, the signing secret must be in the
    /// environment and every bound above zero.
    fn validate_notifications(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<NotificationSettings>, ConfigError> {
        let n = &self.notifications;
        if n.url.is_empty() {
            return Ok(None);
        }
        let url = NodeUrl::parse(&n.url).map_err(|e| invalid(format!("notifications.url: {e}")))?;
        let var = &n.secret_env;
        let secret = env(var).filter(|s| s.len() >= 16).ok_or_else(|| {
            invalid(format!(
                "notifications.url is set: the signing secret (at least 16 bytes) must be in the environment \
                 variable {var}"
            ))
        })?;
        if n.max_attempts == 0 || n.queue_size == 0 {
            return Err(invalid(
                "notifications.max_attempts and notifications.queue_size must be at least 1",
            ));
        }
        if n.max_backoff_ms < n.backoff_ms {
            return Err(invalid("notifications.max_backoff_ms must be at least notifications.backoff_ms"));
        }
        Ok(Some(NotificationSettings {
            url,
            secret: Secret(secret),
            low_balance_ngonka: n.low_balance_ngonka,
            timeout: ms(n.timeout_ms, "notifications.timeout_ms")?,
            max_attempts: n.max_attempts,
            backoff: ms(n.backoff_ms, "notifications.backoff_ms")?,
            max_backoff: ms(n.max_backoff_ms, "notifications.max_backoff_ms")?,
            queue_size: n.queue_size,
            check_interval: ms(n.check_interval_ms, "notifications.check_interval_ms")?,
        }))
    }

    /// `[chain]`: `None` unless enabled; when enabled the REST URL and the treasury key (a valid
    /// secp256k1 key in hex, from `treasury_key_env`) must be there.
    fn validate_chain(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ChainSettings>, ConfigError> {
        let c = &self.chain;
        if !c.enabled {
            return Ok(None);
        }
        let rest = url::Url::parse(&c.rest_url).map_err(|e| {
            invalid(format!("chain.rest_url {:?}: {e} (required when [chain] enabled)", c.rest_url))
        })?;
        if !matches!(rest.scheme(), "http" | "https") {
            return Err(invalid(format!("chain.rest_url {:?} must be http or https", c.rest_url)));
        }
        if c.chain_id.is_empty() || c.denom.is_empty() {
            return Err(invalid("chain.chain_id and chain.denom must not be empty"));
        }
        if c.gas_limit == 0 {
            return Err(invalid("chain.gas_limit must be at least 1"));
        }
        if c.float_ngonka == 0 || c.top_up_below_ngonka > c.float_ngonka {
            return Err(invalid(
                "chain.float_ngonka must be at least 1 and at least chain.top_up_below_ngonka",
            ));
        }
        let var = &c.treasury_key_env;
        let key = env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
            invalid(format!(
                "[chain] enabled needs the treasury's private key (hex) in the environment variable {var}"
            ))
        })?;
        crate::gonka::signer::GonkaSigner::from_hex(&key)
            .map_err(|e| invalid(format!("{var} is not a valid private key: {e}")))?;
        Ok(Some(ChainSettings {
            direct_keys: c.direct_keys,
            rest_url: c.rest_url.trim_end_matches('/').to_owned(),
            chain_id: c.chain_id.clone(),
            denom: c.denom.clone(),
            fee_ngonka: c.fee_ngonka,
            gas_limit: c.gas_limit,
            treasury_key: Secret(key),
            float_ngonka: c.float_ngonka,
            top_up_below_ngonka: c.top_up_below_ngonka,
            poll: ms(c.poll_ms, "chain.poll_ms")?,
            timeout: ms(c.timeout_ms, "chain.timeout_ms")?,
        }))
    }
}

impl ConfigFile {
    /// `[referrals]`: shares are basis points of the credit, at most all of it.
    fn validate_referrals(&self) -> Result<crate::model::ReferralPolicy, ConfigError> {
        let r = &self.referrals;
        for (v, name) in [(r.l1_bps, "referrals.l1_bps"), (r.l2_bps, "referrals.l2_bps")] {
            if v > 10_000 {
                return Err(invalid(format!("{name} must be 0..=10000 (basis points: 10000 = 100 %)")));
            }
        }
        Ok(crate::model::ReferralPolicy {
            enabled: r.enabled,
            l1_bps: r.l1_bps,
            l2_bps: r.l2_bps,
            withdrawable: r.withdrawable,
        })
    }

    /// `[signup]`: `None` unless enabled; an enabled sign-up must let someone sign up.
    fn validate_signup(&self) -> Result<Option<SignupSettings>, ConfigError> {
        let s = &self.signup;
        if !s.enabled {
            return Ok(None);
        }
        if s.max_per_ip_per_hour == 0 || s.max_per_hour == 0 {
            return Err(invalid("signup.max_per_ip_per_hour and signup.max_per_hour must be at least 1"));
        }
        Ok(Some(SignupSettings { max_per_ip_per_hour: s.max_per_ip_per_hour, max_per_hour: s.max_per_hour }))
    }
    /// `[deposits]`: `None` unless enabled; when enabled `[chain]` must be too, the deposit key (64 hex
    /// digits) must be in `key_env`, the rate above 0 (at most 10^12 ppm) and the fee at most 10000 bps.
    fn validate_deposits(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<DepositSettings>, ConfigError> {
        let d = &self.deposits;
        if !d.enabled {
            return Ok(None);
        }
        if !self.chain.enabled {
            return Err(invalid("[deposits] enabled needs [chain] enabled (the chain it watches)"));
        }
        if d.rate_ppm == 0 || d.rate_ppm > 1_000_000_000_000 {
            return Err(invalid("deposits.rate_ppm must be between 1 and 1000000000000"));
        }
        if d.fee_bps > 10_000 {
            return Err(invalid("deposits.fee_bps must be at most 10000 (100%)"));
        }
        let var = &d.key_env;
        let key = env(var).map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).ok_or_else(|| {
            invalid(format!(
                "[deposits] enabled needs the deposit key (64 hex digits) in the environment variable {var}"
            ))
        })?;
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!("{var} must be 64 hex digits (32 bytes)")));
        }
        Ok(Some(DepositSettings {
            key: Secret(key),
            confirmations: d.confirmations,
            rate_ppm: d.rate_ppm,
            fee_bps: d.fee_bps,
            min_ngonka: d.min_ngonka,
            start_height: d.start_height,
        }))
    }
}

fn ms(v: u64, name: &str) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(invalid(format!("{name} must be greater than 0")));
    }
    Ok(Duration::from_millis(v))
}

fn addr(s: &str, name: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| invalid(format!("{name} {s:?} is not an IP:port address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_allow_origins_give_one_allow_origin_or_none() {
        let cors = |v: &[&str]| cors_allow_origin(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(cors(&["*"]).unwrap().as_deref(), Some("*"));
        assert_eq!(cors(&[]).unwrap(), None);
        assert_eq!(
            cors(&["https://app.example.com:8443"]).unwrap().as_deref(),
            Some("https://app.example.com:8443")
        );
        assert!(cors(&["https://app.example.com/"]).is_err(), "a path is no origin");
        assert!(cors(&["app.example.com"]).is_err());
        assert!(cors(&["*", "https://a.example"]).is_err());
        assert_eq!(ConfigFile::default().validate().unwrap().cors_allow_origin.as_deref(), Some("*"));
    }

    #[test]
    fn nodes_must_serve_known_models() {
        let text = r#"
            [[models]]
            id = "a"
            [[upstream.nodes]]
            url = "http://127.0.0.1:1/v1"
            models = ["b"]
        "#;
        let err = ConfigFile::parse(text).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("not in [[models]]"), "{err}");
    }

    #[test]
    fn an_alias_names_one_model() {
        let config = |aliases_b: &str| {
            format!(
                "[[models]]\nid = \"org/a\"\naliases = [\"a\"]\n[[models]]\nid = \"org/b\"\naliases = {aliases_b}\n"
            )
        };
        let ok = ConfigFile::parse(&config(r#"["b", "bee"]"#)).unwrap().validate().unwrap();
        assert_eq!(&*ok.models[1].aliases, ["b".to_owned(), "bee".to_owned()]);
        for taken in [r#"["a"]"#, r#"["org/a"]"#, r#"["b", "b"]"#, r#"[""]"#] {
            let err = ConfigFile::parse(&config(taken)).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains("alias"), "{taken}: {err}");
        }
    }

    /// An environment holding only `vars`.
    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_hash_secret_from_the_environment_must_hold_32_bytes() {
        let file = ConfigFile::default();
        let err = file.validate_with(&env_of(&[("GATEWAY_KEY_SECRET", "short")])).unwrap_err();
        assert_eq!(err.to_string(), "invalid config: GATEWAY_KEY_SECRET must hold at least 32 bytes");
        let long = "k".repeat(32);
        let settings = file.validate_with(&env_of(&[("GATEWAY_KEY_SECRET", &long)])).unwrap();
        assert_eq!(settings.keys.hash_secret.as_deref(), Some(long.as_str()));
        let unset = file.validate_with(&env_of(&[])).unwrap();
        assert_eq!(unset.keys.hash_secret, None, "the runtime loads or generates one");
        let empty = file.validate_with(&env_of(&[("GATEWAY_KEY_SECRET", "")])).unwrap();
        assert_eq!(empty.keys.hash_secret, None, "an empty variable counts as unset");
    }

    #[test]
    fn the_admin_token_and_node_keys_come_from_the_given_environment() {
        let text = r#"
            [admin]
            token_env = "ADMIN_T"
            [[models]]
            id = "a"
            [[upstream.nodes]]
            url = "http://127.0.0.1:1/v1"
            api_key_env = "NODE_KEY"
        "#;
        let file = ConfigFile::parse(text).unwrap();
        let err = file.validate_with(&env_of(&[("ADMIN_T", "t")])).unwrap_err();
        assert!(err.to_string().contains("environment variable NODE_KEY is not set"), "{err}");
        let settings = file.validate_with(&env_of(&[("ADMIN_T", "t"), ("NODE_KEY", "nk")])).unwrap();
        assert_eq!(settings.admin_token.as_deref(), Some("t"));
        assert_eq!(settings.upstream.nodes[0].api_key.as_ref().map(Secret::expose), Some("nk"));
    }

    #[test]
    fn gonka_nodes_need_a_signing_key_in_the_given_environment() {
        let file = ConfigFile::parse("[upstream.gonka]\nseeds = [\"http://127.0.0.1:1\"]\n").unwrap();
        let err = file.validate_with(&env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("need a signing key in GONKA_PRIVATE_KEY"), "{err}");
        let key = "11".repeat(32);
        let settings = file.validate_with(&env_of(&[("GONKA_PRIVATE_KEY", &key)])).unwrap();
        assert_eq!(settings.upstream.gonka.unwrap().private_key.expose(), key);
    }

    #[test]
    fn notifications_are_off_by_default_and_need_their_secret_when_on() {
        assert!(ConfigFile::default().validate_with(&env_of(&[])).unwrap().notifications.is_none());
        let on = ConfigFile::parse(
            "[notifications]\nurl = \"http://127.0.0.1:9/hook\"\nlow_balance_ngonka = 5\nsecret_env = \"S\"\n",
        )
        .unwrap();
        let e = on.validate_with(&env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("environment variable S"), "{e}");
        assert!(on.validate_with(&env_of(&[("S", "short")])).is_err(), "a secret under 16 bytes");
        let n = on.validate_with(&env_of(&[("S", "0123456789abcdef")])).unwrap().notifications.unwrap();
        assert_eq!((n.url.port, n.url.base_path.as_str(), n.low_balance_ngonka), (9, "/hook", 5));
        assert_eq!((n.max_attempts, n.timeout), (8, Duration::from_secs(5)));
        let bad = ConfigFile::parse("[notifications]\nurl = \"ftp://x\"\n").unwrap();
        assert!(bad.validate_with(&env_of(&[("GATEWAY_WEBHOOK_SECRET", "0123456789abcdef")])).is_err());
    }

    #[test]
    fn the_chain_is_off_by_default_and_needs_its_url_and_a_valid_treasury_key_when_on() {
        assert!(ConfigFile::default().validate_with(&env_of(&[])).unwrap().chain.is_none());
        let on = |extra: &str| {
            ConfigFile::parse(&format!(
                "[chain]\nenabled = true\nrest_url = \"http://127.0.0.1:9000/chain-api/\"\n{extra}"
            ))
            .unwrap()
        };
        let e = on("").validate_with(&env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("GONKA_TREASURY_KEY"), "{e}");
        let e = on("").validate_with(&env_of(&[("GONKA_TREASURY_KEY", "zz")])).unwrap_err().to_string();
        assert!(e.contains("not a valid private key"), "{e}");
        let key = "1111111111111111111111111111111111111111111111111111111111111111";
        let c = on("treasury_key_env = \"T\"").validate_with(&env_of(&[("T", key)])).unwrap().chain.unwrap();
        assert_eq!(
            (c.rest_url.as_str(), c.chain_id.as_str(), c.denom.as_str()),
            ("http://127.0.0.1:9000/chain-api", "gonka-mainnet", "ngonka")
        );
        assert_eq!(c.treasury_key.expose(), key);
        assert!(!format!("{c:?}").contains(key), "the key is never printed");
        let no_url = ConfigFile::parse("[chain]\nenabled = true\n").unwrap();
        let e = no_url.validate_with(&env_of(&[("GONKA_TREASURY_KEY", key)])).unwrap_err().to_string();
        assert!(e.contains("chain.rest_url"), "{e}");
        let e = on("float_ngonka = 5\ntop_up_below_ngonka = 6")
            .validate_with(&env_of(&[("GONKA_TREASURY_KEY", key)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("float_ngonka"), "{e}");
    }

    #[test]
    fn referral_shares_are_basis_points_and_sign_up_is_off_by_default() {
        let s = ConfigFile::default().validate_with(&env_of(&[])).unwrap();
        assert_eq!(s.referrals, crate::model::ReferralPolicy::default());
        assert_eq!((s.referrals.l1_bps, s.referrals.l2_bps, s.signup), (1000, 300, None));
        let e = ConfigFile::parse("[referrals]\nl2_bps = 10001\n").unwrap().validate_with(&env_of(&[]));
        assert!(e.unwrap_err().to_string().contains("referrals.l2_bps"));
        let on =
            ConfigFile::parse("[signup]\nenabled = true\n").unwrap().validate_with(&env_of(&[])).unwrap();
        assert_eq!(on.signup, Some(SignupSettings { max_per_ip_per_hour: 3, max_per_hour: 100 }));
        let none = ConfigFile::parse("[signup]\nenabled = true\nmax_per_hour = 0\n").unwrap();
        assert!(none.validate_with(&env_of(&[])).is_err());
    }

    #[test]
    fn deposits_are_off_by_default_and_need_the_chain_a_key_and_sane_rates_when_on() {
        assert!(ConfigFile::default().validate_with(&env_of(&[])).unwrap().deposits.is_none());
        let treasury = "11".repeat(32);
        let deposit = "ab".repeat(32);
        let chain = "[chain]\nenabled = true\nrest_url = \"http://127.0.0.1:9000\"\n";
        let with = |chain: &str, extra: &str, key: Option<&str>| {
            let mut env = vec![("GONKA_TREASURY_KEY", treasury.as_str())];
            env.extend(key.map(|k| ("GONKA_DEPOSIT_KEY", k)));
            ConfigFile::parse(&format!("{chain}[deposits]\nenabled = true\n{extra}"))
                .unwrap()
                .validate_with(&env_of(&env))
        };
        let e = with("", "", Some(&deposit)).unwrap_err().to_string();
        assert!(e.contains("needs [chain] enabled"), "{e}");
        let e = with(chain, "", None).unwrap_err().to_string();
        assert!(e.contains("GONKA_DEPOSIT_KEY"), "{e}");
        let e = with(chain, "", Some("abcd")).unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = with(chain, "fee_bps = 10001", Some(&deposit)).unwrap_err().to_string();
        assert!(e.contains("fee_bps"), "{e}");
        let e = with(chain, "rate_ppm = 0", Some(&deposit)).unwrap_err().to_string();
        assert!(e.contains("rate_ppm"), "{e}");
        let d = with(chain, "", Some(&deposit)).unwrap().deposits.unwrap();
        assert_eq!((d.confirmations, d.rate_ppm, d.fee_bps, d.min_ngonka), (3, 1_000_000, 0, 0));
        assert!(!format!("{d:?}").contains(&deposit), "the key is never printed");
        let d = with(
            chain,
            "confirmations = 0\nrate_ppm = 2000000\nfee_bps = 250\nmin_ngonka = 7",
            Some(&deposit),
        )
        .unwrap()
        .deposits
        .unwrap();
        assert_eq!((d.confirmations, d.rate_ppm, d.fee_bps, d.min_ngonka), (0, 2_000_000, 250, 7));
    }

    #[test]
    fn the_default_rate_is_the_whole_clusters() {
        let text = r#"
            [store]
            kind = "postgres"
            url = "postgres://127.0.0.1/db"
            [cluster]
            instances = 4
            [limits]
            default_rpm = 60
        "#;
        let settings = ConfigFile::parse(text).unwrap().validate_with(&env_of(&[])).unwrap();
        assert_eq!((settings.billing.default_rpm, settings.cluster.instances), (60, 4));
    }
}
