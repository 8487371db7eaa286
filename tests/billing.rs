//! Limits and billing under load: exact limits and balances with 200 concurrent streams, rate limits,
//! calendar rollover on an injected clock, kill -9 mid-load, and store-write failures ridden out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use gonka_gateway::model::JournalPos;
use gonka_gateway::model::usage::UsageRecord;
use gonka_gateway::model::*;
use gonka_gateway::model::{BlockRef, DepositClaim, DepositRow, NewDeposit};
use gonka_gateway::store::*;
use gonka_gateway::time::{Clock, DAY_MS, ManualClock, days_from_civil};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use utils::*;

/// One raw request; returns (status, body text). Reads a chunked or sized body to its end.
fn request(addr: SocketAddr, key: &str, body: &Value, request_id: &str) -> (u16, String) {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Request-Id: {request_id}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A header's value in a raw response.
fn header(text: &str, name: &str) -> Option<String> {
    let head = text.split("\r\n\r\n").next()?;
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
}

fn stream_body(i: usize, max_tokens: u64) -> Value {
    json!({"model": MODEL, "stream": true, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": format!("request number {i}")}]})
}

/// Fires `n` streaming requests at once (a thread and a connection each); returns (status, body) in order.
fn fire_concurrently(addr: SocketAddr, key: &str, n: usize, max_tokens: u64) -> Vec<(u16, String)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                scope.spawn(move || request(addr, key, &stream_body(i, max_tokens), &format!("conc-{i}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn sum_cost(records: &[Value]) -> u64 {
    records.iter().map(|r| r["cost_ngonka"].as_str().unwrap().parse::<u64>().unwrap()).sum()
}

#[test]
fn a_child_keys_daily_limit_holds_exactly_under_200_concurrent_streams() {
    let sim = Sim::start(&["--tokens-per-s", "100", "--completion-tokens", "8"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    let tok = gw.account_token.clone();
    let limit: u64 = 30_000;
    let c = gw.create_child(&tok, json!({"name": "c", "limit_daily_ngonka": limit.to_string()}));
    let (cid, key) = (c["id"].as_str().unwrap().to_owned(), c["key"].as_str().unwrap().to_owned());
    let mid = c["management_key_id"].as_str().unwrap().to_owned();

    let results = fire_concurrently(gw.addr, &key, 200, 8);
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    // Refused: 402 when the day's spend leaves no room, 429 while only holds in flight are in the way.
    let refused = results.iter().filter(|(s, _)| *s == 402 || *s == 429).count();
    assert_eq!(
        ok + refused,
        200,
        "every request completes or is refused: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(ok > 0 && refused > 0, "the limit was reached ({ok} served, {refused} refused)");
    for (status, text) in &results {
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        match status {
            200 => assert!(text.contains("data: [DONE]"), "a served stream is complete"),
            402 => {
                let v: Value = serde_json::from_str(body).unwrap();
                assert_eq!(v["error"]["code"], "child_key_limit");
                assert_eq!(v["error"]["type"], "child_key_limit");
                assert!(v["error"]["daily_remaining"].is_string(), "{v}");
                assert!(v["error"]["monthly_remaining"].is_null(), "no monthly limit: null, {v}");
            }
            _ => {
                let v: Value = serde_json::from_str(body).unwrap();
                assert_eq!(v["error"]["code"], "budget_in_flight");
                assert!(header(text, "retry-after").is_some());
            }
        }
    }
    assert_eq!(sim.stats()["streams_started"], ok as u64, "refused requests never reached a node");

    let records = gw.usage_records(&gw.account_id);
    let mine: Vec<Value> = records.into_iter().filter(|r| r["key_id"] == cid.as_str()).collect();
    assert_eq!(mine.len(), ok, "one record per served request");
    let billed = sum_cost(&mine);
    assert!(billed <= limit, "billed {billed} > limit {limit}");
    let child = gw.api(&tok, "GET", &format!("/api/management/keys/{mid}/children/{cid}"), None).json();
    let spent: u64 = child["daily_spent_ngonka"].as_str().unwrap().parse().unwrap();
    let remaining: u64 = child["daily_remaining"].as_str().unwrap().parse().unwrap();
    assert_eq!(spent, billed, "spend matches the records");
    assert_eq!(spent + remaining, limit, "usage + remaining add up: {child}");
    assert_eq!(gw.metric("gateway_holds_outstanding"), 0.0, "no hold left behind");
}

#[test]
fn an_account_balance_holds_exactly_under_200_concurrent_streams() {
    let sim = Sim::start(&["--tokens-per-s", "100", "--completion-tokens", "8"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    let (acc, tok) = gw.create_account("small");
    let credit: u64 = 25_000;
    gw.credit(&acc, credit, "c1");
    let key = gw.create_key(&tok, "k");
    let results = fire_concurrently(gw.addr, &key, 200, 8);
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 402 || *s == 429).collect();
    assert_eq!(ok + refused.len(), 200);
    assert!(ok > 0 && !refused.is_empty());
    assert!(refused.iter().all(|(s, t)| if *s == 402 {
        t.contains("\"insufficient_balance\"")
    } else {
        t.contains("\"budget_in_flight\"")
    }));
    assert_eq!(sim.stats()["streams_started"], ok as u64);
    let records = gw.usage_records(&acc);
    assert_eq!(records.len(), ok);
    let billed = sum_cost(&records);
    assert!(billed <= credit);
    assert_eq!(gw.balance(&acc), (credit - billed) as i64, "balance = credits − billed usage");
    let b = gw.api(&tok, "GET", "/api/balance", None).json();
    assert_eq!(b["held_ngonka"], "0");
    assert_eq!(b["balance_ngonka"], (credit - billed).to_string());
}

#[test]
fn n_plus_k_requests_in_a_minute_get_exactly_k_429s() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let tok = gw.account_token.clone();
    let c = gw.create_child(&tok, json!({"name": "c", "rate_limit_rpm": 10}));
    let key = c["key"].as_str().unwrap();
    let auth = format!("Bearer {key}");
    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    for _ in 0..13 {
        let r = post(gw.addr, "/v1/chat/completions", &auth, &chat_body("rate", 1, false));
        statuses.push(r.status);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("10"), "on every answer");
        if r.status == 200 {
            remaining.push(r.header("x-ratelimit-remaining-requests").unwrap().parse::<u32>().unwrap());
        } else {
            assert_eq!(r.status, 429);
            assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
            let retry: u32 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=6).contains(&retry), "Retry-After {retry} for 10 rpm");
            assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
            assert!(r.header("x-ratelimit-reset-requests").unwrap().ends_with('s'));
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3, "{statuses:?}");
    assert_eq!(remaining, (0..10).rev().collect::<Vec<u32>>());
    // Managed keys get the default of 60.
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("default", 1, false));
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("60"));
}

#[test]
fn midnight_and_month_rollover_on_an_injected_clock() {
    let sim = Sim::start(&["--completion-tokens", "4"]);
    // 2026-11-30T23:59:00Z: the last minute of a day and of a month.
    let start = days_from_civil(2026, 11, 30) * DAY_MS + DAY_MS - 60_000;
    let clock = Arc::new(ManualClock::new(start));
    let gw = InProc::start(
        GatewayOpts {
            node_urls: sim.urls.clone(),
            extra: "[limits]\ndefault_rpm = 0\n".into(),
            ..GatewayOpts::default()
        },
        |s| s,
        Arc::clone(&clock) as Arc<dyn Clock>,
    );
    let tok = gw.account_token.clone();
    let c = gw.create_child(
        &tok,
        json!({"name": "c", "limit_daily_ngonka": "6000", "limit_monthly_ngonka": "8000"}),
    );
    let (cid, key) = (c["id"].as_str().unwrap().to_owned(), c["key"].as_str().unwrap().to_owned());
    let mid = c["management_key_id"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {key}");
    let spend_until_refused = || -> (usize, Value) {
        for n in 0..100 {
            let r = post(gw.addr, "/v1/chat/completions", &auth, &chat_body("tick", 4, false));
            if r.status == 402 {
                return (n, r.json());
            }
            assert_eq!(r.status, 200, "{}", r.text());
        }
        panic!("never refused");
    };
    let (served, refusal) = spend_until_refused();
    assert!(served >= 2, "{served}");
    let err = &refusal["error"];
    assert_eq!(err["code"], "child_key_limit");
    let daily_left: u64 = err["daily_remaining"].as_str().unwrap().parse().unwrap();
    let monthly_left: u64 = err["monthly_remaining"].as_str().unwrap().parse().unwrap();
    assert!(daily_left < monthly_left, "the day ran out first: {err}");

    // 00:00:01 on December 1st: a new day and a new month.
    clock.set(start + 61_000);
    let r = post(gw.addr, "/v1/chat/completions", &auth, &chat_body("tick", 4, false));
    assert_eq!(r.status, 200, "the day and month started over: {}", r.text());
    let child = gw.api(&tok, "GET", &format!("/api/management/keys/{mid}/children/{cid}"), None).json();
    assert_eq!(child["daily_spent_ngonka"], child["monthly_spent_ngonka"], "both windows are new: {child}");

    // Spend December 1st, then December 2nd: the day resets, the month does not.
    let _ = spend_until_refused();
    clock.set(start + 61_000 + DAY_MS);
    let (_, refusal) = spend_until_refused();
    let err = &refusal["error"];
    let daily_left: u64 = err["daily_remaining"].as_str().unwrap().parse().unwrap();
    let monthly_left: u64 = err["monthly_remaining"].as_str().unwrap().parse().unwrap();
    assert!(monthly_left < daily_left, "now the month ran out first: {err}");

    let days = gw.api(&tok, "GET", "/api/usage?from=2026-11-30&to=2026-12-02&group_by=day", None).json();
    let names: Vec<&str> =
        days["data"].as_array().unwrap().iter().map(|d| d["day"].as_str().unwrap()).collect();
    assert_eq!(names, ["2026-11-30", "2026-12-01", "2026-12-02"], "{days}");
    let by_key = gw.api(&tok, "GET", "/api/usage?from=2026-11-30&to=2026-12-02&group_by=key", None).json();
    let total: u64 = by_key["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["cost_ngonka"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    let day_total: u64 = days["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["cost_ngonka"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, day_total);
    let by_model =
        gw.api(&tok, "GET", "/api/usage?from=2026-11-30&to=2026-12-02&group_by=model", None).json();
    assert_eq!(by_model["data"][0]["model"], MODEL);
    assert_eq!(gw.api(&tok, "GET", "/api/usage?group_by=week", None).status, 400);
}

#[test]
fn kill_9_under_load_loses_no_completed_request() {
    let sim = Sim::start(&["--tokens-per-s", "500", "--completion-tokens", "6"]);
    let mut gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    let credit = 1_000_000_000_000_000u64;
    let addr = gw.addr;
    let key = gw.api_key.clone();
    let stop = AtomicBool::new(false);
    let completed: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (key, stop) = (&key, &stop);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let id = format!("k9-{t}-{i}");
                        let stream = i % 2 == 0;
                        let body = json!({"model": MODEL, "stream": stream, "max_tokens": 6,
                                          "messages": [{"role": "user", "content": id}]});
                        let (status, text) = request(addr, key, &body, &id);
                        if status == 0 {
                            break;
                        }
                        let complete =
                            if stream { text.contains("data: [DONE]") } else { text.contains("\"usage\"") };
                        if status == 200 && complete {
                            done.push(header(&text, "x-request-id").expect("every answer has an id"));
                        }
                    }
                    done
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        gw.proc.signal("KILL");
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(completed.len() > 50, "load ran: {} completed", completed.len());
    gw.proc.wait_exit(Duration::from_secs(5)).unwrap();
    gw.restart();
    let records = gw.usage_records(&gw.account_id);
    let ids: std::collections::HashMap<&str, usize> = records.iter().fold(Default::default(), |mut m, r| {
        *m.entry(r["request_id"].as_str().unwrap()).or_default() += 1;
        m
    });
    for id in &completed {
        assert_eq!(ids.get(id.as_str()), Some(&1), "{id} completed for the client but has no single record");
    }
    assert_eq!(
        gw.balance(&gw.account_id),
        (credit - sum_cost(&records)) as i64,
        "balance = credits − billed usage"
    );
}

/// A store whose writes fail while `failing` is set.
struct Flaky {
    inner: Box<dyn Store>,
    failing: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> StoreResult<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("injected write failure".into()))
        } else {
            Ok(())
        }
    }
}

impl Store for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    fn insert_account(&mut self, a: &AccountRow, t: &KeyRow) -> StoreResult<KeyRow> {
        self.check()?;
        self.inner.insert_account(a, t)
    }
    fn account(&mut self, id: &str) -> StoreResult<Option<AccountRow>> {
        self.inner.account(id)
    }
    fn accounts(&mut self) -> StoreResult<Vec<AccountRow>> {
        self.inner.accounts()
    }
    fn write_keys(&mut self, rows: &[KeyRow]) -> StoreResult<Vec<KeyRow>> {
        self.check()?;
        self.inner.write_keys(rows)
    }
    fn keys(&mut self) -> StoreResult<Vec<KeyRow>> {
        self.inner.keys()
    }
    fn keys_since(&mut self, v: i64) -> StoreResult<Vec<KeyRow>> {
        self.inner.keys_since(v)
    }
    fn key_table_state(&mut self) -> StoreResult<KeyTableState> {
        self.inner.key_table_state()
    }
    fn credit(&mut self, a: &str, n: i64, r: &str, at: i64) -> StoreResult<CreditOutcome> {
        self.check()?;
        self.inner.credit(a, n, r, at)
    }
    fn apply_credit(&mut self, req: &CreditRequest, policy: &ReferralPolicy) -> StoreResult<CreditApplied> {
        self.check()?;
        self.inner.apply_credit(req, policy)
    }
    fn credit_history(&mut self, a: &str, before: Option<i64>, limit: usize) -> StoreResult<Vec<CreditRow>> {
        self.inner.credit_history(a, before, limit)
    }
    fn set_referrer(&mut self, a: &str, r: &str) -> StoreResult<ReferrerOutcome> {
        self.check()?;
        self.inner.set_referrer(a, r)
    }
    fn account_by_referral_code(&mut self, code: &str) -> StoreResult<Option<AccountRow>> {
        self.inner.account_by_referral_code(code)
    }
    fn referred_count(&mut self, a: &str) -> StoreResult<u64> {
        self.inner.referred_count(a)
    }
    fn upsert_price(&mut self, row: &PriceRow) -> StoreResult<()> {
        self.check()?;
        self.inner.upsert_price(row)
    }
    fn delete_price(&mut self, model: &str) -> StoreResult<bool> {
        self.check()?;
        self.inner.delete_price(model)
    }
    fn prices(&mut self) -> StoreResult<Vec<PriceRow>> {
        self.inner.prices()
    }
    fn apply_usage(&mut self, records: &[UsageRecord], pos: JournalPos) -> StoreResult<usize> {
        self.check()?;
        self.inner.apply_usage(records, pos)
    }
    fn journal_pos(&mut self) -> StoreResult<JournalPos> {
        self.inner.journal_pos()
    }
    fn key_spend(&mut self, day: i64, month: i64) -> StoreResult<Vec<KeySpend>> {
        self.inner.key_spend(day, month)
    }
    fn account_credits(&mut self) -> StoreResult<Vec<(String, i64)>> {
        self.inner.account_credits()
    }
    fn account_balances(&mut self) -> StoreResult<Vec<(String, i64, i64)>> {
        self.inner.account_balances()
    }
    fn instance_spend(&mut self, day: i64, month: i64) -> StoreResult<gonka_gateway::model::InstanceSpend> {
        self.inner.instance_spend(day, month)
    }
    fn usage_summary(&mut self, q: &UsageQuery) -> StoreResult<Vec<UsageSummaryRow>> {
        self.inner.usage_summary(q)
    }
    fn usage_records(&mut self, a: &str, f: i64, t: i64, l: usize) -> StoreResult<Vec<UsageRecord>> {
        self.inner.usage_records(a, f, t, l)
    }
    fn put_response(&mut self, r: &gonka_gateway::model::StoredResponse) -> StoreResult<()> {
        self.check()?;
        self.inner.put_response(r)
    }
    fn response(&mut self, a: &str, id: &str) -> StoreResult<Option<gonka_gateway::model::StoredResponse>> {
        self.inner.response(a, id)
    }
    fn delete_response(&mut self, a: &str, id: &str) -> StoreResult<bool> {
        self.check()?;
        self.inner.delete_response(a, id)
    }
    fn delete_expired_responses(&mut self, now_ms: i64, limit: usize) -> StoreResult<usize> {
        self.check()?;
        self.inner.delete_expired_responses(now_ms, limit)
    }
    fn insert_direct_key(&mut self, row: &gonka_gateway::model::DirectKeyRow) -> StoreResult<()> {
        self.check()?;
        self.inner.insert_direct_key(row)
    }
    fn update_direct_key(&mut self, row: &gonka_gateway::model::DirectKeyRow) -> StoreResult<()> {
        self.check()?;
        self.inner.update_direct_key(row)
    }
    fn direct_keys(
        &mut self,
        account_id: Option<&str>,
    ) -> StoreResult<Vec<gonka_gateway::model::DirectKeyRow>> {
        self.inner.direct_keys(account_id)
    }
    fn bill_direct(
        &mut self,
        charge: &gonka_gateway::model::DirectCharge,
        row: &gonka_gateway::model::DirectKeyRow,
    ) -> StoreResult<bool> {
        self.check()?;
        self.inner.bill_direct(charge, row)
    }
    fn direct_charges(
        &mut self,
        key_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<gonka_gateway::model::DirectCharge>> {
        self.inner.direct_charges(key_id, limit)
    }
    fn set_deposit_addresses(&mut self, rows: &[(String, String)]) -> StoreResult<()> {
        self.check()?;
        self.inner.set_deposit_addresses(rows)
    }
    fn deposit_addresses(&mut self) -> StoreResult<Vec<(String, String)>> {
        self.inner.deposit_addresses()
    }
    fn deposit_accounts(&mut self, addresses: &[String]) -> StoreResult<Vec<(String, String)>> {
        self.inner.deposit_accounts(addresses)
    }
    fn deposit_cursor(&mut self) -> StoreResult<Option<BlockRef>> {
        self.inner.deposit_cursor()
    }
    fn record_deposit_block(&mut self, block: &BlockRef, found: &[NewDeposit], at: i64) -> StoreResult<()> {
        self.check()?;
        self.inner.record_deposit_block(block, found, at)
    }
    fn rewind_deposit_cursor(&mut self, height: u64) -> StoreResult<()> {
        self.check()?;
        self.inner.rewind_deposit_cursor(height)
    }
    fn pending_deposits(&mut self) -> StoreResult<Vec<DepositRow>> {
        self.inner.pending_deposits()
    }
    fn drop_deposit(&mut self, account_id: &str, tx_hash: &str) -> StoreResult<()> {
        self.check()?;
        self.inner.drop_deposit(account_id, tx_hash)
    }
    fn confirm_deposit(&mut self, account_id: &str, tx_hash: &str, min_ngonka: i64) -> StoreResult<()> {
        self.check()?;
        self.inner.confirm_deposit(account_id, tx_hash, min_ngonka)
    }
    fn deposit_claims(&mut self) -> StoreResult<Vec<DepositClaim>> {
        self.inner.deposit_claims()
    }
    fn finish_deposit_claim(&mut self, account_id: &str, reference: &str, at: i64) -> StoreResult<()> {
        self.check()?;
        self.inner.finish_deposit_claim(account_id, reference, at)
    }
    fn deposits(&mut self, account_id: Option<&str>, limit: usize) -> StoreResult<Vec<DepositRow>> {
        self.inner.deposits(account_id, limit)
    }
    fn claim_event(&mut self, id: &str, account_id: &str, kind: &str, at_ms: i64) -> StoreResult<bool> {
        self.check()?;
        self.inner.claim_event(id, account_id, kind, at_ms)
    }
}

#[test]
fn store_write_failures_during_load_are_ridden_out_and_applied_once() {
    let sim = Sim::start(&["--tokens-per-s", "500", "--completion-tokens", "5"]);
    let failing = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&failing);
    let gw = InProc::start(
        GatewayOpts {
            node_urls: sim.urls.clone(),
            extra: "[limits]\ndefault_rpm = 0\n".into(),
            ..GatewayOpts::default()
        },
        move |inner| Box::new(Flaky { inner, failing: flag }),
        Arc::new(gonka_gateway::time::SystemClock),
    );
    let credit = 1_000_000_000_000_000u64;
    failing.store(true, Ordering::SeqCst);
    let key = gw.api_key.clone();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let key = &key;
                let addr = gw.addr;
                scope.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let body = json!({"model": MODEL, "stream": i % 2 == 0, "max_tokens": 5,
                                              "messages": [{"role": "user", "content": format!("{t}-{i}")}]});
                            request(addr, key, &body, &format!("flaky-{t}-{i}")).0
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "served while the store failed: {statuses:?}");
    assert!(gw.metric("gateway_journal_lag_records") >= 100.0, "records wait in the journal");
    let during = gw.admin("GET", &format!("/admin/accounts/{}/usage", gw.account_id), None);
    assert_eq!(during.status, 503, "usage cannot be read consistently while the store is down");
    failing.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || gw.metric("gateway_journal_lag_records") == 0.0),
        "the journal drained"
    );
    let records = gw.usage_records(&gw.account_id);
    assert_eq!(records.len(), 100, "every record applied exactly once");
    let unique: std::collections::HashSet<&str> =
        records.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 100);
    assert_eq!(gw.balance(&gw.account_id), (credit - sum_cost(&records)) as i64);
}

