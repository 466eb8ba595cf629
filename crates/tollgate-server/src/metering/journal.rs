//! The usage journal of the embedded store: an append-only file beside the
//! SQLite database where the gateway's usage is made durable before the
//! call's answer completes, so that a call waits for one `write` (and, with
//! `fsync_each_commit`, one `fdatasync`) instead of a SQLite transaction.
//!
//! Each append is one line: the JSON array of one group's events, written
//! with a single `write` to a file opened for appending. An acknowledged
//! line is whole in the file (the page cache keeps it across a crash of the
//! process; the sync keeps it across a power loss). A line cut by a crash
//! mid-append was never acknowledged: on reading, it and anything after it
//! is dropped.
//!
//! The writer ingests journaled events into the ledger in the background
//! and empties the file once everything in it is ingested. On start, what a
//! previous run left in the file is committed before anything else runs:
//! events are keyed by id, so one committed twice counts once.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tollgate_store::PreparedEvent;

/// The size beyond which the journal is emptied, unless configured
/// otherwise (`usage_journal_max_bytes`).
pub const FULL: u64 = 16 << 20;

pub struct Journal {
    file: Arc<File>,
    path: PathBuf,
    /// `fdatasync` after each append.
    sync: bool,
    len: u64,
    /// Beyond this size the journal is emptied as soon as everything in it
    /// is in the ledger, even if the writer has to wait for that.
    full: u64,
}

impl Journal {
    /// The journal of the SQLite database at `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.file_name().unwrap_or_default().to_owned();
        name.push("-usage-journal");
        db.with_file_name(name)
    }

    /// Opens the journal at `path`, creating it if missing, with the events
    /// a previous run left in it (whole lines only, in order); `None` when
    /// another process holds it (a second server on the same database).
    /// The journal is locked for as long as it is open: the lock goes with
    /// the process, however that ends.
    pub fn open(path: &Path, sync: bool, full: u64) -> io::Result<Option<(Journal, Vec<PreparedEvent>)>> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let (left, whole) = parse(&std::fs::read(path)?, path);
        // A cut line at the end would spoil the next one appended.
        if file.metadata()?.len() > whole {
            file.set_len(whole)?;
        }
        Ok(Some((Journal { file: Arc::new(file), path: path.to_owned(), sync, len: whole, full }, left)))
    }

    /// Bytes in the file.
    #[cfg(test)]
    fn size(&self) -> u64 {
        self.len
    }

    /// Whether the file has reached the size at which it is emptied.
    pub fn is_full(&self) -> bool {
        self.len >= self.full
    }

    /// Makes `events` durable: one line, one `write`, synced if configured.
    pub async fn append<'a>(&mut self, events: impl IntoIterator<Item = &'a PreparedEvent>) -> io::Result<()> {
        let mut line = Vec::with_capacity(1024);
        line.push(b'[');
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            serde_json::to_writer(&mut line, event).map_err(io::Error::other)?;
        }
        line.extend_from_slice(b"]\n");
        if let Err(e) = (&*self.file).write_all(&line) {
            // A part of the line may be in the file: cut it off, or a
            // later line would be read as its continuation.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += line.len() as u64;
        self.sync().await
    }

    /// Empties the file: everything in it is in the ledger.
    pub async fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        self.sync().await
    }

    /// `fdatasync`, if configured, off the async threads.
    async fn sync(&self) -> io::Result<()> {
        if !self.sync {
            return Ok(());
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_data()).await.map_err(io::Error::other)?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
impl Journal {
    /// A journal whose every append fails, as on a full disk: `/dev/full`.
    pub(super) fn on_a_full_disk() -> Journal {
        let path = PathBuf::from("/dev/full");
        let file = OpenOptions::new().append(true).open(&path).expect("/dev/full opens for writing");
        Journal { file: Arc::new(file), path, sync: false, len: 0, full: FULL }
    }
}

/// The events of every whole, readable line, and those lines' length; what
/// follows the first line that is not (a crash's cut append) is dropped,
/// and said.
fn parse(bytes: &[u8], path: &Path) -> (Vec<PreparedEvent>, u64) {
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else { break };
        match serde_json::from_slice::<Vec<PreparedEvent>>(&rest[..end]) {
            Ok(group) => events.extend(group),
            Err(_) => break,
        }
        rest = &rest[end + 1..];
    }
    if !rest.is_empty() {
        tracing::warn!(
            path = %path.display(),
            bytes = rest.len(),
            "the usage journal ends in an append cut short by a crash; it was never acknowledged and is dropped"
        );
    }
    (events, (bytes.len() - rest.len()) as u64)
}

#[cfg(test)]
mod tests {
    use tollgate_domain::Meter;
    use tollgate_store::EventRow;

    use super::*;

    fn event(id: &str) -> PreparedEvent {
        PreparedEvent {
            row: EventRow {
                id: id.into(),
                user_id: "u_1".into(),
                model: Some("gpt-4o-mini".into()),
                input_tokens: 7,
                output_tokens: 3,
                key_source: "platform".into(),
                billable: true,
                ..EventRow::default()
            },
            meters: vec![(Meter::parse("tokens").unwrap(), 10)],
            period_start: Some(1_700_000_000_000),
            extra: vec![(Meter::parse("images").unwrap(), 2)],
            response_id: Some(format!("resp_{id}")),
            items: vec![format!("msg_{id}")],
        }
    }

    #[test]
    fn an_event_without_a_stored_response_is_written_and_read_as_before() {
        let plain = PreparedEvent { response_id: None, items: Vec::new(), ..event("evt_plain") };
        let line = serde_json::to_string(&plain).unwrap();
        assert!(!line.contains("response_id") && !line.contains("items"), "{line}");
        assert_eq!(serde_json::from_str::<PreparedEvent>(&line).unwrap(), plain, "a line from before reads back");
    }

    #[tokio::test]
    async fn appended_groups_are_read_back_in_order_and_a_cut_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(&dir.path().join("tollgate.db"));
        assert!(path.ends_with("tollgate.db-usage-journal"));
        let (mut journal, left) = Journal::open(&path, true, FULL).unwrap().unwrap();
        assert!(left.is_empty());
        assert!(Journal::open(&path, true, FULL).unwrap().is_none(), "one holder at a time");
        journal.append(&[event("evt_a"), event("evt_b")]).await.unwrap();
        journal.append(&[event("evt_c")]).await.unwrap();
        assert_eq!(journal.size(), std::fs::metadata(&path).unwrap().len());
        // A crash in the middle of a third append.
        let whole = std::fs::read(&path).unwrap();
        let mut cut = serde_json::to_vec(&[event("evt_d")]).unwrap();
        cut.truncate(cut.len() / 2);
        std::fs::write(&path, [whole.as_slice(), &cut].concat()).unwrap();
        drop(journal);

        let (mut journal, left) = Journal::open(&path, false, FULL).unwrap().unwrap();
        assert_eq!(left, vec![event("evt_a"), event("evt_b"), event("evt_c")]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole.len() as u64, "the cut line is gone");
        journal.append(&[event("evt_d")]).await.unwrap();
        drop(journal);
        let (mut journal, left) = Journal::open(&path, false, FULL).unwrap().unwrap();
        assert_eq!(left.len(), 4);
        assert_eq!(left[3], event("evt_d"));
        journal.clear().await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        journal.append(&[event("evt_e")]).await.unwrap();
        drop(journal);
        let (_, left) = Journal::open(&path, false, FULL).unwrap().unwrap();
        assert_eq!(left, vec![event("evt_e")]);
    }
}
