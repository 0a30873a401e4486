//! The NVML binding: loads libnvidia-ml.so.1 at run time (like NVIDIA's binary, by soname and
//! then from the usual driver directories) and wraps the calls nvidia-smi makes in safe methods.
//! Symbols are resolved on use; a missing one reads as `FUNCTION_NOT_FOUND`, which callers
//! render the way NVIDIA's binary does.

use libloading::Library;
use nvml_abi::*;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, CStr};

/// An NVML return code other than SUCCESS.
pub type Ret = nvmlReturn_t;
/// The result of one NVML call.
pub type R<T> = Result<T, Ret>;

/// Where NVIDIA's nvidia-smi looks after the plain soname.
const FALLBACK_DIRS: &[&str] = &[
    "/usr/lib64",
    "/usr/lib64/nvidia",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib",
    "/usr/lib/nvidia",
    "/usr/lib32",
    "/usr/lib/nvidia/current",
];

/// The loaded library.
pub struct Nvml {
    lib: Library,
    /// The private export table's address once asked for (0: the call failed or gave NULL).
    table: std::sync::OnceLock<usize>,
}

/// A GPU (or MIG device) handle.
#[derive(Clone, Copy)]
pub struct Device<'a> {
    nvml: &'a Nvml,
    pub raw: nvmlDevice_t,
}

/// Calls the named NVML function with the given arguments; `Err(FUNCTION_NOT_FOUND)` if absent.
macro_rules! nv {
    ($nvml:expr, $name:expr, ($($ty:ty),*) $(, $arg:expr)*) => {{
        type F = unsafe extern "C" fn($($ty),*) -> ::nvml_abi::nvmlReturn_t;
        match $nvml.sym_named::<F>($name) {
            // SAFETY: the prototype is NVML's documented one for this symbol.
            Some(f) => match unsafe { f($($arg),*) } { 0 => Ok(()), e => Err(e) },
            None => Err(::nvml_abi::ret::FUNCTION_NOT_FOUND),
        }
    }};
}
pub(crate) use nv;

