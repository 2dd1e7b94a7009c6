use std::collections::BTreeSet;

use crm_projection_customers::{get, list, search, CustomerView, Filter, SearchKind, Value};
use crm_projection_runtime::fixtures::{Generator, GeneratorConfig};
use crm_projection_runtime::testing::assert_incremental_equals_rebuild;
use crm_projection_runtime::{decode_value, Reader};

fn all_customers(reader: &Reader) -> Vec<CustomerView> {
    reader
        .tree
        .scan_prefix(b"c/")
        .map(|e| e.unwrap())
        .filter_map(|(k, v)| match decode_value::<Value>(&k, &v).unwrap() {
            Value::Customer(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn list_all(reader: &Reader, filter: &Filter, page_size: usize) -> Vec<CustomerView> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = list(reader, filter, cursor.as_deref(), page_size).unwrap();
        out.extend(page.customers);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn ids(views: &[CustomerView]) -> BTreeSet<uuid::Uuid> {
    views.iter().map(|v| v.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_searches_agree_with_a_brute_force_scan() {
    let mut g = Generator::new(GeneratorConfig { seed: 43, users: 5, ..Default::default() });
    let commands: Vec<_> = (0..1500).map(|_| g.next_command()).collect();
    let (_log, handle, _db) = assert_incremental_equals_rebuild(crate::projector(), &commands, &[300]).await;
    let reader = handle.reader();
    let everyone = all_customers(&reader);
    let live: Vec<_> = everyone.iter().filter(|c| c.absorbed_into.is_none()).cloned().collect();
    assert!(live.len() > 100 && live.len() < everyone.len(), "some merged, most not");

    let sample = &live[7];
    let created = {
        let mut t: Vec<i64> = live.iter().map(|c| c.created_at_micros).collect();
        t.sort();
        (t[t.len() / 4], t[3 * t.len() / 4])
    };
    let filters = vec![
        Filter::default(),
        Filter { owner: sample.owner, ..Filter::default() },
        Filter { region: sample.field("region").map(str::to_owned), ..Filter::default() },
        Filter { stage: Some(crm_domain::STAGE_INITIAL.into()), ..Filter::default() },
        Filter { industry: sample.field("industry").map(str::to_owned), owner: sample.owner, ..Filter::default() },
        Filter { tags: vec!["重点".into()], ..Filter::default() },
        Filter { tags: vec!["重点".into(), "展会".into()], region: Some("北京".into()), ..Filter::default() },
        Filter { created_from_micros: Some(created.0), created_to_micros: Some(created.1), ..Filter::default() },
        Filter { created_from_micros: Some(created.0), owner: sample.owner, ..Filter::default() },
    ];
    for filter in filters {
        let expected: Vec<_> = live
            .iter()
            .filter(|v| {
                filter.owner.is_none_or(|o| v.owner == Some(o))
                    && filter.region.as_deref().is_none_or(|r| v.field("region") == Some(r))
                    && filter.stage.as_deref().is_none_or(|s| v.stage.as_deref() == Some(s))
                    && filter.industry.as_deref().is_none_or(|i| v.field("industry") == Some(i))
                    && filter.tags.iter().all(|t| v.tags.contains(t))
                    && filter.created_from_micros.is_none_or(|f| v.created_at_micros >= f)
                    && filter.created_to_micros.is_none_or(|t| v.created_at_micros < t)
            })
            .cloned()
            .collect();
        let got = list_all(&reader, &filter, 17);
        assert_eq!(got.len(), expected.len(), "no duplicates across pages for {filter:?}");
        assert_eq!(ids(&got), ids(&expected), "{filter:?}");
    }

    // Search by a name prefix and by phone digits with and without +86.
    let name = sample.field("name").unwrap();
    let prefix: String = name.chars().take(4).collect();
    let by_name = search(&reader, SearchKind::Name, &prefix, None, 10_000).unwrap();
    let expected: BTreeSet<_> =
        live.iter().filter(|v| v.field("name").is_some_and(|n| n.starts_with(&prefix))).map(|v| v.id).collect();
    assert_eq!(ids(&by_name.customers), expected);
    let phone = sample.field("phone").unwrap(); // +86138xxxxxxxx
    for query in [&phone[3..10], &phone[1..10], phone] {
        let found = search(&reader, SearchKind::Phone, query, None, 10_000).unwrap();
        assert!(ids(&found.customers).contains(&sample.id), "{query}");
        assert!(found.customers.iter().all(|v| v.field("phone").unwrap().contains(&query.replace('+', ""))));
    }

    // Get returns absorbed customers too, saying where they went.
    let absorbed = everyone.iter().find(|c| c.absorbed_into.is_some()).unwrap();
    let got = get(&reader, absorbed.id).unwrap().unwrap();
    assert_eq!(got.absorbed_into, absorbed.absorbed_into);
    let survivor = get(&reader, absorbed.absorbed_into.unwrap()).unwrap().unwrap();
    assert!(survivor.merged.contains(&absorbed.id));
    assert_eq!(get(&reader, uuid::Uuid::nil()).unwrap(), None);
    handle.stop().await;
}
