//! The shell commands that are not servers: `gonka-gateway admin …` (accounts, credits, referrals, keys and prices
//! through the admin API, over the blocking HTTP/1.1 client; this runs in the CLI process, never on a
//! core) and `gonka-gateway gonka …` (the address of a Gonka key, request signatures).

use crate::gonka::signer::GonkaSigner;
use crate::http::client;
use serde_json::{Value, json};
use std::io;
use std::time::Duration;

/// `gonka-gateway admin`: where the admin API is, how to authenticate, and what to do.
#[derive(clap::Args, Debug)]
pub struct Admin {
    /// The admin listener.
    #[arg(long, env = "GATEWAY_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// The admin token.
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// One admin call: method, path, optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminCall {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

/// The admin subcommands.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// An account's credit history (`credits ACCOUNT`), or `credits add|list`.
    Credits(CreditsArgs),
    /// Credits an account (same as `credits add`).
    Credit(CreditArgs),
    /// Keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Direct keys (funded Gonka accounts used with the official SDK; `[chain]` must be enabled).
    #[command(subcommand)]
    DirectKeys(DirectKeysCommand),
    /// Model prices.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AccountsCommand {
    /// Creates an account; prints its token (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// The referral code of the account that referred it.
        #[arg(long)]
        referral_code: Option<String>,
    },
    List,
    Get {
        id: String,
    },
    /// Issues a new account token; the old one stops working.
    RotateToken {
        id: String,
    },
    /// Sets the account's referrer (once) by the referrer's referral code.
    SetReferrer {
        id: String,
        #[arg(long)]
        referral_code: String,
    },
    /// The account's GNK deposits and their status (`[deposits]` must be enabled); its deposit address
    /// is in `accounts get`.
    Deposits {
        id: String,
    },
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CreditsCommand {
    /// Credits an account (negative: takes back); the same reference twice credits once.
    Add {
        account: String,
        /// Ngonka; negative (`--amount-ngonka=-5`) for an adjustment or a refund.
        #[arg(long, allow_hyphen_values = true)]
        amount_ngonka: String,
        #[arg(long)]
        reference: String,
        /// Money was received for it: it pays the account's referrers.
        #[arg(long)]
        paid: bool,
        /// The reference of the credit this negative amount refunds (claws back its referral credits).
        #[arg(long)]
        refund_of: Option<String>,
    },
    /// An account's credit history, newest first.
    List {
        account: String,
        #[arg(long)]
        limit: Option<u32>,
        /// The id (crd_…) of the entry to continue after.
        #[arg(long)]
        starting_after: Option<String>,
    },
}

/// `admin credits ACCOUNT [--limit N] [--starting-after crd_…]` (the history), or a subcommand.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CreditsArgs {
    #[command(subcommand)]
    pub command: Option<CreditsCommand>,
    /// The account whose credit history to show, newest first.
    #[arg(required = true)]
    pub account: Option<String>,
    #[arg(long)]
    pub limit: Option<u32>,
    /// The id (crd_…) of the entry to continue after.
    #[arg(long)]
    pub starting_after: Option<String>,
}

impl CreditsArgs {
    /// The subcommand, or the history of `account`.
    fn command(&self) -> CreditsCommand {
        match &self.command {
            Some(c) => c.clone(),
            None => CreditsCommand::List {
                account: self.account.clone().unwrap_or_default(),
                limit: self.limit,
                starting_after: self.starting_after.clone(),
            },
        }
    }
}

