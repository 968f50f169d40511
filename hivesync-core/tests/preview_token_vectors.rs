//! The shared test vectors in `testdata/preview-token-vectors.json`: every case must verify (or
//! fail) exactly as the file says. The Node and Python bindings check the same file.

use std::path::PathBuf;

use hivesync_core::ErrorKind;
use hivesync_core::config::PreviewKey;
use hivesync_core::domain::{Platform, ProjectId, UserId};
use hivesync_core::preview_token::{PreviewClaims, PreviewTokenSigner};
use hivesync_core::secret::Secret;
use serde_json::{Value, json};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/preview-token-vectors.json")
}

fn key(kid: &str, secret: &str) -> PreviewKey {
    PreviewKey {
        id: kid.to_owned(),
        secret: Secret::new(secret),
    }
}

/// The verifier the file describes: its first key signs, all verify.
fn verifier(vectors: &Value) -> PreviewTokenSigner {
    let keys: Vec<PreviewKey> = vectors["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| key(k["kid"].as_str().unwrap(), k["secret"].as_str().unwrap()))
        .collect();
    PreviewTokenSigner::new(&keys[0], &keys[1..]).unwrap()
}

#[test]
fn every_vector_verifies_as_documented() {
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    let signer = verifier(&vectors);
    let now = vectors["now"].as_i64().unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "the file has all its cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let token = case["token"].as_str().unwrap();
        let outcome = match case["platform"].as_str() {
            Some(platform) => signer.verify_for_platform(token, platform.parse().unwrap(), now),
            None => signer.verify(token, now),
        };
        match case["expect"].as_str().unwrap() {
            "valid" => {
                let claims = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    serde_json::to_value(&claims).unwrap(),
                    case["claims"],
                    "{name}"
                );
            }
            "expired" => assert_eq!(
                outcome.unwrap_err().kind(),
                ErrorKind::TokenExpired,
                "{name}"
            ),
            "invalid" => assert_eq!(
                outcome.unwrap_err().kind(),
                ErrorKind::TokenInvalid,
                "{name}"
            ),
            other => panic!("{name}: unknown expectation {other}"),
        }
    }
}