fn cstr(buf: &[c_char]) -> String {
    // SAFETY: buffers are NUL-terminated by NVML; the last byte is forced to 0 by callers.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

impl Nvml {
    /// dlopen()s libnvidia-ml.so.1 by soname, then from the driver directories.
    pub fn load() -> Option<Self> {
        // SAFETY: loading NVML runs no initialisers that we rely on being absent.
        let open = |p: &str| unsafe { Library::new(p) }.ok();
        open("libnvidia-ml.so.1")
            .or_else(|| FALLBACK_DIRS.iter().find_map(|d| open(&format!("{d}/libnvidia-ml.so.1"))))
            .map(|lib| Nvml { lib, table: std::sync::OnceLock::new() })
    }

    /// Resolves a symbol by its Rust-string name.
    pub fn sym_named<F: Copy>(&self, name: &str) -> Option<F> {
        let mut z = Vec::with_capacity(name.len() + 1);
        z.extend_from_slice(name.as_bytes());
        z.push(0);
        self.sym(&z)
    }

    /// Resolves a symbol as a function pointer of type `F`.
    pub fn sym<F: Copy>(&self, name: &[u8]) -> Option<F> {
        // SAFETY: the caller names the symbol's true prototype in `F`.
        unsafe { self.lib.get::<F>(name) }.ok().map(|s| *s)
    }

    pub fn init(&self) -> R<()> {
        nv!(self, "nvmlInitWithFlags", (c_uint), 0)
    }

    pub fn shutdown(&self) -> R<()> {
        nv!(self, "nvmlShutdown", ())
    }

    pub fn device_count(&self) -> R<u32> {
        let mut n = 0;
        nv!(self, "nvmlDeviceGetCount_v2", (*mut c_uint), &mut n).map(|_| n)
    }

    pub fn device(&self, i: u32) -> R<Device<'_>> {
        let mut raw = std::ptr::null_mut();
        nv!(self, "nvmlDeviceGetHandleByIndex_v2", (c_uint, *mut nvmlDevice_t), i, &mut raw).map(|_| Device { nvml: self, raw })
    }

    pub fn driver_version(&self) -> R<String> {
        let mut buf = [0 as c_char; 80];
        nv!(self, "nvmlSystemGetDriverVersion", (*mut c_char, c_uint), buf.as_mut_ptr(), 80).map(|_| cstr(&buf))
    }

    pub fn nvml_version(&self) -> R<String> {
        let mut buf = [0 as c_char; 80];
        nv!(self, "nvmlSystemGetNVMLVersion", (*mut c_char, c_uint), buf.as_mut_ptr(), 80).map(|_| cstr(&buf))
    }

    pub fn cuda_version(&self) -> R<i32> {
        let mut v: c_int = 0;
        nv!(self, "nvmlSystemGetCudaDriverVersion_v2", (*mut c_int), &mut v).map(|_| v)
    }

    pub fn process_name(&self, pid: u32) -> R<String> {
        let mut buf = [0 as c_char; 256];
        nv!(self, "nvmlSystemGetProcessName", (c_uint, *mut c_char, c_uint), pid, buf.as_mut_ptr(), 256).map(|_| cstr(&buf))
    }

    /// The word at slot `n` of the private export table, read as NVIDIA's binary reads it: a
    /// missing or short table is UNINITIALIZED, a NULL slot NOT_SUPPORTED.
    fn export_slot(&self, n: usize) -> R<usize> {
        let table = *self.table.get_or_init(|| {
            let mut t: *const u64 = std::ptr::null();
            let id = nvml_abi::export_table::ID;
            match nv!(self, "nvmlInternalGetExportTable", (*mut *const u64, *const [u8; 16]), &mut t, &id) {
                Ok(()) => t as usize,
                Err(_) => 0,
            }
        });
        if table == 0 {
            return Err(ret::UNINITIALIZED);
        }
        // SAFETY: the library hands out a table whose first word is its size in bytes; words
        // are read only below that size.
        unsafe {
            let words = table as *const usize;
            if *words <= n * 8 {
                return Err(ret::UNINITIALIZED);
            }
            match *words.add(n) {
                0 => Err(ret::NOT_SUPPORTED),
                f => Ok(f),
            }
        }
    }

    /// `nvmlEventSetCreate`/`Free` as NVIDIA's binary brackets the default table and `-q`.
    pub fn event_set(&self) -> R<nvmlEventSet_t> {
        let mut s = std::ptr::null_mut();
        nv!(self, "nvmlEventSetCreate", (*mut nvmlEventSet_t), &mut s).map(|_| s)
    }

    pub fn event_set_free(&self, s: nvmlEventSet_t) {
        let _ = nv!(self, "nvmlEventSetFree", (nvmlEventSet_t), s);
    }
}

