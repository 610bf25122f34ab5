//! A fault-injecting TCP proxy on 127.0.0.1: one HTTP/1.1 exchange per
//! connection, read whole from the client, sent to the server, the answer read
//! whole, then delivered — or not, according to the fault drawn for that
//! connection. It keeps every push answer the server gave, by pushId, so the
//! checker can prove a retried push was applied once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Outcome;
use crate::rng::Rng;

/// What happens to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Delay the request and the answer.
    Latency,
    /// Send part of the request to the server, then reset both sides.
    ResetMidRequest,
    /// The server answered (a push committed); reset the client instead of answering.
    ResetAfterCommit,
    /// Deliver half of the answer, then close.
    Truncate,
    /// Hold the answer past the client's timeout.
    Stall,
}

const FAULTS: [Fault; 6] =
    [Fault::Pass, Fault::Latency, Fault::ResetMidRequest, Fault::ResetAfterCommit, Fault::Truncate, Fault::Stall];

/// Fault counts, in the order of [`Fault`]'s variants.
#[derive(Default)]
pub struct ProxyStats {
    pub by_fault: [AtomicU64; 6],
    pub incomplete_answers: AtomicU64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// pushId → every push answer body the server sent for it.
    pub answers: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>>,
    pub stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

/// How often each fault is drawn (out of 100): the rest pass untouched.
#[derive(Clone, Copy, Debug)]
pub struct FaultMix {
    pub latency: u64,
    pub reset_mid_request: u64,
    pub reset_after_commit: u64,
    pub truncate: u64,
    pub stall: u64,
    pub stall_for: Duration,
}

impl Default for FaultMix {
    fn default() -> FaultMix {
        FaultMix {
            latency: 10,
            reset_mid_request: 6,
            reset_after_commit: 8,
            truncate: 6,
            stall: 2,
            stall_for: Duration::from_millis(1500),
        }
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr, mix: FaultMix, seed: u64) -> Outcome<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("proxy bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("proxy addr: {e}"))?;
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let stats = Arc::new(ProxyStats::default());
        let rng = Arc::new(Mutex::new(Rng::new(seed)));
        let (a, s) = (answers.clone(), stats.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (fault, cut) = {
                    let mut r = rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let roll = r.below(100);
                    let mut edge = 0;
                    let mut fault = Fault::Pass;
                    for (f, w) in [
                        (Fault::Latency, mix.latency),
                        (Fault::ResetMidRequest, mix.reset_mid_request),
                        (Fault::ResetAfterCommit, mix.reset_after_commit),
                        (Fault::Truncate, mix.truncate),
                        (Fault::Stall, mix.stall),
                    ] {
                        edge += w;
                        if roll < edge {
                            fault = f;
                            break;
                        }
                    }
                    (fault, r.next_u64())
                };
                if let Some(i) = FAULTS.iter().position(|f| *f == fault) {
                    s.by_fault[i].fetch_add(1, Ordering::Relaxed);
                }
                let (a, s) = (a.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = exchange(client, upstream, fault, cut, mix.stall_for, &a, &s).await;
                });
            }
        });
        Ok(Proxy { addr, answers, stats, task })
    }

    /// A one-line summary of the faults injected.
    pub fn summary(&self) -> String {
        let n = |i: usize| self.stats.by_fault[i].load(Ordering::Relaxed);
        format!(
            "connections: {} passed, {} delayed, {} reset mid-request, {} reset after the server answered, \
             {} answers truncated, {} stalled",
            n(0),
            n(1),
            n(2),
            n(3),
            n(4),
            n(5)
        )
    }

    /// Connections that met a fault other than latency.
    pub fn faults(&self) -> u64 {
        (2..6).map(|i| self.stats.by_fault[i].load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resets a connection (RST instead of FIN).
#[allow(deprecated)] // set_linger: the blocking-close caveat does not apply to a zero linger
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn exchange(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    cut: u64,
    stall_for: Duration,
    answers: &Mutex<HashMap<String, Vec<Vec<u8>>>>,
    stats: &ProxyStats,
) -> std::io::Result<()> {
    let Some(request) = read_message(&mut client, true).await? else { return Ok(()) };
    let mut server = TcpStream::connect(upstream).await?;
    if fault == Fault::Latency {
        tokio::time::sleep(Duration::from_millis(1 + cut % 40)).await;
    }
    if fault == Fault::ResetMidRequest {
        let n = 1 + (cut as usize) % request.len().saturating_sub(1).max(1);
        server.write_all(&request[..n]).await?;
        server.flush().await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        reset(server);
        reset(client);
        return Ok(());
    }
    server.write_all(&request).await?;
    let Some(response) = read_message(&mut server, false).await? else {
        stats.incomplete_answers.fetch_add(1, Ordering::Relaxed);
        reset(client);
        return Ok(());
    };
    drop(server);
    if let Some(push_id) = push_id(&request)
        && response.starts_with(b"HTTP/1.1 200 ")
        && let Some(body) = body_of(&response)
    {
        answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(push_id).or_default().push(body);
    }
    match fault {
        Fault::Pass | Fault::Latency => {
            if fault == Fault::Latency {
                tokio::time::sleep(Duration::from_millis(1 + (cut >> 8) % 40)).await;
            }
            client.write_all(&response).await?;
            client.flush().await?;
            client.shutdown().await?;
            // Let the client read to the end before the socket goes.
            let mut sink = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_secs(2), client.read(&mut sink)).await;
        }
        Fault::ResetAfterCommit | Fault::ResetMidRequest => reset(client),
        Fault::Truncate => {
            let n = 1 + (cut as usize) % response.len().saturating_sub(1).max(1);
            client.write_all(&response[..n]).await?;
            client.flush().await?;
            client.shutdown().await?;
        }
        Fault::Stall => {
            tokio::time::sleep(stall_for).await;
            reset(client);
        }
    }
    Ok(())
}

/// Reads one whole HTTP/1.1 message (headers and body); `None` if the peer
/// closed first.
async fn read_message(stream: &mut TcpStream, request: bool) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(len) = message_len(&buf, request) {
            buf.truncate(len);
            return Ok(Some(buf));
        }
        let n = match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(None),
        };
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Head {
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
    no_body: bool,
}

