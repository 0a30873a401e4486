//! What the CUDA driver API reports about a simulated GPU: the value of every
//! `CUdevice_attribute` of the 535 driver (CUDA 12.2), computed once from the profile and the
//! GPU's PCI address, and the driver version in CUDA's encoding.
//!
//! Board facts come from the profile (`cuda` block, SM count, clocks, bus width, compute
//! capability, ECC, MIG). Limits that are the same for every board of a compute capability
//! (block and grid dimensions, texture and surface sizes) follow the CUDA C++ Programming
//! Guide's "Technical Specifications per Compute Capability" table.

use crate::identity::PciAddress;
use crate::profile::{Architecture, Profile};

/// The highest attribute value the 535 driver knows (`CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED`).
pub const MAX_ATTRIBUTE: usize = 132;

/// Attribute values indexed by `CUdevice_attribute`; index 0 is not an attribute.
pub type Attributes = [i32; MAX_ATTRIBUTE + 1];

/// `cuDriverGetVersion`: the CUDA version as NVML encodes it too (12020 = 12.2).
pub fn driver_version(cuda_driver_version: u32) -> i32 {
    cuda_driver_version as i32
}

/// Every attribute of a GPU with `profile` at `pci`. `multi_gpu_group` is
/// `CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID` (the GPUs of one board share it).
pub fn attributes(profile: &Profile, pci: &PciAddress, multi_gpu_group: i32) -> Attributes {
    let c = &profile.cuda;
    let cc = profile.compute_capability;
    let kepler = profile.architecture == Architecture::Kepler;
    let ampere_on = profile.architecture.nvml_value() >= Architecture::Ampere.nvml_value();
    let hopper_on = profile.architecture.nvml_value() >= Architecture::Hopper.nvml_value();
    let volta_on = profile.architecture.nvml_value() >= Architecture::Volta.nvml_value();
    let yes = |b: bool| i32::from(b);
    let num = |v: u32| v.min(i32::MAX as u32) as i32;
    // Texture and surface limits (programming guide): Kepler had half of the later sizes.
    let (tex1d, tex2d_w, tex3d, tex_layer, surf) =
        if kepler { (65536, 65536, 4096, 16384, 65536) } else { (131072, 131072, 16384, 32768, 32768) };

    let mut a: Attributes = [0; MAX_ATTRIBUTE + 1];
    let mut set = |attr: usize, value: i32| a[attr] = value;
    set(1, 1024); // MAX_THREADS_PER_BLOCK
    set(2, 1024);
    set(3, 1024);
    set(4, 64);
    set(5, i32::MAX);
    set(6, 65535);
    set(7, 65535);
    set(8, 49152); // SHARED_MEMORY_PER_BLOCK (the default carve-out a block gets without opting in)
    set(9, 65536); // TOTAL_CONSTANT_MEMORY
    set(10, 32); // WARP_SIZE
    set(11, i32::MAX); // MAX_PITCH
    set(12, 65536); // REGISTERS_PER_BLOCK
    set(13, num(profile.clocks.max.sm_mhz * 1000)); // CLOCK_RATE, kHz
    set(14, 512); // TEXTURE_ALIGNMENT
    set(15, 1); // GPU_OVERLAP
    set(16, num(profile.multiprocessor_count.unwrap_or(0)));
    set(17, 0); // KERNEL_EXEC_TIMEOUT: no display watchdog on a compute board
    set(18, 0); // INTEGRATED
    set(19, 1); // CAN_MAP_HOST_MEMORY
    set(20, 0); // COMPUTE_MODE: default
    set(21, tex1d);
    set(22, tex2d_w);
    set(23, 65536);
    set(24, tex3d);
    set(25, tex3d);
    set(26, tex3d);
    set(27, tex_layer);
    set(28, tex_layer);
    set(29, 2048);
    set(30, 512); // SURFACE_ALIGNMENT
    set(31, 1); // CONCURRENT_KERNELS
    set(32, yes(profile.ecc_enabled));
    set(33, pci.bus as i32);
    set(34, pci.device as i32);
    set(35, 0); // TCC_DRIVER: Windows only
    set(36, num(profile.clocks.max.memory_mhz * 1000)); // MEMORY_CLOCK_RATE, kHz
    set(37, num(profile.memory.bus_width_bits.unwrap_or(0)));
    set(38, num(c.l2_cache_bytes));
    set(39, num(c.max_threads_per_multiprocessor));
    set(40, num(c.async_engine_count));
    set(41, 1); // UNIFIED_ADDRESSING (64-bit Linux)
    set(42, tex_layer);
    set(43, 2048);
    set(44, 1); // CAN_TEX2D_GATHER
    set(45, tex_layer);
    set(46, tex_layer);
    set(47, tex3d / 2);
    set(48, tex3d / 2);
    set(49, tex3d * 2);
    set(50, pci.domain as i32);
    set(51, 32); // TEXTURE_PITCH_ALIGNMENT
    set(52, tex_layer);
    set(53, tex_layer);
    set(54, 2046);
    set(55, surf);
    set(56, tex2d_w);
    set(57, 65536);
    set(58, tex3d);
    set(59, tex3d);
    set(60, tex3d);
    set(61, surf);
    set(62, 2048);
    set(63, surf);
    set(64, surf);
    set(65, 2048);
    set(66, surf);
    set(67, surf);
    set(68, 2046);
    set(69, 1 << 28); // MAXIMUM_TEXTURE1D_LINEAR_WIDTH
    set(70, tex2d_w);
    set(71, 65000);
    set(72, 2_097_120);
    set(73, tex_layer);
    set(74, tex_layer);
    set(75, num(cc.major));
    set(76, num(cc.minor));
    set(77, tex_layer);
    set(78, 1); // STREAM_PRIORITIES_SUPPORTED
    set(79, 1); // GLOBAL_L1_CACHE_SUPPORTED
    set(80, 1); // LOCAL_L1_CACHE_SUPPORTED
    set(81, num(c.shared_memory_per_multiprocessor_bytes));
    set(82, num(c.registers_per_multiprocessor));
    set(83, 1); // MANAGED_MEMORY
    set(84, yes(profile.multi_gpu_board));
    set(85, multi_gpu_group);
    set(86, 0); // HOST_NATIVE_ATOMIC_SUPPORTED: only over NVLink-C2C hosts
    set(87, num(c.single_to_double_precision_perf_ratio));
    set(88, 0); // PAGEABLE_MEMORY_ACCESS: needs HMM, off on the 535 open-kernel defaults
    set(89, yes(!kepler)); // CONCURRENT_MANAGED_ACCESS (Pascal on)
    set(90, yes(!kepler)); // COMPUTE_PREEMPTION_SUPPORTED
    set(91, 0); // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
    set(92, 1); // CAN_USE_STREAM_MEM_OPS (the v1 attribute)
    set(93, 0);
    set(94, 0);
    set(95, 1); // COOPERATIVE_LAUNCH
    set(96, 1); // COOPERATIVE_MULTI_DEVICE_LAUNCH
    set(97, num(c.shared_memory_per_block_optin_bytes));
    set(98, 0); // CAN_FLUSH_REMOTE_WRITES
    set(99, 1); // HOST_REGISTER_SUPPORTED
    set(100, 0);
    set(101, 0);
    set(102, 1); // VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
    set(103, 1); // HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
    set(104, 0); // Windows handles
    set(105, 0);
    set(106, num(c.max_blocks_per_multiprocessor));
    set(107, yes(ampere_on)); // GENERIC_COMPRESSION_SUPPORTED
    set(108, num(c.max_persisting_l2_cache_bytes));
    set(109, num(c.max_access_policy_window_bytes));
    set(110, yes(volta_on)); // GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED
    set(111, if volta_on { 1024 } else { 0 }); // RESERVED_SHARED_MEMORY_PER_BLOCK
    set(112, yes(!kepler)); // SPARSE_CUDA_ARRAY_SUPPORTED
    set(113, 1); // READ_ONLY_HOST_REGISTER_SUPPORTED
    set(114, 1); // TIMELINE_SEMAPHORE_INTEROP_SUPPORTED
    set(115, 1); // MEMORY_POOLS_SUPPORTED
    set(116, yes(volta_on)); // GPU_DIRECT_RDMA_SUPPORTED
    set(117, if volta_on { 1 } else { 0 }); // GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS: host
    set(118, if volta_on { 100 } else { 0 }); // GPU_DIRECT_RDMA_WRITES_ORDERING: owner
    set(119, 1); // MEMPOOL_SUPPORTED_HANDLE_TYPES: POSIX fd
    set(120, yes(hopper_on)); // CLUSTER_LAUNCH
    set(121, 1); // DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED
    set(122, 1); // CAN_USE_64_BIT_STREAM_MEM_OPS
    set(123, 1); // CAN_USE_STREAM_WAIT_VALUE_NOR
    set(124, yes(ampere_on)); // DMA_BUF_SUPPORTED
    set(125, 1); // IPC_EVENT_SUPPORTED
    set(126, if hopper_on { 4 } else { 1 }); // MEM_SYNC_DOMAIN_COUNT
    set(127, yes(hopper_on)); // TENSOR_MAP_ACCESS_SUPPORTED
    set(128, 0); // HANDLE_TYPE_FABRIC_SUPPORTED (reserved in 12.2)
    set(129, 0); // UNIFIED_FUNCTION_POINTERS
    set(130, 0); // NUMA_CONFIG: none
    set(131, -1); // NUMA_ID: none
    set(132, yes(hopper_on)); // MULTICAST_SUPPORTED
    a
}

