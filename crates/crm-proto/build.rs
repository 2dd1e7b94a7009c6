//! Compiles `proto/crm/v1/*.proto` with the protoc binary vendored by `protoc-bin-vendored`,
//! so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled for another checkout sharing this target
    // directory must not look in that checkout's proto/.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let dir = root.join("crm/v1");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    protos.sort();
    println!("cargo:rerun-if-changed={}", root.display());
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Maps as `BTreeMap`: the read models keep profile fields in a BTreeMap, which then moves
    // into an answer as it is (a HashMap was rebuilt, SipHash and all, for every customer of
    // every page), and answers list fields in a stable order.
    config.btree_map(["."]);
    tonic_prost_build::configure().file_descriptor_set_path(out.join("crm_v1_descriptor.bin")).compile_with_config(
        config,
        &protos,
        &[root],
    )?;
    Ok(())
}
