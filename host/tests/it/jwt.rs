//! JWT bearer tokens: secrets, JWKS (file and URL), claims and refusals.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
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

/// A fixed test key pair under tests/it/fixtures (`<name>_private.pem`, `<name>_public.pem`).
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures")).join(name)
}

fn private_key(alg: Algorithm) -> EncodingKey {
    let pem = |file: &str| std::fs::read(fixture(file)).unwrap();
    match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem("rsa_private.pem")),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("ec_private.pem")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("ed_private.pem")),
        other => panic!("no fixture key for {other:?}"),
    }
    .unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).unwrap()
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

#[test]
fn the_shipped_config_toml_has_the_built_in_auth_defaults() {
    let shipped = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml"));
    let loaded = accord::config::Config::load(Some(shipped)).unwrap();
    let defaults = accord::config::Config::default();
    assert_eq!(serde_json::to_value(&loaded.auth).unwrap(), serde_json::to_value(&defaults.auth).unwrap());
    assert_eq!(defaults.auth.jwt.algorithms, ["RS256", "ES256", "EdDSA", "HS256"]);
}

/// Issue 7: with the shipped algorithm list, every kind of key source works,
/// and a key never verifies an algorithm of another family.
#[tokio::test]
async fn the_shipped_algorithms_work_with_each_key_source_and_families_never_mix() {
    let user = json!({"sub": "fay", "exp": now() + 600});
    // HMAC secret: HS256 works; an RS256 token is refused.
    let server = TestServer::start_with(|c| c.auth.jwt.secret = Some("shipped secret".into())).await;
    let good = token(Algorithm::HS256, None, b"shipped secret", user.clone());
    assert_eq!(server.get("/api/sync/pull", &good).send().await.unwrap().status(), 200);
    let rsa = signed(Algorithm::RS256, None, &private_key(Algorithm::RS256), &user);
    expect_problem(server.get("/api/sync/pull", &rsa).send().await.unwrap(), 401).await;
    drop(server);

    // A PEM public key of each type verifies its own algorithm only.
    for (alg, public) in
        [(Algorithm::RS256, "rsa_public.pem"), (Algorithm::ES256, "ec_public.pem"), (Algorithm::EdDSA, "ed_public.pem")]
    {
        let server = TestServer::start_with(|c| c.auth.jwt.public_key_file = Some(fixture(public))).await;
        let good = signed(alg, None, &private_key(alg), &user);
        assert_eq!(server.get("/api/sync/pull", &good).send().await.unwrap().status(), 200, "{alg:?}");
        // The classic confusion: the public key's PEM text used as an HMAC secret.
        let pem = std::fs::read(fixture(public)).unwrap();
        let confused = token(Algorithm::HS256, None, &pem, user.clone());
        expect_problem(server.get("/api/sync/pull", &confused).send().await.unwrap(), 401).await;
        // Another family's algorithm, even one in the allowed list, is refused.
        let other = if alg == Algorithm::EdDSA { Algorithm::ES256 } else { Algorithm::EdDSA };
        let foreign = signed(other, None, &private_key(other), &user);
        expect_problem(server.get("/api/sync/pull", &foreign).send().await.unwrap(), 401).await;
    }
    // A PEM key whose family has no listed algorithm stops startup with a clear message.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accord.toml");
    let text = format!(
        "[auth.jwt]\npublic_key_file = {:?}\nalgorithms = [\"HS256\"]\n",
        fixture("rsa_public.pem").to_str().unwrap()
    );
    std::fs::write(&file, text).unwrap();
    let out = cli(&["check-config", "--config", file.to_str().unwrap()], &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwt.algorithms"));
}

#[tokio::test]
async fn a_jwks_with_mixed_key_types_verifies_each_by_its_own_family() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let jwk = |alg: Algorithm, kid: &str| {
        let mut jwk = Jwk::from_encoding_key(&private_key(alg), alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        jwk
    };
    let mut hmac = Jwk::from_encoding_key(&EncodingKey::from_secret(b"oct key"), Algorithm::HS256).unwrap();
    hmac.common.key_id = Some("oct".into());
    let mut no_alg = jwk(Algorithm::RS256, "rsa-any");
    no_alg.common.key_algorithm = None;
    let set = JwkSet {
        keys: vec![
            jwk(Algorithm::RS256, "rsa"),
            jwk(Algorithm::ES256, "ec"),
            jwk(Algorithm::EdDSA, "ed"),
            hmac,
            no_alg,
        ],
    };
    std::fs::write(&jwks, serde_json::to_string(&set).unwrap()).unwrap();
    let server = TestServer::start_with(move |c| c.auth.jwt.jwks_file = Some(jwks)).await;
    let user = json!({"sub": "gus", "exp": now() + 600});
    for (alg, kid) in
        [(Algorithm::RS256, "rsa"), (Algorithm::ES256, "ec"), (Algorithm::EdDSA, "ed"), (Algorithm::RS256, "rsa-any")]
    {
        let t = signed(alg, Some(kid), &private_key(alg), &user);
        assert_eq!(server.get("/api/sync/pull", &t).send().await.unwrap().status(), 200, "{kid}");
    }
    let t = token(Algorithm::HS256, Some("oct"), b"oct key", user.clone());
    assert_eq!(server.get("/api/sync/pull", &t).send().await.unwrap().status(), 200);

    let rsa_pem = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let refused = [
        // An RSA key's kid with HS256, signed with the RSA public key as the secret.
        token(Algorithm::HS256, Some("rsa"), &rsa_pem, user.clone()),
        token(Algorithm::HS256, Some("rsa-any"), &rsa_pem, user.clone()),
        // The EC key's kid on an RS256 token signed by the RSA key.
        signed(Algorithm::RS256, Some("ec"), &private_key(Algorithm::RS256), &user),
        // The HMAC key's kid on an EdDSA token.
        signed(Algorithm::EdDSA, Some("oct"), &private_key(Algorithm::EdDSA), &user),
        // PS256 is an RSA algorithm, but not in the shipped list.
        signed(Algorithm::PS256, Some("rsa-any"), &private_key(Algorithm::PS256), &user),
    ];
    for t in refused {
        expect_problem(server.get("/api/sync/pull", &t).send().await.unwrap(), 401).await;
    }
}

#[tokio::test]
async fn configured_issuer_and_audience_are_required_and_nbf_is_enforced_with_the_leeway() {
    let server = TestServer::start_with(|c| {
        c.auth.jwt.secret = Some("claims secret".into());
        c.auth.jwt.issuer = Some("https://idp.example".into());
        c.auth.jwt.audience = Some("accord".into());
    })
    .await;
    let status = |claims: Value| {
        let t = token(Algorithm::HS256, None, b"claims secret", claims);
        let request = server.get("/api/sync/pull", &t);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(claims("hal")).await, 200);
    for missing in ["iss", "aud", "exp"] {
        let mut c = claims("hal");
        c.as_object_mut().unwrap().remove(missing);
        assert_eq!(status(c).await, 401, "a token without `{missing}` was accepted");
    }
    let mut later = claims("hal");
    later["nbf"] = json!(now() + 3600);
    assert_eq!(status(later).await, 401, "a token not valid for an hour was accepted");
    let mut skewed = claims("hal");
    skewed["nbf"] = json!(now() + 20);
    assert_eq!(status(skewed).await, 200, "nbf within the shipped 60 s leeway");
    let mut garbled = claims("hal");
    garbled["nbf"] = json!("soon");
    assert_eq!(status(garbled).await, 401);
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
    let loaded = Instant::now();
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
    // The IdP rotates: a token with the new kid makes the server re-read the
    // JWKS, but no more often than every JWKS_MIN_REFRESH (10 s), however many
    // unknown kids arrive.
    std::fs::write(&jwks, set(&[("k1", b"first key"), ("k2", b"second key")])).unwrap();
    for _ in 0..5 {
        expect_problem(server.get("/api/sync/pull", &t2).send().await.unwrap(), 401).await;
    }
    assert!(loaded.elapsed() < Duration::from_secs(8), "the test machine is too slow for this check");
    tokio::time::sleep(Duration::from_secs(11)).await;
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

#[tokio::test]
async fn a_token_past_exp_inside_the_leeway_authenticates_but_cannot_create_api_keys() {
    let server = TestServer::start_with(|c| c.auth.jwt.secret = Some("leeway secret".into())).await;
    let sign = |exp: u64| token(Algorithm::HS256, None, b"leeway secret", json!({"sub": "lee", "exp": exp}));
    let lapsed = sign(now() - 5);
    // Still inside the shipped 60 s leeway: it reads...
    assert_eq!(server.get("/api/api-keys", &lapsed).send().await.unwrap().status(), 200);
    // ...but cannot mint a lasting credential.
    let body = json!({"name": "from a lapsed token"});
    let p = expect_problem(server.post("/api/api-keys", &lapsed, &body).send().await.unwrap(), 403).await;
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    // Past the leeway: the generic 401.
    let p = expect_problem(server.post("/api/api-keys", &sign(now() - 3600), &body).send().await.unwrap(), 401).await;
    assert_eq!(p["detail"], crate::keys::GENERIC_401);
    // A live token creates keys.
    let r = server.post("/api/api-keys", &sign(now() + 600), &body).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_jwks_url() {
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fetches.clone();
    let jwks = json!({"keys": [{"kty": "oct", "kid": "web", "alg": "HS256",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"k")}]});
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = TestServer::start_with(move |c| c.auth.jwt.jwks_url = Some(url)).await;
    // Answered once the server serves, which is after its startup fetch.
    assert_eq!(server.client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1, "fetched once at startup");
    tokio::time::sleep(Duration::from_secs(11)).await;
    // A valid header naming an unknown kid, but the token is not three base64url segments.
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"new"}"#);
    for bad in [
        format!("{header}.e30"),
        format!("{header}.e30.c2ln.x"),
        format!("{header}.e3+0.c2ln"),
        format!("{header}..c2ln"),
    ] {
        expect_problem(server.get("/api/sync/pull", &bad).send().await.unwrap(), 401).await;
    }
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a malformed token made the server fetch the JWKS"
    );
    // A well-formed token with an unknown kid does trigger one (rate-limited) refresh.
    for _ in 0..5 {
        let t = token(Algorithm::HS256, Some("new"), b"k", json!({"sub": "x", "exp": now() + 60}));
        expect_problem(server.get("/api/sync/pull", &t).send().await.unwrap(), 401).await;
    }
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2, "one refresh for five unknown kids");
}
