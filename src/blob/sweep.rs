//! Leftovers of interrupted uploads. A streamed write to the local store goes to a staging file
//! beside its destination (`<key>#<n>`, `object_store`'s naming) and is renamed into place when
//! it completes; a process killed mid-upload leaves the staging file behind, unreferenced. At
//! start-up those older than a grace period (another process sharing the folder may be writing
//! one right now, touching it as it goes) are deleted.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long a staging file must have been left untouched before a start-up deletes it.
pub const GRACE: Duration = Duration::from_secs(15 * 60);

/// Deletes the staging files under `dir` not modified for `min_age`; returns how many and their
/// bytes. Keys never contain `#` (ids are letters and digits), so a name ending in `#` and digits
/// is always a staging file.
pub fn sweep_partial_uploads(dir: &Path, min_age: Duration) -> std::io::Result<(usize, u64)> {
    let mut swept = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(swept);
    };
    let now = SystemTime::now();
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        let path = entry.path();
        if meta.is_dir() {
            let (n, bytes) = sweep_partial_uploads(&path, min_age)?;
            swept = (swept.0 + n, swept.1 + bytes);
        } else if is_staging_name(&entry.file_name().to_string_lossy())
            && meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age)
        {
            std::fs::remove_file(&path)?;
            swept = (swept.0 + 1, swept.1 + meta.len());
        }
    }
    Ok(swept)
}

fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(key, n)| {
        !key.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_staging_files_go_and_everything_else_stays() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files").join("org-1");
        std::fs::create_dir_all(&files).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        let write = |name: &str, age: Option<SystemTime>| {
            let path = files.join(name);
            std::fs::write(&path, b"partial").unwrap();
            if let Some(t) = age {
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
            path
        };
        let stale = write("file-a#1", Some(old));
        let fresh = write("file-b#3", None);
        let whole = write("file-c", Some(old));
        let odd = write("notes#draft", Some(old));
        assert_eq!(sweep_partial_uploads(dir.path(), GRACE).unwrap(), (1, 7));
        assert!(!stale.exists() && fresh.exists() && whole.exists() && odd.exists());
        assert_eq!(
            sweep_partial_uploads(&dir.path().join("missing"), GRACE).unwrap(),
            (0, 0)
        );
    }
}
