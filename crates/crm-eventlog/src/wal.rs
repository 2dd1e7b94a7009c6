//! The write-ahead file in front of sled: what makes an acknowledged group commit durable.
//!
//! A durability barrier on sled itself costs a sled `flush` (which seals an I/O buffer,
//! wakes sled's whole I/O pool and ends in `sync_file_range`, not a barrier) and then an
//! `fdatasync` of sled's data file: about four times a raw `fdatasync` here. So every group
//! commit is also written, as one record, to an append-only file beside sled, and a durable
//! group is acknowledged after one `fdatasync` of that file. sled is made durable in the
//! background by a checkpoint (sled `flush`, then `fdatasync` of its data file), and a segment
//! of the file whose groups a checkpoint covers is deleted. On open, the groups the file holds
//! beyond what sled recovered are applied to sled again, whole, in order.
//!
//! Layout: `<data dir>/wal/<first position: 20 digits>.wal`, oldest first. A record is
//! `len: u32 LE` (its top bit marks the first record of a write made when everything before
//! it in the file was synced), `crc32(body): u32 LE`, then the body: `first position: u64 LE`,
//! `last position: u64 LE`, then the group's sled writes as `key len: u32 LE`, key,
//! `value len: u32 LE`, value.
//!
//! **Architecture Invariant:** a record is written only for a group already applied to the
//! running sled instance, in the order the groups were applied, and no record is written
//! after a failed write or sync (the file could end in a torn record). So the file holds a
//! gapless run of groups, and a damaged record can only be the torn tail of the last write,
//! which was never acknowledged, unless a marked record follows it (then it is corruption).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::{Error, Result};

/// The directory of the write-ahead file, inside the data directory.
pub(crate) const DIR: &str = "wal";
/// A segment is closed (and a new one started) once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const HEADER: usize = 8;
/// The top bit of a record's length: set on the first record of a write made when everything
/// before it in the file was synced. Damage followed by such a record is damage to synced
/// (acknowledged) records, not a torn tail.
const SYNCED_BEFORE: u32 = 1 << 31;
/// [`SYNCED_BEFORE`] in the last byte of the little-endian length.
const SYNCED_BEFORE_TOP: u8 = (SYNCED_BEFORE >> 24) as u8;

/// Marks `records` (the records of one write, see [`encode`]) as written after everything
/// before them in the file was synced.
pub(crate) fn mark_synced_before(records: &mut [u8]) {
    if let Some(top) = records.get_mut(3) {
        *top |= SYNCED_BEFORE_TOP;
    }
}

/// The record at `at`: its group, its size and whether it is marked [`SYNCED_BEFORE`].
fn record_at(bytes: &[u8], at: usize) -> Option<(Group, usize, bool)> {
    let h = bytes.get(at..at + HEADER)?;
    let raw = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
    let (len, marked) = ((raw & !SYNCED_BEFORE) as usize, raw & SYNCED_BEFORE != 0);
    let crc = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
    let body = bytes.get(at + HEADER..at + HEADER + len)?;
    (crc32fast::hash(body) == crc).then(|| decode(body)).flatten().map(|g| (g, HEADER + len, marked))
}

/// The offset of the first intact record after `from` that is marked [`SYNCED_BEFORE`].
fn later_synced_write(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER))
        .find(|&p| bytes[p + 3] & SYNCED_BEFORE_TOP != 0 && record_at(bytes, p).is_some_and(|(_, _, marked)| marked))
}

