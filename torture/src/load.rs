//! `load`: an open-loop load of mixed pushes, pulls and event-stream
//! connections at a fixed rate for a bounded time. Requests start on
//! schedule whether or not earlier ones finished, and latency counts from the
//! scheduled start (no coordinated omission). The server's RSS is sampled
//! every second and its slope reported.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use crate::Outcome;
use crate::api::Api;
use crate::rng::Rng;
use crate::server::{Server, ServerOpts, token};

#[derive(Clone, Debug)]
pub struct LoadOpts {
    pub rate: f64,
    pub secs: u64,
    pub users: usize,
    /// Event streams held open for the whole run.
    pub streams: usize,
    pub seed: u64,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub lines: Vec<String>,
    pub server_errors: u64,
    pub failures: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Push,
    Pull,
    Events,
}

struct Sample {
    kind: Kind,
    status: u16,
    latency: Duration,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Least-squares slope of `(seconds, KiB)` samples, in MiB per minute.
pub fn slope_mib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx * 60.0 / 1024.0 }
}

pub async fn run(server_opts: ServerOpts, opts: LoadOpts) -> Outcome<LoadReport> {
    let mut server = Server::start(server_opts).await?;
    let r = run_on(&server, &opts).await;
    if let Some(status) = server.exited() {
        return Err(format!("the server exited during the load ({status}); log:\n{}", server.log_tail()));
    }
    server.kill().await?;
    r
}

