//! Files both ways. From the phone, a message's files are written to this
//! session's inbox and Claude gets their paths in the message's meta; to
//! the phone, a reply's files are copied into the outbox when Claude calls
//! the tool, and served by `GET /files/<id>`.
//!
//! Both live in `$OPZERO_HOME/files/<session>/`, 0700, each file 0600 from
//! its creation, and go when the host exits.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use rustix::io::Errno;
use serde::Serialize;

use crate::config::Limits;
use crate::meta::Meta;
use crate::private;

/// A file from the phone, decoded, not yet written.
#[derive(Debug)]
pub struct Upload {
    pub name: String,
    pub mime: Option<String>,
    pub bytes: Bytes,
}

/// A reply's file, copied into the outbox, as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub size: u64,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Files written by one call, removed again by [`Written::remove`] when
/// what they came with is not delivered.
#[derive(Debug, Default)]
pub struct Written(Vec<PathBuf>);

impl Written {
    pub fn remove(self) {
        for path in self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

pub struct Files {
    /// `$OPZERO_HOME/files/<session>`.
    dir: PathBuf,
    reach: Reach,
    seq: AtomicU64,
    served: Mutex<HashMap<String, Outgoing>>,
}

/// The meta keys only the host sets: a phone's are dropped.
pub fn is_reserved_key(key: &str) -> bool {
    matches!(key, "image_path" | "file_path" | "file_count")
        || key.strip_prefix("file_path_").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A file name that is safe as one path component and inside a
/// `<channel k="v">` attribute: no separators, no leading dot, no control
/// or bidi characters, none of `<>[]"`, at most 100 characters and 200
/// bytes (the extension kept), never empty.
pub fn sanitize(name: &str) -> String {
    const MAX_CHARS: usize = 100;
    const MAX_BYTES: usize = 200;
    let cleaned: String = name
        .chars()
        .filter_map(|c| match c {
            '/' | '\\' => Some('_'),
            '<' | '>' | '[' | ']' | '"' => None,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' => None,
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    if trimmed.is_empty() {
        return "file".into();
    }
    let fits = |s: &str| s.chars().count() <= MAX_CHARS && s.len() <= MAX_BYTES;
    if fits(trimmed) {
        return trimmed.to_string();
    }
    let (stem, ext) = match trimmed.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.chars().count() <= 16 => (stem, Some(ext)),
        _ => (trimmed, None),
    };
    let room = ext.map_or(0, |e| e.len() + 1);
    let mut out = String::new();
    for c in stem.chars() {
        if out.chars().count() + 1 + ext.map_or(0, |e| e.chars().count() + 1) > MAX_CHARS
            || out.len() + c.len_utf8() + room > MAX_BYTES
        {
            break;
        }
        out.push(c);
    }
    if let Some(ext) = ext {
        out.push('.');
        out.push_str(ext);
    }
    out
}

/// A file's type from its name, or `application/octet-stream`.
pub fn mime_of(name: &str) -> String {
    mime_guess::from_path(name).first_raw().unwrap_or("application/octet-stream").to_string()
}

/// Whether files of these names and sizes are within `limits`; a refusal
/// names the limit.
pub fn check<'a>(limits: &Limits, files: impl ExactSizeIterator<Item = (&'a str, u64)>) -> Result<(), String> {
    if files.len() > limits.max_files {
        return Err(format!(
            "{} files; the limit is {} (limits.max_files)",
            files.len(),
            limits.max_files
        ));
    }
    let sizes = files.map(|(name, size)| check_one(limits, name, size).map(|()| size));
    let total: u64 = sizes.sum::<Result<_, _>>()?;
    if total > limits.max_files_bytes {
        return Err(format!(
            "the files total {total} bytes; the limit is {} (limits.max_files_bytes)",
            limits.max_files_bytes
        ));
    }
    Ok(())
}

pub fn check_one(limits: &Limits, name: &str, size: u64) -> Result<(), String> {
    if size > limits.max_file_bytes {
        return Err(format!(
            "file {name:?} is {size} bytes; the limit is {} (limits.max_file_bytes)",
            limits.max_file_bytes
        ));
    }
    Ok(())
}

/// Creates `path` for writing, 0600, failing if anything is there.
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

impl Files {
    /// Nothing is created until a file comes; what a previous host of this
    /// session left behind (if it was killed) is removed.
    pub fn new(dir: PathBuf, reach: Reach) -> Files {
        let _ = fs::remove_dir_all(&dir);
        Files { dir, reach, seq: AtomicU64::new(0), served: Mutex::default() }
    }

    fn subdir(&self, name: &str) -> io::Result<PathBuf> {
        let dir = self.dir.join(name);
        private::create_dir(&dir)?;
        Ok(dir)
    }

    /// Writes a message's files to the inbox, each as `<n>-<name>`, and
    /// returns the meta that tells Claude where they are. On an error,
    /// nothing is left written.
    pub fn receive(&self, uploads: Vec<Upload>) -> io::Result<(Meta, Written)> {
        let mut meta = Meta::new();
        let mut written = Written::default();
        if uploads.is_empty() {
            return Ok((meta, written));
        }
        let inbox = self.subdir("inbox")?;
        let count = uploads.len();
        for (i, upload) in uploads.into_iter().enumerate() {
            let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let path = inbox.join(format!("{n}-{}", sanitize(&upload.name)));
            let result = create_private(&path).and_then(|mut f| {
                written.0.push(path.clone());
                f.write_all(&upload.bytes)
            });
            if let Err(e) = result {
                written.remove();
                return Err(e);
            }
            let shown = path.display().to_string();
            let mime = upload.mime.unwrap_or_else(|| mime_of(&upload.name));
            match count {
                1 if mime.starts_with("image/") => meta.insert("image_path".into(), shown),
                1 => meta.insert("file_path".into(), shown),
                _ => meta.insert(format!("file_path_{}", i + 1), shown),
            };
        }
        if count > 1 {
            meta.insert("file_count".into(), count.to_string());
        }
        Ok((meta, written))
    }

    /// Copies the files a reply names into the outbox, as they are now.
    /// A refusal names the file; then nothing is left in the outbox.
    pub fn send(&self, paths: &[String], limits: &Limits) -> Result<Vec<Outgoing>, String> {
        // Too many are refused before any is opened; then sizes, as for an inject.
        check(limits, paths.iter().map(|p| (p.as_str(), 0)))?;
        let sources = paths.iter().map(|p| self.open_source(p, limits)).collect::<Result<Vec<_>, _>>()?;
        check(limits, paths.iter().zip(&sources).map(|(p, (_, size))| (p.as_str(), *size)))?;
        let outbox = self.subdir("outbox").map_err(|e| format!("cannot create the outbox: {e}"))?;
        let mut copied: Vec<Outgoing> = Vec::new();
        for (p, (file, _)) in paths.iter().zip(sources) {
            match self.copy(&outbox, p, file, limits) {
                Ok(out) => copied.push(out),
                Err(e) => {
                    Self::discard(copied);
                    return Err(e);
                }
            }
        }
        Ok(copied)
    }

    fn open_source(&self, p: &str, limits: &Limits) -> Result<(File, u64), String> {
        let (file, size) = self.reach.open(p)?;
        check_one(limits, p, size)?;
        Ok((file, size))
    }

    fn copy(&self, outbox: &Path, p: &str, file: File, limits: &Limits) -> Result<Outgoing, String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = outbox.join(&id);
        let name = sanitize(Path::new(p).file_name().map_or("file".into(), |n| n.to_string_lossy()).as_ref());
        let size = create_private(&path)
            .and_then(|mut out| {
                // A file that grew since it was checked is cut at the limit + 1.
                io::copy(&mut file.take(limits.max_file_bytes + 1), &mut out)
            })
            .map_err(|e| format!("file {p:?}: cannot copy it: {e}"))
            .and_then(|size| check_one(limits, p, size).map(|()| size))
            .inspect_err(|_| {
                let _ = fs::remove_file(&path);
            })?;
        Ok(Outgoing { id, mime: mime_of(&name), name, size, path })
    }

    /// Copies that will not be sent.
    pub fn discard(files: Vec<Outgoing>) {
        for f in files {
            let _ = fs::remove_file(f.path);
        }
    }

    /// Makes a sent reply's files available to `GET /files/<id>`.
    pub fn serve(&self, files: &[Outgoing]) {
        self.served.lock().unwrap().extend(files.iter().map(|f| (f.id.clone(), f.clone())));
    }

    pub fn get(&self, id: &str) -> Option<Outgoing> {
        self.served.lock().unwrap().get(id).cloned()
    }

    /// Removes the inbox and the outbox: the host is exiting.
    pub fn remove_all(&self) {
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), "could not remove the session's files: {e}");
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Never sent, whatever the roots: the kernel's views of processes (their
/// environments, say), of the system, and devices.
const NEVER_SENT: [&str; 3] = ["/proc", "/sys", "/dev"];
/// `fstatfs` type of sysfs (rustix names procfs's only).
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// Where a reply's files may come from: below a root (Claude's working
/// directory, the system temporary directory, `[files] send_from`), never
/// from the host's state directories by any name, and never from `/proc`,
/// `/sys` or `/dev`. Each file is opened below its root by the kernel
/// (`openat2` with `RESOLVE_BENEATH`, so `..` and symlinks cannot lead out),
/// without blocking, and every check after that is made on what was opened.
pub struct Reach {
    /// Each root as named, with a label for messages.
    roots: Vec<(PathBuf, &'static str)>,
    state_dirs: Vec<PathBuf>,
}

impl Reach {
    pub fn new(roots: Vec<(PathBuf, &'static str)>, state_dirs: Vec<PathBuf>) -> Reach {
        Reach { roots, state_dirs }
    }

    /// The roots `path` is named under (as named, or by their real path),
    /// with the rest of it.
    fn roots_of<'p>(&self, path: &'p Path) -> Vec<(PathBuf, &'p Path)> {
        let found = self.roots.iter().filter_map(|(root, _)| {
            let real = fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            let rest = path.strip_prefix(root).or_else(|_| path.strip_prefix(&real)).ok()?;
            Some((real, rest))
        });
        found.collect()
    }

