use crm_domain::normalize::*;
use crm_matching::synth::{generate, SynthConfig};
use std::time::Instant;
fn main() {
    let data = generate(&SynthConfig { records: 20000, seed: 3, ..SynthConfig::default() });
    let r = &data.records;
    let t = Instant::now();
    for x in r {
        for p in &x.phones {
            std::hint::black_box(normalize_phone(p));
        }
    }
    println!("phone {:?}", t.elapsed());
    let t = Instant::now();
    for x in r {
        if let Some(c) = &x.company {
            std::hint::black_box(normalize_company(c));
        }
    }
    println!("company {:?}", t.elapsed());
    let t = Instant::now();
    for x in r {
        if let Some(c) = &x.name {
            std::hint::black_box(normalize_person_name(c));
        }
    }
    println!("name {:?}", t.elapsed());
    let t = Instant::now();
    for x in r {
        std::hint::black_box(crm_matching::Prepared::new(x));
    }
    println!("prepare {:?}", t.elapsed());
    let t = Instant::now();
    std::hint::black_box(crm_matching::prepare_all(r));
    println!("prepare_all {:?}", t.elapsed());
    let t = Instant::now();
    for x in r {
        for p in &x.phones {
            std::hint::black_box(normalize_phone(p));
        }
    }
    println!("phone again {:?}", t.elapsed());
    let p: Vec<_> = r.iter().map(crm_matching::Prepared::new).collect();
    let t = Instant::now();
    for x in &p {
        std::hint::black_box(crm_matching::blocking_keys(x));
    }
    println!("keys {:?}", t.elapsed());
}
#[allow(dead_code)]
fn unused() {}