fn head(buf: &[u8], request: bool) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let status = if request { 0 } else { first.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0) };
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        if let Some(v) = line.strip_prefix("content-length:") {
            content_length = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("transfer-encoding:") {
            chunked = v.contains("chunked");
        }
    }
    Some(Head {
        len: end,
        content_length,
        chunked,
        no_body: status == 204 || status == 304 || (100..200).contains(&status),
    })
}

/// The length of the complete message at the start of `buf`, if it is complete.
fn message_len(buf: &[u8], request: bool) -> Option<usize> {
    let h = head(buf, request)?;
    if h.no_body {
        return Some(h.len);
    }
    if h.chunked {
        let (_, used) = dechunk(&buf[h.len..])?;
        return Some(h.len + used);
    }
    let total = h.len + h.content_length.unwrap_or(0);
    (buf.len() >= total).then_some(total)
}

/// Decodes a complete chunked body: (body, bytes used).
fn dechunk(mut b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = b.len();
    let mut out = Vec::new();
    loop {
        let line_end = find(b, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            let trailer_end = find(b, b"\r\n")?;
            // No trailers are sent by the server: the empty line ends it.
            b = &b[trailer_end + 2..];
            return Some((out, start - b.len()));
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// The body of a complete message.
fn body_of(msg: &[u8]) -> Option<Vec<u8>> {
    let h = head(msg, false)?;
    if h.chunked { dechunk(&msg[h.len..]).map(|(b, _)| b) } else { Some(msg[h.len..].to_vec()) }
}

/// The pushId of a `POST /api/sync/push` request, as this tool writes it.
fn push_id(request: &[u8]) -> Option<String> {
    if !request.starts_with(b"POST /api/sync/push ") {
        return None;
    }
    let at = find(request, br#""pushId":""#)? + 10;
    let len = find(&request[at..], b"\"")?;
    Some(String::from_utf8_lossy(&request[at..at + len]).into_owned())
}
