//! Stateless preview tokens (DESIGN.md §6, `docs/preview-token.md`).
//!
//! A token is `v1.<payload>.<signature>`: `payload` is the base64url (no padding) of the claims in
//! a compact binary layout, `signature` the base64url of HMAC-SHA256 over the ASCII bytes
//! `v1.<payload>` with the key named by the payload's `kid`. Several keys verify (rotation); one
//! signs. The binary layout (rather than JSON) keeps tokens short — they travel in QR codes, and
//! about 140 characters scan far more reliably than 320 — and makes verification cost little more
//! than the MAC itself.
//!
//! Verification checks, in order: shape and size, version, base64 (canonical only), the key id,
//! the MAC (constant time), then the rest of the claims, time and platform. Only a token whose MAC is
//! valid can be reported as expired; everything before that is `TOKEN_INVALID`, so an attacker
//! learns nothing about which check failed.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::{PreviewConfig, PreviewKey, SigningKeys};
use crate::domain::{Platform, ProjectId, UserId};
use crate::error::{Error, ErrorKind, Result};

type HmacSha256 = Hmac<Sha256>;

/// The version prefix of the current format.
pub const VERSION_PREFIX: &str = "v1";
/// The version number recorded in preview metadata as `token_version`.
pub const TOKEN_VERSION: u32 = 1;
/// How far in the future `iat` may be, to allow for clock skew between servers.
pub const CLOCK_SKEW_SECONDS: i64 = 60;
/// Tokens longer than this are rejected before any decoding (the longest valid one is about 520).
pub const MAX_TOKEN_LEN: usize = 1024;
/// The longest git ref a token may carry.
pub const MAX_REF_LEN: usize = 255;

/// What a preview token grants: building previews of one project, for one user, on one platform,
/// until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewClaims {
    /// Id of the key that signed the token.
    pub kid: String,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub platform: Platform,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// The git ref to build, when the token pins one.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// A random id that makes every token unique (jobs remember which token created them).
    pub jti: String,
}

/// What to put in a new token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewGrant {
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub platform: Platform,
    pub git_ref: Option<String>,
}

/// Signs and verifies preview tokens with a set of keys.
#[derive(Clone)]
pub struct PreviewTokenSigner {
    signing_kid: String,
    /// Keyed MAC states, ready to clone: the key schedule is computed once, not per token.
    keys: Vec<(String, HmacSha256)>,
}

