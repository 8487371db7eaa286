//! `gonka-gateway admin …`: account, credit and key administration from the shell, through the admin API
//! (a small blocking HTTP/1.1 client; this runs in the CLI process, never on a core).

use crate::http::client;
use serde_json::{Value, json};
use std::io;
use std::time::Duration;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `http://host:port`
    pub url: String,
    pub token: String,
}

/// One admin call: method, path, optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminCall {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

/// The admin subcommands, as the command line gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    AccountCreate { name: String },
    AccountList,
    AccountGet { id: String },
    AccountRotateToken { id: String },
    CreditAdd { account: String, amount_ngonka: String, reference: String },
    KeyList { account: String },
    KeyCreate { account: String, name: String, kind: String },
    KeyAction { id: String, action: String },
    ModelSet { model: String, price_prompt_ngonka: String, price_completion_ngonka: String },
    ModelDelete { model: String },
    ModelList,
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
        let c = |method, path: String, body| AdminCall { method, path, body };
        match self {
            Self::AccountCreate { name } => {
                c("POST", "/admin/accounts".into(), Some(json!({ "name": name })))
            }
            Self::AccountList => c("GET", "/admin/accounts".into(), None),
            Self::AccountGet { id } => c("GET", format!("/admin/accounts/{id}"), None),
            Self::AccountRotateToken { id } => c("POST", format!("/admin/accounts/{id}/token"), None),
            Self::CreditAdd { account, amount_ngonka, reference } => c(
                "POST",
                format!("/admin/accounts/{account}/credits"),
                Some(json!({ "amount_ngonka": amount_ngonka, "reference": reference })),
            ),
            Self::KeyList { account } => c("GET", format!("/admin/accounts/{account}/keys"), None),
            Self::KeyCreate { account, name, kind } => c(
                "POST",
                format!("/admin/accounts/{account}/keys"),
                Some(json!({ "name": name, "kind": kind })),
            ),
            Self::KeyAction { id, action } => c("POST", format!("/admin/keys/{id}/{action}"), None),
            Self::ModelSet { model, price_prompt_ngonka, price_completion_ngonka } => c(
                "PUT",
                model_path(model),
                Some(json!({
                    "price_prompt_ngonka": price_prompt_ngonka,
                    "price_completion_ngonka": price_completion_ngonka,
                })),
            ),
            Self::ModelDelete { model } => c("DELETE", model_path(model), None),
            Self::ModelList => c("GET", "/admin/models".into(), None),
        }
    }
}

/// Sends one call; returns the status and the JSON body.
pub fn send(target: &AdminTarget, call: &AdminCall) -> io::Result<(u16, Value)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_admin_calls() {
        let c = AdminCommand::CreditAdd {
            account: "acc_1".into(),
            amount_ngonka: "5".into(),
            reference: "r".into(),
        }
        .call();
        assert_eq!((c.method, c.path.as_str()), ("POST", "/admin/accounts/acc_1/credits"));
        assert_eq!(c.body, Some(json!({"amount_ngonka": "5", "reference": "r"})));
        let c = AdminCommand::KeyAction { id: "key_1".into(), action: "pause".into() }.call();
        assert_eq!((c.method, c.path.as_str(), c.body), ("POST", "/admin/keys/key_1/pause", None));
        let c = AdminCommand::ModelDelete { model: "org/Model 1+x".into() }.call();
        assert_eq!((c.method, c.path.as_str(), c.body), ("DELETE", "/admin/models/org/Model%201%2Bx", None));
    }
}
