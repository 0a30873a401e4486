//! Which GPUs a process sees: `NVIDIA_VISIBLE_DEVICES` (the container's view, as the NVIDIA
//! container runtime sets it up; NVML and CUDA both see only these, renumbered from 0) and,
//! for CUDA only, `CUDA_VISIBLE_DEVICES` applied on top of that view, as CUDA does.

use crate::identity::GpuIdentity;

/// The variable the NVIDIA container runtime reads to pick a container's GPUs.
pub const ENV_NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// One GPU `NVIDIA_VISIBLE_DEVICES` makes visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    /// Host index.
    pub host: usize,
    /// None: the whole GPU with all its MIG devices; Some: named only through MIG UUIDs,
    /// so only those MIG devices (GI id, CI id) show, as the container runtime exposes them.
    pub mig: Option<Vec<(u32, u32)>>,
}

/// The GPUs `NVIDIA_VISIBLE_DEVICES` makes visible, in the order it names them: unset, empty
/// or `all` = every GPU; `none`/`void` = none; otherwise a comma list of UUIDs (`GPU-…` or
/// `MIG-…`, any case) or indices. A MIG UUID brings its parent GPU with only that MIG device
/// (the parent's place is where it is first named); naming the GPU itself shows all of them.
/// Entries naming nothing on `node` are skipped, duplicates kept once.
pub fn container_view(value: Option<&str>, node: &str, gpus: &[GpuIdentity]) -> Vec<Visible> {
    let value = value.map(str::trim).unwrap_or("");
    match value {
        "" | "all" => return (0..gpus.len()).map(|host| Visible { host, mig: None }).collect(),
        "none" | "void" => return Vec::new(),
        _ => {}
    }
    let mut picked: Vec<Visible> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let found = match entry.parse::<usize>() {
            Ok(index) => (index < gpus.len()).then_some((index, None)),
            Err(_) => gpus.iter().position(|g| g.uuid.eq_ignore_ascii_case(entry)).map(|h| (h, None)).or_else(|| {
                gpus.iter()
                    .enumerate()
                    .find_map(|(h, g)| crate::mig::instance_of_uuid(node, &g.uuid, entry).map(|instance| (h, Some(instance))))
            }),
        };
        let Some((host, instance)) = found else { continue };
        match (picked.iter_mut().find(|v| v.host == host), instance) {
            (None, instance) => picked.push(Visible { host, mig: instance.map(|i| vec![i]) }),
            (Some(v), None) => v.mig = None,
            (Some(v), Some(i)) => {
                if let Some(list) = v.mig.as_mut().filter(|l| !l.contains(&i)) {
                    list.push(i);
                }
            }
        }
    }
    picked
}

/// The variable CUDA reads to pick, among the GPUs the container shows, the devices it enumerates.
pub const ENV_CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// Applies `CUDA_VISIBLE_DEVICES` to a view (`uuids` in view order): unset = every GPU; set
/// (even empty) = a comma list of view indices, `GPU-` UUIDs (a unique prefix is enough, any
/// case) or `MIG-` UUIDs (which stand for their parent GPU here, see `mig_parent`). As in CUDA,
/// the list ends at the first entry that names nothing, and a GPU named twice ends it too.
/// Returns positions into `uuids`.
pub fn cuda_view(value: Option<&str>, uuids: &[&str], mig_parent: &dyn Fn(&str) -> Option<usize>) -> Vec<usize> {
    let Some(value) = value else { return (0..uuids.len()).collect() };
    let mut picked = Vec::new();
    for entry in value.split(',').map(str::trim) {
        let found = if let Ok(index) = entry.parse::<usize>() {
            (index < uuids.len()).then_some(index)
        } else if entry.len() > 4 && entry[..4].eq_ignore_ascii_case("MIG-") {
            mig_parent(entry)
        } else {
            let want = entry.to_ascii_lowercase();
            let want = if want.starts_with("gpu-") { want } else { format!("gpu-{want}") };
            let mut hits = uuids.iter().enumerate().filter(|(_, u)| want.len() > 4 && u.to_ascii_lowercase().starts_with(&want));
            match (hits.next(), hits.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        };
        match found {
            Some(i) if !picked.contains(&i) => picked.push(i),
            _ => break,
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mig, NodeSpec, SimulatedNode};

    #[test]
    fn mig_uuids_bring_their_parent_with_only_those_mig_devices() {
        let node = SimulatedNode::new(NodeSpec::builtin("h100", Some(4), "vis-node").unwrap());
        let g = &node.gpus;
        let m = |gpu: usize, gi: u32, ci: u32| mig::mig_uuid("vis-node", &g[gpu].uuid, gi, ci);
        let value = format!("{},{},{},{}", m(2, 7, 0), g[1].uuid, m(2, 9, 0).to_uppercase(), m(2, 7, 0));
        let v = container_view(Some(&value), "vis-node", g);
        assert_eq!(v, vec![Visible { host: 2, mig: Some(vec![(7, 0), (9, 0)]) }, Visible { host: 1, mig: None }]);
        // The GPU named as well: all its MIG devices show.
        let v = container_view(Some(&format!("{},{}", m(3, 1, 0), g[3].uuid)), "vis-node", g);
        assert_eq!(v, vec![Visible { host: 3, mig: None }]);
        // Another node's MIG UUID names nothing here.
        let other = mig::mig_uuid("elsewhere", &g[0].uuid, 7, 0);
        assert!(container_view(Some(&other), "vis-node", g).is_empty());
        assert_eq!(container_view(None, "vis-node", g).len(), 4);
    }

    #[test]
    fn cuda_view_stops_at_the_first_entry_naming_nothing() {
        let uuids = [
            "GPU-aa000000-0000-0000-0000-000000000000",
            "GPU-ab000000-0000-0000-0000-000000000000",
            "GPU-bb000000-0000-0000-0000-000000000000",
        ];
        let none = |_: &str| None;
        assert_eq!(cuda_view(None, &uuids, &none), vec![0, 1, 2]);
        assert_eq!(cuda_view(Some(""), &uuids, &none), Vec::<usize>::new());
        assert_eq!(cuda_view(Some("2,0"), &uuids, &none), vec![2, 0]);
        assert_eq!(cuda_view(Some("1,7,0"), &uuids, &none), vec![1]);
        assert_eq!(cuda_view(Some("GPU-BB,ab"), &uuids, &none), vec![2, 1]);
        // An ambiguous prefix names nothing.
        assert_eq!(cuda_view(Some("GPU-a,2"), &uuids, &none), Vec::<usize>::new());
        assert_eq!(cuda_view(Some("0,0,1"), &uuids, &none), vec![0]);
        assert_eq!(cuda_view(Some("MIG-x,1"), &uuids, &|_| Some(2)), vec![2, 1]);
    }
}
