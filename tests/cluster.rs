//! Several instances behind a real load balancer: two gateways sharing one PostgreSQL store (a schema of
//! their own per test), nginx from Debian's package in front (round robin), the simulator behind.
//! Limits and balances hold exactly across both, a change on one reaches the other within a second,
//! a kill -9 of one loses no record, a cut to PostgreSQL is ridden out on the journal.
//!
//! Needs PostgreSQL (and, for the leases tests, Redis) running locally: each test checks first and says
//! how to start them. nginx is installed on first use when missing (`utils::nginx_binary`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utils::{
    ADMIN_TOKEN, GatewayApi, MODEL, Proc, Resp, Sim, bind_free_port, chat_body, eventually, http,
    nginx_binary, require_postgres, require_redis, retry_in_flight, with_free_ports,
};

const PG: &str = "127.0.0.1:5432";
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const KEY_SECRET: &str = "cluster-test-key-secret-0123456789abcdef";

/// A fresh schema name; the instances create it.
fn schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("cl_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn drop_schema(schema: &str) {
    if let Ok(mut client) = postgres::Client::connect(PG_URL, postgres::NoTls) {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    }
}

/// A TCP proxy (to PostgreSQL or Redis) the test can cut (every connection closed, new ones refused)
/// and restore.
struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    fn start(target: &'static str) -> CutProxy {
        let listener: TcpListener = bind_free_port();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, conns2) = (Arc::clone(&cut), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else { continue };
                conns2.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in
                    [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// One gateway instance on fixed ports (so nginx and a restart find it again).
struct Instance {
    proc: Option<Proc>,
    port: u16,
    admin_port: u16,
    dir: PathBuf,
    config: PathBuf,
}

impl GatewayApi for Instance {
    fn public(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    fn admin_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }
}

impl Instance {
    /// Starts the instance; an error (with its stderr) when it did not get ready.
    fn try_start(&mut self) -> Result<(), String> {
        let envs = [
            ("TEST_ADMIN_TOKEN", ADMIN_TOKEN),
            ("GATEWAY_KEY_SECRET", KEY_SECRET),
            ("GATEWAY_WEBHOOK_SECRET", utils::webhook::SECRET),
        ];
        let mut proc = Proc::spawn(&["serve", "--config", self.config.to_str().unwrap()], &self.dir, &envs);
        proc.try_wait_line("GATEWAY_LISTEN=")?;
        self.proc = Some(proc);
        Ok(())
    }

    fn start(&mut self) {
        self.try_start().unwrap_or_else(|e| panic!("{e}"));
    }

    fn kill_9(&mut self) {
        let mut p = self.proc.take().unwrap();
        p.signal("KILL");
        p.wait_exit(Duration::from_secs(10)).unwrap();
    }

    fn addr(&self) -> SocketAddr {
        self.public()
    }
}

/// nginx in front of the instances, one process (`master_process off`) so stopping it leaves no worker
/// behind.
struct Nginx {
    child: Child,
}

impl Nginx {
    /// nginx on `port`, balancing round robin over `upstreams`; an error (its stderr) when it did not
    /// start.
    fn start(dir: &Path, port: u16, upstreams: [u16; 2]) -> Result<Nginx, String> {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
                 upstream gw {{ server 127.0.0.1:{pa} max_fails=0; server 127.0.0.1:{pb} max_fails=0; keepalive 64; }}\n\
                 server {{ listen 127.0.0.1:{port};\n  location / {{ proxy_pass http://gw; proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\"; proxy_buffering off; proxy_next_upstream error timeout; }} }}\n}}\n",
                d = dir.display(),
                pa = upstreams[0],
                pb = upstreams[1],
            ),
        )
        .unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(nginx_binary())
            .args(["-p", dir.to_str().unwrap(), "-c", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child };
        let lb = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if nginx.child.try_wait().unwrap().is_some() {
                let log = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                return Err(format!("nginx did not start: {}{}", log("stderr.log"), log("logs/error.log")));
            }
            if TcpStream::connect(lb).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                nginx.stop();
                return Err("nginx did not start listening within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (a fast shutdown), then SIGKILL if it has not exited after 5 s; returns once it is gone.
    fn stop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_some()) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().is_ok_and(|s| s.is_some()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Cluster {
    a: Instance,
    b: Instance,
    lb: SocketAddr,
    nginx: Nginx,
    schema: String,
    sim: Sim,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nginx.stop();
        self.a.proc.take();
        self.b.proc.take();
        drop_schema(&self.schema);
        // The leases this test made in Redis.
        if let Ok(mut r) = redis::Client::open(format!("redis://{REDIS}/")).and_then(|c| c.get_connection()) {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("gw:{}:*", self.schema)).query(&mut r).unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut r);
            }
        }
    }
}

impl Cluster {
    /// Two instances (`a`, `b`) on `store_port` (PostgreSQL or a proxy to it), nginx in front.
    fn start(store_port: u16, sim_args: &[&str]) -> Cluster {
        Self::start_with(store_port, None, sim_args)
    }

    /// The same, with leases through Redis on `redis_port` (Redis or a proxy to it).
    fn start_with(store_port: u16, redis_port: Option<u16>, sim_args: &[&str]) -> Cluster {
        Self::start_configured(store_port, redis_port, sim_args, "")
    }

    /// The same, with `extra` TOML tables in both instances' config.
    fn start_configured(store_port: u16, redis_port: Option<u16>, sim_args: &[&str], extra: &str) -> Cluster {
        let sim = Sim::start(sim_args);
        let dir = tempfile::tempdir().unwrap();
        let schema = schema();
        let instance = |id: &str, port: u16, admin_port: u16| {
            let idir = dir.path().join(id);
            std::fs::create_dir_all(&idir).unwrap();
            let config = idir.join("gateway.toml");
            // No default rate limit: the rpm test gives its key one of its own.
            let limits = format!(
                "[limits]\ndefault_rpm = 0\n{}",
                redis_port.map(|p| format!("redis_url = \"redis://127.0.0.1:{p}/\"\n")).unwrap_or_default()
            );
            std::fs::write(
                &config,
                format!(
                    "workers = 2\ndata_dir = \"{data}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
                     [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_env = \"TEST_ADMIN_TOKEN\"\n\
                     [store]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{store_port}/test\"\n\
                     schema = \"{schema}\"\n[cluster]\ninstance_id = \"{id}\"\ninstances = 2\n{limits}\
                     [[models]]\nid = \"{MODEL}\"\ncontext_length = 32768\nprice_prompt_ngonka = 10\n\
                     price_completion_ngonka = 20\n[[upstream.nodes]]\nurl = \"{node}\"\nkind = \"openai\"\n{extra}",
                    data = idir.join("data").display(),
                    node = sim.urls[0],
                ),
            )
            .unwrap();
            Instance { proc: None, port, admin_port, dir: idir, config }
        };
        // Fixed ports below the ephemeral range; new ones when another process took one meanwhile.
        let started = |id: &str| {
            with_free_ports(2, |p| {
                let mut i = instance(id, p[0], p[1]);
                i.try_start().map(|()| i)
            })
        };
        let (a, b) = (started("a"), started("b"));
        let ndir = dir.path().join("nginx");
        let (nginx, lb) = with_free_ports(1, |p| {
            Nginx::start(&ndir, p[0], [a.port, b.port]).map(|n| (n, SocketAddr::from(([127, 0, 0, 1], p[0]))))
        });
        Cluster { a, b, lb, nginx, schema, sim, _dir: dir }
    }

    /// An account (made through `a`) credited with `credit`; its id and token.
    fn account(&self, credit: u64) -> (String, String) {
        let (id, token) = self.a.create_account("cluster");
        self.a.credit(&id, credit, "initial");
        (id, token)
    }

    /// Every usage record of an account, after both instances applied their journals.
    fn records(&self, account: &str) -> Vec<Value> {
        self.a.usage_records(account)
    }

    fn balance(&self, account: &str) -> i64 {
        self.a.balance(account)
    }
}

fn chat_via(addr: SocketAddr, key: &str, max_tokens: u64) -> Resp {
    let auth = format!("Bearer {key}");
    let body = chat_body("hello there", max_tokens, false).to_string();
    http(addr, "POST", "/v1/chat/completions", &[("Authorization", &auth)], Some(body.as_bytes()))
}

/// `n` requests from `threads` threads at once through `addr`; the responses.
fn burst(addr: SocketAddr, key: &str, n: usize, threads: usize, max_tokens: u64) -> Vec<Resp> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (out, next) = (Arc::clone(&out), Arc::clone(&next));
            s.spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                    let r = chat_via(addr, key, max_tokens);
                    out.lock().unwrap().push(r);
                }
            });
        }
    });
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

