//! `auditsink keygen DIR`: an ED25519 key pair and its JWKS, for tests, the
//! simulator, and senders that sign like Konnect.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditsink_parser::signature::SigningKeyPair;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write `private.key` (base64url secret, mode 0600) and
    /// `jwks.json` (the public key) into. Existing files are not overwritten.
    dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let pair = SigningKeyPair::generate();
    let private = args.dir.join("private.key");
    let jwks = args.dir.join("jwks.json");
    for path in [&private, &jwks] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists; not overwriting a key",
            path.display()
        );
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    file.write_all(format!("{}\n", pair.secret_base64url()).as_bytes())?;
    file.sync_all()?;
    std::fs::write(&jwks, SigningKeyPair::jwks(&[&pair]))
        .with_context(|| format!("cannot write {}", jwks.display()))?;
    println!("kid {}", pair.kid());
    println!("private key: {} (keep it secret)", private.display());
    println!("public JWKS: {}", jwks.display());
    Ok(ExitCode::SUCCESS)
}
