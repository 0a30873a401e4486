//! Reading the files a node's configuration names (node config, profile, live state) without
//! trusting what the path points at: the open never blocks (a FIFO with no writer would hang
//! the host forever), anything that is not a regular file is refused with the reason, and
//! no more than a fixed cap is read (`/dev/zero` or a runaway file cannot exhaust memory).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most bytes a node config or a profile file may hold.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The most bytes a live state file may hold (256 GPUs with full process lists and event
/// logs stay far below it).
pub const MAX_STATE_BYTES: u64 = 16 << 20;

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("No such file or directory")]
    NotFound,
    #[error("{0}")]
    Refused(String),
}

/// What a non-regular file is, for the error line.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Checks that `path` is a regular file without opening it (symlinks followed).
pub fn check_regular(path: &Path) -> Result<(), ReadError> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(ReadError::Refused(format!("is {}, not a regular file", kind_of(m.file_type())))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ReadError::NotFound),
        Err(e) => Err(ReadError::Refused(e.to_string())),
    }
}

/// Reads the whole regular file at `path`, at most `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::NotFound
        } else {
            ReadError::Refused(e.to_string())
        }
    })?;
    let meta = file.metadata().map_err(|e| ReadError::Refused(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(ReadError::Refused(format!("is {}, not a regular file", kind_of(meta.file_type()))));
    }
    if meta.len() > cap {
        return Err(ReadError::Refused(format!("is {} bytes, above the limit of {cap} bytes", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between fstat and read: never take more than the cap.
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| ReadError::Refused(e.to_string()))?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::Refused(format!("is above the limit of {cap} bytes")));
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text(path: &Path, cap: u64) -> Result<String, ReadError> {
    String::from_utf8(read_capped(path, cap)?).map_err(|e| ReadError::Refused(format!("is not UTF-8 text: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_and_devices_are_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("fakegpu-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let start = std::time::Instant::now();
        let err = read_capped(&fifo, MAX_CONFIG_BYTES).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(read_capped(Path::new("/dev/zero"), MAX_CONFIG_BYTES).unwrap_err().to_string().contains("character device"));
        assert!(read_capped(&dir, MAX_CONFIG_BYTES).unwrap_err().to_string().contains("directory"));
        assert_eq!(read_capped(&dir.join("missing"), 10), Err(ReadError::NotFound));
        let big = dir.join("big");
        std::fs::write(&big, vec![b' '; 11]).unwrap();
        assert!(read_capped(&big, 10).unwrap_err().to_string().contains("above the limit of 10 bytes"));
        assert_eq!(read_capped(&big, 11).unwrap().len(), 11);
        assert!(check_regular(&fifo).is_err() && check_regular(&big).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