/// A budget refusal: 402 (spend leaves no room) or 429 `budget_in_flight` (holds in flight do).
fn refusal(r: &Resp) -> bool {
    match r.status {
        402 => true,
        429 => r.json()["error"]["code"] == "budget_in_flight",
        _ => false,
    }
}

fn cost_sum(records: &[Value]) -> i64 {
    records.iter().map(|r| r["cost_ngonka"].as_str().unwrap().parse::<i64>().unwrap()).sum()
}

/// Waits until the records of `account` number `n` (both journals applied).
fn settled_records(c: &Cluster, account: &str, n: usize) -> Vec<Value> {
    let mut recs = Vec::new();
    let ok = eventually(Duration::from_secs(20), || {
        recs = c.records(account);
        recs.len() >= n
    });
    assert!(ok, "{} records, expected {n}", recs.len());
    recs
}

#[test]
fn limits_and_balances_hold_exactly_across_two_instances_behind_nginx() {
    require_postgres(PG_URL);
    let c = Cluster::start(5432, &["--completion-tokens", "16"]);
    // A child key with a daily limit; it reaches the other instance through the change feed.
    let daily = 60_000u64;
    let (acc, child) = child_key(&c, json!({"limit_daily_ngonka": daily.to_string()}));

    let resps = burst(c.lb, &child, 200, 200, 16);
    let ok = resps.iter().filter(|r| r.status == 200).count();
    // Refused: 402 when spend leaves no room, 429 budget_in_flight while only holds are in the way.
    let refused = resps.iter().filter(|r| refusal(r)).count();
    assert_eq!(ok + refused, 200, "only answers and limit refusals");
    assert!(refused > 0, "the limit was reached");
    let recs = settled_records(&c, &acc, ok);
    assert_eq!(recs.len(), ok, "one record per answered request");
    let spent = cost_sum(&recs);
    assert!(spent as u64 <= daily, "spent {spent} of a daily limit of {daily}");
    println!("child key: {ok} answered, {refused} refused, {spent} of {daily} ngonka spent");

    // A small balance, a managed key of that account, 200 at once.
    let (acc2, key) = managed_key(&c, 40_000, 16);
    let resps = burst(c.lb, &key, 200, 200, 16);
    let ok = resps.iter().filter(|r| r.status == 200).count() + 1;
    assert!(resps.iter().any(refusal), "the balance ran out");
    let recs = settled_records(&c, &acc2, ok);
    let spent = cost_sum(&recs);
    assert_eq!(recs.len(), ok);
    assert!(spent <= 40_000, "spent {spent} of a balance of 40000");
    assert!(
        eventually(Duration::from_secs(5), || c.balance(&acc2) == 40_000 - spent),
        "balance = credit − records"
    );
    println!("balance: {ok} answered, {spent} of 40000 ngonka spent");
}