impl<'a> Device<'a> {
    pub fn nvml(&self) -> &'a Nvml {
        self.nvml
    }

    /// Any `(device, *mut c_uint)` getter.
    pub fn u32_of(&self, name: &'static str) -> R<u32> {
        type F = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> ::nvml_abi::nvmlReturn_t;
        let mut v = 0;
        self.call1::<F>(name, |f| unsafe { f(self.raw, &mut v) }).map(|_| v)
    }

    /// Any `(device, *mut c_ulonglong)` getter.
    pub fn u64_of(&self, name: &'static str) -> R<u64> {
        type F = unsafe extern "C" fn(nvmlDevice_t, *mut c_ulonglong) -> ::nvml_abi::nvmlReturn_t;
        let mut v = 0;
        self.call1::<F>(name, |f| unsafe { f(self.raw, &mut v) }).map(|_| v)
    }

    /// Any `(device, *mut c_uint current, *mut c_uint pending)` getter.
    pub fn pair_of(&self, name: &'static str) -> R<(u32, u32)> {
        type F = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut c_uint) -> ::nvml_abi::nvmlReturn_t;
        let (mut a, mut b) = (0, 0);
        self.call1::<F>(name, |f| unsafe { f(self.raw, &mut a, &mut b) }).map(|_| (a, b))
    }

    /// Any `(device, *mut c_uint arg, *mut c_uint out)`-style getter taking one enum argument.
    pub fn u32_arg(&self, name: &'static str, arg: u32) -> R<u32> {
        type F = unsafe extern "C" fn(nvmlDevice_t, c_uint, *mut c_uint) -> ::nvml_abi::nvmlReturn_t;
        let mut v = 0;
        self.call1::<F>(name, |f| unsafe { f(self.raw, arg, &mut v) }).map(|_| v)
    }

    /// A `(device, unsigned *)` slot of the private export table.
    pub fn slot_u32(&self, n: usize) -> R<u32> {
        let f = self.nvml.export_slot(n)?;
        // SAFETY: `n` is a `(device, unsigned *)` slot (nvml_abi::export_table).
        let f: export_table::U32Slot = unsafe { std::mem::transmute(f) };
        let mut v = 0;
        match unsafe { f(self.raw, &mut v) } {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// A `(device, int *)` slot of the private export table.
    pub fn slot_i32(&self, n: usize) -> R<i32> {
        let f = self.nvml.export_slot(n)?;
        // SAFETY: `n` is a `(device, int *)` slot (nvml_abi::export_table).
        let f: export_table::I32Slot = unsafe { std::mem::transmute(f) };
        let mut v = 0;
        match unsafe { f(self.raw, &mut v) } {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// A `(device, char *, unsigned length)` slot of the private export table.
    pub fn slot_string(&self, n: usize, len: usize) -> R<String> {
        let f = self.nvml.export_slot(n)?;
        // SAFETY: `n` is a string slot (nvml_abi::export_table); the buffer has `len` bytes.
        let f: export_table::StrSlot = unsafe { std::mem::transmute(f) };
        let mut buf = vec![0 as c_char; len + 1];
        match unsafe { f(self.raw, buf.as_mut_ptr(), len as c_uint) } {
            0 => Ok(cstr(&buf)),
            e => Err(e),
        }
    }

    /// Slot 226: PCIe atomic capabilities.
    pub fn slot_atomic_caps(&self) -> R<export_table::AtomicCaps> {
        let f = self.nvml.export_slot(export_table::PCIE_ATOMIC_CAPS)?;
        // SAFETY: slot 226 takes `(device, AtomicCaps *)`.
        let f: export_table::AtomicCapsSlot = unsafe { std::mem::transmute(f) };
        let mut v = export_table::AtomicCaps::default();
        match unsafe { f(self.raw, &mut v) } {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// Any `(device, *mut c_char, c_uint len)` getter.
    pub fn string_of(&self, name: &'static str, len: usize) -> R<String> {
        type F = unsafe extern "C" fn(nvmlDevice_t, *mut c_char, c_uint) -> ::nvml_abi::nvmlReturn_t;
        let mut buf = vec![0 as c_char; len + 1];
        self.call1::<F>(name, |f| unsafe { f(self.raw, buf.as_mut_ptr(), len as c_uint) }).map(|_| cstr(&buf))
    }

    fn call1<F: Copy>(&self, name: &'static str, go: impl FnOnce(F) -> nvmlReturn_t) -> R<()> {
        let mut z = Vec::with_capacity(name.len() + 1);
        z.extend_from_slice(name.as_bytes());
        z.push(0);
        match self.nvml.sym::<F>(&z) {
            Some(f) => match go(f) {
                0 => Ok(()),
                e => Err(e),
            },
            None => Err(::nvml_abi::ret::FUNCTION_NOT_FOUND),
        }
    }

    pub fn name(&self) -> R<String> {
        self.string_of("nvmlDeviceGetName", 64)
    }

    pub fn uuid(&self, len: usize) -> R<String> {
        self.string_of("nvmlDeviceGetUUID", len)
    }

    pub fn index(&self) -> R<u32> {
        self.u32_of("nvmlDeviceGetIndex")
    }

    pub fn pci(&self) -> R<nvmlPciInfo_t> {
        // SAFETY: plain-old-data struct.
        let mut p: nvmlPciInfo_t = unsafe { std::mem::zeroed() };
        nv!(self.nvml, "nvmlDeviceGetPciInfo_v3", (nvmlDevice_t, *mut nvmlPciInfo_t), self.raw, &mut p).map(|_| p)
    }

    pub fn bus_id(&self) -> R<String> {
        self.pci().map(|p| cstr(&p.busId))
    }

    pub fn memory(&self) -> R<nvmlMemory_v2_t> {
        let mut m = nvmlMemory_v2_t { version: nvmlMemory_v2, ..Default::default() };
        nv!(self.nvml, "nvmlDeviceGetMemoryInfo_v2", (nvmlDevice_t, *mut nvmlMemory_v2_t), self.raw, &mut m).map(|_| m)
    }

    pub fn bar1(&self) -> R<nvmlBAR1Memory_t> {
        let mut m = nvmlBAR1Memory_t::default();
        nv!(self.nvml, "nvmlDeviceGetBAR1MemoryInfo", (nvmlDevice_t, *mut nvmlBAR1Memory_t), self.raw, &mut m).map(|_| m)
    }

    pub fn utilization(&self) -> R<nvmlUtilization_t> {
        let mut u = nvmlUtilization_t::default();
        nv!(self.nvml, "nvmlDeviceGetUtilizationRates", (nvmlDevice_t, *mut nvmlUtilization_t), self.raw, &mut u).map(|_| u)
    }

    pub fn temperature(&self) -> R<u32> {
        self.u32_arg("nvmlDeviceGetTemperature", 0)
    }

    pub fn clock(&self, name: &'static str, kind: u32) -> R<u32> {
        self.u32_arg(name, kind)
    }

    /// `nvmlDeviceGetClock(dev, type, id)`.
    pub fn clock_id(&self, kind: u32, id: u32) -> R<u32> {
        let mut v = 0;
        nv!(self.nvml, "nvmlDeviceGetClock", (nvmlDevice_t, c_uint, c_uint, *mut c_uint), self.raw, kind, id, &mut v).map(|_| v)
    }

    /// Field values, each with its own return code.
    pub fn fields(&self, ids: &[(u32, u32)]) -> R<Vec<nvmlFieldValue_t>> {
        // SAFETY: plain-old-data struct.
        let mut v: Vec<nvmlFieldValue_t> = ids
            .iter()
            .map(|&(id, scope)| {
                let mut f: nvmlFieldValue_t = unsafe { std::mem::zeroed() };
                f.fieldId = id;
                f.scopeId = scope;
                f
            })
            .collect();
        nv!(self.nvml, "nvmlDeviceGetFieldValues", (nvmlDevice_t, c_int, *mut nvmlFieldValue_t), self.raw, v.len() as c_int, v.as_mut_ptr())
            .map(|_| v)
    }

    /// Compute processes (`_v3`, falling back to `_v2`), with the two-call count protocol, in
    /// the library's order (`--query-compute-apps` prints them so).
    pub fn compute_processes(&self) -> R<Vec<nvmlProcessInfo_t>> {
        self.processes("nvmlDeviceGetComputeRunningProcesses_v3").or_else(|e| match e {
            ret::FUNCTION_NOT_FOUND => self.processes("nvmlDeviceGetComputeRunningProcesses_v2"),
            e => Err(e),
        })
    }

    /// The processes NVIDIA's nvidia-smi lists for this GPU (default table, `-q`), with their
    /// Type column. In MIG mode it asks once per MIG device, so the rows come per MIG device in
    /// index order and a process outside every MIG device is not shown; the public lists of the
    /// parent hold every instance's processes, so they are split by GPU/compute instance id.
    pub fn typed_processes(&self) -> Vec<(nvmlProcessInfo_t, &'static str)> {
        let c = self.compute_processes().unwrap_or_default();
        let g = self.graphics_processes().unwrap_or_default();
        let m = self.mps_processes().unwrap_or_default();
        if !matches!(self.pair_of("nvmlDeviceGetMigMode"), Ok((1, _))) {
            return merge_processes(c, g, &m);
        }
        let mut rows = Vec::new();
        for mig in crate::list::mig_devices(self) {
            let (Ok(gi), Ok(ci)) = (mig.u32_of("nvmlDeviceGetGpuInstanceId"), mig.u32_of("nvmlDeviceGetComputeInstanceId")) else {
                continue;
            };
            let of = |l: &[nvmlProcessInfo_t]| l.iter().filter(|p| (p.gpuInstanceId, p.computeInstanceId) == (gi, ci)).copied().collect();
            rows.extend(merge_processes(of(&c), of(&g), &of(&m)));
        }
        rows
    }

    pub fn graphics_processes(&self) -> R<Vec<nvmlProcessInfo_t>> {
        self.processes("nvmlDeviceGetGraphicsRunningProcesses_v3")
    }

    pub fn mps_processes(&self) -> R<Vec<nvmlProcessInfo_t>> {
        self.processes("nvmlDeviceGetMPSComputeRunningProcesses_v3")
    }

    fn processes(&self, name: &'static str) -> R<Vec<nvmlProcessInfo_t>> {
        type F = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut nvmlProcessInfo_t) -> ::nvml_abi::nvmlReturn_t;
        let mut n: c_uint = 0;
        match self.call1::<F>(name, |f| unsafe { f(self.raw, &mut n, std::ptr::null_mut()) }) {
            Ok(()) => return Ok(Vec::new()),
            Err(ret::INSUFFICIENT_SIZE) => {}
            Err(e) => return Err(e),
        }
        let mut cap = n + 8;
        let mut v = vec![nvmlProcessInfo_t::default(); cap as usize];
        self.call1::<F>(name, |f| unsafe { f(self.raw, &mut cap, v.as_mut_ptr()) })?;
        v.truncate(cap as usize);
        Ok(v)
    }

    pub fn mig_device(&self, i: u32) -> R<Device<'a>> {
        let mut raw = std::ptr::null_mut();
        nv!(self.nvml, "nvmlDeviceGetMigDeviceHandleByIndex", (nvmlDevice_t, c_uint, *mut nvmlDevice_t), self.raw, i, &mut raw)
            .map(|_| Device { nvml: self.nvml, raw })
    }

    pub fn attributes(&self) -> R<nvmlDeviceAttributes_t> {
        // SAFETY: plain-old-data struct.
        let mut a: nvmlDeviceAttributes_t = unsafe { std::mem::zeroed() };
        nv!(self.nvml, "nvmlDeviceGetAttributes_v2", (nvmlDevice_t, *mut nvmlDeviceAttributes_t), self.raw, &mut a).map(|_| a)
    }

    /// `nvmlDeviceGetTopologyCommonAncestor` with another device.
    pub fn common_ancestor(&self, other: &Device) -> R<u32> {
        let mut v = 0;
        nv!(self.nvml, "nvmlDeviceGetTopologyCommonAncestor", (nvmlDevice_t, nvmlDevice_t, *mut c_uint), self.raw, other.raw, &mut v)
            .map(|_| v)
    }

    /// NVLink state of link `l` (`nvmlDeviceGetNvLinkState`).
    pub fn nvlink_state(&self, l: u32) -> R<u32> {
        self.u32_arg("nvmlDeviceGetNvLinkState", l)
    }

    /// PCI info of the remote end of NVLink `l`.
    pub fn nvlink_remote_pci(&self, l: u32) -> R<nvmlPciInfo_t> {
        // SAFETY: plain-old-data struct.
        let mut p: nvmlPciInfo_t = unsafe { std::mem::zeroed() };
        nv!(self.nvml, "nvmlDeviceGetNvLinkRemotePciInfo_v2", (nvmlDevice_t, c_uint, *mut nvmlPciInfo_t), self.raw, l, &mut p).map(|_| p)
    }

    /// CPU affinity mask words (`nvmlDeviceGetCpuAffinity`).
    pub fn cpu_affinity(&self, words: usize) -> R<Vec<u64>> {
        let mut v = vec![0u64; words];
        nv!(self.nvml, "nvmlDeviceGetCpuAffinity", (nvmlDevice_t, c_uint, *mut u64), self.raw, words as c_uint, v.as_mut_ptr()).map(|_| v)
    }

    /// NUMA node of the GPU via `nvmlDeviceGetMemoryAffinity` (first node in the mask).
    pub fn numa_node(&self) -> R<Option<u32>> {
        let mut v = [0u64; 4];
        nv!(self.nvml, "nvmlDeviceGetMemoryAffinity", (nvmlDevice_t, c_uint, *mut u64, c_uint), self.raw, 4, v.as_mut_ptr(), 0)?;
        Ok(v.iter().enumerate().find(|(_, w)| **w != 0).map(|(i, w)| i as u32 * 64 + w.trailing_zeros()))
    }
}

/// NVIDIA's merge of one device's lists: each sorted by pid, one row per pid that has a compute
/// or graphics context, typed `C`, `G` or `C+G`, and `M+` in front where a compute pid is also
/// an MPS client. An MPS-only pid is not a row (the driver lists every client as compute too).
fn merge_processes(
    mut c: Vec<nvmlProcessInfo_t>,
    mut g: Vec<nvmlProcessInfo_t>,
    mps: &[nvmlProcessInfo_t],
) -> Vec<(nvmlProcessInfo_t, &'static str)> {
    c.sort_by_key(|p| p.pid);
    g.sort_by_key(|p| p.pid);
    let mut pids: Vec<u32> = c.iter().chain(&g).map(|p| p.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let find = |l: &[nvmlProcessInfo_t], pid: u32| l.binary_search_by_key(&pid, |p| p.pid).ok().map(|k| l[k]);
    pids.into_iter()
        .filter_map(|pid| {
            let (pc, pg) = (find(&c, pid), find(&g, pid));
            let client = pc.is_some() && mps.iter().any(|p| p.pid == pid);
            let kind = match (pc.is_some(), pg.is_some(), client) {
                (true, false, false) => "C",
                (true, false, true) => "M+C",
                (true, true, false) => "C+G",
                (true, true, true) => "M+C+G",
                (false, _, _) => "G",
            };
            Some((pc.or(pg)?, kind))
        })
        .collect()
}

/// The C string in a fixed buffer.
pub fn c_string(buf: &[c_char]) -> String {
    cstr(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, mib: u64) -> nvmlProcessInfo_t {
        nvmlProcessInfo_t { pid, usedGpuMemory: mib << 20, ..Default::default() }
    }

    #[test]
    fn merge_sorts_by_pid_and_types_each_pid_by_the_lists_it_is_in() {
        let compute = vec![p(4242, 1), p(300, 2), p(77, 3), p(9, 4)];
        let graphics = vec![p(5000, 5), p(77, 3), p(9, 4), p(12, 6)];
        let mps = vec![p(300, 2), p(9, 4), p(12, 6), p(8, 7)];
        let rows: Vec<(u32, &str)> = merge_processes(compute, graphics, &mps).iter().map(|(p, t)| (p.pid, *t)).collect();
        // 8 is an MPS client only: not a row. 12 is graphics and MPS, not compute: "G".
        assert_eq!(rows, [(9, "M+C+G"), (12, "G"), (77, "C+G"), (300, "M+C"), (4242, "C"), (5000, "G")]);
    }

    #[test]
    fn merge_keeps_the_compute_entry_of_a_compute_and_graphics_pid() {
        let rows = merge_processes(vec![p(5, 10)], vec![p(5, 20)], &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].0.usedGpuMemory >> 20, rows[0].1), (10, "C+G"));
        assert!(merge_processes(Vec::new(), Vec::new(), &[p(1, 1)]).is_empty());
    }
}
