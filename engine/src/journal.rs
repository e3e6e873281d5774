//! A shard copy's redo journal: what makes a primary's commits durable without a durable
//! redb commit for each group-commit batch.
//!
//! ```text
//!  batch ─► redb write transaction, Durability::None (its pages stay in redb's memory)
//!        └► journal entry: the batch's writes as `Redo`s, appended, fdatasync ─► redb commit
//!  every CHECKPOINT_INTERVAL or CHECKPOINT_BYTES: the batch commits durably instead (a
//!        checkpoint) and the journal starts over at its first entry
//!  open after a crash: redb comes back at its last durable commit, then every entry after
//!        it (by sequence number, `state.journal`) is replayed, in one durable commit
//! ```
//!
//! Why: a durable redb commit writes every page on the paths of every table it changed
//! (rows, change log, state, prepared, decisions, redb's own trees): about 13 page writes
//! and an fsync per batch, where the batch itself is a few hundred bytes. A journal entry
//! is one sequential write of those bytes and an fsync of a file that does not grow; the
//! pages are written once per checkpoint however often they changed in between.
//!
//! File (`shard-<id>.journal` beside `shard-<id>.redb`), all integers little-endian:
//!
//! ```text
//!  header  (16 bytes)  magic "TSJRNL01" | incarnation: u64   (= the redb file's state.journal_id)
//!  entry               length: u32 | crc32c: u32 (of seq ‖ body) | seq: u64 | body: bincode Vec<Redo>
//!  …                   a zero length, a bad checksum or a short entry ends the journal
//! ```
//! Entries are consecutive in `seq`; after a checkpoint the next entry is written over the
//! first one, so the file holds the current run of entries, then stale ones from earlier
//! runs (lower `seq`), which replay tells apart by their sequence numbers. A journal whose
//! incarnation is not the redb file's belongs to an earlier file at the same path and is
//! ignored.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::changes::ChangeRecord;
use protocol::error::{Error, Result, sqlstate};
use protocol::frame;

/// A checkpoint is due this long after the last one (while batches keep coming).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// … or once the current run of entries is this long.
pub const CHECKPOINT_BYTES: u64 = 8 << 20;

const MAGIC: &[u8; 8] = b"TSJRNL01";
const HEADER: u64 = 16;
const ENTRY_HEADER: usize = 16;
/// The file grows in zeroed steps of this size, so an append rarely changes its length
/// (an fdatasync that must also write the inode costs a journal commit of the filesystem).
const GROW: u64 = 1 << 20;
/// The largest entry body read back; a longer length is damage, not an entry.
const MAX_ENTRY: u32 = 256 << 20;

/// One write a batch made, in the order it made them; replaying them in order on the same
/// state gives the same file contents (see `Shard::apply_redo`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Redo {
    /// A commit: its rows, index entries, change-log record and `state.lsn`.
    Commit(ChangeRecord),
    /// A prepared transaction's encoded `PreparedTxn`, into `prepared`.
    Prepare { id: u64, record: Vec<u8> },
    /// A prepared transaction leaves `prepared` (committed or discarded).
    Unprepare(u64),
    /// An outcome recorded in `decisions`.
    Decide { id: u64, commit: bool },
    /// Decision records deleted.
    Forget(Vec<u64>),
    /// `state.txn`, the last transaction id.
    TxnCounter(u64),
}

/// An entry read back from the file, its body not yet decoded: only the entries replay
/// needs are (stale ones may be of an older format).
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub seq: u64,
    body: Vec<u8>,
}

impl Entry {
    /// The writes the entry holds. Intact bytes that do not decode were written by
    /// something else: refused rather than guessed at.
    pub fn redo(&self) -> Result<Vec<Redo>> {
        frame::decode(&self.body).map_err(|e| {
            Error::new(
                sqlstate::DATA_CORRUPTED,
                format!("journal entry {} does not decode: {}", self.seq, e.message),
            )
        })
    }
}

/// The open journal of one shard copy.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Where the next entry goes.
    end: u64,
    /// The file's length (zeroed beyond what entries used).
    allocated: u64,
    next_seq: u64,
    checkpointed_at: Instant,
    /// An append failed, or redb's commit after one: what it wrote may or may not be on
    /// disk, so nothing may follow it until a checkpoint has made the redb file durable past
    /// it.
    broken: bool,
    /// Entries were appended without a sync since the last one.
    unsynced: bool,
}

/// The journal's path for a shard file.
pub fn path_for(shard_file: &Path) -> PathBuf {
    shard_file.with_extension("journal")
}

