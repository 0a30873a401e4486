//! The fake libcuda finds the node config beside its own file, as the fake NVML does (the same
//! model function): the cdylib built with these tests is copied into a driver-root layout with
//! `fakegpu/config.json` beside it and loaded through a symlink by a child with no `FAKEGPU_*`
//! variable; it must show the config's GPUs (count, name, UUIDs as the model derives them).

#[path = "../../nvml-shim/tests/common/mod.rs"]
mod common;

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use fakegpu_model::config::{parse_config, resolve_config, SELF_CONFIG_DIR, SELF_CONFIG_FILE};
use fakegpu_model::{cuda, SimulatedNode};

use common::{current_case, run_with_deadline, scratch_dir};

const LIB_VAR: &str = "SELF_CONFIG_TEST_LIB";
const CONFIG: &str = r#"{"node":"self-node","profile":"l4","gpus":2}"#;

fn child_list() {
    let path = CString::new(std::env::var_os(LIB_VAR).unwrap().as_bytes()).unwrap();
    unsafe {
        let lib = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!lib.is_null(), "dlopen {path:?}");
        let sym = |name: &str| {
            let c = CString::new(name).unwrap();
            let f = libc::dlsym(lib, c.as_ptr());
            assert!(!f.is_null(), "{name}");
            f
        };
        let init: unsafe extern "C" fn(u32) -> c_int = std::mem::transmute(sym("cuInit"));
        let count_of: unsafe extern "C" fn(*mut c_int) -> c_int = std::mem::transmute(sym("cuDeviceGetCount"));
        let name_of: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int = std::mem::transmute(sym("cuDeviceGetName"));
        let uuid_of: unsafe extern "C" fn(*mut [u8; 16], c_int) -> c_int = std::mem::transmute(sym("cuDeviceGetUuid"));
        let rc = init(0);
        println!("rc={rc}");
        assert_eq!(rc, 0);
        let mut count = 0;
        assert_eq!(count_of(&mut count), 0);
        println!("count={count}");
        let mut buf = [0 as c_char; 96];
        assert_eq!(name_of(buf.as_mut_ptr(), 96, 0), 0);
        println!("name={}", CStr::from_ptr(buf.as_ptr()).to_string_lossy());
        let uuids: Vec<String> = (0..count)
            .map(|d| {
                let mut u = [0u8; 16];
                assert_eq!(uuid_of(&mut u, d), 0);
                u.iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        println!("uuids={}", uuids.join(","));
    }
}

#[test]
fn child() {
    if let Some(case) = current_case() {
        match case.as_str() {
            "list" => child_list(),
            other => panic!("unknown case {other}"),
        }
    }
}

#[test]
fn libcuda_reads_the_config_beside_its_real_file() {
    let so = std::env::current_exe().unwrap().parent().unwrap().join("libcuda.so");
    assert!(so.exists(), "{} is built with the tests (cdylib)", so.display());
    let root = scratch_dir("self");
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(libdir.join(SELF_CONFIG_DIR)).unwrap();
    std::fs::copy(&so, libdir.join("libcuda.so.535.261.03")).unwrap();
    std::fs::write(libdir.join(SELF_CONFIG_DIR).join(SELF_CONFIG_FILE), CONFIG).unwrap();
    let link = root.join("libcuda.so.1");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(libdir.join("libcuda.so.535.261.03"), &link).unwrap();

    let r = run_with_deadline("list", &[(LIB_VAR, link.as_os_str())], Duration::from_secs(30));
    assert!(r.ok, "{}", r.describe());
    let node = SimulatedNode::new(resolve_config(&parse_config(CONFIG, "test").unwrap(), "test", "unused-host").unwrap());
    assert_eq!(r.number("count"), node.gpus.len() as u64);
    assert_eq!(r.value("name").unwrap(), node.spec.profile.product_name);
    let uuids: Vec<String> =
        node.gpus.iter().map(|g| cuda::uuid_bytes(&g.uuid).unwrap().iter().map(|b| format!("{b:02x}")).collect()).collect();
    assert_eq!(r.value("uuids").unwrap(), uuids.join(","));
}
