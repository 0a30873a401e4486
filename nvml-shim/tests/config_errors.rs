//! Bad configuration at `nvmlInit`: each case runs in a fresh process, gets the documented
//! return code (DRIVER_NOT_LOADED for a file that cannot be read, INVALID_ARGUMENT for
//! content that is wrong), prints exactly one stderr line naming the file or variable,
//! the key and the reason, and leaves the library usable (UNINITIALIZED, no crash).
//! A valid configuration in a fresh process then works. docs/nvml-library.md documents
//! these codes and lines.

mod common;

use std::ffi::{c_char, c_uint, CStr};
use std::path::Path;

use nvidia_ml::exports::device_ids::{nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetName};
use nvidia_ml::exports::system::{nvmlInit_v2, nvmlShutdown, nvmlSystemGetDriverVersion};
use nvml_abi::{nvmlReturn_t, ret};

use common::{current_case, run_case, scratch_dir, workspace_root, Child};

/// Initializes once and reports the code; on failure checks that the library stays
/// uninitialized, on success prints what the node looks like.
fn case_init() {
    let rc = nvmlInit_v2();
    println!("rc={rc}");
    let mut n: c_uint = 0;
    if rc != ret::SUCCESS {
        assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut n) }, ret::UNINITIALIZED);
        let mut buf = [0 as c_char; 80];
        assert_eq!(unsafe { nvmlSystemGetDriverVersion(buf.as_mut_ptr(), 80) }, ret::UNINITIALIZED);
        assert_eq!(nvmlShutdown(), ret::UNINITIALIZED);
        if std::env::var_os("INIT_AGAIN").is_some() {
            // Nothing was cached: the same error again, with its line.
            assert_eq!(nvmlInit_v2(), rc, "second init");
        }
        return;
    }
    let mut h = std::ptr::null_mut();
    let mut name = [0 as c_char; 96];
    unsafe {
        assert_eq!(nvmlDeviceGetCount_v2(&mut n), ret::SUCCESS);
        assert_eq!(nvmlDeviceGetHandleByIndex_v2(0, &mut h), ret::SUCCESS);
        assert_eq!(nvmlDeviceGetName(h, name.as_mut_ptr(), 96), ret::SUCCESS);
    }
    println!("count={n}");
    println!("name={}", unsafe { CStr::from_ptr(name.as_ptr()) }.to_str().unwrap());
    assert_eq!(nvmlShutdown(), ret::SUCCESS);
}

#[test]
fn child() {
    let Some(case) = current_case() else { return };
    match case.as_str() {
        "init" => case_init(),
        other => panic!("unknown case {other}"),
    }
}

/// One bad configuration and what nvmlInit must say about it.
struct Bad {
    what: &'static str,
    env: Vec<(String, String)>,
    code: nvmlReturn_t,
    /// The file or variable the line names right after the prefix.
    origin: String,
    /// Further text the line must hold: the key and the reason.
    mentions: Vec<String>,
}

const PREFIX: &str = "fakegpu: nvmlInit failed: ";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn h100_json() -> String {
    std::fs::read_to_string(workspace_root().join("profiles/h100.json")).unwrap()
}

