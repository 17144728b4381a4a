//! The signature tests, one file per module under test, sharing the fixtures
//! here: the sample corpus, seeded key pairs, the lines they sign.

use super::batch::{batch_safe, less_than, ELL, P, SMALL_ORDER_Y};
use super::*;
use crate::{LineFormat, SignatureStatus};
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use SignatureStatus::{Invalid, Missing, Unverified, Valid};

const CEF_UNSIGNED: &str =
    "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.1 granted=true";
const JSON_UNSIGNED: &str =
    r#"{"act":"GET","name":"Ingress","query":"{\"a\":\"b\\\"\"}","status":200}"#;

fn corpus_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        manifest.join("../../../shared/corpus"),
        PathBuf::from("/work/shared/corpus"),
    ]
    .into_iter()
    .find(|d| d.join("konnect-sample-jwks.json").is_file())
}

struct Corpus {
    keys: KeySet,
    cef: Vec<Vec<u8>>,
    json: Vec<Vec<u8>>,
}

fn read_lines(path: PathBuf) -> Vec<Vec<u8>> {
    split_lines(&std::fs::read(path).unwrap())
}

fn split_lines(body: &[u8]) -> Vec<Vec<u8>> {
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn corpus() -> Option<Corpus> {
    let Some(dir) = corpus_dir() else {
        println!("skipping: shared corpus not found");
        return None;
    };
    let keys =
        KeySet::from_jwks(&std::fs::read(dir.join("konnect-sample-jwks.json")).unwrap()).unwrap();
    Some(Corpus {
        keys,
        cef: read_lines(dir.join("konnect-sample.cef")),
        json: read_lines(dir.join("konnect-sample.jsonl")),
    })
}

fn payload(line: &str, format: LineFormat) -> Option<(String, String)> {
    let s = signed_payload(line.as_bytes(), format)?;
    Some((
        String::from_utf8(s.payload.into_owned()).unwrap(),
        String::from_utf8(s.sig.to_vec()).unwrap(),
    ))
}

fn keyset(pairs: &[&SigningKeyPair]) -> KeySet {
    KeySet::from_jwks(SigningKeyPair::jwks(pairs).as_bytes()).unwrap()
}

fn seeded(seed: u64) -> SigningKeyPair {
    SigningKeyPair::generate_with(&mut rand::rngs::StdRng::seed_from_u64(seed))
}

mod batch;
mod jwks;
mod payload;
mod sign;
mod verify;
