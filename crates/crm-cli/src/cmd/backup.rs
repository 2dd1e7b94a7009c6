//! `crmctl backup` and `crmctl restore`.
//!
//! A backup streams the running server's log through `EventLog.ReadAll` (up to the head when
//! it starts, so the copy is one consistent prefix) into a new data directory, appending with
//! `SledEventStore::append_many_recorded_at`: positions, stream versions, event ids, types,
//! schema versions, metadata, payloads and recorded-at times are all kept, so the frames hash
//! to the same chain; the copy is verified before the command succeeds. A restore does the
//! same from a backup, a stopped server's data directory or an `export events` file,
//! optionally stopping at a position or time.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use crm_eventlog::{
    Config, Durability, ExpectedVersion, Metadata, NewEvent, RecordedEvent, SledEventStore, StreamAppend,
};
use crm_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::client::Connection;
use crate::util::{micros, parse_time, unhex};

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// New data directory to create (its log goes to `<out>/eventlog`); must not hold a log.
    #[arg(long, short = 'o')]
    out: PathBuf,
    #[command(flatten)]
    until: Until,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// A backup, a stopped server's data directory, or a JSON Lines file from `export events`.
    #[arg(long)]
    from: PathBuf,
    /// New data directory to create; start `crm-server --data-dir` on it afterwards.
    #[arg(long, env = "CRM_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    until: Until,
}

/// Where a copy stops (point in time).
#[derive(Debug, Args, Clone)]
pub(crate) struct Until {
    /// Copy events up to and including this position.
    #[arg(long)]
    to_position: Option<u64>,
    /// Copy events up to this time: the copy ends before the first event recorded after it
    /// (RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in China Standard Time).
    #[arg(long)]
    to_time: Option<String>,
}

/// Appends copied events into a new store, checking that every position comes out the same.
struct Copier {
    store: SledEventStore,
    to_position: u64,
    to_time: Option<i64>,
    copied: u64,
    done: bool,
    bar: ProgressBar,
}