impl Journal {
    /// Opens the journal of incarnation `id` at `path`, returning the entries it holds in
    /// file order (stale ones included: the caller knows which are needed). A missing file,
    /// or one of another incarnation, is started afresh.
    pub fn open(path: &Path, id: u64) -> Result<(Journal, Vec<Entry>)> {
        let mut bytes = Vec::new();
        let existing = match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(Error::io)?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(e)),
        };
        let ours = bytes.len() as u64 >= HEADER
            && &bytes[..8] == MAGIC
            && bytes[8..16] == id.to_le_bytes();
        let entries = if ours {
            read_entries(&bytes)
        } else {
            Vec::new()
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(Error::io)?;
        let mut journal = Journal {
            file,
            path: path.to_path_buf(),
            end: HEADER,
            allocated: bytes.len() as u64,
            next_seq: 1,
            checkpointed_at: Instant::now(),
            broken: false,
            unsynced: false,
        };
        if !ours {
            let mut header = [0u8; HEADER as usize];
            header[..8].copy_from_slice(MAGIC);
            header[8..].copy_from_slice(&id.to_le_bytes());
            // A first entry of the previous incarnation must not survive behind the new
            // header: zero the whole old file's first step.
            journal.file.set_len(0).map_err(Error::io)?;
            journal.allocated = 0;
            journal.grow(HEADER)?;
            journal.write_at(&header, 0)?;
            journal.file.sync_all().map_err(Error::io)?;
            if !existing {
                sync_dir(path)?;
            }
        }
        Ok((journal, entries))
    }

    /// The sequence number the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Continues numbering after `last` (the newest entry or checkpoint on record).
    pub fn continue_after(&mut self, last: u64) {
        self.next_seq = last + 1;
    }

    /// True if the next batch should be a checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        self.broken
            || self.end - HEADER >= CHECKPOINT_BYTES
            || self.checkpointed_at.elapsed() >= CHECKPOINT_INTERVAL
    }

    /// A checkpoint made everything before `next_seq` durable in the redb file: the next
    /// entry starts the journal over.
    pub fn checkpointed(&mut self) {
        self.end = HEADER;
        self.checkpointed_at = Instant::now();
        self.broken = false;
    }

    /// Appends one entry, synced to disk if `sync`; returns its sequence number. A failure
    /// leaves the journal refusing to be relied on until the next checkpoint (the caller
    /// must report the batch's outcome as unknown).
    pub fn append(&mut self, redo: &[Redo], sync: bool) -> Result<u64> {
        let seq = self.next_seq;
        // The number is used up even if the write fails: the checkpoint that must follow
        // records it as covered, so whatever the failed write left is never replayed.
        self.next_seq += 1;
        let written = (|| -> Result<()> {
            let body = frame::encode(&redo)?;
            let len = u32::try_from(body.len())
                .ok()
                .filter(|l| *l <= MAX_ENTRY)
                .ok_or_else(|| Error::internal("journal entry too large"))?;
            let mut entry = Vec::with_capacity(ENTRY_HEADER + body.len());
            entry.extend_from_slice(&len.to_le_bytes());
            entry.extend_from_slice(&checksum(seq, &body).to_le_bytes());
            entry.extend_from_slice(&seq.to_le_bytes());
            entry.extend_from_slice(&body);
            // No terminator is written: what follows in the file is zeros (a fresh file) or
            // an earlier run's entries, whose numbers are lower (see `to_replay`).
            self.grow(self.end + entry.len() as u64)?;
            self.write_at(&entry, self.end)?;
            if sync {
                self.file.sync_data().map_err(Error::io)?;
            }
            self.end += entry.len() as u64;
            self.unsynced = !sync;
            Ok(())
        })();
        if written.is_err() {
            self.broken = true;
        }
        written.map(|()| seq)
    }

    /// Makes the entries appended without a sync durable.
    pub fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            self.broken = true;
            return Err(Error::io(e));
        }
        self.unsynced = false;
        Ok(())
    }

    /// True after a failed append or sync, until the next checkpoint.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// What was written last cannot be relied on (see `broken`).
    pub fn poison(&mut self) {
        self.broken = true;
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(bytes, offset).map_err(|e| {
            Error::new(
                sqlstate::IO_ERROR,
                format!("journal {}: {e}", self.path.display()),
            )
        })
    }

    /// Zero-fills the file up to at least `len`, a `GROW` step at a time.
    fn grow(&mut self, len: u64) -> Result<()> {
        while self.allocated < len {
            let step = GROW.min(GROW - self.allocated % GROW);
            self.write_at(&vec![0u8; step as usize], self.allocated)?;
            self.allocated += step;
        }
        Ok(())
    }
}

/// The entries of a journal file (header checked by the caller), up to the first that is
/// not whole and intact.
fn read_entries(bytes: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut at = HEADER as usize;
    while let Some(head) = bytes.get(at..at + ENTRY_HEADER) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&head[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        if len == 0 || len > MAX_ENTRY {
            break;
        }
        let start = at + ENTRY_HEADER;
        let Some(body) = bytes.get(start..start + len as usize) else {
            break;
        };
        if checksum(seq, body) != sum {
            break;
        }
        entries.push(Entry {
            seq,
            body: body.to_vec(),
        });
        at = start + len as usize;
    }
    entries
}

