//! Sets the SONAME and generates a NOT_SUPPORTED export for every NVML function of the
//! 535 driver (exports-535.txt) that no module under src/exports/ implements, so the
//! library always exports exactly the real driver's symbol set.
use std::{collections::BTreeSet, env, fs, path::PathBuf};

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let list = root.join("exports-535.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let wanted: BTreeSet<String> = fs::read_to_string(&list).unwrap().split_whitespace().map(String::from).collect();

    let mut implemented = BTreeSet::new();
    let dir = root.join("src/exports");
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        println!("cargo:rerun-if-changed={}", path.display());
        for line in fs::read_to_string(&path).unwrap().lines() {
            // Macro-generated exports are named in a comment line `extern "C" fn a, b, c`.
            let Some(rest) = line.split("extern \"C\" fn ").nth(1) else {
                continue;
            };
            for part in rest.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if name.starts_with("nvml") {
                    assert!(wanted.contains(&name), "{name} is not a function of the 535 library (exports-535.txt)");
                    implemented.insert(name);
                }
            }
        }
    }
    let mut out = String::new();
    for name in wanted.difference(&implemented) {
        out.push_str(&format!("not_supported!({name});\n"));
    }
    fs::write(PathBuf::from(env::var("OUT_DIR").unwrap()).join("stubs.rs"), out).unwrap();
}
