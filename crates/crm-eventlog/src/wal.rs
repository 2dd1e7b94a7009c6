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
//! `len: u32 LE`, `crc32(body): u32 LE`, then the body: `first position: u64 LE`,
//! `last position: u64 LE`, then the group's sled writes as `key len: u32 LE`, key,
//! `value len: u32 LE`, value.
//!
//! **Architecture Invariant:** a record is written only for a group already applied to the
//! running sled instance, in the order the groups were applied, and no record is written
//! after a failed write or sync (the file could end in a torn record). So the file holds a
//! gapless run of groups, and a damaged record can only be the torn tail of the last write,
//! which was never acknowledged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The directory of the write-ahead file, inside the data directory.
pub(crate) const DIR: &str = "wal";
/// A segment is closed (and a new one started) once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const HEADER: usize = 8;

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
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
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
            let group = bytes.get(at..at + HEADER).and_then(|h| {
                let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
                let body = bytes.get(at + HEADER..at + HEADER + len)?;
                (crc32fast::hash(body) == crc).then(|| decode(body)).flatten().map(|g| (g, HEADER + len))
            });
            let Some((group, size)) = group else {
                if i + 1 < segments.len() {
                    return Err(Error::Corruption {
                        position: head + 1,
                        detail: format!(
                            "write-ahead file {} is damaged at byte {at}, and later segments exist",
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
pub(crate) struct Wal {
    dir: PathBuf,
    /// First position and path of every segment, oldest first; the last is being written.
    segments: VecDeque<(u64, PathBuf)>,
    file: File,
    len: u64,
}

impl Wal {
    /// Deletes every segment in `dir` and starts an empty one whose first group starts at
    /// `first`. Call only when sled durably holds every group the old segments hold.
    pub(crate) fn create(dir: &Path, first: u64) -> Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let new = segment_path(dir, first);
        for (_, path) in segments(dir)? {
            if path != new {
                std::fs::remove_file(&path)?;
            }
        }
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&new)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Wal { dir: dir.to_owned(), segments: VecDeque::from([(first, new)]), file, len: 0 })
    }

    /// Writes records (see [`encode`]) at the end of the file; not yet durable.
    pub(crate) fn append(&mut self, records: &[u8]) -> Result<()> {
        self.file.write_all(records)?;
        self.len += records.len() as u64;
        Ok(())
    }

    /// The barrier: `fdatasync` of the segment being written.
    pub(crate) fn sync(&self) -> Result<()> {
        Ok(self.file.sync_data()?)
    }

    /// Starts a new segment for groups from `next` on once the current one is full. The full
    /// segment is synced first, so a later segment is never durable before an earlier one.
    pub(crate) fn rotate_if_full(&mut self, next: u64) -> Result<()> {
        if self.len < SEGMENT_BYTES {
            return Ok(());
        }
        self.file.sync_data()?;
        let path = segment_path(&self.dir, next);
        self.file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        File::open(&self.dir)?.sync_all()?;
        self.segments.push_back((next, path));
        self.len = 0;
        Ok(())
    }

    /// Deletes the segments whose every group is at or below `checkpointed` (durable in sled).
    pub(crate) fn discard_through(&mut self, checkpointed: u64) -> Result<()> {
        while self.segments.len() > 1 && self.segments[1].0 <= checkpointed + 1 {
            let (_, path) = self.segments.pop_front().expect("two segments");
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// How many segment files exist.
    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut wal = Wal::create(dir.path(), 1).unwrap();
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
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(&group(1, 2)).unwrap();
        let torn = group(3, 5);
        wal.append(&torn[..torn.len() - 7]).unwrap();
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 2)]);

        // A flipped byte in the last record is a torn write too.
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(&group(1, 2)).unwrap();
        let mut bad = group(3, 5);
        bad[20] ^= 0x40;
        wal.append(&bad).unwrap();
        assert_eq!(replayed(dir.path(), 0).unwrap(), vec![(1, 2)]);

        // sled holds less than the file starts with: acknowledged groups are missing.
        let mut wal = Wal::create(dir.path(), 5).unwrap();
        wal.append(&group(5, 6)).unwrap();
        match replayed(dir.path(), 2) {
            Err(Error::Corruption { position: 3, .. }) => {}
            other => panic!("expected corruption at 3, got {other:?}"),
        }
    }

    #[test]
    fn segments_rotate_and_are_discarded_once_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(&group(1, 1)).unwrap();
        wal.len = SEGMENT_BYTES;
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
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        let mut bad = group(1, 1);
        bad[12] ^= 1;
        wal.append(&bad).unwrap();
        wal.len = SEGMENT_BYTES;
        wal.rotate_if_full(2).unwrap();
        wal.append(&group(2, 2)).unwrap();
        assert!(matches!(replayed(dir.path(), 0), Err(Error::Corruption { .. })));
    }
}
