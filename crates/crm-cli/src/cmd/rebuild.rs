//! `crmctl rebuild <projection>`: a progress bar fed by `Admin.RebuildProjection`.

use anyhow::{bail, Result};
use crm_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{status, Connection};

pub(crate) async fn run(conn: &Connection, name: String) -> Result<u8> {
    let mut stream = conn
        .connect()
        .await?
        .admin()
        .rebuild_projection(pb::RebuildProjectionRequest { name: name.clone() })
        .await
        .map_err(|s| status("Admin.RebuildProjection", s))?
        .into_inner();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} events  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("rebuild {name}"));
    let mut last = None;
    while let Some(p) = stream.message().await.map_err(|s| status("Admin.RebuildProjection", s))? {
        bar.set_length(p.total.max(p.done));
        bar.set_position(p.done);
        bar.set_message(format!("{:.0} ev/s, eta {:.1}s", p.events_per_second, p.eta_seconds));
        let finished = p.finished;
        last = Some(p);
        if finished {
            break;
        }
    }
    bar.finish_and_clear();
    match last {
        Some(p) if p.finished => {
            let why = if p.reason.is_empty() { String::new() } else { format!(" ({})", p.reason) };
            println!(
                "rebuilt {name}: {} events in {:.1}s, swapped in at position {}{why}",
                p.done, p.elapsed_seconds, p.swapped_at_position
            );
            Ok(0)
        }
        _ => bail!("the server ended the progress stream before the rebuild finished"),
    }
}
