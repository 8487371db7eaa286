//! TLS both ways, with a CA and certificates made at test time: clients → gateway over HTTPS (the OpenAI
//! SDK), gateway → nodes over HTTPS (plain and signed, discovery included), wrong certificates refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use utils::*;

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "gonka-gateway test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", leaf.pem()),
        key: write("key.pem", leaf_key.serialize_pem()),
        _dir: dir,
    }
}

fn tls_gateway(
    node_urls: Vec<String>,
    server_pki: Option<&Pki>,
    upstream_ca: Option<&Pki>,
    extra: &str,
) -> Gateway {
    let server = server_pki
        .map(|p| {
            format!(
                "[server.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
                p.cert.display(),
                p.key.display()
            )
        })
        .unwrap_or_default();
    let upstream = upstream_ca
        .map(|p| format!("[upstream.tls]\nsystem_roots = false\nextra_ca_path = \"{}\"\n", p.ca.display()))
        .unwrap_or_default();
    Gateway::start_with(GatewayOpts {
        node_urls,
        extra: format!("{server}{upstream}{extra}"),
        envs: vec![(
            "GONKA_PRIVATE_KEY",
            "8a7b6c5d4e3f201112131415161718191a1b1c1d1e1f20212223242526272829".to_owned(),
        )],
        ..GatewayOpts::default()
    })
}

/// A raw HTTPS exchange trusting `ca`; Err when the handshake fails.
fn https_get(addr: std::net::SocketAddr, ca: &PathBuf, path: &str) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `/sim/stats` of a simulator serving HTTPS.
fn tls_stats(sim: &Sim, ca: &PathBuf) -> serde_json::Value {
    let text = https_get(sim.addr(0), ca, "/sim/stats").unwrap();
    serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap()
}

#[test]
fn clients_reach_the_gateway_over_https() {
    let p = pki();
    let sim = Sim::start(&[]);
    let gw = tls_gateway(sim.urls.clone(), Some(&p), None, "");
    let out = run_python(
        "sdk_tls.py",
        &[
            ("OPENAI_BASE_URL", format!("https://localhost:{}/v1", gw.addr.port())),
            ("OPENAI_API_KEY", gw.api_key.clone()),
            ("CA_PEM", p.ca.display().to_string()),
            ("MODEL", MODEL.to_owned()),
        ],
    );
    assert!(out.contains("OK"), "{out}");
    // Keep-alive and plain HTTP health over TLS.
    let r = https_get(gw.addr, &p.ca, "/healthz").unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A client trusting another CA refuses the handshake.
    let other = pki();
    assert!(https_get(gw.addr, &other.ca, "/healthz").is_err());
    // Plain HTTP to the TLS port gets no HTTP answer, and the gateway keeps serving.
    let (out, _) =
        raw(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", std::time::Duration::from_secs(3));
    assert!(!String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(https_get(gw.addr, &p.ca, "/healthz").unwrap().starts_with("HTTP/1.1 200"));
}

#[test]
fn the_gateway_reaches_https_nodes_and_checks_their_certificates() {
    let p = pki();
    let cert = p.cert.display().to_string();
    let key = p.key.display().to_string();
    let sim = Sim::start(&["--tls-cert", &cert, "--tls-key", &key, "--completion-tokens", "4"]);
    assert!(sim.urls[0].starts_with("https://localhost:"), "{}", sim.urls[0]);
    let gw = tls_gateway(sim.urls.clone(), None, Some(&p), "");
    for stream in [false, true] {
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("to a tls node", 4, stream));
        assert_eq!(r.status, 200, "{}", r.text());
        if stream {
            assert_eq!(sse_text(&r.text()).split(' ').count(), 4);
        }
    }
    // Trusting another CA only: the node's certificate is refused and nothing is sent.
    let other = pki();
    let wary = tls_gateway(sim.urls.clone(), None, Some(&other), "");
    let before = tls_stats(&sim, &p.ca)["requests"].as_u64().unwrap();
    let r = post(wary.addr, "/v1/chat/completions", &wary.auth(), &chat_body("refused", 2, false));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("TLS") || r.text().contains("certificate"), "{}", r.text());
    assert_eq!(
        tls_stats(&sim, &p.ca)["requests"].as_u64().unwrap(),
        before + 1,
        "only our stats request reached the node"
    );
}

#[test]
fn signed_requests_and_discovery_over_https() {
    let p = pki();
    let cert = p.cert.display().to_string();
    let key = p.key.display().to_string();
    let sim = Sim::start(&["--gonka", "--extra-nodes", "1", "--tls-cert", &cert, "--tls-key", &key]);
    let gw = tls_gateway(
        Vec::new(),
        None,
        Some(&p),
        &format!("[upstream.gonka]\nseeds = [\"{}\"]\n", sim.root(0)),
    );
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("signed over tls", 3, true));
    assert_eq!(r.status, 200, "{}", r.text());
    let stats = tls_stats(&sim, &p.ca);
    assert_eq!(stats["auth_refused"], 0, "{stats}");
    assert!(
        stats["nodes"][0]["requests"].as_u64().unwrap() + stats["nodes"][1]["requests"].as_u64().unwrap()
            >= 1
    );
}

#[test]
fn the_chain_client_reaches_an_https_chain_and_checks_its_certificate() {
    use gonka_gateway::gonka::chain::{ChainClient, ChainError};
    use gonka_gateway::gonka::signer::GonkaSigner;
    use gonka_gateway::http::tls::ClientTls;
    let p = pki();
    let (cert, key) = (p.cert.display().to_string(), p.key.display().to_string());
    let who = GonkaSigner::from_hex(&"5a".repeat(32)).unwrap();
    let to = GonkaSigner::from_hex(&"5b".repeat(32)).unwrap();
    let fund = format!("{}=900", who.address());
    let sim = Sim::start(&[
        "--gonka",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--chain-fund",
        &fund,
        "--chain-block-ms",
        "50",
    ]);
    let url = format!("{}/chain-api", sim.root(0));
    assert!(url.starts_with("https://localhost:"), "{url}");
    let timeout = std::time::Duration::from_secs(5);
    let trusted = ChainClient::new(
        &url,
        "gonka-mainnet",
        "ngonka",
        ClientTls::new(false, Some(&p.ca)).unwrap(),
        timeout,
    )
    .unwrap();
    assert_eq!(trusted.balance(who.address()).unwrap(), 900);
    let n = trusted.account(who.address()).unwrap().unwrap().account_number;
    let hash = trusted.send(&who, n, 0, to.address(), 100, 0, 200_000, "over tls").unwrap();
    assert!(eventually(std::time::Duration::from_secs(10), || trusted.tx(&hash).unwrap().is_some()));
    assert_eq!(trusted.balance(to.address()).unwrap(), 100);
    // Without the test CA the certificate is refused: the chain is unreachable, not trusted.
    let untrusted =
        ChainClient::new(&url, "gonka-mainnet", "ngonka", ClientTls::new(false, None).unwrap(), timeout)
            .unwrap();
    assert!(matches!(untrusted.latest_height(), Err(ChainError::Unreachable(_))));
}
