//! Crash-test helper: opens a log and a projection database in `<dir>`, runs the counting
//! projector, and appends generated commands until killed. Prints `ready` once the projector
//! has applied something, so the test kills it mid-flight.

use crm_projection_runtime::fixtures::{Generator, GeneratorConfig};
use crm_projection_runtime::testing::{append_all, Counting};
use crm_projection_runtime::{spawn, ProjectionDb};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: crm-projection-crash <dir>"));
    let store = crm_eventlog::SledEventStore::open(crm_eventlog::Config::new(dir.join("eventlog")))?;
    let db = ProjectionDb::open(&dir.join("projections"))?;
    let handle = spawn(&db, store.clone(), Counting::new("counting"))?;
    let mut generator = Generator::new(GeneratorConfig { seed: std::process::id().into(), ..Default::default() });
    let mut announced = false;
    loop {
        let commands: Vec<_> = (0..50).map(|_| generator.next_command()).collect();
        append_all(&store, &commands).await;
        if !announced && handle.position() > 0 {
            println!("ready");
            announced = true;
        }
    }
}
