//! Following one transcript file as it grows: from an offset, one line at
//! a time, through a small fixed buffer. Each line is parsed as it streams
//! past (see `lines`), so a line of a megabyte costs what the mirror keeps
//! of it, not a megabyte. A last line still being written is left for the
//! next read. The OS says when the file changes ([`Watch`]): an idle host
//! is not woken.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};

use super::lines::Line;

/// The reader's buffer; longer lines stream through it.
const BUFFER: usize = 16 * 1024;

/// The transcript being followed, and how far it has been read.
pub struct Follower {
    pub path: PathBuf,
    file: Option<File>,
    offset: u64,
}

impl Follower {
    /// Starts at the end of the file as it is now, so that what was written
    /// before is not taken for news; a file that does not exist yet is read
    /// from its start once it does.
    pub fn new(path: PathBuf) -> Follower {
        let file = File::open(&path).ok();
        let offset = file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        Follower { path, file, offset }
    }

    pub fn exists(&self) -> bool {
        self.file.is_some() || self.path.is_file()
    }

    /// Reads every complete line written since the last call: each is a
    /// [`Line`], or the error of one serde could not read (not JSON).
    pub fn read_new(&mut self, mut each: impl FnMut(serde_json::Result<Line>)) -> io::Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let file = self.file.as_mut().expect("opened above");
        if file.metadata()?.len() < self.offset {
            // Cut short: nothing of what was read still holds.
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::with_capacity(BUFFER, file);
        loop {
            let mut line = OneLine { inner: &mut reader, used: 0, ended: false, short: false };
            let parsed = serde_json::from_reader::<_, Line>(&mut line);
            // What serde did not read (after an error) is read past.
            if !line.short {
                io::copy(&mut line, &mut io::sink())?;
            }
            if line.short {
                // The end of the file came before the end of the line: it is
                // still being written (or there is none). It is read again,
                // whole, next time, even if the rest has come meanwhile.
                return Ok(());
            }
            self.offset += line.used;
            match parsed {
                Err(e) if e.is_io() => return Err(e.into()),
                Err(_) if line.used == 1 => {} // an empty line
                parsed => each(parsed),
            }
        }
    }
}

/// One line of `inner`, as a reader that ends at its newline (which it
/// consumes, but does not return).
struct OneLine<'a, R> {
    inner: &'a mut R,
    /// Bytes consumed, the newline included.
    used: u64,
    /// The newline was reached.
    ended: bool,
    /// The end of the file was reached before it.
    short: bool,
}

impl<R: BufRead> Read for OneLine<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.ended || out.is_empty() {
            return Ok(0);
        }
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            self.short = true;
            return Ok(0);
        }
        // serde reads a byte at a time: look no further than it asks.
        let window = &buf[..buf.len().min(out.len() + 1)];
        let newline = window.iter().position(|&b| b == b'\n');
        let n = newline.unwrap_or(window.len().min(out.len()));
        out[..n].copy_from_slice(&buf[..n]);
        let consumed = n + usize::from(newline.is_some());
        self.inner.consume(consumed);
        self.used += consumed as u64;
        self.ended = newline.is_some();
        Ok(n)
    }
}

/// A watch on the transcript's folder, or, until that exists, on the
/// nearest folder above it that does. Only events that may concern the
/// transcript are passed on.
pub struct Watch {
    watcher: notify::RecommendedWatcher,
    dir: Option<PathBuf>,
}

impl Watch {
    pub fn new(transcript: &Path, on_change: impl Fn() + Send + 'static) -> notify::Result<Watch> {
        let target = transcript.to_path_buf();
        let handler = move |event: notify::Result<notify::Event>| {
            // Not an opening or closing (notify reports those too: reading
            // would wake the reader again). No paths: the OS lost track (an
            // overflow); look again anyway.
            let concerns = |e: &notify::Event| e.paths.is_empty() || e.paths.iter().any(|p| target.starts_with(p));
            if event.is_ok_and(|e| !e.kind.is_access() && concerns(&e)) {
                on_change();
            }
        };
        Ok(Watch { watcher: notify::recommended_watcher(handler)?, dir: None })
    }

