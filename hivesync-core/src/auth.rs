//! Passwords (argon2id) and access tokens (JWT, HS256).
//!
//! Hashing runs on tokio's blocking pool, never on the async worker threads, and at most one hash
//! per CPU runs at a time: each one holds 19 MiB, so a flood of logins queues instead of exhausting
//! memory.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore};

use crate::config::{JwtConfig, SigningKeys};
use crate::domain::UserId;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::Secret;

/// Shortest password accepted at registration (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes: long enough for passphrases and password managers, short
/// enough that hashing it is not a denial-of-service vector.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password against the length policy.
pub fn validate_new_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::validation(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        ))
        .with_context("field", "password"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::validation(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        ))
        .with_context("field", "password"));
    }
    Ok(())
}

/// argon2id password hashing with bounded concurrency.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when a login names an unknown account so that
    /// the answer takes as long as for a known one.
    decoy: Arc<OnceCell<String>>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", self.argon2.params())
            .finish()
    }
}

impl PasswordHasher {
    /// OWASP's recommended argon2id parameters: 19 MiB of memory, 2 iterations, 1 lane.
    pub const OWASP_M_COST_KIB: u32 = 19 * 1024;
    pub const OWASP_T_COST: u32 = 2;
    pub const OWASP_P_COST: u32 = 1;

    /// A hasher with OWASP's recommended parameters.
    pub fn owasp() -> Self {
        Self::with_params(
            Self::OWASP_M_COST_KIB,
            Self::OWASP_T_COST,
            Self::OWASP_P_COST,
        )
        .expect("OWASP parameters are valid")
    }

    /// A hasher with explicit argon2id parameters (memory in KiB, iterations, lanes).
    pub fn with_params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        let params = Params::new(m_cost_kib, t_cost, p_cost, None).map_err(|e| {
            Error::new(ErrorKind::Config, format!("invalid argon2 parameters: {e}"))
        })?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(PasswordHasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            permits: Arc::new(Semaphore::new(cpus)),
            decoy: Arc::new(OnceCell::new()),
        })
    }

    /// Hashes `password` into a PHC string (`$argon2id$v=19$m=…`), with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = Secret::new(password);
        self.run_blocking(move |argon2| hash_with(argon2, password.expose()))
            .await
    }

    /// [`PasswordHasher::hash`] on the calling thread, for callers outside an async runtime.
    /// Blocks for tens of milliseconds: never call it on an async worker thread.
    pub fn hash_blocking(&self, password: &str) -> Result<String> {
        hash_with(&self.argon2, password)
    }

    /// Whether `password` matches the PHC string `hash`. The parameters stored in the hash are
    /// used, so hashes made with older parameters keep verifying.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        let password = Secret::new(password);
        let hash = hash.to_owned();
        self.run_blocking(move |argon2| {
            let parsed = PasswordHash::new(&hash)
                .map_err(|_| Error::internal("a stored password hash is not a PHC string"))?;
            Ok(argon2
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    /// Spends the time a real verification would, for a login naming an unknown account.
    pub async fn verify_decoy(&self, password: &str) -> Result<()> {
        let decoy = self
            .decoy
            .get_or_try_init(|| async { self.hash(Secret::generate().expose()).await })
            .await?;
        self.verify(password, decoy).await.map(|_| ())
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("password hasher is shut down"))?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || work(&argon2))
            .await
            .map_err(|e| Error::internal("password hashing task failed").with_source(e))?
    }
}

fn hash_with(argon2: &Argon2<'static>, password: &str) -> Result<String> {
    argon2
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| Error::internal("password hashing failed").with_source(e.to_string()))
}

/// The issuer written into and required of every access token.
pub const JWT_ISSUER: &str = "hivesync";
/// Clock skew tolerated when checking `exp`: the servers that issue and check tokens keep their
/// clocks by NTP, so a few seconds cover it, and an expired token stays refused.
pub const JWT_LEEWAY_SECONDS: u64 = 5;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user's id.
    pub sub: UserId,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

/// Issues and verifies HS256 access tokens. Only HS256 is accepted: `alg: none`, other HMAC sizes
/// and asymmetric algorithms are all rejected.
#[derive(Clone)]
pub struct JwtIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtIssuer").field("ttl", &self.ttl).finish()
    }
}