/// Rewrites the vector file. Run by hand after a deliberate format change:
/// `cargo test -p hivesync-core --test preview_token_vectors -- --ignored --exact regenerate_vectors`
#[test]
#[ignore = "writes testdata/preview-token-vectors.json"]
fn regenerate_vectors() {
    const NOW: i64 = 1_800_000_000;
    let current = key("k2", "hivesync-test-vector-secret-current-0001");
    let previous = key("k1", "hivesync-test-vector-secret-previous-001");
    let impostor = key("k2", "hivesync-test-vector-secret-impostor-001");
    let unknown = key("k9", "hivesync-test-vector-secret-unknown-0001");
    let signer = PreviewTokenSigner::new(&current, std::slice::from_ref(&previous)).unwrap();
    let old_signer = PreviewTokenSigner::new(&previous, &[]).unwrap();
    let impostor_signer = PreviewTokenSigner::new(&impostor, &[]).unwrap();
    let unknown_signer = PreviewTokenSigner::new(&unknown, &[]).unwrap();

    let claims = |kid: &str,
                  iat: i64,
                  exp: i64,
                  git_ref: Option<&str>,
                  platform: Platform,
                  jti: &str| PreviewClaims {
        kid: kid.to_owned(),
        project_id: ProjectId::from_uuid("0190f3a4-1b2c-7d3e-8f40-5a6b7c8d9e0f".parse().unwrap()),
        user_id: UserId::from_uuid("0190f3a4-2222-7333-8444-555566667777".parse().unwrap()),
        platform,
        iat,
        exp,
        git_ref: git_ref.map(str::to_owned),
        jti: jti.to_owned(),
    };
    let valid = claims(
        "k2",
        NOW - 60,
        NOW + 240,
        Some("main"),
        Platform::Ios,
        "dmVjdG9yLXZhbGlk",
    );
    let valid_token = signer.encode(&valid).unwrap();
    let no_ref = claims(
        "k2",
        NOW - 10,
        NOW + 290,
        None,
        Platform::Android,
        "dmVjdG9yLW5vcmVm",
    );
    let rotated = claims(
        "k1",
        NOW - 100,
        NOW + 200,
        Some("refs/heads/feature/x"),
        Platform::Ios,
        "dmVjdG9yLW9sZGsx",
    );

    let (head, signature) = valid_token.rsplit_once('.').unwrap();
    let mut tampered_payload = valid.clone();
    tampered_payload.platform = Platform::Android;
    let forged_payload = {
        let reencoded = signer.encode(&tampered_payload).unwrap();
        let (forged_head, _) = reencoded.rsplit_once('.').unwrap();
        format!("{forged_head}.{signature}")
    };
    let flipped_signature = {
        let mut sig = signature.to_owned().into_bytes();
        sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
        format!("{head}.{}", String::from_utf8(sig).unwrap())
    };

    let mut cases = vec![
        json!({"name": "valid", "expect": "valid", "token": valid_token, "claims": valid}),
        json!({"name": "valid without ref", "expect": "valid", "token": signer.encode(&no_ref).unwrap(), "claims": no_ref}),
        json!({"name": "valid, signed by the previous key", "expect": "valid", "token": old_signer.encode(&rotated).unwrap(), "claims": rotated}),
        json!({"name": "valid, platform checked", "expect": "valid", "platform": "ios", "token": valid_token, "claims": valid}),
        json!({"name": "expired", "expect": "expired",
               "token": signer.encode(&claims("k2", NOW - 400, NOW - 100, Some("main"), Platform::Ios, "dmVjdG9yLWV4cGly")).unwrap()}),
        json!({"name": "expires exactly now", "expect": "expired",
               "token": signer.encode(&claims("k2", NOW - 300, NOW, None, Platform::Ios, "dmVjdG9yLWVkZ2Uh")).unwrap()}),
        json!({"name": "wrong platform", "expect": "invalid", "platform": "android", "token": valid_token}),
        json!({"name": "tampered payload", "expect": "invalid", "token": forged_payload}),
        json!({"name": "tampered signature", "expect": "invalid", "token": flipped_signature}),
        json!({"name": "wrong key for the key id", "expect": "invalid", "token": impostor_signer.encode(&valid).unwrap()}),
        json!({"name": "unknown key id", "expect": "invalid",
               "token": unknown_signer.encode(&claims("k9", NOW, NOW + 300, None, Platform::Ios, "dmVjdG9yLXVua25v")).unwrap()}),
        json!({"name": "issued in the future", "expect": "invalid",
               "token": signer.encode(&claims("k2", NOW + 3600, NOW + 3900, None, Platform::Ios, "dmVjdG9yLWZ1dHVy")).unwrap()}),
        json!({"name": "wrong version prefix", "expect": "invalid", "token": format!("v2{}", &valid_token[2..])}),
        json!({"name": "padded base64", "expect": "invalid", "token": format!("{head}=.{signature}")}),
        json!({"name": "missing signature", "expect": "invalid", "token": format!("{head}.")}),
        json!({"name": "not a token", "expect": "invalid", "token": "hello"}),
    ];
    // Expected failures carry no claims; only valid cases do.
    for case in &mut cases {
        if case["expect"] != "valid" {
            case.as_object_mut().unwrap().remove("claims");
        }
    }
    let file = json!({
        "description": "HiveSync preview-token test vectors; see docs/preview-token.md. Verify each token at `now` with all `keys` (the first one signs). When a case has `platform`, the token must also be for that platform.",
        "format": "v1.<base64url(binary payload)>.<base64url(HMAC-SHA256(secret of the payload's kid, ASCII \"v1.\" + payload part))>; the payload layout is in docs/preview-token.md",
        "now": NOW,
        "keys": [
            {"kid": current.id, "secret": current.secret.expose()},
            {"kid": previous.id, "secret": previous.secret.expose()},
        ],
        "cases": cases,
    });
    std::fs::write(
        vectors_path(),
        serde_json::to_string_pretty(&file).unwrap() + "\n",
    )
    .unwrap();
}
