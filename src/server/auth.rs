//! JWT authentication of `/api/*`, as cc-metric-store does it: `Authorization: Bearer <token>`, the token an
//! EdDSA (Ed25519) JWT signed by the key whose public half is configured (`main.jwt-public-key`, base64).
//!
//! Any other algorithm (`none`, HS256 with the public key as secret, RS256, …), a bad signature, an expired
//! (`exp`) or not-yet-valid (`nbf`) token, or a missing or malformed header is a 401 with a JSON body.
//! `exp` and `nbf` are checked when present, as golang-jwt's `Claims.Valid` does. Accepted tokens are cached
//! (at most [`MAX_CACHED_TOKENS`]; when full, expired ones are dropped first and then the whole cache, as
//! cc-metric-store bounds its cache), and a cached token is rechecked for expiry on every use.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde::Deserialize;

use super::ApiError;
use crate::db::unix_now;

/// Most tokens kept in the cache of accepted tokens.
pub const MAX_CACHED_TOKENS: usize = 1024;

/// The verifier: the public key and the cache of accepted tokens with their expiry.
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
    cache: Mutex<HashMap<String, Option<i64>>>,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<i64>,
}

impl Auth {
    /// A verifier for a base64 (standard alphabet) Ed25519 public key of 32 bytes.
    pub fn from_base64(public_key: &str) -> Result<Auth, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(public_key.trim())
            .map_err(|e| format!("jwt-public-key is not base64: {e}"))?;
        if raw.len() != 32 {
            return Err(format!("jwt-public-key must be a 32-byte Ed25519 key, not {} bytes", raw.len()));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        validation.validate_aud = false;
        Ok(Auth { key: DecodingKey::from_ed_der(&raw), validation, cache: Mutex::new(HashMap::new()) })
    }

    /// Checks a raw token: `Ok` if it is a valid EdDSA JWT of our key, now.
    pub fn check(&self, token: &str) -> Result<(), String> {
        let now = unix_now();
        if let Some(exp) = self.cache.lock().get(token).copied() {
            if exp.is_none_or(|e| e > now) {
                return Ok(());
            }
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| e.to_string())?;
        let mut cache = self.cache.lock();
        cache.remove(token);
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.retain(|_, exp| exp.is_none_or(|e| e > now));
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), data.claims.exp);
        Ok(())
    }

    /// Tokens in the cache.
    pub fn cached(&self) -> usize {
        self.cache.lock().len()
    }
}

/// The middleware: a 401 with a JSON body unless the request carries a valid token.
pub async fn require_jwt(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Result<Response, ApiError> {
    let unauthorized = |m: String| ApiError { status: StatusCode::UNAUTHORIZED, message: m };
    let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(unauthorized("use JWT authentication: Authorization: Bearer <token>".into()));
    };
    auth.check(token.trim()).map_err(|e| unauthorized(format!("invalid token: {e}")))?;
    Ok(next.run(req).await)
}
