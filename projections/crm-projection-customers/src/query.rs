//! Queries over the customers tree. Each takes a [`Reader`] (the serving tree and the log
//! position it reflects), so the caller can tell the client how fresh the answer is.

use crm_projection_runtime::{decode_value, Reader, Result};
use uuid::Uuid;

use crate::projector::{
    bucket_digits, created_key, created_value, customer_key, index_prefix, phone_key_form, postings_prefix,
    search_name, CustomerView, Value, CREATED_PREFIX,
};

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

    /// The filter that drives the scan (the most selective that has an index) in version 2
    /// and later: its field and value, or `None` for creation time.
    fn driving_field(&self) -> Option<(&'static str, String)> {
        if let Some(owner) = self.owner {
            return Some(("owner", owner.to_string()));
        }
        if let Some(tag) = self.tags.first() {
            return Some(("tag", tag.clone()));
        }
        let fields = [("stage", &self.stage), ("region", &self.region), ("industry", &self.industry)];
        fields.into_iter().find_map(|(field, value)| value.as_ref().map(|v| (field, v.clone())))
    }

    /// The index to drive the scan of a version 1 tree, which kept an index key per entry.
    fn legacy_range(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        if let Some((field, value)) = self.driving_field() {
            return (index_prefix(field, &value), None);
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

/// Index keys of their own to scan: from `start` while they start with `prefix` and sort
/// before `end`.
struct Keys {
    prefix: Vec<u8>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Keys {
    fn with_prefix(prefix: Vec<u8>) -> Keys {
        Keys { start: prefix.clone(), prefix, end: None }
    }
}

/// Scans `keys` (after `cursor`), keeping the customers `keep` accepts, up to `limit`, and at
/// most `budget` entries (what it scans is taken off `budget`).
fn scan(
    reader: &Reader,
    keys: Keys,
    cursor: Option<&str>,
    limit: usize,
    budget: &mut usize,
    mut keep: impl FnMut(&CustomerView) -> bool,
) -> Result<Page> {
    let Keys { prefix, start, end } = keys;
    let mut from = start;
    if let Some(c) = cursor.and_then(decode_cursor) {
        if c > from {
            from = c;
            from.push(0xff);
        }
    }
    let mut page = Page { customers: Vec::new(), next_cursor: None };
    let limit = limit.max(1);
    for entry in reader.tree.range(from..) {
        let (key, _) = entry?;
        if !key.starts_with(&prefix) || end.as_ref().is_some_and(|e| key.as_ref() >= e.as_slice()) {
            return Ok(page);
        }
        *budget = budget.saturating_sub(1);
        if let Some(id) = id_of_index_key(&key) {
            if let Some(view) = get(reader, id)? {
                if keep(&view) {
                    page.customers.push(view);
                }
            }
        }
        if page.customers.len() >= limit || *budget == 0 {
            page.next_cursor = Some(encode_cursor(&key));
            return Ok(page);
        }
    }
    Ok(page)
}

/// Blocks to scan: keys that start with `prefix`, are `key_len` long (a longer one belongs to
/// another value that starts with this one), from `start` up to `last` (inclusive).
struct Blocks {
    prefix: Vec<u8>,
    key_len: usize,
    start: Vec<u8>,
    last: Option<Vec<u8>>,
}

/// Where a page of a version 2 list stopped: the block's key and the entry's sort bytes.
fn encode_block_cursor(block: &[u8], entry: &[u8]) -> String {
    format!("{}.{}", encode_cursor(block), encode_cursor(entry))
}

fn decode_block_cursor(cursor: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (block, entry) = cursor.split_once('.')?;
    Some((decode_cursor(block)?, decode_cursor(entry)?))
}

/// An entry's sort bytes in its block: the id (postings), or the creation time then the id
/// (creation blocks), in the order the block keeps them.
fn sort_bytes(at: Option<i64>, id: &Uuid) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(24);
    if let Some(at) = at {
        bytes.extend_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
    }
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

/// Scans the entries of index `blocks` in order (after `cursor`), keeping the customers
/// `keep` accepts, up to `limit`.
fn scan_blocks(
    reader: &Reader,
    blocks: &Blocks,
    cursor: Option<&str>,
    limit: usize,
    keep: impl Fn(&CustomerView) -> bool,
) -> Result<Page> {
    let resume = cursor.and_then(decode_block_cursor);
    let from = match &resume {
        Some((block, _)) if *block > blocks.start => block.clone(),
        _ => blocks.start.clone(),
    };
    let mut page = Page { customers: Vec::new(), next_cursor: None };
    let (limit, mut scanned) = (limit.max(1), 0);
    for item in reader.tree.range(from..) {
        let (key, value) = item?;
        if !key.starts_with(&blocks.prefix) || blocks.last.as_ref().is_some_and(|last| key.as_ref() > last.as_slice()) {
            break;
        }
        if key.len() != blocks.key_len {
            continue;
        }
        let entries: Vec<(Option<i64>, Uuid)> = match decode_value::<Value>(&key, &value)? {
            Value::Postings(ids) => ids.into_iter().map(|id| (None, id)).collect(),
            Value::Created(entries) => entries.into_iter().map(|(at, id)| (Some(at), id)).collect(),
            _ => continue,
        };
        let after = resume.as_ref().filter(|(block, _)| block.as_slice() == key.as_ref()).map(|(_, entry)| entry);
        for (at, id) in entries {
            // Sort bytes are built only where they are compared (the cursor's block) or
            // returned (the page's last entry), not for every entry a page scans.
            if after.is_some_and(|after| sort_bytes(at, &id) <= *after) {
                continue;
            }
            scanned += 1;
            if let Some(view) = get(reader, id)? {
                if keep(&view) {
                    page.customers.push(view);
                }
            }
            if page.customers.len() >= limit || scanned >= MAX_SCAN {
                page.next_cursor = Some(encode_block_cursor(&key, &sort_bytes(at, &id)));
                return Ok(page);
            }
        }
    }
    Ok(page)
}

/// Whether `reader`'s tree keeps its index in blocks (version 2 on): every tree with a
/// customer that is not merged away has a creation block. A version 1 tree serves while
/// its replacement is built, and is read as it was.
fn has_blocks(reader: &Reader) -> Result<bool> {
    Ok(reader.tree.scan_prefix(b"p/").next().transpose()?.is_some())
}

/// Customers matching `filter`, in index order (by a bucket of the id, then the id, within
/// an owner, region, stage, industry or tag; by creation time otherwise), `limit` per page. A
/// page can be shorter than `limit` and still have a cursor when the scan bound was reached.
pub fn list(reader: &Reader, filter: &Filter, cursor: Option<&str>, limit: usize) -> Result<Page> {
    if !has_blocks(reader)? {
        let (start, end) = filter.legacy_range();
        let prefix = match &end {
            Some(_) => b"x/created/".to_vec(),
            None => start.clone(),
        };
        let (keys, mut budget) = (Keys { prefix, start, end }, MAX_SCAN);
        return scan(reader, keys, cursor, limit, &mut budget, |v| filter.matches(v));
    }
    let blocks = match filter.driving_field() {
        Some((field, value)) => {
            let prefix = postings_prefix(field, &value);
            let key_len = prefix.len() + bucket_digits(field) as usize;
            Blocks { start: prefix.clone(), prefix, key_len, last: None }
        }
        None => Blocks {
            prefix: CREATED_PREFIX.to_vec(),
            key_len: created_key(0).len(),
            start: created_key(filter.created_from_micros.unwrap_or(0)),
            last: filter.created_to_micros.map(|to| created_key(to.saturating_sub(1))),
        },
    };
    scan_blocks(reader, &blocks, cursor, limit, |v| filter.matches(v))
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
///
/// A phone matches when its digits start with `text`'s digits, with the country code or,
/// for +86, without it. Version 2 keeps one key per phone (a +86 number's national digits,
/// any other number's digits), so digits that could begin a +86 number's digits with the
/// country code (86..., 8) are looked up twice: as typed, then without the 86 among +86
/// numbers (cursors of that second part start with `B.`); both parts share one page's scan
/// bound.
pub fn search(reader: &Reader, kind: SearchKind, text: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
    let (field, value) = match kind {
        SearchKind::Name => ("name", search_name(text)),
        SearchKind::Phone => ("phone", text.chars().filter(char::is_ascii_digit).collect()),
    };
    if value.is_empty() {
        return Ok(Page { customers: Vec::new(), next_cursor: None });
    }
    let keys = Keys::with_prefix(format!("x/{field}/{value}").into_bytes());
    let mut budget = MAX_SCAN;
    if kind == SearchKind::Name {
        return scan(reader, keys, cursor, limit, &mut budget, |_| true);
    }
    if !has_blocks(reader)? {
        // Version 1 indexed a +86 phone twice (with and without the country code): each
        // customer is reported once per page.
        let mut seen = std::collections::HashSet::new();
        return scan(reader, keys, cursor, limit, &mut budget, |v| seen.insert(v.id));
    }
    // The national digits a +86 number's key starts with, when `value` can begin its digits
    // with the country code ("8" and "86" begin every one).
    let national = if "86".starts_with(value.as_str()) { Some("") } else { value.strip_prefix("86") };
    let second_cursor = cursor.and_then(|c| c.strip_prefix("B."));
    let mut page = match second_cursor {
        Some(_) => Page { customers: Vec::new(), next_cursor: None },
        None => scan(reader, keys, cursor, limit, &mut budget, |_| true)?,
    };
    let Some(national) = national.filter(|_| page.next_cursor.is_none()) else { return Ok(page) };
    // +86 numbers whose national digits start with `national` and not with `value` (those
    // were found as typed). Numbers stored without a country code (a phone that did not
    // parse) are never taken for +86 ones here.
    let second = Keys::with_prefix(format!("x/phone/{national}").into_bytes());
    let rest = scan(reader, second, second_cursor, limit - page.customers.len(), &mut budget, |v| {
        v.field("phone").is_some_and(|p| p.starts_with("+86") && !phone_key_form(p).starts_with(&value))
    })?;
    page.customers.extend(rest.customers);
    page.next_cursor = rest.next_cursor.map(|c| format!("B.{c}"));
    Ok(page)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crm_projection_runtime::encode_value;

    use super::*;
    use crate::projector::{created_key, index_key};

    fn view(n: u128, owner: Uuid, region: &str) -> CustomerView {
        let fields = BTreeMap::from([("region".to_owned(), region.to_owned())]);
        CustomerView::created(Uuid::from_u128(n), fields, Some(owner), None, n as i64, 1)
    }

    fn ids(page: &Page) -> Vec<u128> {
        page.customers.iter().map(|c| c.id.as_u128()).collect()
    }

    /// A version 1 tree (an index key per entry) serves while version 2 is built: its lists
    /// are read as they were, filters, order and cursors alike.
    #[test]
    fn a_version_1_tree_is_listed_as_it_was() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("customers/1").unwrap();
        let owner = Uuid::from_u128(99);
        for (n, region) in [(3, "北京"), (1, "上海"), (2, "北京")] {
            let c = view(n, owner, region);
            let id = c.id.to_string();
            for (field, value) in
                [("owner", owner.to_string()), ("region", region.to_owned()), ("created", created_value(n as i64))]
            {
                tree.insert(index_key(field, &value, &id), encode_value(&Value::Indexed)).unwrap();
            }
            tree.insert(customer_key(&c.id), encode_value(&Value::Customer(Box::new(c)))).unwrap();
        }
        let reader = Reader { tree, position: 1 };
        assert_eq!(ids(&list(&reader, &Filter::default(), None, 10).unwrap()), [1, 2, 3]);
        let beijing = Filter { region: Some("北京".into()), ..Filter::default() };
        let first = list(&reader, &beijing, None, 1).unwrap();
        assert_eq!(ids(&first), [2]);
        assert_eq!(ids(&list(&reader, &beijing, first.next_cursor.as_deref(), 1).unwrap()), [3]);
        let mine = Filter { owner: Some(owner), created_from_micros: Some(2), ..Filter::default() };
        assert_eq!(ids(&list(&reader, &mine, None, 10).unwrap()), [2, 3]);
    }

    /// One key per phone (version 2): digits typed with or without +86 find a +86 number,
    /// other numbers by their digits with the country code; pages that cross from the
    /// digits as typed to the digits without 86 report each customer once.
    #[test]
    fn phones_are_found_with_and_without_the_country_code() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("customers/2").unwrap();
        let phones = [(1, "+8613800000001"), (2, "+8686100000002"), (3, "+12025550103"), (4, "+8613900000004")];
        let mut created = Vec::new();
        for (n, phone) in phones {
            let mut c = view(n, Uuid::from_u128(99), "北京");
            c.fields.insert("phone".into(), phone.into());
            tree.insert(index_key("phone", &phone_key_form(phone), &c.id.to_string()), encode_value(&Value::Indexed))
                .unwrap();
            created.push((c.created_at_micros, c.id));
            tree.insert(customer_key(&c.id), encode_value(&Value::Customer(Box::new(c)))).unwrap();
        }
        tree.insert(created_key(0), encode_value(&Value::Created(created))).unwrap();
        let reader = Reader { tree, position: 1 };
        let found = |text: &str| {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = search(&reader, SearchKind::Phone, text, cursor.as_deref(), 1).unwrap();
                all.extend(ids(&page));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return all,
                }
            }
        };
        assert_eq!(found("138"), [1]);
        assert_eq!(found("+86 138"), [1]);
        // As typed (national digits 861...), then without the 86 (national digits 1...).
        assert_eq!(found("861"), [2, 1, 4]);
        assert_eq!(found("861000"), [2]);
        assert_eq!(found("8686"), [2]);
        assert_eq!(found("86"), [2, 1, 4]);
        assert_eq!(found("8"), [2, 1, 4]);
        assert_eq!(found("+8"), [2, 1, 4]);
        assert_eq!(found("1202"), [3]);
        assert_eq!(found("202"), Vec::<u128>::new());
    }

    /// Stores `views` as version 2 does its creation blocks (no other index).
    fn created_tree(views: &[CustomerView], extra_ids: &[(i64, Uuid)]) -> Reader {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("customers/2").unwrap();
        let mut blocks: BTreeMap<Vec<u8>, Vec<(i64, Uuid)>> = BTreeMap::new();
        for c in views {
            blocks.entry(created_key(c.created_at_micros)).or_default().push((c.created_at_micros, c.id));
            tree.insert(customer_key(&c.id), encode_value(&Value::Customer(Box::new(c.clone())))).unwrap();
        }
        for (at, id) in extra_ids {
            blocks.entry(created_key(*at)).or_default().push((*at, *id));
        }
        for (key, mut entries) in blocks {
            entries.sort();
            tree.insert(key, encode_value(&Value::Created(entries))).unwrap();
        }
        Reader { tree, position: 1 }
    }

    fn list_all(reader: &Reader, filter: &Filter, limit: usize) -> Vec<u128> {
        let (mut all, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let page = list(reader, filter, cursor.as_deref(), limit).unwrap();
            all.extend(ids(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return all,
            }
        }
    }

    /// Creation-time lists page across block boundaries in time order, and a range's last
    /// block is read up to its bound: against a filter over every record, for ranges that
    /// start and end inside blocks and on their edges.
    #[test]
    fn creation_ranges_page_across_blocks() {
        let block = 1i64 << 18;
        // Three or four customers a block, times not in id order.
        let views: Vec<CustomerView> = (0..40u128)
            .map(|n| {
                let mut c = view(1000 - n, Uuid::from_u128(99), "北京");
                c.created_at_micros = (n as i64 * 7 % 40) * 80_000;
                c
            })
            .collect();
        let reader = created_tree(&views, &[]);
        let bounds = [None, Some(0), Some(block - 1), Some(block), Some(2 * block + 5), Some(40 * 80_000)];
        for from in bounds {
            for to in bounds {
                let filter = Filter { created_from_micros: from, created_to_micros: to, ..Filter::default() };
                let mut expected: Vec<(i64, u128)> =
                    views.iter().filter(|c| filter.matches(c)).map(|c| (c.created_at_micros, c.id.as_u128())).collect();
                expected.sort();
                let expected: Vec<u128> = expected.into_iter().map(|(_, id)| id).collect();
                for limit in [1, 2, 3, 50] {
                    assert_eq!(list_all(&reader, &filter, limit), expected, "{from:?}..{to:?}, pages of {limit}");
                }
            }
        }
    }

    /// A page stops at the scan bound with a cursor even when it found nothing (here: ids
    /// without records), and the next page goes on from there.
    #[test]
    fn a_page_stops_at_the_scan_bound_inside_a_block() {
        let late = view(7, Uuid::from_u128(99), "北京");
        let missing: Vec<(i64, Uuid)> = (0..MAX_SCAN as u128 + 10).map(|n| (1, Uuid::from_u128(1 << 64 | n))).collect();
        let mut c = late.clone();
        c.created_at_micros = 2;
        let reader = created_tree(&[c], &missing);
        let first = list(&reader, &Filter::default(), None, 10).unwrap();
        assert!(first.customers.is_empty());
        let cursor = first.next_cursor.expect("a cursor at the bound");
        let second = list(&reader, &Filter::default(), Some(&cursor), 10).unwrap();
        assert_eq!((ids(&second), second.next_cursor), (vec![7], None));
    }
}
