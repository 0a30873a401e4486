//! `NVIDIA_VISIBLE_DEVICES`: the library shows only the GPUs it names, renumbered from 0,
//! as the NVIDIA container runtime arranges inside a container. UUIDs and PCI bus ids stay
//! those of the host GPUs. Each case runs in a fresh child (the node loads once per process).

mod common;

use std::ffi::{c_char, c_uint, CStr};
use std::ptr::null_mut;

use fakegpu_model::{NodeSpec, SimulatedNode};
use nvidia_ml::exports::device_ids::*;
use nvidia_ml::exports::system::*;
use nvml_abi::ret;

use common::{current_case, run_case};

const NODE: &str = "visible-node";

fn host_uuids() -> Vec<String> {
    let node = SimulatedNode::new(NodeSpec::builtin("a100-80gb", Some(8), NODE).unwrap());
    node.gpus.iter().map(|g| g.uuid.clone()).collect()
}

/// What the library shows: one `dev=<index>,<uuid>` line per device, after `count=`.
fn child_list() {
    if std::env::var("VISIBLE_TEST_UNSET").is_ok() {
        std::env::remove_var("NVIDIA_VISIBLE_DEVICES");
    }
    unsafe {
        assert_eq!(nvmlInit_v2(), ret::SUCCESS);
        let mut count: c_uint = 0;
        assert_eq!(nvmlDeviceGetCount_v2(&mut count), ret::SUCCESS);
        println!("count={count}");
        let mut lines = Vec::new();
        for i in 0..count {
            let mut dev = null_mut();
            assert_eq!(nvmlDeviceGetHandleByIndex_v2(i, &mut dev), ret::SUCCESS);
            let mut index: c_uint = 99;
            assert_eq!(nvmlDeviceGetIndex(dev, &mut index), ret::SUCCESS);
            let mut buf = [0 as c_char; 96];
            assert_eq!(nvmlDeviceGetUUID(dev, buf.as_mut_ptr(), buf.len() as c_uint), ret::SUCCESS);
            let uuid = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
            // Looking a device up by its UUID finds the same handle.
            let mut by_uuid = null_mut();
            assert_eq!(nvmlDeviceGetHandleByUUID(buf.as_ptr(), &mut by_uuid), ret::SUCCESS);
            assert_eq!(by_uuid, dev);
            lines.push(format!("{index},{uuid}"));
        }
        let mut dev = null_mut();
        assert_eq!(nvmlDeviceGetHandleByIndex_v2(count, &mut dev), ret::INVALID_ARGUMENT);
        println!("devs={}", lines.join(";"));
        assert_eq!(nvmlShutdown(), ret::SUCCESS);
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

/// Runs the listing with `NVIDIA_VISIBLE_DEVICES` = `value` (None = unset) and returns (count, [(index, uuid)]).
fn list(value: Option<&str>) -> (usize, Vec<(u32, String)>) {
    let mut env = vec![("FAKEGPU_PROFILE", "a100-80gb".to_string()), ("FAKEGPU_GPUS", "8".into()), ("FAKEGPU_NODE", NODE.into())];
    match value {
        Some(v) => env.push(("NVIDIA_VISIBLE_DEVICES", v.to_string())),
        None => env.push(("VISIBLE_TEST_UNSET", "1".into())),
    }
    let child = run_case("list", &env);
    child.assert_ok();
    let count: usize = child.value("count").unwrap().parse().unwrap();
    let devs = child.value("devs").unwrap();
    let devs = devs
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|d| {
            let (i, u) = d.split_once(',').unwrap();
            (i.parse().unwrap(), u.to_string())
        })
        .collect();
    (count, devs)
}

fn numbered(uuids: &[&String]) -> Vec<(u32, String)> {
    uuids.iter().enumerate().map(|(i, u)| (i as u32, (*u).clone())).collect()
}

#[test]
fn unset_and_all_show_every_gpu() {
    let host = host_uuids();
    let all: Vec<&String> = host.iter().collect();
    assert_eq!(list(None), (8, numbered(&all)));
    assert_eq!(list(Some("all")), (8, numbered(&all)));
}

#[test]
fn none_and_void_show_no_gpu() {
    assert_eq!(list(Some("none")), (0, vec![]));
    assert_eq!(list(Some("void")), (0, vec![]));
}

#[test]
fn uuids_pick_those_gpus_renumbered_in_the_order_given() {
    let host = host_uuids();
    let value = format!("{},{}", host[5], host[2].to_uppercase());
    assert_eq!(list(Some(&value)), (2, numbered(&[&host[5], &host[2]])));
}

#[test]
fn indices_pick_those_gpus_and_unknown_entries_are_skipped() {
    let host = host_uuids();
    assert_eq!(list(Some("3,7")), (2, numbered(&[&host[3], &host[7]])));
    assert_eq!(list(Some("1,GPU-00000000-0000-0000-0000-000000000000,42,1")), (1, numbered(&[&host[1]])));
}