    fn describe_roots(&self) -> String {
        let roots: Vec<String> = self.roots.iter().map(|(root, label)| format!("{label} {}", root.display())).collect();
        roots.join(", ")
    }

    /// Opens `p` for sending, or says which rule refuses it.
    pub fn open(&self, p: &str) -> Result<(File, u64), String> {
        let path = Path::new(p);
        if !path.is_absolute() {
            return Err(format!("file {p:?}: not an absolute path"));
        }
        let never = |dir: &str| format!("file {p:?} is under {dir}, which is never sent");
        if let Some(dir) = NEVER_SENT.iter().find(|d| path.starts_with(d)) {
            return Err(never(dir));
        }
        let roots = self.roots_of(path);
        if roots.is_empty() {
            return Err(format!(
                "file {p:?} is outside the directories a reply may send from ({}; [files] send_from in opzero.toml adds more)",
                self.describe_roots()
            ));
        }
        let mut refusals = Vec::new();
        let file = roots.iter().find_map(|(root, rest)| match open_beneath(root, rest) {
            Ok(file) => Some(file),
            Err(e) => {
                refusals.push(match e {
                    Errno::XDEV => format!("file {p:?} leads outside {} (by `..` or a symlink), so it is not sent", root.display()),
                    Errno::LOOP => format!("file {p:?}: too many symlinks, or a /proc link, on the way"),
                    Errno::NOSYS => "sending files needs Linux 5.6 or later (openat2)".to_string(),
                    _ => format!("file {p:?}: {}", io_reason(&e.into())),
                });
                None
            }
        });
        let Some(file) = file else { return Err(refusals.swap_remove(0)) };
        let reason = |e: io::Error| format!("file {p:?}: {}", io_reason(&e));
        let stat = rustix::fs::fstat(&file).map_err(|e| reason(e.into()))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(format!("file {p:?}: not a regular file (a directory, FIFO, socket or device is never sent)"));
        }
        let fs_type = rustix::fs::fstatfs(&file).map_err(|e| reason(e.into()))?.f_type as i64;
        // The constant's type is the platform's (i64 here, u32 on some).
        #[allow(clippy::unnecessary_cast)]
        if fs_type == rustix::fs::PROC_SUPER_MAGIC as i64 || fs_type == SYSFS_MAGIC {
            return Err(never("/proc or /sys"));
        }
        // Where what was opened really is, whatever name it was opened by.
        if let Ok(real) = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file))) {
            if let Some(dir) = NEVER_SENT.iter().find(|d| real.starts_with(d)) {
                return Err(never(dir));
            }
            if let Some(dir) = self.state_dirs.iter().filter_map(|d| fs::canonicalize(d).ok()).find(|d| real.starts_with(d)) {
                return Err(state_dir(p, &dir));
            }
        }
        // A hard link (or a bind mount) is another name for the same file.
        if let Some(dir) = self.state_dirs.iter().find(|d| holds_inode(d, stat.st_dev, stat.st_ino)) {
            return Err(state_dir(p, dir));
        }
        Ok((File::from(file), stat.st_size as u64))
    }
}

