//! `auditsink keygen DIR`: an ED25519 key pair and its JWKS, for tests, the
//! simulator, and senders that sign like Konnect. The key directory layout
//! (`private.key`, `jwks.json`) is defined here, once: `simulate` reads and
//! creates keys through [`load`] and [`create`].

use std::io::Write;
use std::path::{Path, PathBuf};
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
    let pair = create(&args.dir)?;
    println!("kid {}", pair.kid());
    println!(
        "private key: {} (keep it secret)",
        private_path(&args.dir).display()
    );
    println!("public JWKS: {}", jwks_path(&args.dir).display());
    Ok(ExitCode::SUCCESS)
}

/// `DIR/private.key`: the base64url secret key and a newline, mode 0600.
pub fn private_path(dir: &Path) -> PathBuf {
    dir.join("private.key")
}

/// `DIR/jwks.json`: the public key as a JWKS document.
pub fn jwks_path(dir: &Path) -> PathBuf {
    dir.join("jwks.json")
}

/// The key pair in `dir`, or `None` when it holds no `private.key`.
pub fn load(dir: &Path) -> anyhow::Result<Option<SigningKeyPair>> {
    let private = private_path(dir);
    let text = match std::fs::read_to_string(&private) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", private.display())),
    };
    let pair = SigningKeyPair::from_secret_base64url(&text).with_context(|| {
        format!(
            "{} is not a key written by auditsink keygen",
            private.display()
        )
    })?;
    Ok(Some(pair))
}

/// Generates a key pair and writes it into `dir` (created if needed):
/// `private.key` (mode 0600, synced) and `jwks.json`. Never overwrites
/// either file.
pub fn create(dir: &Path) -> anyhow::Result<SigningKeyPair> {
    let (private, jwks) = (private_path(dir), jwks_path(dir));
    anyhow::ensure!(
        !private.exists(),
        "{} exists; not overwriting a key",
        private.display()
    );
    anyhow::ensure!(
        !jwks.exists(),
        "{} exists without {}; not overwriting it (use another directory)",
        jwks.display(),
        private.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pair = SigningKeyPair::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    file.write_all(format!("{}\n", pair.secret_base64url()).as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", private.display()))?;
    std::fs::write(&jwks, SigningKeyPair::jwks(&[&pair]))
        .with_context(|| format!("cannot write {}", jwks.display()))?;
    Ok(pair)
}
