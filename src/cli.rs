//! The shell commands that are not servers: `gonka-gateway admin …` (accounts, credits, keys and prices
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
    /// Credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
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
    },
    List,
    Get {
        id: String,
    },
    /// Issues a new account token; the old one stops working.
    RotateToken {
        id: String,
    },
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CreditsCommand {
    /// Credits an account; the same reference twice credits once.
    Add {
        account: String,
        #[arg(long)]
        amount_ngonka: String,
        #[arg(long)]
        reference: String,
    },
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
            Self::Accounts(A::Create { name }) => {
                c("POST", "/admin/accounts".into(), Some(json!({ "name": name })))
            }
            Self::Accounts(A::List) => c("GET", "/admin/accounts".into(), None),
            Self::Accounts(A::Get { id }) => c("GET", format!("/admin/accounts/{id}"), None),
            Self::Accounts(A::RotateToken { id }) => c("POST", format!("/admin/accounts/{id}/token"), None),
            Self::Credits(C::Add { account, amount_ngonka, reference }) => c(
                "POST",
                format!("/admin/accounts/{account}/credits"),
                Some(json!({ "amount_ngonka": amount_ngonka, "reference": reference })),
            ),
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

    #[test]
    fn commands_map_to_admin_calls() {
        let c = AdminCommand::Credits(CreditsCommand::Add {
            account: "acc_1".into(),
            amount_ngonka: "5".into(),
            reference: "r".into(),
        })
        .call();
        assert_eq!((c.method, c.path.as_str()), ("POST", "/admin/accounts/acc_1/credits"));
        assert_eq!(c.body, Some(json!({"amount_ngonka": "5", "reference": "r"})));
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
        let c = AdminCommand::DirectKeys(DirectKeysCommand::Archive { id: "dk_1".into() }).call();
        assert_eq!((c.method, c.path.as_str(), c.body), ("POST", "/admin/direct-keys/dk_1/archive", None));
    }
}