impl fmt::Debug for PreviewTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreviewTokenSigner")
            .field("signing_kid", &self.signing_kid)
            .field(
                "verifying_kids",
                &self
                    .keys
                    .iter()
                    .map(|(kid, _)| kid.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PreviewTokenSigner {
    /// A signer that signs with `signing` and also verifies with `previous`.
    pub fn new(signing: &PreviewKey, previous: &[PreviewKey]) -> Result<Self> {
        let mut keys = Vec::with_capacity(previous.len() + 1);
        for key in std::iter::once(signing).chain(previous) {
            if keys.iter().any(|(kid, _)| kid == &key.id) {
                return Err(Error::new(ErrorKind::Config, "duplicate preview key id")
                    .with_context("kid", &key.id));
            }
            let mac = HmacSha256::new_from_slice(key.secret.expose().as_bytes())
                .map_err(|_| Error::new(ErrorKind::Config, "unusable preview key"))?;
            keys.push((key.id.clone(), mac));
        }
        Ok(PreviewTokenSigner {
            signing_kid: signing.id.clone(),
            keys,
        })
    }

    /// The signer of `config`'s tokens: `keys.preview` signs, the previous keys still verify.
    pub fn from_config(config: &PreviewConfig, keys: &SigningKeys) -> Result<Self> {
        Self::new(&keys.preview, &config.previous_keys)
    }

    /// The id of the key that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// Signs a token for `grant`, valid from `now` (Unix seconds) for `ttl_seconds`.
    pub fn sign(&self, grant: &PreviewGrant, now: i64, ttl_seconds: i64) -> Result<String> {
        if ttl_seconds <= 0 {
            return Err(Error::validation(
                "a preview token needs a positive lifetime",
            ));
        }
        if let Some(git_ref) = &grant.git_ref {
            validate_ref(git_ref)?;
        }
        let mut jti = [0u8; JTI_LEN];
        rand::rng().fill_bytes(&mut jti);
        let claims = PreviewClaims {
            kid: self.signing_kid.clone(),
            project_id: grant.project_id,
            user_id: grant.user_id,
            platform: grant.platform,
            iat: now,
            exp: now.saturating_add(ttl_seconds),
            git_ref: grant.git_ref.clone(),
            jti: URL_SAFE_NO_PAD.encode(jti),
        };
        self.encode(&claims)
    }

    /// Encodes and signs `claims` exactly as given, with the key named by `claims.kid`. Used for
    /// test vectors; [`PreviewTokenSigner::sign`] is what services call.
    pub fn encode(&self, claims: &PreviewClaims) -> Result<String> {
        let mac = self.key(&claims.kid).ok_or_else(|| {
            Error::internal("no preview key with that id").with_context("kid", &claims.kid)
        })?;
        let payload = encode_payload(claims)?;
        let mut token = String::with_capacity(4 + payload.len() * 4 / 3 + 44);
        token.push_str(VERSION_PREFIX);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let mut mac = mac.clone();
        mac.update(token.as_bytes());
        let signature = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// Verifies `token` at time `now` (Unix seconds) and returns its claims.
    ///
    /// Errors: [`ErrorKind::TokenInvalid`] for anything malformed, unsigned by a known key, or
    /// issued in the future; [`ErrorKind::TokenExpired`] for a genuine token past its `exp`.
    pub fn verify(&self, token: &str, now: i64) -> Result<PreviewClaims> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid_token());
        }
        let mut parts = token.split('.');
        let (Some(version), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid_token());
        };
        if version != VERSION_PREFIX || payload_b64.len() > MAX_PAYLOAD_LEN.div_ceil(3) * 4 {
            return Err(invalid_token());
        }
        let mut payload = [0u8; MAX_PAYLOAD_LEN];
        let payload_len = URL_SAFE_NO_PAD
            .decode_slice(payload_b64, &mut payload)
            .map_err(|_| invalid_token())?;
        let payload = &payload[..payload_len];
        let mut signature = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(signature_b64, &mut signature) {
            Ok(32) => {}
            _ => return Err(invalid_token()),
        }
        // Only the key id is read before the MAC is checked.
        let kid = payload_kid(payload).ok_or_else(invalid_token)?;
        let mut mac = self.key(kid).ok_or_else(invalid_token)?.clone();
        // The signed bytes are exactly what was received: nothing is re-encoded.
        mac.update(&token.as_bytes()[..version.len() + 1 + payload_b64.len()]);
        mac.verify_slice(&signature).map_err(|_| invalid_token())?;

        let claims = decode_payload(payload).ok_or_else(invalid_token)?;
        if claims.exp <= claims.iat || claims.iat > now.saturating_add(CLOCK_SKEW_SECONDS) {
            return Err(invalid_token());
        }
        if claims.exp <= now {
            return Err(Error::new(
                ErrorKind::TokenExpired,
                "the preview token has expired",
            ));
        }
        Ok(claims)
    }

    /// [`PreviewTokenSigner::verify`], and the token must be for `platform`.
    pub fn verify_for_platform(
        &self,
        token: &str,
        platform: Platform,
        now: i64,
    ) -> Result<PreviewClaims> {
        let claims = self.verify(token, now)?;
        if claims.platform != platform {
            return Err(Error::new(
                ErrorKind::TokenInvalid,
                "the preview token is for another platform",
            ));
        }
        Ok(claims)
    }

    fn key(&self, kid: &str) -> Option<&HmacSha256> {
        self.keys
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, mac)| mac)
    }
}

fn invalid_token() -> Error {
    Error::new(ErrorKind::TokenInvalid, "the preview token is invalid")
}

/// Bytes of random token id.
const JTI_LEN: usize = 12;
const MAX_KID_LEN: usize = 32;
/// Everything but the key id and the ref: two UUIDs, platform, two timestamps, jti, two lengths.
const FIXED_PAYLOAD_LEN: usize = 1 + 16 + 16 + 1 + 8 + 8 + JTI_LEN + 1;
/// The largest payload: the longest key id and ref.
const MAX_PAYLOAD_LEN: usize = FIXED_PAYLOAD_LEN + MAX_KID_LEN + MAX_REF_LEN;