/// `admin credit ACCOUNT --amount-ngonka N --reference R [--paid] [--refund-of REF]`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct CreditArgs {
    pub account: String,
    /// Ngonka; negative (`--amount-ngonka=-5`) for an adjustment or a refund.
    #[arg(long, allow_hyphen_values = true)]
    pub amount_ngonka: String,
    #[arg(long)]
    pub reference: String,
    /// Money was received for it: it pays the account's referrers.
    #[arg(long)]
    pub paid: bool,
    /// The reference of the credit this negative amount refunds (claws back its referral credits).
    #[arg(long)]
    pub refund_of: Option<String>,
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum DirectKeysCommand {
    /// An account's direct keys, archived ones too.
    List { account: String },
    /// Creates a direct key; its private key is printed once.
    Create {
        account: String,
        #[arg(long)]
        name: String,
    },
    /// Stops top-ups and sweeps the float back to the treasury.
    Pause { id: String },
    /// Funds it again.
    Resume { id: String },
    /// Sweeps the float back and forgets the key, for good.
    Archive { id: String },
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum KeysCommand {
    /// Every key of an account.
    List {
        account: String,
    },
    /// Creates a managed (default) or management key; prints it (shown once).
    Create {
        account: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "managed", value_parser = ["managed", "management"])]
        kind: String,
        /// The only models it may use, comma-separated ids (default: every model).
        #[arg(long, value_delimiter = ',')]
        allowed_models: Option<Vec<String>>,
    },
    /// Changes a key's name or the models it may use.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// The only models it may use from now on, comma-separated ids.
        #[arg(long, value_delimiter = ',', conflicts_with = "all_models")]
        allowed_models: Option<Vec<String>>,
        /// Lets it use every model again (clears `allowed_models`).
        #[arg(long)]
        all_models: bool,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// New secret; the old one stops working at once.
    Rotate {
        id: String,
    },
    /// Permanent.
    Archive {
        id: String,
    },
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ModelsCommand {
    /// Sets a model's prices (ngonka per token).
    Set {
        model: String,
        #[arg(long)]
        price_prompt_ngonka: String,
        #[arg(long)]
        price_completion_ngonka: String,
    },
    /// Removes a model's stored prices: a configured model goes back to its config prices, a model
    /// only the store had is gone.
    Delete {
        model: String,
    },
    List,
}

/// A model id as a path: each byte that is not unreserved (RFC 3986) or `/` percent-encoded, so any id
/// reaches the admin API as it was typed.
fn model_path(model: &str) -> String {
    let mut out = String::from("/admin/models/");
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl AdminCommand {
    pub fn call(&self) -> AdminCall {
        use ModelsCommand as M;
        use {AccountsCommand as A, CreditsCommand as C, DirectKeysCommand as D, KeysCommand as K};
        let c = |method, path: String, body| AdminCall { method, path, body };
        let key = |id: &str, action: &str| c("POST", format!("/admin/keys/{id}/{action}"), None);
        let direct = |id: &str, action: &str| c("POST", format!("/admin/direct-keys/{id}/{action}"), None);
        match self {
            Self::Accounts(A::Create { name, referral_code: None }) => {
                c("POST", "/admin/accounts".into(), Some(json!({ "name": name })))
            }
            Self::Accounts(A::Create { name, referral_code: Some(code) }) => {
                c("POST", "/admin/accounts".into(), Some(json!({ "name": name, "referral_code": code })))
            }
            Self::Accounts(A::SetReferrer { id, referral_code }) => c(
                "POST",
                format!("/admin/accounts/{id}/referrer"),
                Some(json!({ "referral_code": referral_code })),
            ),
            Self::Accounts(A::List) => c("GET", "/admin/accounts".into(), None),
            Self::Accounts(A::Get { id }) => c("GET", format!("/admin/accounts/{id}"), None),
            Self::Accounts(A::RotateToken { id }) => c("POST", format!("/admin/accounts/{id}/token"), None),
            Self::Accounts(A::Deposits { id }) => c("GET", format!("/admin/accounts/{id}/deposits"), None),
            Self::Credits(args) => match args.command() {
                C::Add { account, amount_ngonka, reference, paid, refund_of } => {
                    Self::Credit(CreditArgs { account, amount_ngonka, reference, paid, refund_of }).call()
                }
                C::List { account, limit, starting_after } => {
                    let mut query = Vec::new();
                    if let Some(l) = limit {
                        query.push(format!("limit={l}"));
                    }
                    if let Some(s) = starting_after {
                        query.push(format!("starting_after={s}"));
                    }
                    let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
                    c("GET", format!("/admin/accounts/{account}/credits{q}"), None)
                }
            },
            Self::Credit(a) => {
                let mut body = json!({ "amount_ngonka": a.amount_ngonka, "reference": a.reference });
                if a.paid {
                    body["paid"] = json!(true);
                }
                if let Some(r) = &a.refund_of {
                    body["refund_of"] = json!(r);
                }
                c("POST", format!("/admin/accounts/{}/credits", a.account), Some(body))
            }
            Self::Keys(K::List { account }) => c("GET", format!("/admin/accounts/{account}/keys"), None),
            Self::Keys(K::Create { account, name, kind, allowed_models }) => {
                let mut body = json!({ "name": name, "kind": kind });
                if let Some(list) = allowed_models {
                    body["allowed_models"] = json!(list);
                }
                c("POST", format!("/admin/accounts/{account}/keys"), Some(body))
            }
            Self::Keys(K::Update { id, name, allowed_models, all_models }) => {
                let mut body = json!({});
                if let Some(n) = name {
                    body["name"] = json!(n);
                }
                if *all_models {
                    body["allowed_models"] = Value::Null;
                } else if let Some(list) = allowed_models {
                    body["allowed_models"] = json!(list);
                }
                c("PATCH", format!("/admin/keys/{id}"), Some(body))
            }
            Self::Keys(K::Pause { id }) => key(id, "pause"),
            Self::Keys(K::Resume { id }) => key(id, "resume"),
            Self::Keys(K::Rotate { id }) => key(id, "rotate"),
            Self::Keys(K::Archive { id }) => key(id, "archive"),
            Self::DirectKeys(D::List { account }) => {
                c("GET", format!("/admin/accounts/{account}/direct-keys"), None)
            }
            Self::DirectKeys(D::Create { account, name }) => {
                c("POST", format!("/admin/accounts/{account}/direct-keys"), Some(json!({ "name": name })))
            }
            Self::DirectKeys(D::Pause { id }) => direct(id, "pause"),
            Self::DirectKeys(D::Resume { id }) => direct(id, "resume"),
            Self::DirectKeys(D::Archive { id }) => direct(id, "archive"),
            Self::Models(M::Set { model, price_prompt_ngonka, price_completion_ngonka }) => c(
                "PUT",
                model_path(model),
                Some(json!({
                    "price_prompt_ngonka": price_prompt_ngonka,
                    "price_completion_ngonka": price_completion_ngonka,
                })),
            ),
            Self::Models(M::Delete { model }) => c("DELETE", model_path(model), None),
            Self::Models(M::List) => c("GET", "/admin/models".into(), None),
        }
    }
}

/// Sends one call; returns the status and the JSON body.
pub fn send(target: &Admin, call: &AdminCall) -> io::Result<(u16, Value)> {
    let rest = target.url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the admin URL must start with http://")
    })?;
    let authority = rest.trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p.parse().ok()),
        None => (authority, Some(80)),
    };
    let port =
        port.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad port in {authority}")))?;
    let body = call.body.as_ref().map(|b| b.to_string());
    let auth = format!("Bearer {}", target.token);
    let request = client::Request {
        method: call.method,
        path: &call.path,
        headers: &[("Authorization", &auth)],
        body: body.as_deref().map(str::as_bytes),
    };
    let to = client::Target { host, port, tls: false, addrs: &[] };
    let answer = client::send(&to, &request, Duration::from_secs(30), None)?;
    let value = if answer.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&answer.body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&answer.body)))
    };
    Ok((answer.status, value))
}

