//! Sets the SONAME and generates, from the 535 driver's export list (exports-535.txt):
//! a CUDA_ERROR_NOT_SUPPORTED export for every function that no module under src/exports/
//! implements (so the library exports exactly the real driver's symbol set), and the
//! name → address table that `cuGetProcAddress` answers from.
use std::{collections::BTreeMap, collections::BTreeSet, env, fs, path::PathBuf};

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let list = root.join("exports-535.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let wanted: BTreeSet<String> = fs::read_to_string(&list).unwrap().split_whitespace().map(String::from).collect();

    // name -> module that implements it
    let mut implemented = BTreeMap::new();
    let dir = root.join("src/exports");
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        println!("cargo:rerun-if-changed={}", path.display());
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        for line in fs::read_to_string(&path).unwrap().lines() {
            // Macro-generated exports are named in a comment line `extern "C" fn a, b, c`.
            let Some(rest) = line.split("extern \"C\" fn ").nth(1) else {
                continue;
            };
            for part in rest.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if name.starts_with("cu") {
                    assert!(wanted.contains(&name), "{name} is not a function of the 535 library (exports-535.txt)");
                    implemented.insert(name, module.clone());
                }
            }
        }
    }
    let mut stubs = String::new();
    let mut table = String::from("&[\n");
    for name in &wanted {
        match implemented.get(name) {
            Some(module) => table.push_str(&format!("    Proc(\"{name}\", crate::exports::{module}::{name} as *const ()),\n")),
            None => {
                stubs.push_str(&format!("not_supported!({name});\n"));
                table.push_str(&format!("    Proc(\"{name}\", crate::stubs::{name} as *const ()),\n"));
            }
        }
    }
    table.push(']');
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(out.join("stubs.rs"), stubs).unwrap();
    fs::write(out.join("procs.rs"), table).unwrap();
}
