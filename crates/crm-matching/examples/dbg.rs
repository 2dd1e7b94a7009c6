use crm_matching::*;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let ids: Vec<String> = std::env::args().skip(2).collect();
    let text = std::fs::read_to_string(path).unwrap();
    let records: Vec<Record> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let prepared = prepare_all(&records);
    let mut index = Index::default();
    for p in &prepared {
        index.insert(p.clone());
    }
    for id in &ids {
        let p = prepared.iter().find(|p| &p.id == id).unwrap();
        println!(
            "{id}: keys {:?}",
            blocking_keys(p).iter().map(|k| format!("{:?}:{}", k.kind, k.text)).collect::<Vec<_>>()
        );
        let c = index.candidates(p);
        println!(
            "  candidates {:?}",
            c.iter()
                .map(|c| format!("{} {:.2}{}", c.prepared.id, c.support, if c.exact { "!" } else { "" }))
                .collect::<Vec<_>>()
        );
    }
}