/// One group commit as stored in the file: its positions and its sled writes.
pub(crate) struct Group {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) writes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Appends the record of a group holding positions `first..=last` to `out`.
pub(crate) fn encode(first: u64, last: u64, writes: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    for (k, v) in writes {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    let body = &out[start + HEADER..];
    let len =
        u32::try_from(body.len()).ok().filter(|l| l & SYNCED_BEFORE == 0).expect("a group is capped far below 2 GiB");
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn decode(body: &[u8]) -> Option<Group> {
    let u64_at = |at: usize| body.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let (first, last) = (u64_at(0)?, u64_at(8)?);
    let mut rest = &body[16..];
    let mut writes = Vec::new();
    let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().expect("4 bytes")) as usize;
        let bytes = rest.get(4..4 + len)?.to_vec();
        *rest = &rest[4 + len..];
        Some(bytes)
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        writes.push((k, v));
    }
    (first <= last).then_some(Group { first, last, writes })
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

/// Applies, in order, every group in `dir` that ends after `head` (the last position sled
/// recovered), and returns how many it applied. A torn or damaged record ends the last
/// segment (it was never acknowledged); anywhere else it is corruption, and so is a group
/// that does not start right after the one before.
pub(crate) fn replay(dir: &Path, mut head: u64, mut apply: impl FnMut(Group) -> Result<()>) -> Result<usize> {
    let segments = segments(dir)?;
    let mut applied = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path)?;
        let mut at = 0;
        while at < bytes.len() {
            // A zero length is where the records of a zero-filled segment end.
            if bytes.get(at..at + 4).is_some_and(|len| len == [0; 4]) {
                break;
            }
            let Some((group, size, _)) = record_at(&bytes, at) else {
                if segments.get(i + 1).is_some_and(|(first, _)| *first <= head + 1) {
                    // Every group this segment could still hold is in sled already.
                    tracing::warn!(file = %path.display(), offset = at, "skipping a damaged write-ahead record that sled already holds");
                    break;
                }
                if i + 1 < segments.len() {
                    return Err(Error::Corruption {
                        position: head + 1,
                        detail: format!(
                            "write-ahead file {} is damaged at byte {at}, and later segments exist",
                            path.display()
                        ),
                    });
                }
                if let Some(later) = later_synced_write(&bytes, at + 1) {
                    return Err(Error::Corruption {
                        position: head + 1,
                        detail: format!(
                            "write-ahead file {} is damaged at byte {at}, before a write at byte {later} made after \
                             everything before it was synced",
                            path.display()
                        ),
                    });
                }
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    dropped_bytes = bytes.len() - at,
                    "write-ahead file ends in a torn record (a write that was never acknowledged); ignoring it"
                );
                break;
            };
            at += size;
            if group.last <= head {
                continue;
            }
            if group.first != head + 1 {
                return Err(Error::Corruption {
                    position: head + 1,
                    detail: format!(
                        "the write-ahead file continues at position {} after sled's last event {head}",
                        group.first
                    ),
                });
            }
            head = group.last;
            apply(group)?;
            applied += 1;
        }
    }
    Ok(applied)
}

/// The open write-ahead file: the segment being written and the older ones still needed.
///
/// Segments are zero-filled to their full size and synced before they are used (by a
/// background thread, one spare ahead), so a barrier overwrites allocated blocks and its
/// `fdatasync` has no file size or extent to commit: on ext4 here about half the time of an
/// `fdatasync` after an append. The first segment after open is a plain file that records are
/// appended to; once it holds 1/64 of a segment a spare is prepared, and the segment being
/// written switches to it when it is ready.
pub(crate) struct Wal {
    dir: PathBuf,
    /// First position and path of every segment, oldest first; the last is being written.
    segments: VecDeque<(u64, PathBuf)>,
    file: File,
    len: u64,
    /// Whether the segment being written was zero-filled before use.
    preallocated: bool,
    segment_bytes: u64,
    spare: Option<Spare>,
    /// How much the plain first segment holds before a spare is prepared (`u64::MAX` after
    /// one failed): a store that writes little never writes a spare.
    spare_after: u64,
}

/// A segment file being zero-filled and synced by its own thread.
struct Spare {
    path: PathBuf,
    cancel: Arc<AtomicBool>,
    /// Set once the file is zero-filled and synced.
    ok: Arc<AtomicBool>,
    done: JoinHandle<std::io::Result<()>>,
}