impl Copier {
    fn create(data_dir: &Path, until: &Until, total: u64) -> Result<Copier> {
        let path = data_dir.join("eventlog");
        if path.exists() && std::fs::read_dir(&path)?.next().is_some() {
            bail!("{} already holds a log; restore into a new directory", path.display());
        }
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let store = SledEventStore::open(Config::new(&path)).with_context(|| format!("opening {}", path.display()))?;
        let to_time = until.to_time.as_deref().map(parse_time).transpose()?;
        let to_position = until.to_position.unwrap_or(u64::MAX);
        let bar = ProgressBar::new(total.min(to_position));
        bar.set_style(
            ProgressStyle::with_template("copy [{bar:40}] {pos}/{len} events {per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Ok(Copier { store, to_position, to_time, copied: 0, done: false, bar })
    }

    /// Copies a page of events (in position order); sets `done` once past the limit.
    async fn page(&mut self, events: Vec<RecordedEvent>) -> Result<()> {
        let mut events: Vec<RecordedEvent> =
            events.into_iter().take_while(|e| e.position <= self.to_position).collect();
        if let Some(t) = self.to_time {
            if let Some(cut) = events.iter().position(|e| e.recorded_at_micros > t) {
                events.truncate(cut);
                self.done = true;
            }
        }
        if events.last().is_some_and(|e| e.position >= self.to_position) {
            self.done = true;
        }
        let mut i = 0;
        while i < events.len() {
            let at = events[i].recorded_at_micros;
            let mut appends: Vec<StreamAppend> = Vec::new();
            let mut streams = HashSet::new();
            let mut j = i;
            while j < events.len() && events[j].recorded_at_micros == at && j - i < crm_eventlog::MAX_EVENTS_PER_APPEND
            {
                let e = &events[j];
                let new = NewEvent {
                    id: e.id,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    metadata: e.metadata.clone(),
                    payload: e.payload.clone(),
                };
                match appends.last_mut() {
                    Some(last) if last.stream == e.stream => last.events.push(new),
                    _ if streams.contains(e.stream.as_str()) => break,
                    _ => {
                        streams.insert(e.stream.as_str());
                        appends.push(StreamAppend {
                            stream: e.stream.clone(),
                            expected: if e.version == 0 {
                                ExpectedVersion::NoStream
                            } else {
                                ExpectedVersion::Exact(e.version - 1)
                            },
                            events: vec![new],
                        });
                    }
                }
                j += 1;
            }
            let results =
                self.store.append_many_recorded_at(appends, Durability::Buffered, at).await.with_context(|| {
                    format!("copying the events at positions {}..={}", events[i].position, events[j - 1].position)
                })?;
            let first = results.iter().map(|r| r.first_position).min().unwrap_or(0);
            let last = results.iter().map(|r| r.last_position).max().unwrap_or(0);
            if first != events[i].position || last != events[j - 1].position {
                bail!(
                    "the copy assigned positions {first}..={last} to the events at {}..={}; the target log was not empty",
                    events[i].position,
                    events[j - 1].position
                );
            }
            self.copied += (j - i) as u64;
            self.bar.set_position(events[j - 1].position);
            i = j;
        }
        Ok(())
    }

    /// Makes everything durable, checks the copy's hash chain and closes the store.
    async fn finish(self, data_dir: &Path) -> Result<u64> {
        self.bar.finish_and_clear();
        // One durable append is not possible without writing an event; closing flushes
        // sled, and the verification below re-reads every record.
        self.store.close();
        drop(self.store);
        let dir = data_dir.to_owned();
        let v = tokio::task::spawn_blocking(move || super::verify::verify_log_offline(&dir, false)).await??;
        if let Some((p, detail)) = v.first_broken {
            bail!("the copy does not verify at position {p}: {detail}");
        }
        if v.head != self.copied {
            bail!("the copy holds {} events, {} were copied", v.head, self.copied);
        }
        Ok(v.head)
    }
}

fn uuid_or_nil(text: &str) -> Result<Uuid> {
    if text.is_empty() {
        return Ok(Uuid::nil());
    }
    Uuid::parse_str(text).with_context(|| format!("bad UUID {text:?}"))
}

pub(crate) fn event_from_pb(e: pb::RecordedEvent) -> Result<RecordedEvent> {
    let m = e.metadata.unwrap_or_default();
    Ok(RecordedEvent {
        position: e.position,
        stream: e.stream,
        version: e.version,
        id: uuid_or_nil(&e.event_id)?,
        event_type: e.event_type,
        schema_version: u16::try_from(e.schema_version).context("schema version out of range")?,
        recorded_at_micros: e.recorded_at.as_ref().map_or(0, micros),
        metadata: Metadata {
            actor: m.actor,
            correlation_id: uuid_or_nil(&m.correlation_id)?,
            causation_id: if m.causation_id.is_empty() { None } else { Some(uuid_or_nil(&m.causation_id)?) },
            source: m.source,
        },
        payload: e.payload,
    })
}

/// The inverse of [`super::export::event_json`].
pub(crate) fn event_from_json(line: &str) -> Result<RecordedEvent> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    let s = |k: &str| v[k].as_str().map(str::to_owned).with_context(|| format!("missing {k}"));
    let n = |k: &str| v[k].as_u64().with_context(|| format!("missing {k}"));
    let m = &v["metadata"];
    let ms = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
    Ok(RecordedEvent {
        position: n("position")?,
        stream: s("stream")?,
        version: n("version")?,
        id: uuid_or_nil(&s("event_id")?)?,
        event_type: s("event_type")?,
        schema_version: u16::try_from(n("schema_version")?)?,
        recorded_at_micros: v["recorded_at_micros"].as_i64().context("missing recorded_at_micros")?,
        metadata: Metadata {
            actor: ms("actor"),
            correlation_id: uuid_or_nil(&ms("correlation_id"))?,
            causation_id: match ms("causation_id") {
                c if c.is_empty() => None,
                c => Some(uuid_or_nil(&c)?),
            },
            source: ms("source"),
        },
        payload: unhex(&s("payload_hex")?)?,
    })
}

pub(crate) async fn backup(conn: &Connection, a: BackupArgs) -> Result<u8> {
    let head = super::export::head(conn).await?;
    let to = head.min(a.until.to_position.unwrap_or(u64::MAX));
    let mut copier = Copier::create(&a.out, &a.until, to)?;
    let mut log = conn.connect().await?.eventlog();
    let mut next = 1;
    while next <= to && !copier.done {
        let r = log
            .read_all(pb::ReadAllRequest { from_position: next, limit: (to - next + 1).min(1000) as u32 })
            .await
            .map_err(|s| crate::client::status("EventLog.ReadAll", s))?
            .into_inner();
        if r.events.is_empty() {
            bail!("the log ended at {} before the head {to}", next - 1);
        }
        next = r.events.last().map_or(next, |e| e.position + 1);
        let events = r.events.into_iter().map(event_from_pb).collect::<Result<Vec<_>>>()?;
        copier.page(events).await?;
    }
    let copied = copier.finish(&a.out).await?;
    write_manifest(&a.out, &conn.server, copied)?;
    println!("backup of {} events (server head {head}) in {}; hash chain verified", copied, a.out.display());
    Ok(0)
}

fn write_manifest(dir: &Path, source: &str, head: u64) -> Result<()> {
    let text = format!(
        "# written by crmctl\nsource = {source:?}\nhead = {head}\ncreated_at = {:?}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    std::fs::write(dir.join("crmctl-copy.toml"), text)?;
    Ok(())
}

pub(crate) async fn restore(a: RestoreArgs) -> Result<u8> {
    let source = a.from.display().to_string();
    let copied = if a.from.is_dir() {
        let path = a.from.join("eventlog");
        if !path.exists() {
            bail!("{} is not a data directory (no eventlog/ in it)", a.from.display());
        }
        let src = SledEventStore::open(Config::new(&path))
            .with_context(|| format!("opening {} (is a server still running on it?)", path.display()))?;
        let head = src.committed_head();
        let mut copier = Copier::create(&a.data_dir, &a.until, head)?;
        let mut next = 1;
        while next <= head && !copier.done {
            let events = src.read_all_blocking(next, 1000)?;
            let Some(last) = events.last() else { break };
            next = last.position + 1;
            copier.page(events).await?;
        }
        src.close();
        copier.finish(&a.data_dir).await?
    } else {
        let file = std::fs::File::open(&a.from).with_context(|| format!("opening {}", a.from.display()))?;
        let mut copier = Copier::create(&a.data_dir, &a.until, 0)?;
        let mut page = Vec::new();
        let mut expected = 1;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let e = event_from_json(&line).with_context(|| format!("{} line {}", a.from.display(), n + 1))?;
            if e.position != expected {
                bail!("{} line {}: position {} where {expected} was expected (an export must start at 1 and have no gaps)", a.from.display(), n + 1, e.position);
            }
            expected += 1;
            page.push(e);
            if page.len() == 1000 {
                copier.page(std::mem::take(&mut page)).await?;
                if copier.done {
                    break;
                }
            }
        }
        if !copier.done && !page.is_empty() {
            copier.page(page).await?;
        }
        copier.finish(&a.data_dir).await?
    };
    write_manifest(&a.data_dir, &source, copied)?;
    println!("restored {copied} events from {source} into {}; hash chain verified", a.data_dir.display());
    Ok(0)
}
