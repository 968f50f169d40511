//! Preview tokens: sign and verify, against HMAC-SHA256 over the same bytes.
//!
//! `cargo bench -p hivesync-benches --bench tokens`. Goal: verify ≤ 2× raw HMAC.
//!
//! Two baselines: `raw_hmac` computes HMAC(key, bytes) from scratch, as a plain implementation
//! would; `keyed_hmac` starts from a key schedule computed once, as `verify` does, so it is the
//! MAC work alone and the ratio against it is the cost of everything else.

use std::hint::black_box;

use criterion::Criterion;
use hivesync_benches::print_ratio;
use hivesync_core::config::PreviewKey;
use hivesync_core::domain::{Platform, ProjectId, UserId};
use hivesync_core::preview_token::{PreviewGrant, PreviewTokenSigner};
use hivesync_core::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const SECRET: &str = "benchmark-secret-benchmark-secret-0001";
const NOW: i64 = 1_800_000_000;

fn main() {
    let mut criterion = Criterion::default()
        .output_directory(&hivesync_benches::criterion_dir())
        .configure_from_args();

    let key = PreviewKey {
        id: "k1".to_owned(),
        secret: Secret::new(SECRET),
    };
    let signer = PreviewTokenSigner::new(&key, &[]).unwrap();
    let grant = PreviewGrant {
        project_id: ProjectId::new(),
        user_id: UserId::new(),
        platform: Platform::Ios,
        git_ref: Some("main".to_owned()),
    };
    let token = signer.sign(&grant, NOW, 300).unwrap();
    // The bytes the MAC covers: "v1.<payload>".
    let signed_part = token.rsplit_once('.').unwrap().0.as_bytes().to_vec();
    println!(
        "token: {} bytes, MAC input: {} bytes",
        token.len(),
        signed_part.len()
    );

    let mut group = criterion.benchmark_group("preview_token");
    group.bench_function("raw_hmac", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(black_box(&signed_part));
            black_box(mac.finalize().into_bytes())
        })
    });
    let keyed = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    group.bench_function("keyed_hmac", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(&signed_part));
            black_box(mac.finalize().into_bytes())
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| black_box(signer.verify(black_box(&token), NOW).unwrap()))
    });
    group.bench_function("sign", |b| {
        b.iter(|| black_box(signer.sign(black_box(&grant), NOW, 300).unwrap()))
    });
    group.finish();
    criterion.final_summary();

    let verify = print_ratio(
        "preview token verify",
        "preview_token",
        "verify",
        "raw_hmac",
    );
    print_ratio(
        "preview token verify",
        "preview_token",
        "verify",
        "keyed_hmac",
    );
    print_ratio("preview token sign", "preview_token", "sign", "raw_hmac");
    if let Some(ratio) = verify {
        println!(
            "GOAL verify <= 2.00x raw_hmac: {}",
            if ratio <= 2.0 { "met" } else { "NOT met" }
        );
    }
}