impl JwtIssuer {
    pub fn new(secret: &Secret, ttl: Duration) -> Self {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[JWT_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = JWT_LEEWAY_SECONDS;
        JwtIssuer {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            ttl,
        }
    }

    /// The issuer of `config`'s tokens, signed with `keys.jwt`.
    pub fn from_config(config: &JwtConfig, keys: &SigningKeys) -> Self {
        Self::new(&keys.jwt, config.ttl)
    }

    /// How long issued tokens live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `user` valid from `now` (Unix seconds).
    pub fn issue(&self, user: UserId, now: i64) -> Result<String> {
        let claims = AccessClaims {
            sub: user,
            iss: JWT_ISSUER.to_owned(),
            iat: now,
            exp: now.saturating_add(self.ttl.as_secs() as i64),
        };
        encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .map_err(|e| Error::internal("cannot sign an access token").with_source(e))
    }

    /// Verifies a token (signature, algorithm, issuer, expiry) and returns its claims.
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                let message = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        "the access token has expired"
                    }
                    _ => "the access token is invalid",
                };
                Error::unauthorized(message)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn fast_hasher() -> PasswordHasher {
        // Small parameters keep the unit tests quick; the OWASP set is checked separately.
        PasswordHasher::with_params(1024, 1, 1).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let hasher = fast_hasher();
        let a = hasher.hash("correct horse battery").await.unwrap();
        let b = hasher.hash("correct horse battery").await.unwrap();
        assert_ne!(a, b, "each hash has its own salt");
        assert!(hasher.verify("correct horse battery", &a).await.unwrap());
        assert!(!hasher.verify("correct horse batterY", &a).await.unwrap());
        assert!(hasher.verify("x", "not a phc string").await.is_err());
        hasher.verify_decoy("whatever").await.unwrap();
    }

    #[tokio::test]
    async fn owasp_parameters_are_recorded_in_the_hash() {
        let hash = PasswordHasher::owasp()
            .hash("correct horse battery")
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        // A hash made with other parameters still verifies with the OWASP hasher.
        let old = fast_hasher().hash("pw-pw-pw-pw").await.unwrap();
        assert!(
            PasswordHasher::owasp()
                .verify("pw-pw-pw-pw", &old)
                .await
                .unwrap()
        );
    }

    #[test]
    fn password_policy() {
        assert!(validate_new_password("short").is_err());
        assert!(validate_new_password("long enough").is_ok());
        assert!(validate_new_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    fn issuer() -> JwtIssuer {
        JwtIssuer::new(
            &Secret::new("jwt-secret-jwt-secret-jwt-secret-1"),
            Duration::from_secs(600),
        )
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn jwt_round_trip() {
        let user = UserId::new();
        let token = issuer().issue(user, now()).unwrap();
        let claims = issuer().verify(&token).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.iss, JWT_ISSUER);
        assert_eq!(claims.exp - claims.iat, 600);
    }

    #[test]
    fn expired_and_foreign_jwts_are_rejected() {
        let user = UserId::new();
        let expired = issuer().issue(user, now() - 3600).unwrap();
        let err = issuer().verify(&expired).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
        assert!(err.message().contains("expired"));

        // Past its expiry by more than the leeway: refused; by less: still accepted.
        let ttl = issuer().ttl().as_secs() as i64;
        let leeway = JWT_LEEWAY_SECONDS as i64;
        let just_expired = issuer().issue(user, now() - ttl - leeway - 5).unwrap();
        let err = issuer().verify(&just_expired).unwrap_err();
        assert!(err.message().contains("expired"), "{err}");
        let within = issuer().issue(user, now() - ttl - 1).unwrap();
        assert_eq!(issuer().verify(&within).unwrap().sub, user);

        let other = JwtIssuer::new(
            &Secret::new("another-secret-another-secret-another"),
            Duration::from_secs(600),
        );
        let foreign = other.issue(user, now()).unwrap();
        assert_eq!(
            issuer().verify(&foreign).unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
    }

    fn forge(header: &str, claims: &serde_json::Value, signature: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            signature
        )
    }

    #[test]
    fn alg_none_and_other_algorithms_are_rejected() {
        let claims = serde_json::json!({
            "sub": UserId::new(), "iss": JWT_ISSUER, "iat": now(), "exp": now() + 600
        });
        let none = forge(r#"{"alg":"none","typ":"JWT"}"#, &claims, "");
        assert!(issuer().verify(&none).is_err());

        // An HS512 token made with the right secret is still refused: only HS256 is accepted.
        let hs512 = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"jwt-secret-jwt-secret-jwt-secret-1"),
        )
        .unwrap();
        assert!(issuer().verify(&hs512).is_err());
    }

    #[test]
    fn tokens_without_issuer_or_subject_are_rejected() {
        let key = EncodingKey::from_secret(b"jwt-secret-jwt-secret-jwt-secret-1");
        let header = Header::new(jsonwebtoken::Algorithm::HS256);
        let no_iss = serde_json::json!({"sub": UserId::new(), "iat": now(), "exp": now() + 600});
        let wrong_iss = serde_json::json!({"sub": UserId::new(), "iss": "someone-else", "iat": now(), "exp": now() + 600});
        let no_sub = serde_json::json!({"iss": JWT_ISSUER, "iat": now(), "exp": now() + 600});
        for claims in [no_iss, wrong_iss, no_sub] {
            let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
            assert!(issuer().verify(&token).is_err(), "{claims}");
        }
    }
}
