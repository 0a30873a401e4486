//! Driver and CUDA versions: the checks every source of them goes through (profile files, the
//! node config, the operator's pool config) and the facts that relate a driver branch, the CUDA
//! version it reports and the boards it supports, so that a profile's pair can be checked.
//!
//! A driver version is `branch.minor[.patch]` in decimal (`535.261.03`, `580.105.08`); the
//! CUDA driver version is encoded as NVML and `cuDriverGetVersion` return it:
//! `major * 1000 + minor * 10` (12020 = CUDA 12.2).

use crate::profile::ComputeCapability;

/// The driver whose libraries the fake ones mirror: `nvml-shim/exports-535.txt` and
/// `cuda-shim/exports-535.txt` list the functions of NVIDIA's 535.261.03 libraries, and
/// `scripts/fetch-nvidia.sh` downloads that driver's nvidia-smi for the conformance suites.
/// Profiles state their own versions; this one only names those libraries' files.
pub const REFERENCE_DRIVER_VERSION: &str = "535.261.03";

/// The longest driver version NVML returns (`NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE` is 80).
pub const MAX_DRIVER_VERSION_BYTES: usize = 79;

/// Driver branch → the CUDA version (NVML encoding) that branch's driver reports. Sources:
/// the "CUDA Toolkit and Corresponding Driver Versions" table of NVIDIA's CUDA Toolkit release
/// notes (CUDA 11.4 needs ≥ 470.42.01, 12.2 ≥ 535.54.03, 12.4 ≥ 550.54.14, 12.8 ≥ 570.26,
/// 12.9 ≥ 575.51.03, 13.0 ≥ 580.65.06), and for 595 the real captures in
/// `tests/fixtures/hardware/` (driver 595.91.07 reports CUDA 13.2).
pub const BRANCH_CUDA: &[(u32, u32)] = &[(470, 11040), (535, 12020), (550, 12040), (570, 12080), (575, 12090), (580, 13000), (595, 13020)];

/// Why a driver version or CUDA driver version is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "`{0}` is not a driver version: expected 1 to {MAX_DRIVER_VERSION_BYTES} bytes of decimal numbers joined by dots, e.g. 535.261.03"
    )]
    Driver(String),
    #[error("{0} is not a CUDA driver version: expected major * 1000 + minor * 10 with major 1 to 99, e.g. 12020 for CUDA 12.2")]
    Cuda(u64),
    #[error("`{0}` is not a CUDA version: expected major.minor, e.g. 12.2")]
    CudaText(String),
}

/// Checks a driver version: 2 to 4 dot-separated decimal numbers, the first (the branch)
/// without a leading zero, at most [`MAX_DRIVER_VERSION_BYTES`] bytes.
pub fn check_driver_version(version: &str) -> Result<(), VersionError> {
    let bad = || VersionError::Driver(version.to_string());
    if version.is_empty() || version.len() > MAX_DRIVER_VERSION_BYTES {
        return Err(bad());
    }
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric || !(2..=4).contains(&parts.len()) || parts[0].starts_with('0') || parts[0].len() > 4 {
        return Err(bad());
    }
    Ok(())
}

/// Checks a CUDA driver version in NVML's encoding (12020 = 12.2).
pub fn check_cuda_driver_version(value: u64) -> Result<u32, VersionError> {
    if (1000..=99_990).contains(&value) && value.is_multiple_of(10) {
        Ok(value as u32)
    } else {
        Err(VersionError::Cuda(value))
    }
}

/// The branch of a driver version (`580.105.08` → 580); None when it is not one.
pub fn branch(version: &str) -> Option<u32> {
    check_driver_version(version).ok()?;
    version.split('.').next()?.parse().ok()
}

/// `12.2` → 12020. The minor part is required and below 100.
pub fn parse_cuda_text(text: &str) -> Result<u32, VersionError> {
    let bad = || VersionError::CudaText(text.to_string());
    let (major, minor) = text.trim().split_once('.').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return Err(bad());
    }
    let (major, minor): (u64, u64) = (major.parse().map_err(|_| bad())?, minor.parse().map_err(|_| bad())?);
    check_cuda_driver_version(major * 1000 + minor * 10).map_err(|_| bad())
}

/// 12020 → `12.2`, as nvidia-smi prints it.
pub fn cuda_text(value: u32) -> String {
    format!("{}.{}", value / 1000, (value % 1000) / 10)
}

/// The CUDA version a driver of `branch` reports, where [`BRANCH_CUDA`] knows the branch.
pub fn cuda_of_branch(branch: u32) -> Option<u32> {
    BRANCH_CUDA.iter().find(|(b, _)| *b == branch).map(|(_, c)| *c)
}

/// The first CUDA version that supports a compute capability (NVML encoding). Source: the
/// CUDA Toolkit release notes and the CUDA C++ Programming Guide's compute capability list
/// (sm_37 and sm_75 were in CUDA 10 and before, sm_80 came with 11.0, sm_89/sm_90 with 11.8,
/// sm_100 with 12.8, sm_103 with 12.9).
pub fn min_cuda_for(cc: ComputeCapability) -> u32 {
    match (cc.major, cc.minor) {
        (10, m) if m >= 3 => 12090,
        (10, _) => 12080,
        (9, _) | (8, 9) => 11080,
        (8, _) => 11000,
        _ => 10000,
    }
}

/// The last driver branch that supports a compute capability, where support has ended:
/// Kepler (compute capability 3.x) ends with R470 (NVIDIA's CUDA Toolkit release notes and
/// driver support announcements: R470 is the last branch with Kepler support).
pub fn last_branch_for(cc: ComputeCapability) -> Option<u32> {
    (cc.major <= 3).then_some(470)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_versions() {
        for good in ["535.261.03", "580.105.08", "550.1.2", "470.256.02", "1.0", "9999.1.2.3"] {
            assert_eq!(check_driver_version(good), Ok(()), "{good}");
        }
        for bad in ["", "535", "535..03", "v535.261.03", "535.261.03 ", "535.261.03-1", "0535.1", "535.a.3", "1.2.3.4.5"] {
            assert!(check_driver_version(bad).is_err(), "{bad}");
        }
        assert!(check_driver_version(&format!("1.{}", "1".repeat(78))).is_err());
        assert_eq!(branch("580.105.08"), Some(580));
        assert_eq!(branch("x"), None);
    }

    #[test]
    fn cuda_versions() {
        assert_eq!(check_cuda_driver_version(12020), Ok(12020));
        for bad in [0, 999, 12021, 100_000, u64::from(u32::MAX) + 10] {
            assert!(check_cuda_driver_version(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cuda_text("12.2"), Ok(12020));
        assert_eq!(parse_cuda_text("13.0"), Ok(13000));
        assert_eq!(parse_cuda_text("11.4"), Ok(11040));
        for bad in ["12", "12.", ".2", "12.2.1", "twelve.2", "-12.2", "12.100"] {
            assert!(parse_cuda_text(bad).is_err(), "{bad}");
        }
        for v in [11040, 12020, 12090, 13000, 13020] {
            assert_eq!(parse_cuda_text(&cuda_text(v)), Ok(v));
        }
    }

    #[test]
    fn branches_report_ascending_cuda_versions() {
        assert!(BRANCH_CUDA.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cuda_of_branch(535), Some(12020));
        assert_eq!(cuda_of_branch(536), None);
    }
}