impl Spare {
    fn start(dir: &Path, bytes: u64) -> Result<Spare> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!("spare-{}-{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let (cancel, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let done = {
            let (path, cancel, ok) = (path.clone(), cancel.clone(), ok.clone());
            std::thread::Builder::new().name("crm-eventlog-wal-spare".into()).spawn(move || {
                let result = zero_fill(&path, bytes, &cancel);
                match result {
                    Ok(()) => ok.store(true, Ordering::Release),
                    Err(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                result
            })?
        };
        Ok(Spare { path, cancel, ok, done })
    }

    fn ready(&self) -> bool {
        self.ok.load(Ordering::Acquire)
    }

    fn failed(&self) -> bool {
        self.done.is_finished() && !self.ready()
    }
}

/// Writes a zero-filled file of `bytes` at `path` and syncs it, unless the file system has
/// less than four times that free (a spare must never be what fills the disk).
fn zero_fill(path: &Path, bytes: u64, cancel: &AtomicBool) -> std::io::Result<()> {
    const CHUNK: u64 = 1024 * 1024;
    let fs = rustix::fs::statvfs(path.parent().unwrap_or(Path::new(".")))?;
    if fs.f_bavail.saturating_mul(fs.f_frsize) < bytes.saturating_mul(4) {
        return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "less than 4 segments of free space"));
    }
    let mut file = OpenOptions::new().create_new(true).write(true).open(path)?;
    let zeros = vec![0u8; CHUNK as usize];
    let mut written = 0;
    while written < bytes {
        if cancel.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = CHUNK.min(bytes - written);
        file.write_all(&zeros[..n as usize])?;
        written += n;
        // Written back a few MiB at a time, not as one burst in front of the barriers.
        if written % (8 * CHUNK) == 0 {
            file.sync_data()?;
        }
    }
    file.sync_all()
}

impl Wal {
    /// Deletes every segment in `dir` (unless `keep_old`) and starts an empty one whose first
    /// group starts at `first`. Call only when sled durably holds every group the old
    /// segments hold; with `keep_old` they stay on disk (and out of [`Wal::discard_through`]'s
    /// reach) for the next open to replay.
    pub(crate) fn create(dir: &Path, first: u64, keep_old: bool) -> Result<Wal> {
        Self::create_sized(dir, first, keep_old, SEGMENT_BYTES)
    }

