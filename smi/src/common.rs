//! Shared pieces: NVIDIA's wording for NVML errors, the timestamp, device selection by `-i`,
//! and the text/column helpers the renderers use.

use crate::nvml::{Device, Nvml, Ret, R};
use nvml_abi::ret;

/// How `-q` and the CSV query show a failed call (nvidia-smi never calls nvmlErrorString).
pub fn err_text(e: Ret) -> &'static str {
    match e {
        ret::NOT_SUPPORTED => "N/A",
        ret::FUNCTION_NOT_FOUND => "Function Not Found",
        ret::NO_PERMISSION => "Insufficient Permissions",
        ret::GPU_IS_LOST => "GPU is lost",
        ret::UNINITIALIZED => "Uninitialized",
        ret::INSUFFICIENT_POWER => "Insufficient External Power",
        ret::CORRUPTED_INFOROM => "Corrupted infoROM",
        ret::RESET_REQUIRED => "GPU requires reset",
        _ => "Unknown Error",
    }
}

/// The table's short form: `N/A` for not supported, `ERR!` for anything else.
pub fn or_short<T>(r: R<T>, f: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(ret::NOT_SUPPORTED) => "N/A".into(),
        Err(_) => "ERR!".into(),
    }
}

/// `strftime` in local time.
pub fn strftime(fmt: &str) -> String {
    // SAFETY: libc time calls with valid buffers.
    unsafe {
        let mut tv: libc::timeval = std::mem::zeroed();
        libc::gettimeofday(&mut tv, std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&tv.tv_sec, &mut tm);
        let mut buf = [0u8; 128];
        let f = std::ffi::CString::new(fmt.replace("%3N", &format!("{:03}", tv.tv_usec / 1000))).unwrap_or_default();
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), f.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// `Fri Nov 27 10:51:46 2026`, as in the table's first line and `-q`.
pub fn ctime_now() -> String {
    strftime("%a %b %e %H:%M:%S %Y")
}

/// CUDA version int (12020) as "12.2".
pub fn cuda_text(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Truncates to `w` chars with a trailing "..." like NVIDIA's table cells.
pub fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let head: String = s.chars().take(w.saturating_sub(3)).collect();
        format!("{head}...")
    }
}

/// Why `-i` selection failed.
pub enum SelectError {
    NoDevices,
    /// The device count failed.
    Nvml(Ret),
    /// The handle of GPU `index` failed.
    Handle(u32, Ret),
}

impl SelectError {
    /// What NVIDIA's nvidia-smi prints for the failure, and its exit code.
    pub fn report(&self) -> (String, i32) {
        match *self {
            SelectError::NoDevices => ("No devices were found\n".into(), 6),
            SelectError::Nvml(e) => (format!("Unable to determine the device handle for GPU: {}\n", err_text(e)), e as i32),
            SelectError::Handle(i, e) => (handle_error("GPU", i, e), e as i32),
        }
    }
}

/// NVIDIA's message for a GPU whose handle cannot be had (`gpu` is "GPU" or "gpu ").
pub fn handle_error(gpu: &str, i: u32, e: Ret) -> String {
    if e == ret::GPU_IS_LOST {
        format!("Unable to determine the device handle for {gpu}{i}: GPU is lost.  Reboot the system to recover this GPU\n\n\n")
    } else {
        format!("Unable to determine the device handle for {gpu}{i}: {}\n", err_text(e))
    }
}

/// Normalises a PCI bus id to `DDDDDDDD:BB:DD.F` upper case; `None` if it does not parse.
fn norm_bus_id(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0", *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let h = |x: &str| u32::from_str_radix(x, 16).ok();
    Some(format!("{:08X}:{:02X}:{:02X}.{:X}", h(dom)?, h(bus)?, h(dev)?, h(func)?))
}

/// All devices, or those `-i` names (index, UUID or PCI bus id), in index order. Like NVIDIA's,
/// only the handles of the selected GPUs must be had (a lost GPU fails only when selected).
pub fn select<'a>(nvml: &'a Nvml, ids: Option<&[String]>) -> Result<Vec<Device<'a>>, SelectError> {
    let n = nvml.device_count().map_err(SelectError::Nvml)?;
    let handle = |i: u32| nvml.device(i).map_err(|e| SelectError::Handle(i, e));
    let Some(ids) = ids else {
        if n == 0 {
            return Err(SelectError::NoDevices);
        }
        return (0..n).map(handle).collect();
    };
    let mut keep = vec![false; n as usize];
    for id in ids {
        if let Ok(i) = id.parse::<usize>() {
            if i < keep.len() {
                keep[i] = true;
            }
            continue;
        }
        let want_bus = norm_bus_id(id);
        for (i, k) in keep.iter_mut().enumerate() {
            let Ok(d) = nvml.device(i as u32) else { continue };
            let hit = if id.starts_with("GPU-") || id.starts_with("MIG-") {
                d.uuid(96).is_ok_and(|u| u.eq_ignore_ascii_case(id))
            } else if let Some(b) = &want_bus {
                d.bus_id().ok().and_then(|x| norm_bus_id(&x)).is_some_and(|x| &x == b)
            } else {
                false
            };
            *k |= hit;
        }
    }
    let sel: Vec<u32> = (0..n).filter(|&i| keep[i as usize]).collect();
    if sel.is_empty() {
        return Err(SelectError::NoDevices);
    }
    sel.into_iter().map(handle).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_normalise() {
        assert_eq!(norm_bus_id("0000:64:00.0").as_deref(), Some("00000000:64:00.0"));
        assert_eq!(norm_bus_id("64:0.0").as_deref(), Some("00000000:64:00.0"));
        assert_eq!(norm_bus_id("00000001:06:00.0").as_deref(), Some("00000001:06:00.0"));
        assert_eq!(norm_bus_id("garbage"), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(cuda_text(12020), "12.2");
        assert_eq!(fit("183359MiB", 8), "18335...");
        assert_eq!(err_text(ret::NOT_SUPPORTED), "N/A");
    }
}
