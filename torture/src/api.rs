//! A thin HTTP client for the sync API: requests as text, answers as bytes,
//! so a replayed answer can be compared byte for byte.

use std::time::Duration;

use crate::Outcome;

/// One simulated device's connection to the server, as one user.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    pub base: String,
    token: String,
}

/// An HTTP answer.
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self, what: &str) -> Outcome<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{what}: answer is not JSON ({e}): {}", self.text()))
    }
}

impl Api {
    /// `fresh_connections`: one TCP connection per request (for the fault proxy).
    pub fn new(base: &str, token: String, timeout: Duration, fresh_connections: bool) -> Outcome<Api> {
        // Bodies as the server wrote them: the fault proxy compares a pushId's
        // answers byte for byte, and another crate in the workspace may turn on
        // reqwest's gzip (which would make the server compress them).
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(2)).no_gzip();
        if fresh_connections {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().map_err(|e| format!("http client: {e}"))?;
        Ok(Api { client, base: base.to_string(), token })
    }

    /// `Err` is a transport failure (refused, reset, timed out, cut short).
    pub async fn get(&self, path: &str) -> Result<Resp, String> {
        let r = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token);
        send(r).await
    }

    /// Opens `GET /api/sync/events`; the caller reads the stream.
    pub async fn events(&self) -> Result<reqwest::Response, String> {
        // A stream lives as long as the caller reads it: no whole-request timeout.
        let r = self
            .client
            .get(format!("{}/api/sync/events", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(86_400));
        r.send().await.map_err(|e| describe(&e))
    }

    pub async fn post(&self, path: &str, body: String) -> Result<Resp, String> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body);
        send(r).await
    }
}

async fn send(r: reqwest::RequestBuilder) -> Result<Resp, String> {
    let resp = r.send().await.map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| describe(&e))?.to_vec();
    Ok(Resp { status, body })
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
