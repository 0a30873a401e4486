//! Bounded fuzzing of the three parsers that read files a user or another process wrote:
//! profiles, node configs and live state files (issue 18). A seeded mutator (structure-aware:
//! JSON values replaced by extremes, keys added, arrays grown; and byte-level) starts from
//! real inputs and runs for a fixed time per parser. Properties:
//!
//! * no parser panics (overflow checks are on in test builds, so a wrapping sum panics too);
//! * whatever a parser accepts, every computation downstream accepts too: readings at any
//!   load, MIG tables and devices, energy over time (which never goes back), identities;
//! * an accepted state file written back parses to the same state.
//!
//! Budget: `FUZZ_SECONDS` per parser (default 4); `FUZZ_SEED` picks the sequence (printed, so
//! a failure can be replayed). This is the stable-toolchain stand-in for cargo-fuzz, whose
//! libFuzzer needs nightly (see docs/nvml-library.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fakegpu_model::state::{self, Fault, NodeState, Now, Process, ProcessType, SetRequest};
use fakegpu_model::{config, dynamics, mig, state_file, telemetry, NodeSpec, Profile, SimulatedNode};
use serde_json::{json, Value};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn extremes() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(100),
        json!(101),
        json!(1000),
        json!(65535),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(i64::MAX),
        json!(u64::MAX - 1),
        json!(u64::MAX),
        json!(1e308),
        json!(0.5),
        json!(""),
        json!("\u{0}"),
        json!("x".repeat(300)),
        json!("01"),
        json!("7"),
        json!("842"),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
    ]
}

/// Paths to every node of `v` (object keys and array indices).
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(PathStep::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        PathStep::Key(k) => &mut v[k.as_str()],
        PathStep::Index(i) => &mut v[*i],
    })
}

/// One mutation of `seed`: mostly structural, sometimes on the bytes.
fn mutate(seed: &Value, rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.clone();
    for _ in 0..1 + rng.below(3) {
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        let path = all[rng.below(all.len())].clone();
        let node = at(&mut v, &path);
        match rng.below(6) {
            0..=2 => *node = extremes()[rng.below(extremes().len())].clone(),
            3 => {
                if let Value::Array(a) = node {
                    // Duplicates: the same placement twice, the same pid twice, many entries.
                    if let Some(first) = a.first().cloned() {
                        let n = [1, 2, 100][rng.below(3)];
                        a.extend(std::iter::repeat_n(first, n));
                    }
                }
            }
            4 => {
                if let Value::Object(m) = node {
                    m.insert(["gpus", "x", "7", "01", "256"][rng.below(5)].to_string(), json!({}));
                }
            }
            _ => {
                if let Value::Object(m) = node {
                    if let Some(k) = m.keys().nth(rng.below(m.len())).cloned() {
                        m.remove(&k);
                    }
                }
            }
        }
    }
    let mut bytes = serde_json::to_vec(&v).unwrap();
    if rng.below(8) == 0 && !bytes.is_empty() {
        let i = rng.below(bytes.len());
        match rng.below(3) {
            0 => bytes[i] = rng.next() as u8,
            1 => {
                bytes.truncate(i);
            }
            _ => {
                let alphabet = b"{}[]\",:0\xff\x00";
                bytes.insert(i, alphabet[rng.below(alphabet.len())])
            }
        }
    }
    bytes
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn budget() -> Duration {
    Duration::from_secs_f64(std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4.0))
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xf00d_5eed)
}

thread_local! {
    static FUZZING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic while this thread fuzzes is collected and reported at the end, not printed.
fn quiet_panics_while_fuzzing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !FUZZING.with(|f| f.get()) {
                previous(info);
            }
        }));
    });
}

/// Runs `check` on mutations of `seeds` for the budget; reports the inputs that panicked.
fn fuzz(name: &str, seeds: &[Value], check: impl Fn(&[u8]) -> bool) {
    let mut rng = Rng(seed() ^ name.len() as u64);
    let (start, mut runs, mut accepted) = (Instant::now(), 0u64, 0u64);
    let mut failures = Vec::new();
    quiet_panics_while_fuzzing();
    while start.elapsed() < budget() {
        let input = mutate(&seeds[rng.below(seeds.len())], &mut rng);
        runs += 1;
        FUZZING.with(|f| f.set(true));
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        FUZZING.with(|f| f.set(false));
        match outcome {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(e) => {
                let what = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                failures.push(format!("{}\n  input: {}", what.unwrap_or_default(), String::from_utf8_lossy(&input)));
                if failures.len() >= 5 {
                    break;
                }
            }
        }
    }
    eprintln!("{name}: {runs} inputs ({accepted} accepted) in {:?}, seed {}", start.elapsed(), seed());
    assert!(runs > 100, "{name}: too few runs");
    assert!(failures.is_empty(), "{name}: {} panicking inputs:\n{}", failures.len(), failures.join("\n"));
}

const T0: Now = Now { unix_ms: 1_700_000_000_000, boot_ms: 1_000_000 };

