//! Which paths of the admin listener are the console's.

/// Whether `path` is one of the console's.
pub(crate) fn is_console_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/search" | "/quarantine" | "/quarantine/reprocess"
    ) || path.starts_with("/event/")
        || path.starts_with("/assets/")
}