#[test]
fn prices_are_set_by_the_admin_and_bill_from_then_on() {
    let sim = Sim::start(&["--completion-tokens", "4"]);
    let gw = Gateway::start(&sim.urls);
    let r = gw.admin(
        "PUT",
        &format!("/admin/models/{MODEL}"),
        Some(json!({"price_prompt_ngonka": "0", "price_completion_ngonka": "1000"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["price_completion_ngonka"], "1000");
    let models = http(gw.addr, "GET", "/v1/models", &[("Authorization", &gw.auth())], None).json();
    assert_eq!(models["data"][0]["price_completion_ngonka"], "1000");
    let before = gw.balance(&gw.account_id);
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("priced", 4, false));
    assert_eq!(r.status, 200);
    assert_eq!(before - gw.balance(&gw.account_id), 4_000, "4 completion tokens at 1000, prompt free");
    let r = gw.admin(
        "PUT",
        &format!("/admin/models/{MODEL}"),
        Some(json!({"price_prompt_ngonka": "-1", "price_completion_ngonka": "1"})),
    );
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("price_prompt_ngonka")));
}

#[test]
fn no_request_is_admitted_while_the_journal_cannot_be_written() {
    let sim = Sim::start(&[]);
    let gw = InProc::start(
        GatewayOpts { node_urls: sim.urls.clone(), ..GatewayOpts::default() },
        |s| s,
        Arc::new(gonka_gateway::time::SystemClock),
    );
    let app = Arc::clone(&gw.running.as_ref().unwrap().app);
    app.journal.stats.failing.store(true, Ordering::Relaxed);
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("x", 2, false));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(sim.stats()["requests"], 1, "only our stats request reached the simulator");
    app.journal.stats.failing.store(false, Ordering::Relaxed);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("x", 2, false)).status, 200);
}
