//! The built-in profiles and the checked-in JSON Schema.

use std::collections::HashMap;
use std::path::PathBuf;

use fakegpu_model::{builtin_profiles, find_builtin, Profile};

fn profiles_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

#[test]
fn schema_json_is_current() {
    let path = profiles_dir().join("schema.json");
    let want = Profile::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &want).expect("write profiles/schema.json");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "profiles/schema.json is stale or missing; regenerate it with\n\n    UPDATE_SCHEMA=1 cargo test -p fakegpu-model --test profiles\n"
    );
}

#[test]
fn every_profile_file_is_built_in_and_valid() {
    let profiles = builtin_profiles().expect("built-in profiles parse and validate");
    let mut files: Vec<String> = std::fs::read_dir(profiles_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "schema.json")
        .collect();
    files.sort();
    assert_eq!(files.len(), profiles.len());
    for (file, profile) in files.iter().zip(profiles) {
        // Files are sorted by name and named after the profile.
        assert_eq!(file, &format!("{}.json", profile.name));
        let on_disk = Profile::from_path(&profiles_dir().join(file)).unwrap();
        assert_eq!(&on_disk, profile);
    }
}

#[test]
fn the_expected_profiles_ship() {
    for name in ["a100-40gb", "a100-80gb", "h100", "h200", "b200", "gb200", "gb300", "l40s", "l4", "t4", "k80"] {
        let profile = find_builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(profile.name, name);
    }
}

#[test]
fn names_and_aliases_are_unique() {
    let mut seen: HashMap<String, String> = HashMap::new();
    for profile in builtin_profiles().unwrap() {
        for key in std::iter::once(&profile.name).chain(&profile.aliases) {
            assert!(!key.trim().is_empty(), "{}: empty alias", profile.name);
            if let Some(other) = seen.insert(key.to_ascii_lowercase(), profile.name.clone()) {
                panic!("`{key}` selects both `{other}` and `{}` (names are case-insensitive)", profile.name);
            }
        }
    }
}

#[test]
fn aliases_select_their_profile() {
    for profile in builtin_profiles().unwrap() {
        for alias in &profile.aliases {
            assert_eq!(find_builtin(alias).unwrap().name, profile.name, "{alias}");
            assert_eq!(find_builtin(&alias.to_uppercase()).unwrap().name, profile.name);
        }
        // The product name and upstream's sanitised label form select the profile.
        let label: String =
            profile.product_name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
        for key in [&profile.product_name, &label] {
            assert_eq!(
                find_builtin(key).map(|p| p.name.as_str()).ok(),
                Some(profile.name.as_str()),
                "`{key}` should select `{}`",
                profile.name
            );
        }
    }
}

#[test]
fn profiles_round_trip_through_json() {
    for profile in builtin_profiles().unwrap() {
        let text = serde_json::to_string_pretty(profile).unwrap();
        let back = Profile::from_json(&text, &profile.name).unwrap();
        assert_eq!(&back, profile);
        // Serialising again gives the same text: nothing is lost or reordered.
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);
    }
}

#[test]
fn profiles_are_sane() {
    for p in builtin_profiles().unwrap() {
        let n = &p.name;
        assert!(p.product_name.len() <= 63, "{n}");
        assert!(!p.sources.is_empty(), "{n}");
        assert!(p.memory.total_mib >= 1024, "{n}: total_mib");
        assert!(p.power.idle_draw_mw <= p.power.default_limit_mw, "{n}");
        assert!(p.clocks.max.graphics_mhz > 0 && p.clocks.max.memory_mhz > 0, "{n}");
        if let Some(app) = p.clocks.applications {
            assert!(app.graphics_mhz <= p.clocks.max.graphics_mhz, "{n}");
            assert!(app.memory_mhz <= p.clocks.max.memory_mhz, "{n}");
        }
        if let Some(t) = p.thermal.tlimit {
            // Offsets from T.Limit must agree with the absolute thresholds.
            let limit = p.thermal.gpu_max_c.expect("T.Limit boards give gpu_max_c") as i32 + t.gpu_max_c;
            assert_eq!(p.thermal.shutdown_c as i32, limit - t.shutdown_c, "{n}");
            assert_eq!(p.thermal.slowdown_c as i32, limit - t.slowdown_c, "{n}");
        }
        assert_eq!(p.thermal.idle_memory_c.is_some(), p.thermal.memory_max_c.is_some(), "{n}");
    }
}

