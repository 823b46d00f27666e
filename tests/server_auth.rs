//! JWT authentication of /api with a generated Ed25519 key, through the router.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use http_body_util::BodyExt;
use silt::server::auth::{Auth, MAX_CACHED_TOKENS};
use silt::server::{app, AppState};
use silt::storage::io::sim::SimVfs;
use silt::{Db, Options};
use tower::ServiceExt;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A compact JWT with the given header and claims, signed with Ed25519 (independently of silt's verifier).
fn jwt(sk: &SigningKey, header: &str, claims: &str) -> String {
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let sig = sk.sign(msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn eddsa(sk: &SigningKey, claims: &str) -> String {
    jwt(sk, r#"{"alg":"EdDSA","typ":"JWT"}"#, claims)
}

fn state(sk: &SigningKey) -> AppState {
    let db = Db::open("/db", Options { vfs: Arc::new(SimVfs::new()), checkpoint_interval: None, ..Options::default() })
        .expect("open");
    let public = STANDARD.encode(sk.verifying_key().to_bytes());
    AppState { auth: Some(Arc::new(Auth::from_base64(&public).expect("key"))), ..AppState::new(Arc::new(db)) }
}

async fn status(st: &AppState, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().method("POST").uri("/api/write");
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = app(st.clone()).oneshot(req.body(Body::from("")).expect("req")).await.expect("resp");
    let s = resp.status();
    let b = resp.into_body().collect().await.expect("body").to_bytes();
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test]
async fn only_valid_eddsa_tokens_of_our_key_get_in() {
    let sk = key(7);
    let st = state(&sk);
    let exp = now() + 600;
    let (s, b) = status(&st, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.contains(r#""status":"Unauthorized""#), "{b}");
    assert_eq!(status(&st, Some(&eddsa(&sk, &format!(r#"{{"sub":"a","exp":{exp}}}"#)))).await.0, StatusCode::OK);
    // Without exp (as cc-backend's tokens may be): valid.
    assert_eq!(status(&st, Some(&eddsa(&sk, r#"{"sub":"b"}"#))).await.0, StatusCode::OK);
    // Another key.
    assert_eq!(status(&st, Some(&eddsa(&key(8), r#"{"sub":"c"}"#))).await.0, StatusCode::UNAUTHORIZED);
    // Expired, and not yet valid.
    assert_eq!(
        status(&st, Some(&eddsa(&sk, &format!(r#"{{"exp":{}}}"#, now() - 5)))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&st, Some(&eddsa(&sk, &format!(r#"{{"nbf":{}}}"#, now() + 600)))).await.0,
        StatusCode::UNAUTHORIZED
    );
    // alg none, and HS256 keyed with the public key (the algorithm-confusion attack).
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
    );
    assert_eq!(status(&st, Some(&none)).await.0, StatusCode::UNAUTHORIZED);
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "x"}),
        &jsonwebtoken::EncodingKey::from_secret(&sk.verifying_key().to_bytes()),
    )
    .expect("hs256");
    assert_eq!(status(&st, Some(&hs)).await.0, StatusCode::UNAUTHORIZED);
    // A tampered signature.
    // A flipped signature byte (a character in the middle: the last one's low bits are only padding).
    let t = eddsa(&sk, r#"{"sub":"d"}"#);
    let cut = t.rfind('.').expect("signature") + 20;
    let flipped = if &t[cut..=cut] == "A" { "B" } else { "A" };
    let t = format!("{}{}{}", &t[..cut], flipped, &t[cut + 1..]);
    assert_eq!(status(&st, Some(&t)).await.0, StatusCode::UNAUTHORIZED);
    // /metrics stays open.
    let resp = app(st.clone()).oneshot(Request::get("/metrics").body(Body::empty()).expect("req")).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn the_token_cache_is_bounded() {
    let sk = key(9);
    let auth = Auth::from_base64(&STANDARD.encode(sk.verifying_key().to_bytes())).expect("key");
    for i in 0..(MAX_CACHED_TOKENS + 100) {
        auth.check(&eddsa(&sk, &format!(r#"{{"sub":"u{i}"}}"#))).expect("valid token");
        assert!(auth.cached() <= MAX_CACHED_TOKENS);
    }
    assert!(Auth::from_base64("AAAA").is_err(), "a key that is not 32 bytes is refused");
}