    fn create_sized(dir: &Path, first: u64, keep_old: bool, segment_bytes: u64) -> Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let new = segment_path(dir, first);
        if !keep_old {
            for (_, path) in segments(dir)? {
                if path != new {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = std::fs::remove_file(&path);
            }
        }
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&new)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Wal {
            dir: dir.to_owned(),
            segments: VecDeque::from([(first, new)]),
            file,
            len: 0,
            preallocated: false,
            segment_bytes,
            spare: None,
            spare_after: (segment_bytes / 64).max(1),
        })
    }

    /// Writes records (see [`encode`]) after the last one; not yet durable.
    pub(crate) fn append(&mut self, records: &[u8]) -> Result<()> {
        self.file.write_all(records)?;
        self.len += records.len() as u64;
        Ok(())
    }

    /// The barrier: `fdatasync` of the segment being written.
    pub(crate) fn sync(&self) -> Result<()> {
        Ok(self.file.sync_data()?)
    }

    /// Starts a new segment for groups from `next` on once the current one is full, or once
    /// a zero-filled spare is ready while the current segment is a plain file. The current
    /// segment is synced first, so a later segment is never durable before an earlier one.
    pub(crate) fn rotate_if_full(&mut self, next: u64) -> Result<()> {
        if self.spare.as_ref().is_some_and(Spare::failed) {
            let spare = self.spare.take().expect("a spare");
            let error = spare.done.join().map_or_else(|_| "it panicked".to_owned(), |r| format!("{r:?}"));
            tracing::warn!(
                error,
                "preparing a write-ahead segment failed; appending, and trying again at the next segment"
            );
            self.spare_after = u64::MAX;
        }
        if self.spare.is_none() && !self.preallocated && self.len >= self.spare_after {
            self.spare = Some(Spare::start(&self.dir, self.segment_bytes)?);
            self.spare_after = u64::MAX;
        }
        let spare_ready = self.spare.as_ref().is_some_and(Spare::ready);
        let full = self.len >= self.segment_bytes;
        if self.len == 0 || !(full || (spare_ready && !self.preallocated)) {
            return Ok(());
        }
        self.file.sync_data()?;
        let path = segment_path(&self.dir, next);
        self.file = if spare_ready {
            let spare = self.spare.take().expect("a spare is ready");
            std::fs::rename(&spare.path, &path)?;
            OpenOptions::new().write(true).open(&path)?
        } else {
            OpenOptions::new().create(true).write(true).truncate(true).open(&path)?
        };
        self.preallocated = spare_ready;
        File::open(&self.dir)?.sync_all()?;
        self.segments.push_back((next, path));
        self.len = 0;
        if self.spare.is_none() {
            self.spare = Some(Spare::start(&self.dir, self.segment_bytes)?);
        }
        Ok(())
    }

    /// Deletes the segments whose every group is at or below `checkpointed` (durable in sled).
    pub(crate) fn discard_through(&mut self, checkpointed: u64) -> Result<()> {
        while self.segments.len() > 1 && self.segments[1].0 <= checkpointed + 1 {
            let path = self.segments[0].1.clone();
            std::fs::remove_file(&path)?;
            self.segments.pop_front();
        }
        Ok(())
    }

    /// How many segment files exist.
    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            spare.cancel.store(true, Ordering::Relaxed);
            if spare.done.is_finished() {
                let _ = std::fs::remove_file(&spare.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_SEGMENT: u64 = 64 * 1024;

    fn group(first: u64, last: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let writes = vec![(format!("k{first}").into_bytes(), vec![first as u8; 100]), (b"x".to_vec(), Vec::new())];
        encode(first, last, &writes, &mut out);
        out
    }

    fn replayed(dir: &Path, head: u64) -> Result<Vec<(u64, u64)>> {
        let mut seen = Vec::new();
        replay(dir, head, |g| {
            assert_eq!(g.writes[0].0, format!("k{}", g.first).into_bytes());
            assert_eq!(g.writes[0].1, vec![g.first as u8; 100]);
            assert_eq!(g.writes[1], (b"x".to_vec(), Vec::new()));
            seen.push((g.first, g.last));
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn replays_the_groups_after_the_head_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        for (f, l) in [(1, 3), (4, 4), (5, 9)] {
            wal.append(&group(f, l)).unwrap();
        }
        wal.sync().unwrap();
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 3), (4, 4), (5, 9)]);
        assert_eq!(replayed(dir.path(), 4).unwrap(), vec![(5, 9)]);
        assert_eq!(replayed(dir.path(), 9).unwrap(), vec![]);
    }

    #[test]
    fn a_torn_tail_ends_the_file_and_a_gap_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        wal.append(&group(1, 2)).unwrap();
        let torn = group(3, 5);
        wal.append(&torn[..torn.len() - 7]).unwrap();
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 2)]);

        // A flipped byte in the last record is a torn write too.
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        wal.append(&group(1, 2)).unwrap();
        let mut bad = group(3, 5);
        bad[20] ^= 0x40;
        wal.append(&bad).unwrap();
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 2)]);

        // sled holds less than the file starts with: acknowledged groups are missing.
        let mut wal = Wal::create_sized(dir.path(), 5, false, TEST_SEGMENT).unwrap();
        wal.append(&group(5, 6)).unwrap();
        match replayed(dir.path(), 2) {
            Err(Error::Corruption { position: 3, .. }) => {}
            other => panic!("expected corruption at 3, got {other:?}"),
        }
    }

    #[test]
    fn segments_rotate_and_are_discarded_once_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        wal.append(&group(1, 1)).unwrap();
        wal.len = TEST_SEGMENT;
        wal.rotate_if_full(2).unwrap();
        wal.append(&group(2, 2)).unwrap();
        assert_eq!(wal.segment_count(), 2);
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 1), (2, 2)]);
        wal.discard_through(0).unwrap();
        assert_eq!(wal.segment_count(), 2, "group 1 is not checkpointed yet");
        wal.discard_through(1).unwrap();
        assert_eq!(wal.segment_count(), 1);
        assert_eq!(replayed(dir.path(), 1).unwrap(), vec![(2, 2)]);
        // A damaged record in a segment that is not the last is corruption, not a torn tail.
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        let mut bad = group(1, 1);
        bad[12] ^= 1;
        wal.append(&bad).unwrap();
        wal.len = TEST_SEGMENT;
        wal.rotate_if_full(2).unwrap();
        wal.append(&group(2, 2)).unwrap();
        assert!(matches!(replayed(dir.path(), 0), Err(Error::Corruption { .. })));
    }

    fn wait_for_spare(wal: &Wal) {
        while !wal.spare.as_ref().is_some_and(Spare::ready) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_zero_filled_spare_replaces_the_plain_first_segment_and_replays_across_its_zero_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        wal.append(&group(1, 2)).unwrap();
        wal.rotate_if_full(3).unwrap();
        assert!(wal.spare.is_none(), "no spare before the first segment holds 1/64 of a segment");
        wal.len = TEST_SEGMENT / 64;
        wal.rotate_if_full(3).unwrap();
        wait_for_spare(&wal);
        wal.rotate_if_full(3).unwrap();
        assert!(wal.preallocated, "the ready spare became the segment being written");
        assert_eq!(wal.segment_count(), 2);
        let second = wal.segments[1].1.clone();
        assert_eq!(std::fs::metadata(&second).unwrap().len(), TEST_SEGMENT, "zero-filled to full size");
        wal.append(&group(3, 4)).unwrap();
        wal.append(&group(5, 5)).unwrap();
        wal.sync().unwrap();
        assert_eq!(std::fs::metadata(&second).unwrap().len(), TEST_SEGMENT, "records overwrite the zeros");
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 2), (3, 4), (5, 5)]);
        // Not full and already preallocated: no rotation even with the next spare ready.
        wait_for_spare(&wal);
        wal.rotate_if_full(6).unwrap();
        assert_eq!(wal.segment_count(), 2);
        // A spare left behind by a crash is removed by the next create.
        std::fs::write(dir.path().join("spare-1-1.tmp"), b"").unwrap();
        drop(wal);
        let wal = Wal::create_sized(dir.path(), 6, true, TEST_SEGMENT).unwrap();
        assert!(!dir.path().join("spare-1-1.tmp").exists());
        // keep_old: the old segments stay for the next replay.
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 2), (3, 4), (5, 5)]);
        drop(wal);
    }

    #[test]
    fn damage_in_an_older_segment_that_sled_already_holds_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        wal.append(&group(1, 1)).unwrap();
        let mut bad = group(2, 2);
        bad[12] ^= 1;
        wal.append(&bad).unwrap();
        wal.len = TEST_SEGMENT;
        wal.rotate_if_full(3).unwrap();
        wal.append(&group(3, 4)).unwrap();
        // sled holds 2: the damaged record is not needed.
        assert_eq!(replayed(dir.path(), 2).unwrap(), vec![(3, 4)]);
        // sled holds only 1: group 2 is lost, which is corruption.
        assert!(matches!(replayed(dir.path(), 1), Err(Error::Corruption { .. })));
    }

    #[test]
    fn damage_before_a_write_made_after_a_sync_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let build = |later_marked: bool| {
            let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
            let mut first = group(1, 1);
            mark_synced_before(&mut first);
            wal.append(&first).unwrap();
            let mut damaged = group(2, 3);
            damaged[20] ^= 0x40;
            wal.append(&damaged).unwrap();
            let mut later = group(4, 4);
            if later_marked {
                mark_synced_before(&mut later);
            }
            wal.append(&later).unwrap();
            wal
        };
        // The later record belongs to the same (torn) write: a torn tail.
        let _wal = build(false);
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 1)]);
        // The later write came after a sync, so the damaged record was synced: corruption.
        let _wal = build(true);
        match replayed(dir.path(), 0) {
            Err(Error::Corruption { position: 2, detail }) => assert!(detail.contains("damaged at byte"), "{detail}"),
            other => panic!("expected corruption at 2, got {other:?}"),
        }
        // A marked record replays like any other.
        let mut wal = Wal::create_sized(dir.path(), 1, false, TEST_SEGMENT).unwrap();
        let mut marked = group(1, 2);
        mark_synced_before(&mut marked);
        wal.append(&marked).unwrap();
        wal.append(&group(3, 3)).unwrap();
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 2), (3, 3)]);
    }
}