fn bad_cases() -> Vec<Bad> {
    let dir = scratch_dir("config-errors");
    let missing_profile = dir.join("missing-profile.json").to_str().unwrap().to_string();
    let garbled = write(&dir, "garbled.json", "{\"name\": \"garbled\", \"product_name\": ");
    let unknown_key = write(&dir, "unknown-key.json", &h100_json().replacen('{', "{\n  \"bogus_key\": 1,", 1));
    let missing_config = dir.join("missing-node.json").to_str().unwrap().to_string();
    let config_key = write(&dir, "node-unknown-key.json", r#"{"profile":"h100","gpu":4}"#);
    let config_override = write(&dir, "node-bad-override.json", r#"{"profile":"h100","overrides":{"memory":{"totl_mib":1}}}"#);
    let config_value = write(&dir, "node-bad-value.json", r#"{"profile":"h100","overrides":{"fan_speed_percent":150}}"#);
    let config_count = write(&dir, "node-zero-gpus.json", r#"{"profile":"h100","gpus":0}"#);
    let config_rel = write(&dir, "node-missing-profile.json", r#"{"profile":"./not-there.json"}"#);
    let config_garbled = write(&dir, "node-garbled.json", "{\"profile\": h100}");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    vec![
        Bad {
            what: "missing profile file",
            env: env("FAKEGPU_PROFILE", &missing_profile),
            code: ret::DRIVER_NOT_LOADED,
            origin: missing_profile.clone(),
            mentions: s(&["cannot read profile", "No such file"]),
        },
        Bad {
            what: "garbled profile JSON",
            env: env("FAKEGPU_PROFILE", &garbled),
            code: ret::INVALID_ARGUMENT,
            origin: garbled.clone(),
            mentions: s(&["invalid profile JSON", "EOF"]),
        },
        Bad {
            what: "unknown key in a profile",
            env: env("FAKEGPU_PROFILE", &unknown_key),
            code: ret::INVALID_ARGUMENT,
            origin: unknown_key.clone(),
            mentions: s(&["unknown field", "`bogus_key`"]),
        },
        Bad {
            what: "unknown built-in profile",
            env: env("FAKEGPU_PROFILE", "h900"),
            code: ret::INVALID_ARGUMENT,
            origin: "FAKEGPU_PROFILE".into(),
            mentions: s(&["`profile`", "unknown profile `h900`", "h100"]),
        },
        Bad {
            what: "0 GPUs",
            env: env("FAKEGPU_GPUS", "0"),
            code: ret::INVALID_ARGUMENT,
            origin: "FAKEGPU_GPUS".into(),
            mentions: s(&["GPU count 0 is outside 1..=256"]),
        },
        Bad {
            what: "257 GPUs",
            env: env("FAKEGPU_GPUS", "257"),
            code: ret::INVALID_ARGUMENT,
            origin: "FAKEGPU_GPUS".into(),
            mentions: s(&["GPU count 257 is outside 1..=256"]),
        },
        Bad {
            what: "GPU count that is not a number",
            env: env("FAKEGPU_GPUS", "eight"),
            code: ret::INVALID_ARGUMENT,
            origin: "FAKEGPU_GPUS".into(),
            mentions: s(&["`eight` is not a whole number"]),
        },
        Bad {
            what: "missing node config file",
            env: env("FAKEGPU_CONFIG", &missing_config),
            code: ret::DRIVER_NOT_LOADED,
            origin: missing_config.clone(),
            mentions: s(&["cannot read node config", "No such file"]),
        },
        Bad {
            what: "garbled node config",
            env: env("FAKEGPU_CONFIG", &config_garbled),
            code: ret::INVALID_ARGUMENT,
            origin: config_garbled.clone(),
            mentions: s(&["expected value"]),
        },
        Bad {
            what: "unknown key in the node config",
            env: env("FAKEGPU_CONFIG", &config_key),
            code: ret::INVALID_ARGUMENT,
            origin: config_key.clone(),
            mentions: s(&["key `gpu`", "unknown field"]),
        },
        Bad {
            what: "override of a key profiles do not have",
            env: env("FAKEGPU_CONFIG", &config_override),
            code: ret::INVALID_ARGUMENT,
            origin: format!("{config_override} (overrides)"),
            mentions: s(&["key `overrides`", "totl_mib"]),
        },
        Bad {
            what: "override with an impossible value",
            env: env("FAKEGPU_CONFIG", &config_value),
            code: ret::INVALID_ARGUMENT,
            origin: format!("{config_override} (overrides)").replace("node-bad-override", "node-bad-value"),
            mentions: s(&["key `fan_speed_percent`", "percentage"]),
        },
        Bad {
            what: "0 GPUs in the node config",
            env: env("FAKEGPU_CONFIG", &config_count),
            code: ret::INVALID_ARGUMENT,
            origin: config_count.clone(),
            mentions: s(&["key `gpus`", "GPU count 0 is outside 1..=256"]),
        },
        Bad {
            what: "node config naming a missing profile file",
            env: env("FAKEGPU_CONFIG", &config_rel),
            code: ret::DRIVER_NOT_LOADED,
            origin: dir.join("./not-there.json").to_str().unwrap().to_string(),
            mentions: s(&["cannot read profile", "No such file"]),
        },
    ]
}

fn describe(child: &Child) -> String {
    format!("status {}\n--- stdout\n{}\n--- stderr\n{}", child.output.status, child.stdout(), child.stderr())
}

#[test]
fn bad_configuration_fails_init_with_one_clear_line() {
    let mut failures = Vec::new();
    for bad in bad_cases() {
        let child = run_case("init", &bad.env);
        if !child.output.status.success() {
            failures.push(format!("{}: the child did not finish cleanly: {}", bad.what, describe(&child)));
            continue;
        }
        let rc: nvmlReturn_t = child.value("rc").and_then(|v| v.parse().ok()).unwrap_or(u32::MAX);
        if rc != bad.code {
            failures.push(format!("{}: nvmlInit_v2 returned {rc}, want {}", bad.what, bad.code));
        }
        let stderr = child.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        let [line] = lines.as_slice() else {
            failures.push(format!("{}: want exactly one stderr line, got {}:\n{stderr}", bad.what, lines.len()));
            continue;
        };
        let head = format!("{PREFIX}{}: ", bad.origin);
        if !line.starts_with(&head) {
            failures.push(format!("{}: line does not start with {head:?}:\n{line}", bad.what));
        }
        for text in &bad.mentions {
            if !line.contains(text.as_str()) {
                failures.push(format!("{}: line does not mention {text:?}:\n{line}", bad.what));
            }
        }
        if line.contains("key ``") {
            failures.push(format!("{}: line names an empty key:\n{line}", bad.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_failed_init_can_be_retried_in_the_same_process() {
    let child = run_case("init", &[("FAKEGPU_GPUS", "0"), ("INIT_AGAIN", "1")]);
    assert!(child.output.status.success(), "{}", describe(&child));
    assert_eq!(child.value("rc").as_deref(), Some("2"));
    // One line per failed init, both the same.
    let stderr = child.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn a_valid_configuration_in_a_fresh_process_works() {
    // The bad cases above ran in their own processes; nothing of them is left over.
    let dir = scratch_dir("config-ok");
    let config = write(&dir, "node.json", r#"{"node":"worker-1","profile":"t4","gpus":3}"#);
    for env in [
        vec![("FAKEGPU_PROFILE", "t4"), ("FAKEGPU_GPUS", "3")],
        vec![("FAKEGPU_CONFIG", config.as_str())],
        // The environment wins over a bad file's count.
        vec![("FAKEGPU_CONFIG", config.as_str()), ("FAKEGPU_GPUS", "2")],
    ] {
        let child = run_case("init", &env);
        assert!(child.output.status.success(), "{env:?}: {}", describe(&child));
        assert_eq!(child.value("rc").as_deref(), Some("0"), "{env:?}: {}", describe(&child));
        assert_eq!(child.value("name").as_deref(), Some("Tesla T4"));
        let want = env.iter().find(|(k, _)| *k == "FAKEGPU_GPUS").map_or("3", |(_, v)| v);
        assert_eq!(child.value("count").as_deref(), Some(want));
        assert_eq!(child.stderr(), "", "a good init prints nothing");
    }
}
