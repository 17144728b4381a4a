//! `auditsink konnect jwks`: fetches the region's audit-log signing keys
//! (`GET /v2/audit-log-webhook/jwks.json`), checks that they are a usable
//! JWKS, and writes them where a source's `jwks` setting or `auditsink
//! verify --jwks` can read them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditsink_parser::signature::KeySet;
use hyper::Method;

use super::api::Api;

#[derive(clap::Args)]
pub struct Args {
    /// Write the JWKS to this file (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(api: &Api, args: Args) -> anyhow::Result<ExitCode> {
    let path = "/v2/audit-log-webhook/jwks.json";
    let text = api.expect(Method::GET, path, None)?.to_string();
    let keys = KeySet::from_jwks(text.as_bytes())
        .with_context(|| format!("{}{path} is not a usable JWKS", api.base()))?;
    match &args.out {
        Some(file) => {
            std::fs::write(file, format!("{text}\n"))
                .with_context(|| format!("cannot write {}", file.display()))?;
            eprintln!(
                "wrote {} signing key(s) ({}) to {}",
                keys.len(),
                keys.kids().join(", "),
                file.display()
            );
        }
        None => {
            println!("{text}");
            eprintln!("{} signing key(s): {}", keys.len(), keys.kids().join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
