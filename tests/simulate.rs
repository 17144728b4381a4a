//! `auditsink simulate`: signed events that verify with their own JWKS, the
//! same events for one seed whatever the format, and Konnect's shapes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{run_bin, BIN};
use serde_json::Value;

fn simulate(keys: &Path, args: &[&str]) -> String {
    let mut all = vec!["simulate", "--jwks-dir", keys.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_bin(&all, b"");
    assert_eq!(code, 0, "{stderr}");
    stdout
}

/// `auditsink parse` of `lines`: one normalized event per line.
fn parse(lines: &str) -> Vec<Value> {
    let (code, stdout, stderr) = run_bin(&["parse"], lines.as_bytes());
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn simulated_events_verify_with_their_own_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let jwks = keys.join("jwks.json");
    for format in ["cef", "json", "mixed"] {
        let lines = simulate(&keys, &["-n", "300", "--format", format]);
        assert_eq!(lines.lines().count(), 300);
        let (code, stdout, stderr) = run_bin(
            &["verify", "--jwks", jwks.to_str().unwrap()],
            lines.as_bytes(),
        );
        assert_eq!(code, 0, "{format}: {stderr}");
        assert_eq!(
            stdout.lines().filter(|l| l.ends_with(" valid")).count(),
            300
        );
        assert!(
            stderr.contains("lines=300 valid=300 invalid=0 missing=0"),
            "{stderr}"
        );
    }
    // A key written by `auditsink keygen` is used as is.
    let keygen_dir = dir.path().join("keygen");
    let output = Command::new(BIN)
        .arg("keygen")
        .arg(&keygen_dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    let (code, lines, stderr) = run_bin(
        &[
            "simulate",
            "--jwks-dir",
            keygen_dir.to_str().unwrap(),
            "-n",
            "20",
        ],
        b"",
    );
    assert_eq!(code, 0);
    assert!(!stderr.contains("generated"), "{stderr}");
    let keygen_jwks = keygen_dir.join("jwks.json");
    let (code, _, _) = run_bin(
        &["verify", "--jwks", keygen_jwks.to_str().unwrap()],
        lines.as_bytes(),
    );
    assert_eq!(code, 0);
}

#[test]
fn a_key_is_generated_when_the_directory_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("new-keys");
    let args = ["simulate", "--jwks-dir", keys.to_str().unwrap(), "-n", "5"];
    let (code, first, stderr) = run_bin(&args, b"");
    assert_eq!(code, 0);
    assert!(stderr.contains("generated"), "{stderr}");
    assert!(keys.join("jwks.json").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("private.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, second, stderr) = run_bin(&args, b"");
    assert_eq!(code, 0);
    assert!(stderr.is_empty(), "the key is reused: {stderr}");
    assert_eq!(first, second, "same key, same seed: same lines");

    // A jwks.json without its private key is not overwritten.
    let orphan = dir.path().join("orphan");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("jwks.json"), "{}").unwrap();
    let (code, _, stderr) = run_bin(&["simulate", "--jwks-dir", orphan.to_str().unwrap()], b"");
    assert_eq!(code, 2);
    assert!(stderr.contains("private.key"), "{stderr}");
}

/// The normalized fields that must not depend on the format (docs/EVENT_SCHEMA.md, "Equivalence").
fn format_free(event: &Value) -> Value {
    let keys = [
        "timestamp",
        "cef_version",
        "vendor",
        "product",
        "product_version",
        "event_class_id",
        "name",
        "severity",
        "fields",
    ];
    keys.iter()
        .map(|k| (k.to_string(), event[k].clone()))
        .collect()
}

#[test]
fn one_seed_gives_the_same_events_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    for portal in [false, true] {
        let mut args = vec!["-n", "400", "--seed", "42"];
        if portal {
            args.push("--portal");
        }
        let with = |format: &str| {
            let mut a = args.clone();
            a.extend(["--format", format]);
            simulate(&keys, &a)
        };
        let (cef, json, mixed) = (with("cef"), with("json"), with("mixed"));
        assert_eq!(cef, with("cef"), "deterministic");
        let (cef, json, mixed) = (parse(&cef), parse(&json), parse(&mixed));
        assert_eq!(cef.len(), 400);
        let mut formats = BTreeSet::new();
        for ((c, j), m) in cef.iter().zip(&json).zip(&mixed) {
            assert_eq!(c["format"], "cef", "{c}");
            assert_eq!(j["format"], "json", "{j}");
            assert!(c.get("warnings").is_none() && j.get("warnings").is_none());
            assert_eq!(
                format_free(c),
                format_free(j),
                "\n{}\n{}",
                c["raw"],
                j["raw"]
            );
            assert_eq!(format_free(c), format_free(m));
            formats.insert(m["format"].as_str().unwrap().to_owned());
        }
        assert_eq!(formats.len(), 2, "mixed has both formats");
    }
    let other = parse(&simulate(&keys, &["-n", "400", "--seed", "43"]));
    let first = parse(&simulate(&keys, &["-n", "400", "--seed", "42"]));
    assert_ne!(format_free(&other[0]), format_free(&first[0]));
}

#[test]
fn events_look_like_konnect_ones() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let cef = simulate(&keys, &["-n", "500", "--org", "my-org"]);
    let json = simulate(&keys, &["-n", "500", "--org", "my-org", "--format", "json"]);

    // CEF: both prefix shapes, user agents with spaces, every kind.
    let rfc3164 = regex_like_prefix(&cef, |l| l.as_bytes()[3] == b' ');
    let rfc3339 = regex_like_prefix(&cef, |l| l.as_bytes()[4] == b'-');
    assert!(rfc3164 > 50 && rfc3339 > 50, "{rfc3164} {rfc3339}");
    assert!(cef
        .lines()
        .all(|l| l.contains(" konghq.com CEF:0|KongInc|Konnect|1.0|")));
    assert!(cef.contains("user_agent=kong-cli/3.1 (linux; amd64) rt="));
    assert!(cef.contains(r"query=filter[name]\=prod&page[size]\=10 "));
    for kind in [
        "|KongGateway|Ingress|1|",
        "|konnect|Authz.",
        "|AUTHENTICATION_TYPE_",
    ] {
        assert!(cef.contains(kind), "{kind}");
    }
    let events = parse(&cef);
    assert!(events.iter().all(|e| e["fields"]["org_id"] == "my-org"));
    let sigs: BTreeSet<_> = events.iter().map(|e| e["sig"].as_str().unwrap()).collect();
    assert_eq!(sigs.len(), 500, "every event is unique");

    // JSON: keys sorted with sig last, the types Kong's examples show:
    // `rt` a string or a number, `cef_version` a number or a string.
    let (mut rt_types, mut version_types) = (BTreeSet::new(), BTreeSet::new());
    for line in json.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let object = value.as_object().unwrap();
        let keys: Vec<&String> = object.keys().collect();
        assert_eq!(keys.last().unwrap().as_str(), "sig");
        let mut sorted = keys[..keys.len() - 1].to_vec();
        sorted.sort();
        assert_eq!(sorted, keys[..keys.len() - 1]);
        let rt = &object["rt"];
        assert!(rt.is_u64() || rt.as_str().is_some_and(|t| t.parse::<u64>().is_ok()));
        rt_types.insert(rt.is_string());
        let version = &object["cef_version"];
        assert!(version == 0 || version == "0", "{line}");
        version_types.insert(version.is_string());
        assert!(object["trace_id"].is_u64(), "{line}");
        assert!(object["severity"].is_u64());
        assert!(object["kong_initiated"].is_boolean());
        assert_eq!(object["org_id"], "my-org");
        if let Some(success) = object.get("success") {
            assert!(success == "true" || success == "false", "{line}");
        }
        if let Some(granted) = object.get("granted") {
            assert!(granted.is_boolean());
        }
        if let Some(status) = object.get("status") {
            assert!(status.is_u64() && object["query"].is_string());
        }
    }
    assert_eq!(rt_types.len(), 2, "rt as a string and as a number");
    assert_eq!(
        version_types.len(),
        2,
        "cef_version as a number and as a string"
    );
    let big_trace = json.lines().any(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        v["trace_id"].as_u64().unwrap() > 1 << 53
    });
    assert!(big_trace);
    assert!(json.contains(r#""success":"true""#));
    assert!(json.contains(r#""query":"filter[name]=prod&page[size]=10""#));

    // Dev Portal: product Dev-Portal and a portal_id on every event; some
    // authorization events with an empty value (`actor_id=`).
    let portal_cef = simulate(&keys, &["-n", "100", "--portal"]);
    assert!(portal_cef.contains(" actor_id= kong_initiated="));
    let portal = parse(&portal_cef);
    assert!(portal
        .iter()
        .all(|e| e["product"] == "Dev-Portal" && e["fields"]["portal_id"].is_string()));
    assert!(portal.iter().any(|e| e["fields"]["actor_id"] == ""));
}

/// What kind of event a normalized event is, and which fields it carries of
/// which JSON type: `(product, kind, [(field, type)])`.
fn shape(event: &Value) -> (String, String, Vec<(String, &'static str)>) {
    let class = event["event_class_id"].as_str().unwrap();
    let kind = if class.starts_with("AUTHENTICATION_TYPE_") {
        "authentication"
    } else {
        class
    };
    let fields = event["fields"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "actor_id")
        .map(|(k, v)| {
            let kind = match v {
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                _ => "other",
            };
            (k.clone(), kind)
        });
    let mut fields: Vec<_> = fields.collect();
    fields.sort();
    (
        event["product"].as_str().unwrap().to_owned(),
        kind.to_owned(),
        fields,
    )
}

/// The simulator makes the events of the shared Konnect sample: the same
/// kinds with the same fields of the same normalized types, in both formats.
#[test]
fn simulated_shapes_are_the_shared_samples_shapes() {
    let (Some(cef), Some(jsonl)) = (
        common::corpus("konnect-sample.cef"),
        common::corpus("konnect-sample.jsonl"),
    ) else {
        return;
    };
    let mut sample = std::fs::read_to_string(cef).unwrap();
    sample.push_str(&std::fs::read_to_string(jsonl).unwrap());
    let sample: BTreeSet<_> = parse(&sample).iter().map(shape).collect();

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut simulated = simulate(&keys, &["-n", "1000", "--format", "mixed"]);
    simulated.push_str(&simulate(
        &keys,
        &["-n", "1000", "--format", "mixed", "--portal"],
    ));
    let simulated: BTreeSet<_> = parse(&simulated).iter().map(shape).collect();
    let only_sample: Vec<_> = sample.difference(&simulated).collect();
    let only_simulated: Vec<_> = simulated.difference(&sample).collect();
    assert!(only_sample.is_empty(), "not simulated: {only_sample:?}");
    assert!(
        only_simulated.is_empty(),
        "not in the sample: {only_simulated:?}"
    );
}

fn regex_like_prefix(lines: &str, test: impl Fn(&str) -> bool) -> usize {
    lines.lines().filter(|l| test(l)).count()
}