/// CUDA's 16-byte device UUID: the bytes of NVML's `GPU-…` (or `MIG-…`) UUID string.
/// `None` when the text is not a UUID.
pub fn uuid_bytes(uuid: &str) -> Option<[u8; 16]> {
    let hex: String = uuid.split_once('-')?.1.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{find_builtin, gpu_identity};

    #[test]
    fn every_profile_answers_from_its_own_fields() {
        for p in crate::builtin_profiles().unwrap() {
            let id = gpu_identity("n", 1, &p.pci.bus_ids.iter().map(|b| b.0).collect::<Vec<_>>());
            let a = attributes(p, &id.pci, 0);
            assert_eq!((a[75], a[76]), (p.compute_capability.major as i32, p.compute_capability.minor as i32), "{}", p.name);
            assert_eq!(a[16] as u32, p.multiprocessor_count.unwrap(), "{}", p.name);
            assert_eq!(a[38] as u32, p.cuda.l2_cache_bytes, "{}", p.name);
            assert_eq!(a[33] as u32, id.pci.bus, "{}", p.name);
            assert_eq!(a[13] as u32, p.clocks.max.sm_mhz * 1000);
            assert!(a[97] >= a[8], "{}: opt-in shared memory below the default", p.name);
        }
    }

    #[test]
    fn uuid_bytes_round_trip() {
        let id = gpu_identity("n", 0, &[]);
        let b = uuid_bytes(&id.uuid).unwrap();
        assert_eq!(crate::identity::format_uuid("GPU-", b), id.uuid);
        assert_eq!(uuid_bytes("GPU-xyz"), None);
        let _ = find_builtin("h100").unwrap();
    }
}
