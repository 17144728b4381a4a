//! Each source's signature keys: a JWKS from a file, or from an https URL
//! refreshed periodically, with the last good copy kept on disk so that a
//! restart without network still verifies.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use auditsink_parser::signature::KeySet;
use tokio::sync::watch;

use crate::fetch::https_get;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a source's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A local JWKS file, read at start.
    File(PathBuf),
    /// An https URL, fetched at start and every `refresh`.
    Url {
        /// The URL.
        url: String,
        /// Extra CA to trust.
        ca: Option<PathBuf>,
        /// Where the last good copy is kept.
        cache: PathBuf,
        /// Refresh period.
        refresh: Duration,
    },
}

/// Why a source's keys could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read.
    #[error("jwks {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The document is not a usable JWKS.
    #[error("jwks {origin}: {reason}")]
    Invalid {
        /// File or URL.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL could not be fetched and no earlier copy is on disk.
    #[error("jwks {url}: fetch failed ({reason}) and no earlier copy is kept at {cache}")]
    Unavailable {
        /// The URL.
        url: String,
        /// The fetch error.
        reason: String,
        /// Where a copy would be.
        cache: String,
    },
}

/// The current key set of a source, replaceable while requests use it.
#[derive(Debug)]
pub struct SourceKeys {
    current: RwLock<Arc<KeySet>>,
}

impl SourceKeys {
    /// The key set to verify with now.
    pub fn get(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace(&self, keys: KeySet) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }
}

impl JwksSource {
    /// Reads a source's `jwks` setting: an `https://` URL or a file path.
    pub fn from_setting(
        setting: &str,
        ca: Option<PathBuf>,
        data_dir: &Path,
        source: &str,
        refresh: Duration,
    ) -> Self {
        if setting.starts_with("https://") {
            JwksSource::Url {
                url: setting.to_owned(),
                ca,
                cache: data_dir
                    .join("jwks")
                    .join(format!("{}.json", sanitize(source))),
                refresh,
            }
        } else {
            JwksSource::File(PathBuf::from(setting))
        }
    }

    /// Loads the keys at start: the file, or the URL (falling back to the
    /// kept copy when the fetch fails).
    pub async fn load(&self) -> Result<SourceKeys, KeysError> {
        let keys = match self {
            JwksSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| KeysError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                parse(&bytes, &path.display().to_string())?
            }
            JwksSource::Url { url, ca, cache, .. } => {
                match fetch(url, ca.as_deref(), cache).await {
                    Ok(keys) => keys,
                    Err(reason) => {
                        let bytes = std::fs::read(cache).map_err(|_| KeysError::Unavailable {
                            url: url.clone(),
                            reason: reason.clone(),
                            cache: cache.display().to_string(),
                        })?;
                        tracing::warn!(%url, error = %reason, cache = %cache.display(), "jwks fetch failed; using the kept copy");
                        parse(&bytes, &cache.display().to_string())?
                    }
                }
            }
        };
        Ok(SourceKeys {
            current: RwLock::new(Arc::new(keys)),
        })
    }

    /// For a URL, refreshes `keys` every period until `stop` flips; failures
    /// keep the current keys and are logged.
    pub async fn refresh_until(
        self,
        source: String,
        keys: Arc<SourceKeys>,
        mut stop: watch::Receiver<bool>,
    ) {
        let JwksSource::Url {
            url,
            ca,
            cache,
            refresh,
        } = self
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(refresh) => {}
            }
            match fetch(&url, ca.as_deref(), &cache).await {
                Ok(fresh) => {
                    tracing::info!(source = %source, keys = fresh.len(), "jwks refreshed");
                    keys.replace(fresh);
                }
                Err(e) => {
                    tracing::warn!(source = %source, %url, error = %e, "jwks refresh failed; keeping the current keys")
                }
            }
        }
    }
}

/// Fetches and parses; on success keeps the document as the last good copy.
async fn fetch(url: &str, ca: Option<&Path>, cache: &Path) -> Result<KeySet, String> {
    let body = https_get(url, ca, MAX_JWKS_BYTES, FETCH_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let keys = parse(&body, url).map_err(|e| e.to_string())?;
    if let Err(e) = keep_copy(cache, &body) {
        tracing::warn!(cache = %cache.display(), error = %e, "cannot keep a copy of the jwks");
    }
    Ok(keys)
}

fn parse(bytes: &[u8], origin: &str) -> Result<KeySet, KeysError> {
    KeySet::from_jwks(bytes).map_err(|e| KeysError::Invalid {
        origin: origin.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes atomically: a crash mid-write never leaves a torn copy.
fn keep_copy(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A source name as a file name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
