//! Queries over the customers tree. Each takes a [`Reader`] (the serving tree and the log
//! position it reflects), so the caller can tell the client how fresh the answer is.

use crm_projection_runtime::{Reader, Result};
use uuid::Uuid;

use crate::projector::{created_value, customer_key, index_prefix, phone_forms, search_name, CustomerView, Value};

/// Most index entries one page may scan; a page stops early (with a cursor) past this, so
/// a query's cost is bounded whatever the filters.
const MAX_SCAN: usize = 20_000;

/// List filters; every set filter must hold (tags: all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub owner: Option<Uuid>,
    pub region: Option<String>,
    pub stage: Option<String>,
    pub industry: Option<String>,
    pub tags: Vec<String>,
    /// Creation time range in microseconds, inclusive from, exclusive to.
    pub created_from_micros: Option<i64>,
    pub created_to_micros: Option<i64>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn matches(&self, v: &CustomerView) -> bool {
        v.absorbed_into.is_none()
            && self.owner.is_none_or(|o| v.owner == Some(o))
            && self.region.as_deref().is_none_or(|r| v.field("region") == Some(r))
            && self.stage.as_deref().is_none_or(|s| v.stage.as_deref() == Some(s))
            && self.industry.as_deref().is_none_or(|i| v.field("industry") == Some(i))
            && self.tags.iter().all(|t| v.tags.contains(t))
            && self.created_from_micros.is_none_or(|f| v.created_at_micros >= f)
            && self.created_to_micros.is_none_or(|t| v.created_at_micros < t)
    }

    /// The index to drive the scan: the most selective filter that has one.
    fn driving_range(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let exact = |field: &str, value: &str| (index_prefix(field, value), None);
        if let Some(owner) = self.owner {
            return exact("owner", &owner.to_string());
        }
        if let Some(tag) = self.tags.first() {
            return exact("tag", tag);
        }
        if let Some(stage) = &self.stage {
            return exact("stage", stage);
        }
        if let Some(region) = &self.region {
            return exact("region", region);
        }
        if let Some(industry) = &self.industry {
            return exact("industry", industry);
        }
        if self.created_from_micros.is_some() || self.created_to_micros.is_some() {
            let from = format!("x/created/{}", created_value(self.created_from_micros.unwrap_or(0))).into_bytes();
            let to = self.created_to_micros.map(|t| format!("x/created/{}", created_value(t)).into_bytes());
            return (from, Some(to.unwrap_or_else(|| b"x/created0".to_vec())));
        }
        (b"x/created/".to_vec(), None)
    }
}

/// One page of customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub customers: Vec<CustomerView>,
    /// Pass back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// One customer by id (absorbed ones too: they say whom they were merged into).
pub fn get(reader: &Reader, id: Uuid) -> Result<Option<CustomerView>> {
    Ok(match reader.get::<Value>(&customer_key(&id))? {
        Some(Value::Customer(view)) => Some(*view),
        _ => None,
    })
}

fn id_of_index_key(key: &[u8]) -> Option<Uuid> {
    let at = key.iter().rposition(|b| *b == 0)?;
    Uuid::parse_str(std::str::from_utf8(&key[at + 1..]).ok()?).ok()
}

fn encode_cursor(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok()).collect()
}

/// Scans index keys from `start` (or after `cursor`) while they start with `prefix` and sort
/// before `end`, keeping the customers `keep` accepts, up to `limit`.
fn scan(
    reader: &Reader,
    prefix: &[u8],
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    cursor: Option<&str>,
    limit: usize,
    mut keep: impl FnMut(&CustomerView) -> bool,
) -> Result<Page> {
    let mut from = start;
    if let Some(c) = cursor.and_then(decode_cursor) {
        if c > from {
            from = c;
            from.push(0xff);
        }
    }
    let mut page = Page { customers: Vec::new(), next_cursor: None };
    let limit = limit.max(1);
    let mut scanned = 0;
    for entry in reader.tree.range(from..) {
        let (key, _) = entry?;
        if !key.starts_with(prefix) || end.as_ref().is_some_and(|e| key.as_ref() >= e.as_slice()) {
            return Ok(page);
        }
        scanned += 1;
        if let Some(id) = id_of_index_key(&key) {
            if let Some(view) = get(reader, id)? {
                if keep(&view) {
                    page.customers.push(view);
                }
            }
        }
        if page.customers.len() >= limit || scanned >= MAX_SCAN {
            page.next_cursor = Some(encode_cursor(&key));
            return Ok(page);
        }
    }
    Ok(page)
}

/// Customers matching `filter`, in index order (by id within an owner, region, stage,
/// industry or tag; by creation time otherwise), `limit` per page. A page can be shorter
/// than `limit` and still have a cursor when the scan bound was reached.
pub fn list(reader: &Reader, filter: &Filter, cursor: Option<&str>, limit: usize) -> Result<Page> {
    let (start, end) = filter.driving_range();
    let prefix = match &end {
        Some(_) => b"x/created/".to_vec(),
        None => start.clone(),
    };
    scan(reader, &prefix, start, end, cursor, limit, |v| filter.matches(v))
}

/// What a search matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// Prefix of the name, case- and space-insensitive.
    Name,
    /// Prefix of the phone digits, with or without the country code.
    Phone,
}

/// Customers whose name or phone starts with `text`.
pub fn search(reader: &Reader, kind: SearchKind, text: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
    let (field, value) = match kind {
        SearchKind::Name => ("name", search_name(text)),
        SearchKind::Phone => ("phone", phone_forms(text).into_iter().next().unwrap_or_default()),
    };
    if value.is_empty() {
        return Ok(Page { customers: Vec::new(), next_cursor: None });
    }
    let prefix = format!("x/{field}/{value}").into_bytes();
    let mut seen = std::collections::HashSet::new();
    // A phone is indexed twice (with and without +86); report each customer once per page.
    scan(reader, &prefix, prefix.clone(), None, cursor, limit, |v| seen.insert(v.id) || kind == SearchKind::Name)
}