fn platform_byte(platform: Platform) -> u8 {
    match platform {
        Platform::Ios => 1,
        Platform::Android => 2,
    }
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The binary payload (docs/preview-token.md): `kid_len kid project_id user_id platform iat exp
/// jti ref_len ref`, integers big-endian.
fn encode_payload(claims: &PreviewClaims) -> Result<Vec<u8>> {
    if !valid_kid(&claims.kid) {
        return Err(Error::internal(
            "a preview key id is not 1 to 32 of A-Z a-z 0-9 - _",
        ));
    }
    let jti = URL_SAFE_NO_PAD
        .decode(&claims.jti)
        .ok()
        .filter(|jti| jti.len() == JTI_LEN)
        .ok_or_else(|| Error::internal("a preview token id must be 12 bytes, base64url-encoded"))?;
    let git_ref = claims.git_ref.as_deref().unwrap_or_default();
    if claims.git_ref.is_some() {
        validate_ref(git_ref)?;
    }
    let mut out = Vec::with_capacity(FIXED_PAYLOAD_LEN + claims.kid.len() + git_ref.len());
    out.push(claims.kid.len() as u8);
    out.extend_from_slice(claims.kid.as_bytes());
    out.extend_from_slice(claims.project_id.as_uuid().as_bytes());
    out.extend_from_slice(claims.user_id.as_uuid().as_bytes());
    out.push(platform_byte(claims.platform));
    out.extend_from_slice(&claims.iat.to_be_bytes());
    out.extend_from_slice(&claims.exp.to_be_bytes());
    out.extend_from_slice(&jti);
    out.push(git_ref.len() as u8);
    out.extend_from_slice(git_ref.as_bytes());
    Ok(out)
}

/// The key id at the start of a payload, if well-formed.
fn payload_kid(payload: &[u8]) -> Option<&str> {
    let len = usize::from(*payload.first()?);
    let kid = std::str::from_utf8(payload.get(1..1 + len)?).ok()?;
    valid_kid(kid).then_some(kid)
}

/// Decodes a whole payload; `None` unless every field is well-formed and nothing trails.
fn decode_payload(payload: &[u8]) -> Option<PreviewClaims> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn byte(&mut self) -> Option<u8> {
            self.take(1).map(|b| b[0])
        }
        fn uuid(&mut self) -> Option<uuid::Uuid> {
            uuid::Uuid::from_slice(self.take(16)?).ok()
        }
        fn i64(&mut self) -> Option<i64> {
            Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
    }

    let kid = payload_kid(payload)?.to_owned();
    let mut reader = Reader(&payload[1 + kid.len()..]);
    let project_id = ProjectId::from_uuid(reader.uuid()?);
    let user_id = UserId::from_uuid(reader.uuid()?);
    let platform = match reader.byte()? {
        1 => Platform::Ios,
        2 => Platform::Android,
        _ => return None,
    };
    let iat = reader.i64()?;
    let exp = reader.i64()?;
    let jti = URL_SAFE_NO_PAD.encode(reader.take(JTI_LEN)?);
    let ref_len = usize::from(reader.byte()?);
    let git_ref = match ref_len {
        0 => None,
        n => {
            let git_ref = std::str::from_utf8(reader.take(n)?).ok()?;
            validate_ref(git_ref).ok()?;
            Some(git_ref.to_owned())
        }
    };
    if !reader.0.is_empty() {
        return None;
    }
    Some(PreviewClaims {
        kid,
        project_id,
        user_id,
        platform,
        iat,
        exp,
        git_ref,
        jti,
    })
}

