//! Files that are either completely the old version or completely the new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Write `bytes` to `path` atomically: a temp file in the same directory, fsync, rename over the
/// target, fsync the directory. A crash at any point leaves either the old or the new file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |file, temp| file.write_all(bytes).map_err(|err| Error::io(temp.display(), err)))
}

/// [`write_atomically`] for a writer that streams into the file (Parquet's): `write` fills the temp
/// file (the `&Path` it gets is the temp file's, for its error messages); then fsync, rename over
/// `path`, fsync the directory. A failure removes the temp file and leaves the old one untouched.
pub fn write_atomically_with(path: &Path, write: impl FnOnce(&mut File, &Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|err| Error::io(dir.display(), err))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut file = File::create(&temp).map_err(|err| Error::io(temp.display(), err))?;
        write(&mut file, &temp)?;
        file.sync_all().map_err(|err| Error::io(temp.display(), err))?;
        fs::rename(&temp, path).map_err(|err| Error::io(path.display(), err))?;
        if let Ok(handle) = File::open(dir) {
            let _ = handle.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Remove the temp files that [`write_atomically`] leaves beside `path` when its process is killed
/// between creating and renaming them (`.<name>.tmp-<pid>`; never `path` itself).
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_interrupted_writes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        write_atomically(&state, b"{}").unwrap();
        for stale in [".state.json.tmp-123", ".state.json.tmp-99999"] {
            fs::write(dir.path().join(stale), b"half").unwrap();
        }
        fs::write(dir.path().join(".other.json.tmp-1"), b"keep").unwrap();
        remove_stale_temps(&state);
        let mut left: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".other.json.tmp-1", "state.json"]);
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"first version, longer").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
