//! The library finds its node config beside its own file: the cdylib built with these tests is
//! copied into a driver-root layout (`usr/lib/x86_64-linux-gnu/libnvidia-ml.so.<version>` with
//! `fakegpu/config.json` beside it), loaded with `dlopen` through a symlink in another directory
//! by a child with no `FAKEGPU_*` variable, and must show the config's GPUs (count, product name
//! and UUIDs as the model derives them). A variable still wins; a FIFO there fails at once.

mod common;

use std::ffi::{c_char, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fakegpu_model::config::{parse_config, resolve_config, SELF_CONFIG_DIR, SELF_CONFIG_FILE};
use fakegpu_model::SimulatedNode;
use nvml_abi::ret;

use common::{current_case, mkfifo, run_with_deadline, scratch_dir};

/// Names the library the child loads (not a FAKEGPU_* variable: the child must have none).
const LIB_VAR: &str = "SELF_CONFIG_TEST_LIB";

const CONFIG: &str = r#"{"node":"self-node","profile":"a100-40gb","gpus":3}"#;

type Init = unsafe extern "C" fn() -> u32;
type Count = unsafe extern "C" fn(*mut c_uint) -> u32;
type ByIndex = unsafe extern "C" fn(c_uint, *mut *mut c_void) -> u32;
type Text = unsafe extern "C" fn(*mut c_void, *mut c_char, c_uint) -> u32;

/// Loads the library named by [`LIB_VAR`] and prints `rc=`, then `count=`, `name=` and
/// `uuids=` when init succeeded.
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
        let init: Init = std::mem::transmute(sym("nvmlInit_v2"));
        let count_of: Count = std::mem::transmute(sym("nvmlDeviceGetCount_v2"));
        let by_index: ByIndex = std::mem::transmute(sym("nvmlDeviceGetHandleByIndex_v2"));
        let get_name: Text = std::mem::transmute(sym("nvmlDeviceGetName"));
        let get_uuid: Text = std::mem::transmute(sym("nvmlDeviceGetUUID"));
        let rc = init();
        println!("rc={rc}");
        if rc != ret::SUCCESS {
            return;
        }
        let mut count: c_uint = 0;
        assert_eq!(count_of(&mut count), ret::SUCCESS);
        println!("count={count}");
        let mut uuids = Vec::new();
        for i in 0..count {
            let mut dev = std::ptr::null_mut();
            assert_eq!(by_index(i, &mut dev), ret::SUCCESS);
            let mut buf = [0 as c_char; 96];
            assert_eq!(get_uuid(dev, buf.as_mut_ptr(), 96), ret::SUCCESS);
            uuids.push(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
            if i == 0 {
                assert_eq!(get_name(dev, buf.as_mut_ptr(), 96), ret::SUCCESS);
                println!("name={}", CStr::from_ptr(buf.as_ptr()).to_string_lossy());
            }
        }
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

/// The cdylib this test build produced, beside the test binary (target/<profile>/deps).
fn built_library() -> PathBuf {
    let so = std::env::current_exe().unwrap().parent().unwrap().join("libnvidia_ml.so");
    assert!(so.exists(), "{} is built with the tests (cdylib)", so.display());
    so
}

/// A driver root under a fresh scratch dir: the library under its versioned name with the
/// config dir beside it, and `links/libnvidia-ml.so.1` pointing at it from elsewhere. Returns
/// (the symlink to load, the config path).
fn layout(tag: &str) -> (PathBuf, PathBuf) {
    let root = scratch_dir(tag);
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(libdir.join(SELF_CONFIG_DIR)).unwrap();
    std::fs::copy(built_library(), libdir.join("libnvidia-ml.so.535.261.03")).unwrap();
    let links = root.join("links");
    std::fs::create_dir_all(links.join(SELF_CONFIG_DIR)).unwrap();
    let link = links.join("libnvidia-ml.so.1");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(libdir.join("libnvidia-ml.so.535.261.03"), &link).unwrap();
    // A config beside the link, not the real file: must not be the one read.
    std::fs::write(links.join(SELF_CONFIG_DIR).join(SELF_CONFIG_FILE), r#"{"profile":"t4","gpus":7}"#).unwrap();
    (link, libdir.join(SELF_CONFIG_DIR).join(SELF_CONFIG_FILE))
}

fn run(link: &Path, extra: &[(&str, &str)]) -> common::Run {
    let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![(LIB_VAR, link.as_os_str())];
    for (k, v) in extra {
        env.push((k, std::ffi::OsStr::new(v)));
    }
    let r = run_with_deadline("list", &env, Duration::from_secs(30));
    assert!(r.ok, "{}", r.describe());
    r
}

#[test]
fn the_library_reads_the_config_beside_its_real_file() {
    let (link, config) = layout("self");
    std::fs::write(&config, CONFIG).unwrap();
    let spec = resolve_config(&parse_config(CONFIG, "test").unwrap(), "test", "unused-host").unwrap();
    let node = SimulatedNode::new(spec);
    let r = run(&link, &[]);
    assert_eq!(r.value("rc").as_deref(), Some("0"), "{}", r.describe());
    assert_eq!(r.number("count"), 3);
    assert_eq!(r.value("name").unwrap(), node.spec.profile.product_name);
    let uuids: Vec<String> = node.gpus.iter().map(|g| g.uuid.clone()).collect();
    assert_eq!(r.value("uuids").unwrap(), uuids.join(","));

    // A variable wins: the config is not read at all (its node name would change the UUIDs).
    let r = run(&link, &[("FAKEGPU_GPUS", "1")]);
    assert_eq!(r.number("count"), 1);
    assert_ne!(r.value("uuids").unwrap(), uuids[0], "{}", r.describe());
}

#[test]
fn no_config_beside_the_library_keeps_the_defaults() {
    let (link, _) = layout("self-none");
    let r = run(&link, &[]);
    let h100 = fakegpu_model::find_builtin(fakegpu_model::config::DEFAULT_PROFILE).unwrap();
    assert_eq!(r.number("count"), u64::from(h100.default_gpu_count), "{}", r.describe());
    assert_eq!(r.value("name").unwrap(), h100.product_name);
}

#[test]
fn a_fifo_beside_the_library_fails_init_at_once_naming_it() {
    let (link, config) = layout("self-fifo");
    let _ = std::fs::remove_file(&config);
    mkfifo(&config);
    let r = run(&link, &[]);
    assert_eq!(r.number("rc"), u64::from(ret::DRIVER_NOT_LOADED), "{}", r.describe());
    assert!(r.elapsed < Duration::from_secs(10));
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("fakegpu:")).collect();
    assert_eq!(lines.len(), 1, "{}", r.describe());
    let named = config.parent().unwrap().canonicalize().unwrap().join(SELF_CONFIG_FILE);
    assert!(lines[0].contains(&*named.to_string_lossy()) && lines[0].contains("FIFO"), "{}", r.describe());
}