/// Checks a git ref's shape: 1 to 255 bytes, no whitespace or control characters, no `..`, not
/// starting with `-` (so it can never be read as a command-line option).
pub fn validate_ref(git_ref: &str) -> Result<()> {
    let ok = !git_ref.is_empty()
        && git_ref.len() <= MAX_REF_LEN
        && !git_ref.starts_with('-')
        && !git_ref.contains("..")
        && !git_ref
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(Error::validation(
            "ref must be 1 to 255 bytes without spaces, control characters, '..' or a leading '-'",
        )
        .with_context("field", "ref"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const NOW: i64 = 1_800_000_000;

    fn key(id: &str, secret: &str) -> PreviewKey {
        PreviewKey {
            id: id.to_owned(),
            secret: Secret::new(secret),
        }
    }

    fn signer() -> PreviewTokenSigner {
        PreviewTokenSigner::new(&key("k1", "first-secret-first-secret-first-secret"), &[]).unwrap()
    }

    fn grant() -> PreviewGrant {
        PreviewGrant {
            project_id: ProjectId::new(),
            user_id: UserId::new(),
            platform: Platform::Ios,
            git_ref: Some("main".to_owned()),
        }
    }

    #[test]
    fn round_trip_keeps_every_claim() {
        let signer = signer();
        let grant = grant();
        let token = signer.sign(&grant, NOW, 300).unwrap();
        assert!(token.starts_with("v1."));
        let claims = signer.verify(&token, NOW + 10).unwrap();
        assert_eq!(claims.project_id, grant.project_id);
        assert_eq!(claims.user_id, grant.user_id);
        assert_eq!(claims.platform, Platform::Ios);
        assert_eq!(claims.git_ref.as_deref(), Some("main"));
        assert_eq!((claims.iat, claims.exp), (NOW, NOW + 300));
        assert_eq!(claims.kid, "k1");
        // Every token is unique, even for the same grant at the same second.
        assert_ne!(token, signer.sign(&grant, NOW, 300).unwrap());
    }

    #[test]
    fn changing_any_character_is_rejected() {
        let signer = signer();
        let token = signer.sign(&grant(), NOW, 300).unwrap();
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'z', b'0', b'.', b'-', b'_'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut tampered = bytes.to_vec();
                tampered[i] = replacement;
                let tampered = String::from_utf8(tampered).unwrap();
                let err = signer
                    .verify(&tampered, NOW)
                    .expect_err(&format!("byte {i} -> {}", replacement as char));
                assert_eq!(err.kind(), ErrorKind::TokenInvalid, "byte {i}");
            }
        }
        // Truncations and extensions too.
        for cut in 0..token.len() {
            assert!(
                signer.verify(&token[..cut], NOW).is_err(),
                "prefix of length {cut}"
            );
        }
        assert!(signer.verify(&format!("{token}A"), NOW).is_err());
        assert!(signer.verify(&format!("{token}.x"), NOW).is_err());
    }

    #[test]
    fn expiry_is_reported_only_for_genuine_tokens() {
        let signer = signer();
        let token = signer.sign(&grant(), NOW, 300).unwrap();
        assert!(signer.verify(&token, NOW + 299).is_ok());
        assert_eq!(
            signer.verify(&token, NOW + 300).unwrap_err().kind(),
            ErrorKind::TokenExpired
        );
        let forged = format!("{}x", &token[..token.len() - 1]);
        assert_eq!(
            signer.verify(&forged, NOW + 300).unwrap_err().kind(),
            ErrorKind::TokenInvalid
        );
    }

    #[test]
    fn tokens_from_the_future_are_rejected() {
        let signer = signer();
        let token = signer
            .sign(&grant(), NOW + CLOCK_SKEW_SECONDS + 1, 300)
            .unwrap();
        assert_eq!(
            signer.verify(&token, NOW).unwrap_err().kind(),
            ErrorKind::TokenInvalid
        );
        let skewed = signer
            .sign(&grant(), NOW + CLOCK_SKEW_SECONDS, 300)
            .unwrap();
        assert!(signer.verify(&skewed, NOW).is_ok());
    }

    #[test]
    fn wrong_platform_is_rejected() {
        let signer = signer();
        let token = signer.sign(&grant(), NOW, 300).unwrap();
        assert!(
            signer
                .verify_for_platform(&token, Platform::Ios, NOW)
                .is_ok()
        );
        let err = signer
            .verify_for_platform(&token, Platform::Android, NOW)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TokenInvalid);
    }

    #[test]
    fn rotation_verifies_old_keys_and_signs_with_the_new_one() {
        let old = key("k1", "first-secret-first-secret-first-secret");
        let new = key("k2", "second-secret-second-secret-second-secret");
        let before = PreviewTokenSigner::new(&old, &[]).unwrap();
        let during = PreviewTokenSigner::new(&new, std::slice::from_ref(&old)).unwrap();
        let after = PreviewTokenSigner::new(&new, &[]).unwrap();

        let old_token = before.sign(&grant(), NOW, 300).unwrap();
        assert!(
            during.verify(&old_token, NOW).is_ok(),
            "old tokens verify during rotation"
        );
        let new_token = during.sign(&grant(), NOW, 300).unwrap();
        assert_eq!(during.verify(&new_token, NOW).unwrap().kid, "k2");
        assert!(before.verify(&new_token, NOW).is_err(), "unknown kid");
        assert!(
            after.verify(&old_token, NOW).is_err(),
            "retired key no longer verifies"
        );
    }

    #[test]
    fn a_key_id_with_the_wrong_secret_is_rejected() {
        let genuine = signer();
        let impostor =
            PreviewTokenSigner::new(&key("k1", "guessed-secret-guessed-secret-guessed"), &[])
                .unwrap();
        let forged = impostor.sign(&grant(), NOW, 300).unwrap();
        assert_eq!(
            genuine.verify(&forged, NOW).unwrap_err().kind(),
            ErrorKind::TokenInvalid
        );
    }

    #[test]
    fn oversized_and_garbage_tokens_are_rejected() {
        let signer = signer();
        for garbage in [
            "",
            "v1",
            "v1..",
            "v2.e30.AAAA",
            "v1.e30.AAAA",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                signer.verify(garbage, NOW).unwrap_err().kind(),
                ErrorKind::TokenInvalid,
                "{garbage:.20}"
            );
        }
    }

    /// Signs raw payload bytes, bypassing the encoder, to check what the decoder accepts.
    fn sign_raw(payload: &[u8]) -> String {
        let mut token = format!("v1.{}", URL_SAFE_NO_PAD.encode(payload));
        let mut mac =
            HmacSha256::new_from_slice(b"first-secret-first-secret-first-secret").unwrap();
        mac.update(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        token
    }

    #[test]
    fn validly_signed_but_malformed_payloads_are_rejected() {
        let signer = signer();
        let claims = signer
            .verify(&signer.sign(&grant(), NOW, 300).unwrap(), NOW)
            .unwrap();
        let good = encode_payload(&claims).unwrap();
        assert!(
            signer.verify(&sign_raw(&good), NOW).is_ok(),
            "the raw signer matches"
        );

        let mut trailing = good.clone();
        trailing.push(0);
        let mut bad_platform = good.clone();
        bad_platform[1 + 2 + 32] = 9;
        let mut bad_ref = good.clone();
        let len = bad_ref.len();
        bad_ref[len - 1] = b' ';
        let mut invalid_utf8_ref = good.clone();
        invalid_utf8_ref[len - 1] = 0xff;
        let mut long_ref_len = good.clone();
        long_ref_len[len - 5] = 200;
        let truncated = good[..good.len() - 3].to_vec();
        let mut empty_kid = vec![0u8];
        empty_kid.extend_from_slice(&good[3..]);
        for (name, payload) in [
            ("trailing byte", trailing),
            ("unknown platform", bad_platform),
            ("ref with a space", bad_ref),
            ("ref not UTF-8", invalid_utf8_ref),
            ("ref longer than the payload", long_ref_len),
            ("truncated", truncated),
            ("empty key id", empty_kid),
        ] {
            let err = signer.verify(&sign_raw(&payload), NOW).expect_err(name);
            assert_eq!(err.kind(), ErrorKind::TokenInvalid, "{name}");
        }
    }

    #[test]
    fn tokens_are_short_enough_for_a_qr_code() {
        let token = signer().sign(&grant(), NOW, 300).unwrap();
        assert!(token.len() < 160, "{} characters", token.len());
    }

    #[test]
    fn refs_are_validated() {
        for ok in [
            "main",
            "refs/heads/feature/x",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(validate_ref(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-rf", "a..b", "has space", "tab\t", &"r".repeat(256)] {
            assert!(validate_ref(bad).is_err(), "{bad:?}");
        }
        let bad_grant = PreviewGrant {
            git_ref: Some("--upload-pack=evil".to_owned()),
            ..grant()
        };
        assert!(signer().sign(&bad_grant, NOW, 300).is_err());
    }
}