/// Everything downstream of a profile, at idle and full load.
fn exercise_profile(p: &Profile) {
    for util in [0, 37, 100] {
        let r = telemetry::readings(
            p,
            &telemetry::Load { gpu_util: util, memory_util: util, memory_used_bytes: u64::MAX, ..Default::default() },
        );
        assert!(r.power_mw <= p.power.max_limit_mw.max(p.power.idle_draw_mw), "power {} above the limit", r.power_mw);
        assert_eq!(r.memory.total, r.memory.reserved + r.memory.used + r.memory.free);
    }
    if p.mig_capable {
        for g in mig::gi_profiles(p).unwrap_or_default() {
            let _ = mig::ci_profiles(&g);
        }
    }
    let spec = NodeSpec::builtin("h100", Some(2), "n").map(|s| NodeSpec { profile: p.clone(), ..s }).unwrap();
    let node = SimulatedNode::new(spec);
    assert_eq!(node.gpus.len(), 2);
}

fn profile_seeds() -> Vec<Value> {
    let dir = workspace().join("profiles");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "schema.json" && path.extension().is_some_and(|e| e == "json") {
            seeds.push(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap());
        }
    }
    seeds
}

#[test]
fn profile_parser() {
    fuzz("profile", &profile_seeds(), |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else { return false };
        match Profile::from_json(text, "fuzz.json") {
            Ok(p) => {
                exercise_profile(&p);
                true
            }
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz.json"), "errors name the file: {e}");
                false
            }
        }
    });
}

#[test]
fn node_config_parser() {
    let dir = std::env::temp_dir().join(format!("fakegpu-parser-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.json");
    let seeds = vec![
        json!({"node": "w1", "profile": "a100-40gb", "gpus": 4, "overrides": {"memory": {"reserved_mib": 100}}, "driver_version": "550.1.2"}),
        json!({"profile": "h100", "gpus": 8, "cuda_driver_version": 12020, "overrides": {"power": {"max_limit_mw": 800000}, "clocks": {"max": {"sm_mhz": 2000}}}}),
        json!({"profile": profile_seeds()[0].clone(), "gpus": 2}),
    ];
    let config_path = file.display().to_string();
    fuzz("node config", &seeds, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        let env = |key: &str| (key == config::ENV_CONFIG).then(|| config_path.clone());
        match config::resolve(&env, "host") {
            Ok(spec) => {
                exercise_profile(&spec.profile);
                assert!((1..=fakegpu_model::MAX_GPUS).contains(&spec.gpu_count));
                let node = SimulatedNode::new(spec);
                assert_eq!(node.gpus.len() as u32, node.spec.gpu_count);
                true
            }
            Err(e) => {
                assert!(e.to_string().contains("node.json") || e.to_string().contains("profile"), "errors name the input: {e}");
                false
            }
        }
    });
    let _ = std::fs::remove_dir_all(dir);
}

/// State files the writers produce, as seeds.
fn state_seeds(spec: &NodeSpec) -> Vec<Value> {
    let mut st = NodeState::default();
    state::set(&mut st, spec, 1, &SetRequest { gpu_util: Some(70), memory_used_bytes: Some(1 << 30), ..Default::default() }, T0).unwrap();
    let p = Process {
        pid: 42,
        name: "python".into(),
        used_memory_bytes: 1 << 30,
        kind: ProcessType::Compute,
        gpu_instance_id: None,
        compute_instance_id: None,
        pid_namespace: None,
    };
    state::add_process(&mut st, spec, 1, p.clone(), T0).unwrap();
    state::inject(&mut st, spec, 1, &Fault::EccDbe(2), T0).unwrap();
    state::inject(&mut st, spec, 1, &Fault::Xid(79), T0).unwrap();
    st.gpu_mut(spec, 0, T0).unwrap().mig = mig::named_layout(&spec.profile, "all-1g.5gb").unwrap();
    let mut with_procs = st.clone();
    let on_mig = Process { pid: 43, gpu_instance_id: Some(7), compute_instance_id: Some(0), ..p };
    state::add_process(&mut with_procs, spec, 0, on_mig, T0).unwrap();
    vec![serde_json::to_value(&st).unwrap(), serde_json::to_value(&with_procs).unwrap()]
}

#[test]
fn state_file_parser() {
    let spec = NodeSpec::builtin("a100-40gb", Some(2), "fuzz-node").unwrap();
    let node = SimulatedNode::new(spec.clone());
    let path = Path::new("fuzz-state.json");
    fuzz("state file", &state_seeds(&spec), |bytes| {
        let Ok(st) = state_file::parse_checked(path, bytes, &spec) else { return false };
        // Accepted: every reading is computable, energy never goes back, MIG devices list.
        for (key, gpu) in &st.gpus {
            let mut last = 0;
            for dt in [0, 1, 1_000, 86_400_000, u64::from(u32::MAX)] {
                let now = Now { unix_ms: T0.unix_ms + dt, boot_ms: T0.boot_ms + dt };
                let _ = dynamics::readings(&spec.profile, gpu, now);
                let e = dynamics::energy_mj(&spec.profile, gpu, now);
                assert!(e >= last, "gpu {key}: energy went back from {last} to {e}");
                last = e;
            }
        }
        let _ = node.mig_devices(&st);
        let again = state_file::parse_checked(path, &serde_json::to_vec(&st).unwrap(), &spec).expect("a written state reads back");
        assert_eq!(again, st);
        true
    });
}