    /// Watches the folder closest to the transcript that exists (again,
    /// until no closer one has appeared meanwhile).
    pub fn closest(&mut self, transcript: &Path) -> notify::Result<()> {
        loop {
            let dir = transcript.ancestors().skip(1).find(|d| d.is_dir()).unwrap_or(Path::new("/")).to_path_buf();
            if self.dir.as_ref() == Some(&dir) {
                return Ok(());
            }
            if let Some(old) = self.dir.take() {
                let _ = self.watcher.unwatch(&old);
            }
            self.watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            self.dir = Some(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::mirror::lines::Says;

    /// Every line of the transcripts recorded from the real Claude Code.
    pub(crate) fn recorded() -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/claude-2.1.328");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        let lines = files.iter().filter(|f| f.extension().is_some_and(|e| e == "jsonl"));
        lines.flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(str::to_string).collect::<Vec<_>>()).collect()
    }

    /// The first recorded line that `pick` likes.
    fn line(pick: impl Fn(&serde_json::Value) -> bool) -> String {
        recorded().into_iter().find(|l| serde_json::from_str(l).is_ok_and(|v| pick(&v))).expect("recorded")
    }

    fn enqueue_line() -> String {
        line(|v| v["type"] == "queue-operation" && v["operation"] == "enqueue")
    }

    fn says(f: &mut Follower) -> Vec<Says> {
        let mut out = Vec::new();
        f.read_new(|r| out.push(r.expect("readable").says()))
        .unwrap();
        out
    }

    fn append(path: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
    }

    #[test]
    fn every_recorded_line_reads_and_the_tags_match_their_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut f = Follower::new(path.clone());
        append(&path, (recorded().join("\n") + "\n").as_bytes());
        let all = says(&mut f);
        assert_eq!(all.len(), recorded().len());
        let enqueued: Vec<&String> = all.iter().filter_map(|s| if let Says::Enqueued(t) = s { Some(t) } else { None }).collect();
        let input: Vec<&String> = all.iter().filter_map(|s| if let Says::ChannelInput(t) = s { Some(t) } else { None }).collect();
        assert!(!enqueued.is_empty() && !input.is_empty());
        // Every channel message that reached the model was enqueued first, as it is.
        for tag in input.iter().filter(|t| t.starts_with("<channel")) {
            assert!(enqueued.iter().any(|e| tag.contains(e.as_str())), "{tag} was not enqueued as such");
        }
        assert!(all.contains(&Says::TurnEnded));
        assert!(!all.iter().any(|s| matches!(s, Says::Unexpected(_))), "{all:?}");
    }

    #[test]
    fn only_what_is_new_is_read_and_a_partial_last_line_waits_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let enqueue = enqueue_line();
        append(&path, format!("{enqueue}\n").as_bytes());
        let mut f = Follower::new(path.clone());
        assert!(says(&mut f).is_empty(), "what was there before is not news");
        let (head, tail) = enqueue.split_at(enqueue.len() / 2);
        append(&path, format!("{enqueue}\n{head}").as_bytes());
        assert_eq!(says(&mut f).len(), 1, "the whole line only");
        assert!(says(&mut f).is_empty(), "the half line again: still nothing");
        append(&path, tail.as_bytes());
        assert!(says(&mut f).is_empty(), "complete, but no newline yet");
        append(&path, b"\n\n");
        assert!(matches!(&says(&mut f)[..], [Says::Enqueued(_)]));
    }

    #[test]
    fn a_transcript_that_appears_later_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later/t.jsonl");
        let mut f = Follower::new(path.clone());
        assert!(!f.exists());
        assert!(says(&mut f).is_empty());
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        append(&path, format!("{}\n", enqueue_line()).as_bytes());
        assert!(f.exists());
        assert!(matches!(&says(&mut f)[..], [Says::Enqueued(_)]));
    }

    #[test]
    fn a_megabyte_line_streams_past_and_only_what_is_read_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut f = Follower::new(path.clone());
        // A real tool call, its input grown by a megabyte the mirror does not read.
        let mut big: serde_json::Value =
            serde_json::from_str(&line(|v| v["type"] == "assistant" && v["message"]["content"][0]["type"] == "tool_use")).unwrap();
        big["message"]["content"][0]["name"] = "Write".into();
        big["message"]["content"][0]["input"] = serde_json::json!({"file_path": "/tmp/x", "content": "y".repeat(1 << 20)});
        let big = big.to_string();
        assert!(big.len() > 1 << 20);
        append(&path, format!("{big}\n{}\n", enqueue_line()).as_bytes());
        match &says(&mut f)[..] {
            [Says::Assistant { tools, .. }, Says::Enqueued(_)] => {
                assert_eq!(tools[0].name, "Write");
                assert_eq!(tools[0].input.file_path.0.as_deref(), Some("/tmp/x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_of_unknown_shape_are_skipped_and_a_known_kind_without_its_fields_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut f = Follower::new(path.clone());
        let mut enqueue: serde_json::Value = serde_json::from_str(&enqueue_line()).unwrap();
        let mut odd = enqueue.clone();
        odd["content"] = serde_json::json!({"parts": ["a", 1]});
        enqueue["type"] = "queue-operation-v2".into();
        append(&path, format!("{enqueue}\n[1, 2]\n{{\"type\": 5}}\nnot json\n{odd}\n").as_bytes());
        let mut read = Vec::new();
        f.read_new(|r| read.push(r)).unwrap();
        assert!(matches!(&read[..], [Ok(_), Ok(_), Ok(_), Err(_), Ok(_)]), "{read:?}");
        let says: Vec<Says> = read.into_iter().filter_map(|r| r.ok().map(Line::says)).collect();
        assert_eq!(says, [Says::Nothing, Says::Nothing, Says::Nothing, Says::Unexpected("an enqueue line without its content")]);
    }
}