#[test]
fn a_pause_on_one_instance_stops_the_key_on_the_other_within_a_second() {
    require_postgres(PG_URL);
    let c = Cluster::start(5432, &["--completion-tokens", "1"]);
    let (_acc, tok) = c.account(1_000_000_000_000);
    let created = c.a.api(&tok, "POST", "/api/keys", Some(json!({"name": "k"}))).json();
    let (id, key) = (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned());
    // The key's state on an instance, read through an authenticated request that neither calls a node
    // nor writes a usage record: what is timed is the change reaching b, not a completion's own latency
    // (a journal write on a saturated disk stalled one for a second in CI).
    let models = |addr: SocketAddr| {
        let auth = format!("Bearer {key}");
        http(addr, "GET", "/v1/models", &[("Authorization", &auth)], None).status
    };
    assert!(eventually(Duration::from_secs(2), || models(c.b.addr()) == 200));
    let mut times = Vec::new();
    for i in 0..100 {
        let (action, want) = if i % 2 == 0 { ("pause", 403) } else { ("resume", 200) };
        let t = Instant::now();
        let r = c.a.api(&tok, "POST", &format!("/api/keys/{id}/{action}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        let api = t.elapsed();
        while models(c.b.addr()) != want {
            assert!(t.elapsed() < Duration::from_secs(5), "change {i} ({action}) never reached instance b");
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.elapsed() > Duration::from_millis(100) {
            println!("change {i}: api {api:?}, total {:?}", t.elapsed());
        }
        times.push(t.elapsed());
    }
    times.sort();
    let (p50, max) = (times[times.len() / 2], times[times.len() - 1]);
    println!(
        "propagation a→b over 100 changes: p50 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(max < Duration::from_secs(1), "max propagation {max:?}");
    assert!(c.b.metric("gateway_store_changes_applied_total") >= 100.0);
    assert_eq!(c.b.metric("gateway_redis_up"), -1.0, "no redis in this cluster");
}

#[test]
fn the_rpm_limit_holds_across_both_instances() {
    require_postgres(PG_URL);
    let c = Cluster::start(5432, &["--completion-tokens", "1"]);
    let rpm = 20;
    // Known to b before the burst, without spending any of its rate.
    let (_acc, key) = child_key(&c, json!({"rate_limit_rpm": rpm}));
    let t = Instant::now();
    let resps = burst(c.lb, &key, 3 * rpm, 20, 1);
    let elapsed = t.elapsed();
    let ok = resps.iter().filter(|r| r.status == 200).count();
    let limited = resps.iter().filter(|r| r.status == 429).count();
    assert_eq!(ok + limited, 3 * rpm);
    // The stated bound (README, limits::share): at most `rpm` in a burst, plus what the rate refills
    // meanwhile (one per 60/(rpm/2) s per instance), plus N − 1 only when rpm < N.
    let refill = (elapsed.as_secs_f64() / (60.0 / f64::from(rpm as u32 / 2))).floor() as usize * 2;
    println!("rpm {rpm}: {ok} admitted of {} sent in {elapsed:?} (bound {})", 3 * rpm, rpm + refill);
    assert!(ok <= rpm + refill, "{ok} admitted over a limit of {rpm}");
    assert!(ok >= rpm / 2, "each instance admits its share ({ok})");
}

#[test]
fn kill_9_of_one_instance_loses_nothing_and_the_other_keeps_serving() {
    require_postgres(PG_URL);
    require_redis();
    let mut c = Cluster::start_with(5432, Some(6379), &["--completion-tokens", "4"]);
    let (acc, key) = managed_key(&c, 1_000_000_000_000, 4);
    let stop = Arc::new(AtomicBool::new(false));
    let answered: Arc<Mutex<Vec<(Instant, u16, String)>>> = Arc::default();
    let lb = c.lb;
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (stop, answered, key) = (Arc::clone(&stop), Arc::clone(&answered), key.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = chat_via(lb, &key, 4);
                    let id = r.header("x-request-id").unwrap_or_default().to_owned();
                    answered.lock().unwrap().push((Instant::now(), r.status, id));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    c.b.kill_9();
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    c.b.start();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    let after_kill: Vec<_> =
        answered.iter().filter(|(t, _, _)| *t > killed_at + Duration::from_millis(200)).collect();
    assert!(after_kill.iter().filter(|(_, s, _)| *s == 200).count() > 20, "the other instance kept serving");
    let ok: HashSet<String> =
        answered.iter().filter(|(_, s, _)| *s == 200).map(|(_, _, id)| id.clone()).collect();
    let recs = settled_records(&c, &acc, ok.len());
    let ids: HashSet<String> = recs.iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect();
    let missing: Vec<_> = ok.difference(&ids).collect();
    assert!(missing.is_empty(), "{} answered requests without a record: {missing:?}", missing.len());
    assert_eq!(ids.len(), recs.len(), "no record twice");
    let spent = cost_sum(&recs);
    assert!(eventually(Duration::from_secs(5), || c.balance(&acc) == 1_000_000_000_000 - spent));
    // The restarted instance found its leases under its id, and returns what it did not spend when it
    // stops.
    let b = c.b.proc.as_mut().unwrap();
    assert!(b.stderr().contains("leases in sync with redis"), "{}", b.stderr());
    b.signal("TERM");
    assert!(b.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    assert!(b.stderr().contains("ngonka of unused leases"), "{}", b.stderr());
    let errors = answered.iter().filter(|(_, s, _)| *s != 200).count();
    println!(
        "kill -9: {} answered, {errors} failed (in flight on the killed instance), {} records",
        ok.len(),
        recs.len()
    );
}

#[test]
fn a_cut_to_postgres_is_ridden_out_and_replayed_exactly_once() {
    require_postgres(PG_URL);
    let proxy = CutProxy::start(PG);
    let c = Cluster::start(proxy.port, &["--completion-tokens", "4"]);
    let (acc, key) = managed_key(&c, 1_000_000_000_000, 4);
    let mut ok_ids = HashSet::new();
    let mut collect = |resps: Vec<Resp>| {
        for r in resps {
            assert_eq!(r.status, 200, "{}", r.text());
            ok_ids.insert(r.header("x-request-id").unwrap().to_owned());
        }
    };
    collect(burst(c.lb, &key, 100, 8, 4));
    proxy.cut();
    let during = burst(c.lb, &key, 300, 8, 4);
    collect(during);
    // The store is still away: the balance cannot be read, but answers keep coming.
    std::thread::sleep(Duration::from_millis(1000));
    collect(burst(c.lb, &key, 100, 8, 4));
    proxy.restore();
    collect(burst(c.lb, &key, 100, 8, 4));
    let recs = settled_records(&c, &acc, ok_ids.len() + 1);
    let ids: HashSet<String> = recs.iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), recs.len(), "no record twice");
    assert!(ok_ids.is_subset(&ids), "{} answered requests without a record", ok_ids.difference(&ids).count());
    let spent = cost_sum(&recs);
    assert!(
        eventually(Duration::from_secs(5), || c.balance(&acc) == 1_000_000_000_000 - spent),
        "balance {} ≠ credit − {spent}",
        c.balance(&acc)
    );
    println!("postgres cut: {} answered, {} records, balance exact", ok_ids.len(), recs.len());
}

const REDIS: &str = "127.0.0.1:6379";

/// A managed key of a new account credited with `credit`, answered by instance b (which also proves it
/// got there): (account, key). The probe is one billed request of `max_tokens`.
fn managed_key(c: &Cluster, credit: u64, max_tokens: u64) -> (String, String) {
    let (acc, tok) = c.account(credit);
    let key = c.a.api(&tok, "POST", "/api/keys", Some(json!({"name": "k"}))).json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(eventually(Duration::from_secs(2), || chat_via(c.b.addr(), &key, max_tokens).status == 200));
    (acc, key)
}

/// A child key with `limits` (e.g. `limit_daily_ngonka`) on a rich account, made through instance a and
/// known to instance b: (account, key).
fn child_key(c: &Cluster, limits: Value) -> (String, String) {
    let mut spec = json!({"name": "child"});
    spec.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
    let (acc, tok) = c.account(1_000_000_000_000);
    let child = c.a.create_child(&tok, spec)["key"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {child}");
    assert!(eventually(Duration::from_secs(2), || {
        http(c.b.addr(), "GET", "/v1/models", &[("Authorization", &auth)], None).status == 200
    }));
    (acc, child)
}

#[test]
fn leases_let_one_busy_instance_spend_past_its_share_but_never_past_the_limit() {
    require_postgres(PG_URL);
    require_redis();
    let c = Cluster::start_with(5432, Some(6379), &["--completion-tokens", "16"]);
    let daily = 60_000u64;
    let (acc, child) = child_key(&c, json!({"limit_daily_ngonka": daily.to_string()}));
    // All of it to instance a: its fixed share is a quarter of the limit; leases give it more.
    let resps = burst(c.a.addr(), &child, 120, 16, 16);
    let ok = resps.iter().filter(|r| r.status == 200).count();
    assert!(resps.iter().all(|r| r.status == 200 || refusal(r)));
    let recs = settled_records(&c, &acc, ok);
    let spent = cost_sum(&recs) as u64;
    println!("one instance with leases: {ok} answered, {spent} of {daily} spent");
    // Without leases instance a could spend its fixed share, a quarter of the limit, and no more.
    assert!(spent > daily / 4, "leases lent instance a more than its fixed share ({spent})");
    assert!(spent <= daily, "spent {spent} over the limit {daily}");
    // Then 200 at once through nginx onto both: still never past the limit.
    let resps = burst(c.lb, &child, 200, 200, 16);
    let ok2 = resps.iter().filter(|r| r.status == 200).count();
    let recs = settled_records(&c, &acc, ok + ok2);
    assert_eq!(recs.len(), ok + ok2, "one record per answer");
    let spent = cost_sum(&recs) as u64;
    println!("then both: {ok2} more answered, {spent} of {daily} spent in all");
    assert!(spent <= daily, "spent {spent} over the limit {daily}");
}

#[test]
fn a_burst_of_refusals_on_one_instance_leases_what_each_needs_and_gets_no_402() {
    require_postgres(PG_URL);
    require_redis();
    let c = Cluster::start_with(5432, Some(6379), &["--completion-tokens", "16"]);
    // 100 requests cost about 100 × (15 × 10 + 16 × 20) = 47,000 of a daily limit of 80,000: they fit.
    // Each holds about 1,600, and instance a owns only a quarter of the limit: most must lease, at once.
    let daily = 80_000u64;
    let (acc, child) = child_key(&c, json!({"limit_daily_ngonka": daily.to_string()}));
    let outcomes: Vec<(u16, u32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let child = child.clone();
                let addr = c.a.addr();
                scope.spawn(move || retry_in_flight(300, || chat_via(addr, &child, 16)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.0).collect();
    assert!(!statuses.contains(&402), "each queued refusal leased what it needed: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let recs = settled_records(&c, &acc, 100);
    let spent = cost_sum(&recs) as u64;
    println!("burst on one instance: 100 answered, {spent} of {daily} spent");
    assert!(spent > daily / 4, "past instance a's own share, on leases");
    assert!(spent <= daily);
}

#[test]
fn a_redis_cut_leaves_each_instance_what_it_holds_and_limits_still_hold() {
    require_postgres(PG_URL);
    require_redis();
    let redis = CutProxy::start(REDIS);
    let c = Cluster::start_with(5432, Some(redis.port), &["--completion-tokens", "16"]);
    let daily = 60_000u64;
    let (acc, child) = child_key(&c, json!({"limit_daily_ngonka": daily.to_string()}));
    let first = burst(c.lb, &child, 20, 4, 16);
    assert!(first.iter().all(|r| r.status == 200), "before the cut");
    redis.cut();
    let during = burst(c.lb, &child, 200, 16, 16);
    let ok_during = during.iter().filter(|r| r.status == 200).count();
    assert!(during.iter().all(|r| r.status == 200 || refusal(r)));
    assert!(ok_during > 0, "served from what each instance holds while redis is away");
    assert!(eventually(Duration::from_secs(2), || c.a.metric("gateway_redis_up") == 0.0));
    redis.restore();
    std::thread::sleep(Duration::from_millis(1500));
    let after = burst(c.a.addr(), &child, 100, 8, 16);
    let ok_after = after.iter().filter(|r| r.status == 200).count();
    assert!(eventually(Duration::from_secs(2), || c.a.metric("gateway_redis_up") == 1.0));
    assert!(c.a.metric("gateway_leased") > 0.0);
    let total_ok = 20 + ok_during + ok_after;
    let recs = settled_records(&c, &acc, total_ok);
    let spent = cost_sum(&recs) as u64;
    println!("redis cut: {ok_during} answered during the cut, {ok_after} after; {spent} of {daily} spent");
    assert_eq!(recs.len(), total_ok);
    assert!(spent <= daily, "spent {spent} over the limit {daily}");
}

/// Waits until at least `secs` seconds remain in the current UTC minute (a burst stays in one window).
fn inside_one_minute(secs: u64) {
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        if 60 - now % 60 > secs {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn with_redis_the_rpm_limit_is_leased_per_minute_and_holds_across_both() {
    require_postgres(PG_URL);
    require_redis();
    let c = Cluster::start_with(5432, Some(6379), &["--completion-tokens", "1"]);
    let rpm = 20;
    let (_, spread) = child_key(&c, json!({"rate_limit_rpm": rpm}));
    let (_, skewed) = child_key(&c, json!({"rate_limit_rpm": rpm}));
    inside_one_minute(5);
    let admitted = |resps: &[Resp]| {
        assert!(resps.iter().all(|r| r.status == 200 || r.status == 429));
        resps.iter().filter(|r| r.status == 200).count()
    };
    // Spread over both by nginx: exactly the limit within the minute (the stated bound: at most `rpm`
    // per UTC minute; any 60 s that straddles two minutes may see up to twice that).
    let ok = admitted(&burst(c.lb, &spread, 3 * rpm, 20, 1));
    println!("rpm {rpm} with leases, spread: {ok} admitted of {}", 3 * rpm);
    assert!(ok <= rpm, "{ok} admitted over a limit of {rpm}");
    // All on instance a: more than the half a fixed split would allow, thanks to leases; never more
    // than the limit (instance b's own fixed share, a quarter, stays b's).
    inside_one_minute(5);
    let ok = admitted(&burst(c.a.addr(), &skewed, 3 * rpm, 20, 1));
    println!("rpm {rpm} with leases, all on one instance: {ok} admitted of {}", 3 * rpm);
    assert!(ok > rpm / 2 && ok <= rpm, "{ok} admitted");
}

fn node_requests(c: &Cluster) -> u64 {
    c.sim.stats()["nodes"].as_array().unwrap().iter().map(|n| n["requests"].as_u64().unwrap()).sum()
}

fn account_status(i: &Instance, account: &str) -> String {
    i.admin("GET", &format!("/admin/accounts/{account}"), None).json()["status"].as_str().unwrap().to_owned()
}

#[test]
fn a_blocked_account_is_refused_on_both_instances_a_top_up_serves_the_next_request_on_each_and_each_crossing_is_told_once()
 {
    require_postgres(PG_URL);
    require_redis();
    let hook = utils::webhook::Webhook::start(false);
    // Every answer overruns its max_tokens by 500 tokens (~10 000 ngonka past a ~1 200 hold), so the
    // account's balance goes below zero as a bill above its hold takes it.
    let sim = ["--completion-tokens", "10", "--overrun-tokens", "500"];
    let c = Cluster::start_configured(5432, Some(6379), &sim, &hook.config(0));
    let (acc, tok) = c.a.create_account("blocked");
    let key = c.a.create_key(&tok, "made while blocked");
    assert!(
        eventually(Duration::from_secs(2), || chat_via(c.b.addr(), &key, 10).status == 402),
        "known on b"
    );
    let before = node_requests(&c);
    for i in [&c.a, &c.b] {
        let r = chat_via(i.addr(), &key, 10);
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (402, Some("insufficient_balance")));
        assert_eq!(account_status(i, &acc), "blocked");
    }
    assert_eq!(node_requests(&c), before, "no node call for a blocked account");

    // A top-up through a: the very next request on b (the other instance), and on a, is served.
    c.a.credit(&acc, 100_000, "top-up");
    let r = chat_via(c.b.addr(), &key, 10);
    assert_eq!(r.status, 200, "b, the very next request after a top-up through a: {}", r.text());
    let r = chat_via(c.a.addr(), &key, 10);
    assert_eq!(r.status, 200, "a: {}", r.text());

    // Spend it below zero through both; the crossing is told once though both instances see it.
    for n in 0..40 {
        let via = if n % 2 == 0 { c.a.addr() } else { c.b.addr() };
        let _ = chat_via(via, &key, 10);
    }
    assert!(eventually(Duration::from_secs(5), || account_status(&c.a, &acc) == "blocked"));
    let blocked = |kind: &str| {
        hook.delivered()
            .iter()
            .filter(|a| a.event_type == kind && a.body["account_id"] == acc.as_str())
            .count()
    };
    assert!(eventually(Duration::from_secs(5), || blocked("account.blocked") == 1));
    c.a.credit(&acc, 1_000_000, "second top-up");
    assert!(eventually(Duration::from_secs(5), || blocked("account.unblocked") == 1));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!((blocked("account.blocked"), blocked("account.unblocked")), (1, 1), "{:?}", hook.delivered());
    assert!(hook.attempts().iter().all(|a| a.signed));
    assert_eq!(chat_via(c.b.addr(), &key, 10).status, 200);
}

/// Accounts made and topped up through `a` while `b` looks at balances at every control tick (about
/// 100 ms; `check_interval_ms = 1` takes every one): the other instance may read an account between
/// its creation and its first credit, and that look must never
/// pair the balance from before the credit with the credit total from after it (a blocking that never
/// happened, whose id was then the real crossing's).
#[test]
fn a_top_up_racing_the_other_instances_look_raises_no_event() {
    require_postgres(PG_URL);
    require_redis();
    let hook = utils::webhook::Webhook::start(false);
    let config = hook.config(0).replace("check_interval_ms = 100", "check_interval_ms = 1");
    let c = Cluster::start_configured(5432, Some(6379), &[], &config);
    let accounts: Vec<String> = (0..40).map(|_| c.account(1_000_000).0).collect();
    // Every look of both instances after the last credit finds the balances above 0.
    std::thread::sleep(Duration::from_millis(500));
    let told: Vec<_> = hook
        .attempts()
        .into_iter()
        .filter(|a| accounts.iter().any(|acc| a.body["account_id"] == acc.as_str()))
        .map(|a| (a.event_type, a.body["account_id"].clone(), a.body["balance_ngonka"].clone()))
        .collect();
    assert!(told.is_empty(), "accounts credited once and never spent raised {told:?}");
}