async fn run_on(server: &Server, opts: &LoadOpts) -> Outcome<LoadReport> {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut apis = Vec::new();
    for u in 0..opts.users.max(1) {
        apis.push(Api::new(&server.base, token(&format!("load{nonce}-{u}")), Duration::from_secs(30), false)?);
    }
    let apis = Arc::new(apis);
    let cursors: Arc<Mutex<HashMap<usize, String>>> = Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.secs);
    let events_seen = Arc::new(AtomicU64::new(0));
    let stream_failures = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for s in 0..opts.streams {
        let api = apis[s % apis.len()].clone();
        let (seen, failed) = (events_seen.clone(), stream_failures.clone());
        streams.push(tokio::spawn(async move {
            let Ok(mut resp) = api.events().await else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if resp.status() != 200 {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            while Instant::now() < deadline {
                match tokio::time::timeout_at(deadline.into(), resp.chunk()).await {
                    Ok(Ok(Some(chunk))) => {
                        let n = chunk.windows(13).filter(|w| w == b"event: change").count();
                        seen.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // RSS sampler.
    let pid = server.pid().unwrap_or(0);
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let t0 = Instant::now();
        while Instant::now() < deadline {
            if let Some(kib) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_string))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                samples.push((t0.elapsed().as_secs_f64(), kib));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });
    let total = (opts.rate * opts.secs as f64) as u64;
    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut skipped = 0u64;
    let mut rng = Rng::new(opts.seed);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = started + period.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        if in_flight.load(Ordering::Relaxed) >= 4096 {
            skipped += 1;
            continue;
        }
        let u = rng.index(apis.len());
        let roll = rng.below(100);
        let (apis, cursors, in_flight) = (apis.clone(), cursors.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            let api = &apis[u];
            let (kind, status) = if roll < 55 {
                let recs: Vec<_> = (0..5)
                    .map(|r| json!({"id": format!("l{i}-{r}"), "version": 1, "data": {"title": "load", "n": r, "body": "y".repeat(200)}}))
                    .collect();
                let link = json!({"id": format!("l{i}-link"), "version": 1, "data": {"pageId": format!("l{i}-0"), "notebookId": format!("l{i}-nb")}});
                let nb = json!({"id": format!("l{i}-nb"), "version": 1, "data": {"name": "nb"}});
                let body = json!({"clientId": "load", "pushId": format!("load-{i}"), "changes": {"pages": recs, "notebooks": [nb], "pageNotebooks": [link]}});
                (Kind::Push, api.post("/api/sync/push", body.to_string()).await.map(|r| r.status))
            } else if roll < 95 {
                let since = cursors.lock().await.get(&u).cloned();
                let mut path = "/api/sync/pull?limit=200".to_string();
                if let Some(c) = since {
                    path.push_str("&since=");
                    path.push_str(&c.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"));
                }
                let r = api.get(&path).await;
                if let Ok(resp) = &r
                    && resp.status == 200
                    && let Ok(v) = resp.json("pull")
                    && let Some(c) = v.get("cursor").and_then(|c| c.as_str())
                {
                    cursors.lock().await.insert(u, c.to_string());
                }
                (Kind::Pull, r.map(|r| r.status))
            } else {
                // Connect to the event stream, wait for its headers, hang up.
                (Kind::Events, api.events().await.map(|r| r.status().as_u16()))
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            Sample { kind, status: status.unwrap_or(0), latency: at.elapsed() }
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        if let Ok(s) = t.await {
            samples.push(s);
        }
    }
    let run_secs = started.elapsed().as_secs_f64();
    for s in streams {
        let _ = s.await;
    }
    let rss = sampler.await.map_err(|e| format!("sampler: {e}"))?;
    let mut report = LoadReport::default();
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    for s in &samples {
        *statuses.entry(s.status).or_default() += 1;
    }
    report.server_errors = samples.iter().filter(|s| s.status >= 500).count() as u64;
    report.failures = samples.iter().filter(|s| s.status == 0).count() as u64 + stream_failures.load(Ordering::Relaxed);
    report.lines.push(format!(
        "load: {} requests scheduled at {} /s for {} s ({} users, {} event streams held open), finished in {run_secs:.1} s; \
         {} skipped (client at its in-flight bound)",
        total, opts.rate, opts.secs, opts.users, opts.streams, skipped
    ));
    report.lines.push(format!("  statuses: {statuses:?} (0 = transport failure)"));
    let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    all.sort();
    report.lines.push(format!(
        "  all: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&all, 0.5),
        pct(&all, 0.9),
        pct(&all, 0.99),
        pct(&all, 1.0)
    ));
    for kind in [Kind::Push, Kind::Pull, Kind::Events] {
        let mut l: Vec<Duration> = samples.iter().filter(|s| s.kind == kind).map(|s| s.latency).collect();
        l.sort();
        report.lines.push(format!(
            "  {kind:?}: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.len(),
            pct(&l, 0.5),
            pct(&l, 0.99),
            pct(&l, 1.0)
        ));
    }
    report.lines.push(format!(
        "  event streams: {} change events received, {} streams failed",
        events_seen.load(Ordering::Relaxed),
        stream_failures.load(Ordering::Relaxed)
    ));
    let settled: Vec<(f64, u64)> =
        rss.iter().copied().filter(|s| s.0 >= 10.0_f64.min(opts.secs as f64 / 4.0)).collect();
    let (lo, hi) = (rss.iter().map(|s| s.1).min().unwrap_or(0), rss.iter().map(|s| s.1).max().unwrap_or(0));
    report.lines.push(format!(
        "  server RSS: {} samples, first {:.1} MiB, last {:.1} MiB, min {:.1}, max {:.1}; slope {:+.3} MiB/min over the run, \
         {:+.3} MiB/min after warm-up",
        rss.len(),
        rss.first().map_or(0.0, |s| s.1 as f64 / 1024.0),
        rss.last().map_or(0.0, |s| s.1 as f64 / 1024.0),
        lo as f64 / 1024.0,
        hi as f64 / 1024.0,
        slope_mib_per_min(&rss),
        slope_mib_per_min(&settled)
    ));
    // Growth that levels off (caches filling) shows as a flatter second half.
    let half = opts.secs as f64 / 2.0;
    let second: Vec<(f64, u64)> = rss.iter().copied().filter(|s| s.0 >= half).collect();
    let at = |t: f64| rss.iter().find(|s| s.0 >= t).map_or(0.0, |s| s.1 as f64 / 1024.0);
    report.lines.push(format!(
        "  server RSS by quarter: {:.1} / {:.1} / {:.1} / {:.1} MiB; slope {:+.3} MiB/min over the second half",
        at(0.0),
        at(half / 2.0),
        at(half),
        at(half * 1.5),
        slope_mib_per_min(&second)
    ));
    report.lines.push(format!("server 5xx: {}", report.server_errors));
    Ok(report)
}
