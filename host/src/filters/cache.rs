//! Compiled components on disk, so a second start does not run cranelift.
//!
//! A file's name is a SHA-256 over the engine's compatibility hash (compiler
//! settings, features, wasmtime version) and the component's bytes: a new
//! wasmtime, other engine settings or a rebuilt filter each miss the cache.
//! Loading a compiled artifact runs its machine code, so only files this
//! host wrote are loaded: the directory is created 0700, files are written
//! 0600 then renamed into place, and a file owned by someone else or
//! writable by others is ignored.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the naming or the file format changes.
const CACHE_VERSION: &str = "opzero-filter-cache-v1";

pub struct Cache {
    /// `None` when the directory cannot be used: everything is compiled.
    dir: Option<PathBuf>,
}

/// Whether a component came from the cache or was compiled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cached,
    Compiled,
}

impl Cache {
    pub fn open(dir: &Path) -> Cache {
        match prepare_dir(dir) {
            Ok(()) => Cache {
                dir: Some(dir.to_path_buf()),
            },
            Err(why) => {
                tracing::warn!("not caching compiled filters in {}: {why}", dir.display());
                Cache { dir: None }
            }
        }
    }

    pub fn key(engine: &Engine, wasm: &[u8]) -> String {
        let mut hasher = ShaHasher(Sha256::new());
        hasher.0.update(CACHE_VERSION.as_bytes());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update((wasm.len() as u64).to_le_bytes());
        hasher.0.update(wasm);
        hex::encode(hasher.0.finalize())
    }

    pub fn path_for(&self, key: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key}.cwasm")))
    }

    /// The compiled component for `wasm`, from disk if this host compiled it
    /// before.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, Origin)> {
        let key = Cache::key(engine, wasm);
        let path = self.path_for(&key);
        if let Some(path) = &path
            && let Some(component) = load(engine, path)
        {
            return Ok((component, Origin::Cached));
        }
        let component = Component::new(engine, wasm)?;
        if let Some(path) = &path {
            match component.serialize() {
                Ok(bytes) => {
                    if let Err(e) = write_atomically(path, &bytes) {
                        tracing::warn!("cannot cache compiled filter at {}: {e}", path.display());
                    }
                }
                Err(e) => tracing::warn!("cannot serialize compiled filter: {e}"),
            }
        }
        Ok((component, Origin::Compiled))
    }
}

fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let meta = fs::symlink_metadata(path).ok()?;
    if let Err(why) = trusted(&meta) {
        tracing::warn!("ignoring cached filter {}: {why}", path.display());
        return None;
    }
    // SAFETY: the file is a regular file owned by this user, writable by no
    // one else, in a 0700 directory, and was written by `write_atomically`
    // below from `Component::serialize` output. wasmtime still checks that
    // it was compiled by a compatible engine.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(
                "recompiling: cached filter {} is unusable: {e}",
                path.display()
            );
            let _ = fs::remove_file(path);
            None
        }
    }
}

#[cfg(unix)]
fn prepare_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())?;
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    if meta.uid() != current_uid() {
        return Err("owned by another user".into());
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err("writable by other users".into());
    }
    Ok(())
}

#[cfg(not(unix))]
fn prepare_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())
}

#[cfg(unix)]
fn trusted(meta: &fs::Metadata) -> Result<(), &'static str> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !meta.is_file() {
        return Err("not a regular file");
    }
    if meta.uid() != current_uid() {
        return Err("owned by another user");
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err("readable or writable by other users");
    }
    Ok(())
}

#[cfg(not(unix))]
fn trusted(meta: &fs::Metadata) -> Result<(), &'static str> {
    if meta.is_file() {
        Ok(())
    } else {
        Err("not a regular file")
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Writes beside the target under a unique name, then renames: a reader
/// never sees a partial file, and two hosts starting at once both succeed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("cwasm"),
        std::process::id(),
        hex::encode(nonce)
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Feeds `Hash` output into SHA-256, for a key that is stable across runs.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is used")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_are_private_and_complete() {
        let dir = std::env::temp_dir().join(format!("opzero-cache-test-{}", std::process::id()));
        let cache_dir = dir.join("nested/cache");
        let cache = Cache::open(&cache_dir);
        let path = cache.path_for("abc").unwrap();
        write_atomically(&path, b"hello").unwrap();
        write_atomically(&path, b"again").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&cache_dir), 0o700);
            assert!(trusted(&fs::symlink_metadata(&path).unwrap()).is_ok());
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(trusted(&fs::symlink_metadata(&path).unwrap()).is_err());
        }
        let leftovers: Vec<_> = fs::read_dir(&cache_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
