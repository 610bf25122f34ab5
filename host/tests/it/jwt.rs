//! JWT bearer tokens: secrets, JWKS (file and URL), claims and refusals.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::support::{TestServer, cli, expect_problem, pull_all, push_ok};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(alg: Algorithm, kid: Option<&str>, secret: &[u8], claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "https://idp.example", "aud": "accord", "exp": now() + 600})
}

#[tokio::test]
async fn hmac_tokens_authenticate_users_and_bad_ones_are_refused() {
    let server = TestServer::start_with(|c| {
        c.auth.jwt.secret = Some("s3cret-for-tests".into());
        c.auth.jwt.algorithms = vec!["HS256".into()];
        c.auth.jwt.issuer = Some("https://idp.example".into());
        c.auth.jwt.audience = Some("accord".into());
    })
    .await;
    let secret = b"s3cret-for-tests";
    let alice = token(Algorithm::HS256, None, secret, claims("alice"));
    let page = json!({"changes": {"pages": [{"id": "p1", "version": 1, "data": {"by": "jwt"}}]}});
    push_ok(&server, &alice, &page).await;
    assert_eq!(pull_all(&server, &alice).await.len(), 1);
    // The JWT user is the same user an API key for "alice" acts as.
    let key = server.cli_key("alice", &[]);
    assert_eq!(pull_all(&server, &key).await[0].1["data"]["by"], "jwt");
    let bob = token(Algorithm::HS256, None, secret, claims("bob"));
    assert!(pull_all(&server, &bob).await.is_empty(), "bob sees nothing of alice's");
    // JWT users may manage their keys but not administer the server.
    assert_eq!(server.get("/api/api-keys", &alice).send().await.unwrap().status(), 200);
    expect_problem(server.get("/api/admin/policies", &alice).send().await.unwrap(), 403).await;

    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_iss = claims("alice");
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = claims("alice");
    wrong_aud["aud"] = json!("someone-else");
    let mut no_sub = claims("alice");
    no_sub.as_object_mut().unwrap().remove("sub");
    let header_none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims("alice").to_string());
    let bad = [
        token(Algorithm::HS256, None, b"another secret", claims("alice")),
        token(Algorithm::HS256, None, secret, expired),
        token(Algorithm::HS256, None, secret, wrong_iss),
        token(Algorithm::HS256, None, secret, wrong_aud),
        token(Algorithm::HS256, None, secret, no_sub),
        token(Algorithm::HS384, None, secret, claims("alice")),
        format!("{header_none}.{body}."),
        "not.a.jwt".to_string(),
    ];
    for t in bad {
        let r = server.get("/api/sync/pull", &t).send().await.unwrap();
        expect_problem(r, 401).await;
    }
}

#[tokio::test]
async fn jwks_from_a_file_follows_key_rotation_and_the_user_claim_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let set = |kids: &[(&str, &[u8])]| {
        json!({"keys": kids.iter().map(|(kid, k)| json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": b64(k)})).collect::<Vec<_>>()})
            .to_string()
    };
    std::fs::write(&jwks, set(&[("k1", b"first key")])).unwrap();
    let path = jwks.clone();
    let server = TestServer::start_with(move |c| {
        c.auth.jwt.jwks_file = Some(path);
        c.auth.jwt.algorithms = vec!["HS256".into()];
        c.auth.jwt.user_claim = "oid".into();
    })
    .await;
    let claims = json!({"oid": "0000-aaaa", "sub": "ignored", "exp": now() + 600});
    let t1 = token(Algorithm::HS256, Some("k1"), b"first key", claims.clone());
    assert_eq!(server.get("/api/sync/pull", &t1).send().await.unwrap().status(), 200);
    let t2 = token(Algorithm::HS256, Some("k2"), b"second key", claims);
    expect_problem(server.get("/api/sync/pull", &t2).send().await.unwrap(), 401).await;
    // The IdP rotates: a token with the new kid makes the server re-read the JWKS.
    std::fs::write(&jwks, set(&[("k1", b"first key"), ("k2", b"second key")])).unwrap();
    assert_eq!(server.get("/api/sync/pull", &t2).send().await.unwrap().status(), 200);
    let key = server.cli_key("0000-aaaa", &[]);
    push_ok(&server, &t2, &json!({"changes": {"pages": [{"id": "x", "version": 1, "data": {}}]}})).await;
    assert_eq!(pull_all(&server, &key).await.len(), 1, "the oid claim named the user");
}

#[tokio::test]
async fn jwks_from_a_url() {
    let secret = b"served key";
    let jwks = json!({"keys": [{"kty": "oct", "kid": "web", "alg": "HS256",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)}]});
    let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(jwks.clone()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = TestServer::start_with(move |c| {
        c.auth.jwt.jwks_url = Some(url);
        c.auth.jwt.algorithms = vec!["HS256".into()];
    })
    .await;
    let t = token(Algorithm::HS256, Some("web"), secret, json!({"sub": "carol", "exp": now() + 600}));
    assert_eq!(server.get("/api/sync/pull", &t).send().await.unwrap().status(), 200);
}

#[test]
fn bad_jwt_settings_stop_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accord.toml");
    let cases = [
        ("[auth.jwt]\nsecret = \"x\"\nalgorithms = [\"none\"]\n", "auth.jwt.algorithms"),
        ("[auth.jwt]\npublic_key_file = \"/nonexistent.pem\"\n", "auth.jwt.public_key_file"),
        ("[auth.jwt]\nsecret = \"x\"\njwks_file = \"/tmp/x.json\"\n", "exactly one"),
    ];
    for (text, needle) in cases {
        std::fs::write(&file, text).unwrap();
        let out = cli(&["check-config", "--config", file.to_str().unwrap()], &[], None);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{text}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The secret may come from the environment, as DESIGN.md says.
    std::fs::write(&file, "").unwrap();
    let out =
        cli(&["check-config", "--config", file.to_str().unwrap()], &[("ACCORD_AUTH__JWT__SECRET", "from-env")], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("auth.jwt = on"));
}

#[tokio::test]
async fn an_event_stream_ends_when_its_token_expires() {
    let server = TestServer::start_with(|c| {
        c.auth.jwt.secret = Some("stream secret".into());
        c.auth.jwt.algorithms = vec!["HS256".into()];
    })
    .await;
    let short = token(Algorithm::HS256, None, b"stream secret", json!({"sub": "dan", "exp": now() + 2}));
    let mut stream = server.get("/api/sync/events", &short).send().await.unwrap().bytes_stream();
    assert!(crate::support::ends_within(&mut stream, 10).await, "the stream outlived its token");
}