fn state_dir(p: &str, dir: &Path) -> String {
    format!("file {p:?} is in the host's state directory {} (where its secrets are), which is never sent", dir.display())
}

/// Opens `rest` below `root` for reading: the kernel refuses a `..` or a
/// symlink that leads out, and a FIFO's open does not wait for a writer.
fn open_beneath(root: &Path, rest: &Path) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let rest = if rest.as_os_str().is_empty() { Path::new(".") } else { rest };
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    // EAGAIN: a rename elsewhere raced the lookup; the kernel asks for a retry.
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(&dir, rest, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 8 => tries += 1,
            result => return result,
        }
    }
}

/// Whether a file below `dir` (links not followed) is the file `dev`/`ino`.
fn holds_inode(dir: &Path, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else { return false };
    entries.flatten().any(|entry| match entry.metadata() {
        Ok(m) if m.is_dir() => holds_inode(&entry.path(), dev, ino),
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    })
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_safe_component() {
        for (raw, want) in [
            ("photo.jpg", "photo.jpg"),
            ("../../x", "_.._x"),
            (".hidden", "hidden"),
            ("a\0b\nc\r.txt", "abc.txt"),
            ("", "file"),
            ("...", "file"),
            ("C:\\evil\\x.png", "C:_evil_x.png"),
            ("<a>\"b\"[c].md", "abc.md"),
            ("gnp.\u{202E}exe", "gnp.exe"),
        ] {
            assert_eq!(sanitize(raw), want, "{raw:?}");
        }
        let long = format!("{}.tar.gz", "é".repeat(10_000));
        let s = sanitize(&long);
        assert!(s.ends_with(".gz") && s.chars().count() <= 100 && s.len() <= 200, "{s}");
        assert!(sanitize(&"x".repeat(10_000)).chars().count() == 100);
    }

    #[test]
    fn reserved_keys() {
        for k in ["image_path", "file_path", "file_count", "file_path_1", "file_path_12"] {
            assert!(is_reserved_key(k), "{k}");
        }
        for k in ["file_path_", "file_path_x", "image", "file_paths"] {
            assert!(!is_reserved_key(k), "{k}");
        }
    }
}