impl Admin {
    /// Sends the command; the status and the JSON body of the answer.
    pub fn run(&self) -> io::Result<(u16, Value)> {
        send(self, &self.command.call())
    }
}

/// `gonka-gateway gonka`: the Gonka account key in `GONKA_PRIVATE_KEY`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum GonkaCommand {
    /// Prints the gonka1… address of the key in GONKA_PRIVATE_KEY.
    Address,
    /// Prints the `Authorization` value for the request body read from standard input (its exact bytes).
    Sign {
        /// The node's transfer address the request is sent to.
        #[arg(long)]
        transfer_address: String,
        /// The `X-Timestamp` value, Unix nanoseconds.
        #[arg(long)]
        timestamp_ns: u64,
    },
}

impl GonkaCommand {
    /// The line to print for the key `private_key_hex`; `sign` reads the body from `body`.
    pub fn run(&self, private_key_hex: &str, body: &mut dyn io::Read) -> Result<String, String> {
        let signer = GonkaSigner::from_hex(private_key_hex).map_err(|e| format!("GONKA_PRIVATE_KEY: {e}"))?;
        match self {
            Self::Address => Ok(signer.address().to_owned()),
            Self::Sign { transfer_address, timestamp_ns } => {
                let mut bytes = Vec::new();
                body.read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read the body from standard input: {e}"))?;
                Ok(signer.sign(&bytes, *timestamp_ns, transfer_address))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the shell's words parse to.
    fn parse(words: &str) -> AdminCall {
        #[derive(clap::Parser)]
        struct Shell {
            #[command(subcommand)]
            command: AdminCommand,
        }
        let args = std::iter::once("admin").chain(words.split(' '));
        <Shell as clap::Parser>::try_parse_from(args)
            .unwrap_or_else(|e| panic!("{words}: {e}"))
            .command
            .call()
    }

    #[test]
    fn credits_parse_as_a_history_a_credit_or_a_refund() {
        let history = parse("credits acc_1 --limit 3");
        assert_eq!((history.method, history.path.as_str()), ("GET", "/admin/accounts/acc_1/credits?limit=3"));
        assert_eq!(parse("credits list acc_1").path, "/admin/accounts/acc_1/credits");
        let paid = parse("credit acc_1 --amount-ngonka 5 --reference r --paid");
        assert_eq!(paid.body, Some(json!({"amount_ngonka": "5", "reference": "r", "paid": true})));
        let refund = parse("credits add acc_1 --amount-ngonka -5 --reference r2 --refund-of r");
        assert_eq!(refund.body, Some(json!({"amount_ngonka": "-5", "reference": "r2", "refund_of": "r"})));
        let set = parse("accounts set-referrer acc_1 --referral-code abc");
        assert_eq!(
            (set.path.as_str(), set.body),
            ("/admin/accounts/acc_1/referrer", Some(json!({"referral_code": "abc"})))
        );
    }

    #[test]
    fn commands_map_to_admin_calls() {
        let sub = |command| CreditsArgs {
            command: Some(command),
            account: None,
            limit: None,
            starting_after: None,
        };
        let c = AdminCommand::Credits(sub(CreditsCommand::Add {
            account: "acc_1".into(),
            amount_ngonka: "5".into(),
            reference: "r".into(),
            paid: false,
            refund_of: None,
        }))
        .call();
        assert_eq!((c.method, c.path.as_str()), ("POST", "/admin/accounts/acc_1/credits"));
        assert_eq!(c.body, Some(json!({"amount_ngonka": "5", "reference": "r"})));
        let c = AdminCommand::Credit(CreditArgs {
            account: "acc_1".into(),
            amount_ngonka: "-5".into(),
            reference: "r2".into(),
            paid: false,
            refund_of: Some("r".into()),
        })
        .call();
        assert_eq!(c.body, Some(json!({"amount_ngonka": "-5", "reference": "r2", "refund_of": "r"})));
        let c = AdminCommand::Credits(CreditsArgs {
            command: None,
            account: Some("acc_1".into()),
            limit: Some(2),
            starting_after: Some("crd_9".into()),
        })
        .call();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("GET", "/admin/accounts/acc_1/credits?limit=2&starting_after=crd_9")
        );
        let c = AdminCommand::Keys(KeysCommand::Update {
            id: "key_1".into(),
            name: None,
            allowed_models: Some(vec!["a/b".into(), "c".into()]),
            all_models: false,
        })
        .call();
        assert_eq!((c.method, c.path.as_str()), ("PATCH", "/admin/keys/key_1"));
        assert_eq!(c.body, Some(json!({"allowed_models": ["a/b", "c"]})));
        let c = AdminCommand::Keys(KeysCommand::Update {
            id: "key_1".into(),
            name: Some("n".into()),
            allowed_models: None,
            all_models: true,
        })
        .call();
        assert_eq!(c.body, Some(json!({"name": "n", "allowed_models": null})));
        let c = AdminCommand::Keys(KeysCommand::Pause { id: "key_1".into() }).call();
        assert_eq!((c.method, c.path.as_str(), c.body), ("POST", "/admin/keys/key_1/pause", None));
        let c = AdminCommand::Models(ModelsCommand::Delete { model: "org/Model 1+x".into() }).call();
        assert_eq!((c.method, c.path.as_str(), c.body), ("DELETE", "/admin/models/org/Model%201%2Bx", None));
        let c =
            AdminCommand::DirectKeys(DirectKeysCommand::Create { account: "acc_1".into(), name: "n".into() })
                .call();
        assert_eq!((c.method, c.path.as_str()), ("POST", "/admin/accounts/acc_1/direct-keys"));
        assert_eq!(c.body, Some(json!({"name": "n"})));
        let c = AdminCommand::Accounts(AccountsCommand::Deposits { id: "acc_1".into() }).call();
        assert_eq!((c.method, c.path.as_str(), c.body), ("GET", "/admin/accounts/acc_1/deposits", None));
        let c = AdminCommand::DirectKeys(DirectKeysCommand::Archive { id: "dk_1".into() }).call();
        assert_eq!((c.method, c.path.as_str(), c.body), ("POST", "/admin/direct-keys/dk_1/archive", None));
    }
}
