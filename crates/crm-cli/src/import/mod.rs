//! `crmctl import customers.csv --mapping mapping.toml`.
//!
//! 1. `decode`: the file's bytes to text (UTF-8, or GBK/GB18030 as Chinese spreadsheet
//!    exports often are), with its SHA-256.
//! 2. `plan`: every row mapped onto customer fields and normalised with the domain's
//!    normalisers; invalid phones and credit codes flagged with their line numbers;
//!    duplicates inside the file and against the server's customers found with crm-matching.
//!    The cleansing report is the plan rendered (`--dry-run` stops there).
//! 3. `run`: the accepted rows go through `CommandService.CreateCustomer` in batches. Each row's
//!    customer id and idempotency key derive from the file's hash and the row's line number,
//!    and a progress file records finished batches, so an interrupted import resumes without
//!    creating any customer twice.

mod plan;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use crm_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::client::{status, Clients, Connection};
use crate::util::hex;

pub(crate) use plan::{Mapping, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Encoding {
    /// UTF-8 when the bytes are valid UTF-8 (a BOM is skipped), else GBK.
    Auto,
    Utf8,
    /// GBK, read as GB18030 (its superset).
    Gbk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The CSV file; the first line holds the column names.
    file: PathBuf,
    /// TOML mapping of column names to customer fields.
    #[arg(long)]
    mapping: PathBuf,
    /// Write the cleansing report and store nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, value_enum, default_value = "auto")]
    encoding: Encoding,
    /// Write the cleansing report here (default: standard output for --dry-run, none otherwise).
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    report_format: ReportFormat,
    /// Customers created concurrently per batch; progress is saved after each batch.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Pause between batches, to spare a busy server.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Progress file (default: `<file>.crmctl-progress` beside the CSV).
    #[arg(long)]
    progress_file: Option<PathBuf>,
    /// Owner of the imported customers (default: the token's user, as the server decides).
    #[arg(long, default_value = "")]
    owner: String,
    /// Import rows flagged as duplicates as well (default: skip them).
    #[arg(long)]
    include_duplicates: bool,
    /// Do not compare with the server's customers (no server needed for --dry-run).
    #[arg(long)]
    no_existing: bool,
}

/// The file as text.
pub(crate) struct Decoded {
    pub(crate) text: String,
    pub(crate) encoding: &'static str,
    pub(crate) sha256: String,
    /// Byte sequences that were not valid in the encoding (replaced by U+FFFD).
    pub(crate) malformed: bool,
}

pub(crate) fn decode(bytes: &[u8], encoding: Encoding) -> Result<Decoded> {
    let sha256 = hex(&Sha256::digest(bytes));
    let utf8 = |b: &[u8]| {
        let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
        let (text, malformed) = encoding_rs::UTF_8.decode_without_bom_handling(b);
        (text.into_owned(), malformed)
    };
    let gbk = |b: &[u8]| {
        let (text, malformed) = encoding_rs::GB18030.decode_without_bom_handling(b);
        (text.into_owned(), malformed)
    };
    let (text, encoding, malformed) = match encoding {
        Encoding::Utf8 => {
            let (t, m) = utf8(bytes);
            (t, "utf-8", m)
        }
        Encoding::Gbk => {
            let (t, m) = gbk(bytes);
            (t, "gbk", m)
        }
        Encoding::Auto => {
            let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            if std::str::from_utf8(body).is_ok() {
                let (t, m) = utf8(bytes);
                (t, "utf-8", m)
            } else {
                let (t, m) = gbk(bytes);
                (t, "gbk", m)
            }
        }
    };
    Ok(Decoded { text, encoding, sha256, malformed })
}

/// What the progress file records: the file it belongs to and how far the import got.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(default)]
struct Progress {
    file_sha256: String,
    /// Every row to import up to this file line is stored. Rows are sent in line order and a
    /// batch is recorded only once all of it is acknowledged, so this is a safe resume point
    /// even if the plan changes between runs (a row newly found to duplicate a customer
    /// created meanwhile is skipped either way).
    last_line: u64,
    /// Rows stored so far (for display).
    done: usize,
    created: usize,
    deduplicated: usize,
}

fn progress_path(args: &ImportArgs) -> PathBuf {
    args.progress_file.clone().unwrap_or_else(|| {
        let mut name = args.file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".crmctl-progress");
        args.file.with_file_name(name)
    })
}