/// The entries to replay on a redb file whose last durable commit covered `durable`: the
/// run that continues from it. Entries at or below it are done (or stale); an entry that
/// would skip a number means acknowledged commits are missing, which is refused.
pub fn to_replay(entries: Vec<Entry>, durable: u64) -> Result<Vec<Entry>> {
    let mut run: Vec<Entry> = Vec::new();
    for entry in entries {
        let expected = run.last().map_or(durable + 1, |e| e.seq + 1);
        if entry.seq == expected {
            run.push(entry);
        } else if run.is_empty() && entry.seq <= durable {
            continue;
        } else if run.is_empty() {
            return Err(Error::new(
                sqlstate::DATA_CORRUPTED,
                format!(
                    "journal entry {} follows checkpoint {durable}: entries in between are missing",
                    entry.seq
                ),
            ));
        } else {
            // A stale entry of an earlier run: the current run ends here.
            break;
        }
    }
    Ok(run)
}

/// CRC-32C (Castagnoli), as ext4 and iSCSI use.
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn checksum(seq: u64, body: &[u8]) -> u32 {
    let mut digest = CRC.digest();
    digest.update(&seq.to_le_bytes());
    digest.update(body);
    digest.finalize()
}

/// Makes a newly created file's directory entry durable.
fn sync_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed with everything in it when the guard drops.
    struct Scratch(PathBuf);

    impl Scratch {
        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "tessera-journal-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn forget(id: u64) -> Vec<Redo> {
        vec![Redo::Forget(vec![id]), Redo::TxnCounter(id)]
    }

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn entries_read_back_in_order_and_a_torn_tail_ends_the_journal() {
        let scratch = dir();
        let path = scratch.join("j.journal");
        let (mut j, found) = Journal::open(&path, 7).unwrap();
        assert!(found.is_empty());
        for i in 1..=3 {
            assert_eq!(j.append(&forget(i), true).unwrap(), i);
        }
        drop(j);
        let (_, found) = Journal::open(&path, 7).unwrap();
        assert_eq!(seqs(&found), vec![1, 2, 3]);
        assert_eq!(found[1].redo().unwrap(), forget(2));

        // Damage the last entry's body: it and anything after it are gone.
        let mut bytes = std::fs::read(&path).unwrap();
        let third = HEADER as usize + 2 * first_entry_len(&bytes);
        bytes[third + ENTRY_HEADER] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Journal::open(&path, 7).unwrap();
        assert_eq!(seqs(&found), vec![1, 2]);
    }

    /// The length of the first entry (the test's entries are all that size).
    fn first_entry_len(bytes: &[u8]) -> usize {
        let at = HEADER as usize;
        ENTRY_HEADER + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
    }

    #[test]
    fn a_new_run_overwrites_the_old_and_replay_takes_only_the_current_run() {
        let scratch = dir();
        let path = scratch.join("j.journal");
        let (mut j, _) = Journal::open(&path, 1).unwrap();
        for i in 1..=5 {
            j.append(&forget(i), true).unwrap();
        }
        // A checkpoint covering 1..=5, then two entries of the next run.
        j.checkpointed();
        j.append(&forget(6), true).unwrap();
        j.append(&forget(7), true).unwrap();
        drop(j);
        let (_, found) = Journal::open(&path, 1).unwrap();
        // 6, 7 over the old 1, 2; then the old 3, 4, 5.
        assert_eq!(seqs(&found), vec![6, 7, 3, 4, 5]);
        assert_eq!(seqs(&to_replay(found, 5).unwrap()), vec![6, 7]);

        // The redb file made durable up to 6 by another write: only 7 is left.
        let (_, found) = Journal::open(&path, 1).unwrap();
        assert_eq!(seqs(&to_replay(found, 6).unwrap()), vec![7]);
        // Durable past everything: nothing.
        let (_, found) = Journal::open(&path, 1).unwrap();
        assert!(to_replay(found, 9).unwrap().is_empty());
        // Entries missing after the checkpoint on record: refused, never skipped.
        let (_, found) = Journal::open(&path, 1).unwrap();
        assert!(to_replay(found, 2).is_err());
    }

    /// Only the entries replayed are decoded: a stale one in a format this build does not
    /// read never stops a shard from opening; one that must be replayed does.
    #[test]
    fn stale_entries_are_never_decoded() {
        let garbage = || Entry {
            seq: 1,
            body: vec![0xff; 3],
        };
        assert!(to_replay(vec![garbage()], 1).unwrap().is_empty());
        let run = to_replay(vec![garbage()], 0).unwrap();
        assert!(run[0].redo().is_err());
    }

    #[test]
    fn a_journal_of_another_incarnation_is_ignored_and_started_afresh() {
        let scratch = dir();
        let path = scratch.join("j.journal");
        let (mut j, _) = Journal::open(&path, 1).unwrap();
        j.append(&forget(1), true).unwrap();
        drop(j);
        let (mut j, found) = Journal::open(&path, 2).unwrap();
        assert!(found.is_empty());
        j.append(&forget(9), true).unwrap();
        drop(j);
        let (_, found) = Journal::open(&path, 2).unwrap();
        assert_eq!(seqs(&found), vec![1]);
        assert_eq!(found[0].redo().unwrap(), forget(9));
    }
}