/// What is wrong with a profile's driver and CUDA versions: the CUDA version must be the one
/// its driver's branch reports (`fakegpu_model::driver::BRANCH_CUDA`), new enough for the
/// board's compute capability, and the branch must still support the board.
fn driver_problems(p: &Profile) -> Vec<String> {
    use fakegpu_model::driver::{branch, cuda_of_branch, cuda_text, last_branch_for, min_cuda_for};
    let mut out = Vec::new();
    let Some(b) = branch(&p.driver_version) else {
        return vec![format!("{}: driver_version `{}` has no branch", p.name, p.driver_version)];
    };
    match cuda_of_branch(b) {
        Some(c) if c == p.cuda_driver_version => {}
        Some(c) => out.push(format!(
            "{}: driver {} (R{b}) reports CUDA {}, not {}",
            p.name,
            p.driver_version,
            cuda_text(c),
            cuda_text(p.cuda_driver_version)
        )),
        None => out.push(format!("{}: branch R{b} of driver {} is not in BRANCH_CUDA", p.name, p.driver_version)),
    }
    let need = min_cuda_for(p.compute_capability);
    if p.cuda_driver_version < need {
        out.push(format!(
            "{}: compute capability {}.{} needs CUDA {} or later, the profile says {}",
            p.name,
            p.compute_capability.major,
            p.compute_capability.minor,
            cuda_text(need),
            cuda_text(p.cuda_driver_version)
        ));
    }
    if let Some(last) = last_branch_for(p.compute_capability).filter(|last| b > *last) {
        out.push(format!("{}: R{b} no longer supports compute capability {}.x (last: R{last})", p.name, p.compute_capability.major));
    }
    out
}

#[test]
fn driver_and_cuda_versions_agree_with_the_board() {
    let problems: Vec<String> = builtin_profiles().unwrap().iter().flat_map(driver_problems).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Each of the boards newer than the 535 driver states a driver of the branch it needs.
    for name in ["b200", "gb200", "gb300"] {
        let p = find_builtin(name).unwrap();
        assert!(fakegpu_model::driver::branch(&p.driver_version).unwrap() >= 570, "{name}: {}", p.driver_version);
    }
}

/// The check itself notices each kind of mistake.
#[test]
fn driver_check_catches_mismatches() {
    let mut p = find_builtin("h100").unwrap().clone();
    p.cuda_driver_version = 12080; // CUDA 12.8 with a 535 driver
    assert!(driver_problems(&p).iter().any(|e| e.contains("reports CUDA 12.2")), "{:?}", driver_problems(&p));
    let mut p = find_builtin("b200").unwrap().clone();
    (p.driver_version, p.cuda_driver_version) = ("535.261.03".into(), 12020); // what every board said before
    assert!(driver_problems(&p).iter().any(|e| e.contains("needs CUDA 12.8")), "{:?}", driver_problems(&p));
    let mut p = find_builtin("gb300").unwrap().clone();
    (p.driver_version, p.cuda_driver_version) = ("570.133.20".into(), 12080);
    assert!(driver_problems(&p).iter().any(|e| e.contains("needs CUDA 12.9")), "{:?}", driver_problems(&p));
    let mut p = find_builtin("k80").unwrap().clone();
    (p.driver_version, p.cuda_driver_version) = ("535.261.03".into(), 12020);
    assert!(driver_problems(&p).iter().any(|e| e.contains("last: R470")), "{:?}", driver_problems(&p));
    let mut p = find_builtin("h100").unwrap().clone();
    p.driver_version = "999.1.2".into();
    assert!(driver_problems(&p).iter().any(|e| e.contains("not in BRANCH_CUDA")), "{:?}", driver_problems(&p));
}

#[test]
fn invalid_driver_versions_in_a_profile_name_the_key() {
    let h100 = serde_json::to_value(find_builtin("h100").unwrap()).unwrap();
    for (key, value) in [
        ("driver_version", serde_json::json!("")),
        ("driver_version", serde_json::json!("535")),
        ("driver_version", serde_json::json!("r535.1")),
        ("cuda_driver_version", serde_json::json!(12021)),
        ("cuda_driver_version", serde_json::json!(100)),
    ] {
        let mut v = h100.clone();
        v[key] = value.clone();
        let err = Profile::from_json(&v.to_string(), "custom.json").unwrap_err().to_string();
        assert!(err.contains("custom.json") && err.contains(&format!("`{key}`")), "{key}={value}: {err}");
    }
    let mut v = h100.clone();
    v.as_object_mut().unwrap().remove("driver_version");
    let err = Profile::from_json(&v.to_string(), "custom.json").unwrap_err().to_string();
    assert!(err.contains("driver_version"), "{err}");
}