fn load_progress(path: &Path, sha: &str) -> Result<Progress> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let p: Progress =
                serde_json::from_str(&text).with_context(|| format!("reading progress file {}", path.display()))?;
            if p.file_sha256 != sha {
                bail!(
                    "{} belongs to another version of the file (sha256 {}); remove it to start over",
                    path.display(),
                    p.file_sha256
                );
            }
            Ok(p)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Progress { file_sha256: sha.to_owned(), ..Progress::default() })
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the progress file atomically (temporary file, fsync, rename).
fn save_progress(path: &Path, p: &Progress) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string(p)?.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Every customer the server lists now (for duplicates against existing customers).
async fn existing_customers(clients: &Clients) -> Result<Vec<pb::CustomerView>> {
    let head = clients
        .eventlog()
        .get_head(pb::GetHeadRequest {})
        .await
        .map_err(|s| status("EventLog.GetHead", s))?
        .into_inner()
        .head;
    let mut query = clients.query();
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = query
            .list_customers(pb::ListCustomersRequest {
                min_position: head,
                page_size: 500,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| status("Query.ListCustomers", s))?
            .into_inner();
        out.extend(r.customers);
        if r.next_cursor.is_empty() {
            return Ok(out);
        }
        cursor = r.next_cursor;
    }
}

pub(crate) async fn run(conn: &Connection, args: ImportArgs) -> Result<u8> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let decoded = decode(&bytes, args.encoding)?;
    let mapping_text =
        std::fs::read_to_string(&args.mapping).with_context(|| format!("reading {}", args.mapping.display()))?;
    let mapping: Mapping =
        toml::from_str(&mapping_text).with_context(|| format!("{} is not a valid mapping", args.mapping.display()))?;
    let clients = if args.dry_run && args.no_existing { None } else { Some(conn.connect().await?) };
    let existing = match (&clients, args.no_existing) {
        (Some(c), false) => existing_customers(c).await?,
        _ => Vec::new(),
    };
    let file_name = args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let plan = Plan::build(&file_name, &decoded, &mapping, &existing, args.include_duplicates)?;
    let report = match args.report_format {
        ReportFormat::Text => plan.report_text(),
        ReportFormat::Json => serde_json::to_string_pretty(&plan.report)? + "\n",
    };
    match (&args.report, args.dry_run) {
        (Some(p), _) => std::fs::write(p, &report).with_context(|| format!("writing {}", p.display()))?,
        (None, true) => print!("{report}"),
        (None, false) => {}
    }
    if args.dry_run {
        return Ok(0);
    }
    let clients = clients.expect("connected for a real run");
    let path = progress_path(&args);
    let mut progress = load_progress(&path, &decoded.sha256)?;
    let all_rows = plan.to_import();
    let rows: Vec<_> = all_rows.iter().filter(|r| r.line > progress.last_line).copied().collect();
    if progress.last_line > 0 {
        eprintln!(
            "resuming after line {}: {} of {} rows left ({})",
            progress.last_line,
            rows.len(),
            all_rows.len(),
            path.display()
        );
    }
    let bar = ProgressBar::new(all_rows.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("import [{bar:40}] {pos}/{len} rows {per_sec} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position((all_rows.len() - rows.len()) as u64);
    let mut last_position = 0;
    for (n, batch) in rows.chunks(args.batch_size.max(1)).enumerate() {
        let calls = batch.iter().map(|row| {
            let mut commands = clients.commands();
            let request = pb::CreateCustomerRequest {
                options: Some(pb::CommandOptions {
                    idempotency_key: plan.idempotency_key(row.line),
                    source: mapping.options.source.clone(),
                    ..Default::default()
                }),
                customer_id: plan.customer_id(row.line).to_string(),
                fields: row.fields.clone().into_iter().collect(),
                owner_id: args.owner.clone(),
            };
            let line = row.line;
            async move {
                commands
                    .create_customer(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| status(&format!("CreateCustomer (line {line})"), s))
            }
        });
        for r in futures::future::join_all(calls).await {
            let r = r?;
            last_position = last_position.max(r.position);
            if r.deduplicated {
                progress.deduplicated += 1;
            } else {
                progress.created += 1;
            }
        }
        progress.done += batch.len();
        progress.last_line = batch.last().map_or(progress.last_line, |r| r.line);
        save_progress(&path, &progress)?;
        bar.inc(batch.len() as u64);
        if args.pause_ms > 0 && (n + 1) * args.batch_size.max(1) < rows.len() {
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
    }
    bar.finish_and_clear();
    println!(
        "imported {} rows from {} ({} created, {} already there); {} skipped; last position {}",
        all_rows.len(),
        args.file.display(),
        progress.created,
        progress.deduplicated,
        plan.report.rows - all_rows.len(),
        last_position
    );
    println!("progress file {} (keep it to make a re-run a no-op; remove it to re-check every row)", path.display());
    Ok(0)
}
