//! Key layout of the single sled tree. One tree with prefixed keys makes a sled `Batch`
//! atomic across the log, the stream index and the id index.
//!
//! ```text
//! e <first position: u64 BE>                      -> chunk of frames (see codec)
//! s <stream id bytes> 0x00 <first version: u64 BE> -> <first position: u64 BE> <count: u32 BE>
//! j <event id bytes 0..6>                        -> up to 256 (id suffix, position) entries
//! i <event id: 16 bytes>                           -> <position: u64 BE> (beyond a full bucket)
//! ```
//!
//! The id index (`j` buckets and `i` keys) is described in `id_index.rs`.
//!
//! Stream ids never contain 0x00 (validated on append), so one stream's index entries are
//! contiguous and no stream's prefix is a prefix of another's.

pub(crate) const LOG: u8 = b'e';
pub(crate) const STREAM: u8 = b's';
pub(crate) const ID: u8 = b'i';
pub(crate) const ID_BUCKET: u8 = b'j';

pub(crate) fn log_key(position: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOG;
    k[1..].copy_from_slice(&position.to_be_bytes());
    k
}

pub(crate) fn log_key_position(key: &[u8]) -> Option<u64> {
    (key.len() == 9 && key[0] == LOG).then(|| u64::from_be_bytes(key[1..].try_into().expect("8 bytes")))
}

pub(crate) fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 10);
    k.push(STREAM);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

pub(crate) fn stream_key(stream: &str, first_version: u64) -> Vec<u8> {
    let mut k = stream_prefix(stream);
    k.extend_from_slice(&first_version.to_be_bytes());
    k
}

/// One stream index entry: `count` events starting at `first_version` / `first_position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub(crate) first_version: u64,
    pub(crate) first_position: u64,
    pub(crate) count: u32,
}

impl StreamEntry {
    pub(crate) fn value(&self) -> [u8; 12] {
        let mut v = [0u8; 12];
        v[..8].copy_from_slice(&self.first_position.to_be_bytes());
        v[8..].copy_from_slice(&self.count.to_be_bytes());
        v
    }

    pub(crate) fn parse(key: &[u8], value: &[u8]) -> Option<Self> {
        let version = key.get(key.len().checked_sub(8)?..)?;
        if value.len() != 12 {
            return None;
        }
        Some(StreamEntry {
            first_version: u64::from_be_bytes(version.try_into().ok()?),
            first_position: u64::from_be_bytes(value[..8].try_into().ok()?),
            count: u32::from_be_bytes(value[8..].try_into().ok()?),
        })
    }

    pub(crate) fn last_version(&self) -> u64 {
        self.first_version + u64::from(self.count) - 1
    }

    pub(crate) fn last_position(&self) -> u64 {
        self.first_position + u64::from(self.count) - 1
    }
}

pub(crate) fn id_key(id: &uuid::Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = ID;
    k[1..].copy_from_slice(id.as_bytes());
    k
}
