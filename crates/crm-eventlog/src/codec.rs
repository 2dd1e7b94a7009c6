//! The on-disk framing of recorded events.
//!
//! A log value (one per group-commit chunk) is a sequence of frames, one per event:
//!
//! ```text
//! offset  size  field
//! 0       1     format byte (FORMAT_V1)
//! 1       2     schema version of the event payload, little endian
//! 3       8     stream version, little endian
//! 11      4     body length, little endian
//! 15      32    chain hash: SHA-256 of the previous event's chain hash, bytes 0..15 and body
//! 47      4     CRC32 (IEEE) of bytes 0..47 followed by the body
//! 51      len   body: bincode 2.0.1 (`config()`) of `Body`
//! ```
//!
//! The position of a frame is the chunk's first position (its key) plus the frame's index,
//! so a damaged frame is reported at its exact position. The CRC catches accidental damage;
//! the hash chain (the first event chains from 32 zero bytes) makes a deliberate rewrite of
//! any event, with a recomputed CRC, visible at the first rewritten position.

use bincode::{BorrowDecode, Encode};
use uuid::Uuid;

use crate::{Error, Metadata, NewEvent, RecordedEvent, Result};

pub(crate) const FORMAT_V1: u8 = 1;
pub(crate) const HEADER_LEN: usize = 51;
/// Length of a chain hash.
pub(crate) const HASH_LEN: usize = 32;
/// The chain hash "before" position 1.
pub(crate) const GENESIS: [u8; HASH_LEN] = [0; HASH_LEN];

/// The chain hash of an event: SHA-256 over the previous hash, the header fields and the body.
pub(crate) fn chain_hash(previous: &[u8; HASH_LEN], header: &[u8], body: &[u8]) -> [u8; HASH_LEN] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(previous);
    h.update(header);
    h.update(body);
    h.finalize().into()
}

/// The bincode configuration of every stored body. Changing it changes the disk format:
/// the golden-bytes test below freezes it.
pub(crate) fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<{ 4 * 1024 * 1024 }>()
}

/// The encoded part of a recorded event that does not depend on its place in the log.
/// Encoded only: reads decode the same bytes as [`BodyRef`].
#[derive(Debug, Encode)]
pub(crate) struct Body {
    pub(crate) stream: String,
    pub(crate) id: [u8; 16],
    pub(crate) event_type: String,
    pub(crate) recorded_at_micros: i64,
    pub(crate) actor: String,
    pub(crate) correlation_id: [u8; 16],
    pub(crate) causation_id: Option<[u8; 16]>,
    pub(crate) source: String,
    pub(crate) payload: Vec<u8>,
}

/// [`Body`] borrowed from the frame it is read from: the same bytes, decoded without zeroing
/// and filling a buffer for the payload before copying it out.
#[derive(BorrowDecode)]
struct BodyRef<'a> {
    stream: &'a str,
    id: [u8; 16],
    event_type: &'a str,
    recorded_at_micros: i64,
    actor: &'a str,
    correlation_id: [u8; 16],
    causation_id: Option<[u8; 16]>,
    source: &'a str,
    payload: &'a [u8],
}

/// An event whose body is encoded, waiting for the writer to give it a version and a position.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent {
    pub(crate) id: Uuid,
    pub(crate) schema_version: u16,
    /// The event type (also inside `body`), for the writer's last position per type.
    pub(crate) event_type: String,
    pub(crate) body: Vec<u8>,
}

impl EncodedEvent {
    pub(crate) fn encode(stream: &str, event: NewEvent, recorded_at_micros: i64) -> Self {
        let NewEvent { id, event_type, schema_version, metadata, payload } = event;
        let body = Body {
            stream: stream.to_owned(),
            id: id.into_bytes(),
            event_type: event_type.clone(),
            recorded_at_micros,
            actor: metadata.actor,
            correlation_id: metadata.correlation_id.into_bytes(),
            causation_id: metadata.causation_id.map(Uuid::into_bytes),
            source: metadata.source,
            payload,
        };
        let body = bincode::encode_to_vec(&body, config()).expect("encoding into a Vec cannot fail");
        EncodedEvent { id, schema_version, event_type, body }
    }

    pub(crate) fn frame_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

/// Appends one frame for `event` at stream version `version` to `out`, chained to the
/// previous event's hash `chain`, which it updates.
pub(crate) fn write_frame(out: &mut Vec<u8>, event: &EncodedEvent, version: u64, chain: &mut [u8; HASH_LEN]) {
    let start = out.len();
    out.push(FORMAT_V1);
    out.extend_from_slice(&event.schema_version.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    let len = u32::try_from(event.body.len()).expect("bodies are limited far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    *chain = chain_hash(chain, &out[start..start + 15], &event.body);
    out.extend_from_slice(chain);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 47]);
    crc.update(&event.body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&event.body);
}

/// Iterates the frames of one chunk whose first event is at `first_position`.
pub(crate) struct Frames<'a> {
    buf: &'a [u8],
    offset: usize,
    position: u64,
    failed: bool,
}

impl<'a> Frames<'a> {
    pub(crate) fn new(buf: &'a [u8], first_position: u64) -> Self {
        Frames { buf, offset: 0, position: first_position, failed: false }
    }
}

/// A frame whose checksum has been verified; the body is decoded on demand.
pub(crate) struct Frame<'a> {
    pub(crate) position: u64,
    pub(crate) schema_version: u16,
    pub(crate) version: u64,
    pub(crate) chain: [u8; HASH_LEN],
    header: &'a [u8],
    body: &'a [u8],
}

