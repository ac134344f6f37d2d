//! What the service stores is private to the account it runs as: the data folder (database,
//! blobs, admin key, scratch) is made `0700`, which keeps every file below it out of other
//! users' reach whatever its own mode, and the `serve` and `worker` processes create files `0600`
//! and folders `0700` (umask 077), so a copy moved elsewhere stays private too.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Creates `dir` if missing and makes it `0700` (a folder left `0755` by an older version is
/// tightened at the next start).
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// From now on this process creates files `0600` and folders `0700`. Only for the long-running
/// service commands: `wick train` and `wick export` write where the user asks, with their umask.
pub fn restrict_new_files() {
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}
