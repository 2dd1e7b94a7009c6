use crm_domain::{Aggregate, Customer, Event};
use crm_eventlog::{Direction, RecordedEvent, SledEventStore};
use crm_projection_audit::{customer_as_of, customer_history, operations, AsOf, OperationFilter};
use crm_projection_runtime::fixtures::{Generator, GeneratorConfig};
use crm_projection_runtime::testing::{all_events, append_all, settle, TempLog};
use crm_projection_runtime::{spawn, ProjectionDb, Reader};

fn all_pages(store: &SledEventStore, reader: &Reader, filter: &OperationFilter) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = operations(store, reader, filter, after, 23).unwrap();
        out.extend(page.operations.iter().map(|o| o.position));
        match page.next_after_position {
            Some(p) => after = p,
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operation_log_filters_like_a_scan_of_the_log() {
    let log = TempLog::new();
    let mut g = Generator::new(GeneratorConfig { seed: 9, users: 4, ..Default::default() });
    let commands: Vec<_> = (0..800).map(|_| g.next_command()).collect();
    append_all(&log.store, &commands).await;
    let db = ProjectionDb::temporary().unwrap();
    let projector = crate::projector();
    let handle = spawn(&db, log.store.clone(), projector).unwrap();
    settle(&handle, &projector, &log.store).await;
    let reader = handle.reader();
    let events = all_events(&log.store);
    let sample = &events[events.len() / 2];
    let (t0, t1) = (events[100].recorded_at_micros, events[600].recorded_at_micros);
    let filters = [
        OperationFilter::default(),
        OperationFilter { actor: Some(sample.metadata.actor.clone()), ..Default::default() },
        OperationFilter { event_type: Some("StageMoved".into()), ..Default::default() },
        OperationFilter { stream: Some(sample.stream.clone()), ..Default::default() },
        OperationFilter {
            actor: Some(sample.metadata.actor.clone()),
            event_type: Some("ActivityLogged".into()),
            ..Default::default()
        },
        OperationFilter { from_micros: Some(t0), to_micros: Some(t1), ..Default::default() },
        OperationFilter { event_type: Some("CustomerCreated".into()), from_micros: Some(t0), ..Default::default() },
    ];
    for filter in filters {
        let expected: Vec<u64> = events
            .iter()
            .filter(|e: &&RecordedEvent| {
                filter.actor.as_deref().is_none_or(|a| e.metadata.actor == a)
                    && filter.event_type.as_deref().is_none_or(|t| e.event_type == t)
                    && filter.stream.as_deref().is_none_or(|s| e.stream == s)
                    && filter.from_micros.is_none_or(|f| e.recorded_at_micros >= f)
                    && filter.to_micros.is_none_or(|t| e.recorded_at_micros < t)
            })
            .map(|e| e.position)
            .collect();
        assert!(!expected.is_empty(), "{filter:?}");
        assert_eq!(all_pages(&log.store, &reader, &filter), expected, "{filter:?}");
    }
    handle.stop().await;
}

fn fold(events: &[RecordedEvent]) -> Customer {
    let decoded: Vec<Event> =
        events.iter().map(|e| Event::decode(&e.event_type, e.schema_version, &e.payload).unwrap()).collect();
    Customer::fold(&decoded)
}

/// Answers recorded while the log grows equal the as-of answers asked afterwards, by position
/// and by time; a survivor's history holds its merged customers' and opportunities' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_answers_equal_answers_recorded_during_the_run() {
    let log = TempLog::new();
    let db = ProjectionDb::temporary().unwrap();
    let projector = crate::projector();
    let handle = spawn(&db, log.store.clone(), projector).unwrap();
    let mut g = Generator::new(GeneratorConfig { seed: 11, users: 4, ..Default::default() });
    let mut recorded = Vec::new();
    for _ in 0..20 {
        let commands: Vec<_> = (0..60).map(|_| g.next_command()).collect();
        append_all(&log.store, &commands).await;
        let head = log.store.committed_head();
        let now_micros = log.store.read_all_blocking(head, 1).unwrap()[0].recorded_at_micros;
        // The "current" answer for a few customers, as a client would have seen it then.
        for e in all_events(&log.store).iter().filter(|e| e.event_type == "CustomerCreated").step_by(7) {
            let stream = log.store.read_stream_blocking(&e.stream, None, Direction::Forwards, usize::MAX).unwrap();
            let id = crm_domain::CustomerId::parse(&e.stream).unwrap().0;
            recorded.push((id, head, now_micros, fold(&stream), stream.last().unwrap().position));
        }
    }
    // More history afterwards must not change the answers about the past.
    append_all(&log.store, &(0..300).map(|_| g.next_command()).collect::<Vec<_>>()).await;
    assert!(recorded.len() > 100);
    for (id, head, micros, state, last) in &recorded {
        let by_position = customer_as_of(&log.store, *id, AsOf::Position(*head)).unwrap();
        assert_eq!(by_position.customer.as_ref(), Some(state));
        assert_eq!(by_position.position, *last);
        let by_time = customer_as_of(&log.store, *id, AsOf::Time(*micros)).unwrap();
        assert_eq!(by_time.customer.as_ref(), Some(state));
    }
    let first = recorded[0].0;
    assert_eq!(customer_as_of(&log.store, first, AsOf::Position(0)).unwrap().customer, None);

    settle(&handle, &projector, &log.store).await;
    let reader = handle.reader();
    let events = all_events(&log.store);
    let merge = events.iter().find(|e| e.event_type == "CustomersMerged").expect("the generator merges");
    let Event::CustomersMerged(m) = Event::decode(&merge.event_type, merge.schema_version, &merge.payload).unwrap()
    else {
        unreachable!()
    };
    let history = customer_history(&log.store, &reader, m.survivor_id.0).unwrap();
    let streams: std::collections::BTreeSet<_> = history.iter().map(|e| e.stream.clone()).collect();
    assert!(streams.contains(&m.survivor_id.stream()));
    assert!(streams.contains(&m.absorbed_id.stream()), "the merged record's history is included");
    assert!(history.windows(2).all(|w| w[0].position < w[1].position));
    let absorbed_events = events.iter().filter(|e| e.stream == m.absorbed_id.stream()).count();
    assert_eq!(history.iter().filter(|e| e.stream == m.absorbed_id.stream()).count(), absorbed_events);
    handle.stop().await;
}
