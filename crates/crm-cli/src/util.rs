//! Small shared helpers: time parsing and formatting, plain-text tables, hex.

use anyhow::{bail, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch from RFC 3339 (`2026-02-17T23:59:00+08:00`), a naive
/// `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DD` (both read as China Standard Time, UTC+8, the
/// business time zone).
pub(crate) fn parse_time(text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset");
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            if let Some(t) = cst.from_local_datetime(&t).single() {
                return Ok(t.timestamp_micros());
            }
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = cst.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")).single() {
            return Ok(t.timestamp_micros());
        }
    }
    bail!("cannot read {text:?} as a time: use RFC 3339 (2026-02-17T23:59:00+08:00), YYYY-MM-DD HH:MM[:SS] or YYYY-MM-DD (China Standard Time)")
}

pub(crate) fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

pub(crate) fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

/// RFC 3339 in UTC with microseconds; empty for 0.
pub(crate) fn format_micros(micros: i64) -> String {
    if micros == 0 {
        return String::new();
    }
    Utc.timestamp_micros(micros)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| micros.to_string())
}

pub(crate) fn format_ts(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| format_micros(micros(t))).unwrap_or_default()
}

/// A plain-text table with columns padded to their widest cell (by character count).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum::<usize>();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(cell));
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            l.push_str(cell);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("odd-length hex");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| anyhow::anyhow!("bad hex: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_china_standard_time_unless_an_offset_is_given() {
        assert_eq!(parse_time("2026-02-17T15:59:00Z").unwrap(), parse_time("2026-02-17 23:59").unwrap());
        assert_eq!(parse_time("2026-02-17").unwrap(), parse_time("2026-02-16T16:00:00Z").unwrap());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), vec![0, 1, 254, 255]);
    }
}