impl Frame<'_> {
    /// Whether this frame's stored chain hash follows from `previous`.
    pub(crate) fn chains_from(&self, previous: &[u8; HASH_LEN]) -> bool {
        chain_hash(previous, self.header, self.body) == self.chain
    }

    pub(crate) fn decode(&self) -> Result<RecordedEvent> {
        let corrupt = |detail: String| Error::Corruption { position: self.position, detail };
        let (body, used): (BodyRef<'_>, usize) = bincode::borrow_decode_from_slice(self.body, config())
            .map_err(|e| corrupt(format!("undecodable body: {e}")))?;
        if used != self.body.len() {
            return Err(corrupt(format!("body has {} trailing bytes", self.body.len() - used)));
        }
        Ok(RecordedEvent {
            position: self.position,
            stream: body.stream.to_owned(),
            version: self.version,
            id: Uuid::from_bytes(body.id),
            event_type: body.event_type.to_owned(),
            schema_version: self.schema_version,
            recorded_at_micros: body.recorded_at_micros,
            metadata: Metadata {
                actor: body.actor.to_owned(),
                correlation_id: Uuid::from_bytes(body.correlation_id),
                causation_id: body.causation_id.map(Uuid::from_bytes),
                source: body.source.to_owned(),
            },
            payload: body.payload.to_vec(),
        })
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let position = self.position;
        let rest = &self.buf[self.offset..];
        let corrupt = |detail: String| Some(Err(Error::Corruption { position, detail }));
        if rest.len() < HEADER_LEN {
            self.failed = true;
            return corrupt(format!("truncated frame header ({} bytes)", rest.len()));
        }
        if rest[0] != FORMAT_V1 {
            self.failed = true;
            return corrupt(format!("unknown format byte {:#04x}", rest[0]));
        }
        let schema_version = u16::from_le_bytes([rest[1], rest[2]]);
        let version = u64::from_le_bytes(rest[3..11].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(rest[11..15].try_into().expect("4 bytes")) as usize;
        let chain: [u8; HASH_LEN] = rest[15..47].try_into().expect("32 bytes");
        let stored_crc = u32::from_le_bytes(rest[47..51].try_into().expect("4 bytes"));
        let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            self.failed = true;
            return corrupt(format!("frame length {len} runs past the end of the record"));
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&rest[..47]);
        crc.update(body);
        let actual = crc.finalize();
        if actual != stored_crc {
            self.failed = true;
            return corrupt(format!("checksum mismatch: stored {stored_crc:#010x}, computed {actual:#010x}"));
        }
        self.offset += HEADER_LEN + len;
        self.position += 1;
        Some(Ok(Frame { position, schema_version, version, chain, header: &rest[..15], body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (NewEvent, i64) {
        let event = NewEvent {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            event_type: "LeadCaptured".to_owned(),
            schema_version: 2,
            metadata: Metadata {
                actor: "user-7".to_owned(),
                correlation_id: Uuid::from_u128(0xabc),
                causation_id: Some(Uuid::from_u128(0xdef)),
                source: "web_form".to_owned(),
            },
            payload: vec![1, 2, 3, 250, 255],
        };
        (event, 1_767_225_600_000_000)
    }

    /// Freezes the disk format: if this test fails, the encoding changed and old data
    /// directories would no longer decode. Bump FORMAT and add a reader instead.
    #[test]
    fn golden_bytes_of_a_frame() {
        let (event, at) = sample();
        let encoded = EncodedEvent::encode("lead-42", event, at);
        let mut frame = Vec::new();
        write_frame(&mut frame, &encoded, 3, &mut GENESIS.clone());
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "01 0200 0300000000000000 65000000\
             28ef4720c2fde2687ccb6f7a4e39558076213ea8c581e41f0d9ffb09088e718b\
             67e4df50\
             07 6c6561642d3432\
             01900000000070008000000000000001\
             0c 4c6561644361707475726564\
             fd 0080408c908e0c00\
             06 757365722d37\
             00000000000000000000000000000abc\
             01 00000000000000000000000000000def\
             08 7765625f666f726d\
             05 0102 03 faff"
                .replace(char::is_whitespace, "")
        );
    }

    #[test]
    fn frames_round_trip() {
        let (event, at) = sample();
        let mut buf = Vec::new();
        let mut chain = GENESIS;
        for v in 0..3 {
            let mut e = event.clone();
            e.id = Uuid::from_u128(v as u128 + 1);
            write_frame(&mut buf, &EncodedEvent::encode("lead-42", e, at), v, &mut chain);
        }
        let frames: Vec<_> = Frames::new(&buf, 10).map(|f| f.unwrap()).collect();
        let mut previous = GENESIS;
        for f in &frames {
            assert!(f.chains_from(&previous));
            previous = f.chain;
        }
        assert_eq!(previous, chain);
        assert!(!frames[1].chains_from(&GENESIS), "a frame does not chain from the wrong predecessor");
        let decoded: Vec<_> = Frames::new(&buf, 10).map(|f| f.unwrap().decode().unwrap()).collect();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[2].position, 12);
        assert_eq!(decoded[2].version, 2);
        assert_eq!(decoded[1].payload, event.payload);
        assert_eq!(decoded[1].metadata, event.metadata);
    }

    #[test]
    fn every_flipped_byte_is_reported_at_its_position() {
        let (event, at) = sample();
        let mut buf = Vec::new();
        let mut chain = GENESIS;
        write_frame(&mut buf, &EncodedEvent::encode("s", event.clone(), at), 0, &mut chain);
        let second = buf.len();
        write_frame(&mut buf, &EncodedEvent::encode("s", event, at), 1, &mut chain);
        for i in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x40;
            let results: Vec<_> = Frames::new(&damaged, 5).collect();
            let err = results.into_iter().find_map(|r| r.err()).expect("damage detected");
            let expected = if i < second { 5 } else { 6 };
            match err {
                Error::Corruption { position, .. } => assert_eq!(position, expected, "byte {i}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
