//! What the embedded default creates on first run: the source token and the
//! self-signed certificate, both kept in the data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

/// A generated token, returned only when it was created by this call, so the
/// caller can show it once.
pub struct NewToken(pub String);

/// Reads `data_dir/token`, or creates it (mode 0600) with a fresh random
/// `Bearer` value. Returns the value and whether it was just generated.
pub fn load_or_generate_token(data_dir: &Path) -> std::io::Result<(String, Option<NewToken>)> {
    let path = data_dir.join("token");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is empty; delete it to generate a new token",
                        path.display()
                    ),
                ));
            }
            Ok((token, None))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let token = format!(
                "Bearer {}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
            );
            write_private(&path, format!("{token}\n").as_bytes())?;
            Ok((token.clone(), Some(NewToken(token))))
        }
        Err(e) => Err(e),
    }
}

/// Paths of the generated certificate and key, created on first use: a
/// self-signed certificate for `localhost`, `127.0.0.1`, `::1` and this
/// machine's host name. Returns whether they were just generated.
pub fn ensure_self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf, bool), SelfSignedError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path, false));
    }
    std::fs::create_dir_all(&dir)?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = host_name() {
        if !names.contains(&host) {
            names.push(host);
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    write_private(&key_path, certified.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certified.cert.pem())?;
    Ok((cert_path, key_path, true))
}

/// Failure to create the self-signed certificate.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// Writing the files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Creates `path` readable by its owner only (0600 on Unix).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
