//! The one place where a runtime backend choice (`cpu`, `cuda`, `cuda:N`) becomes a concrete
//! Burn backend type.
//!
//! Library and plugin crates stay generic over `B: AutodiffBackend` and call
//! [`with_backend!`]; the binary decides which backends exist by enabling this crate's `flex`
//! and `cuda` features. Because the macro is defined here, its expansion follows this crate's
//! features wherever it is used, so no other library crate enables a backend feature.
//!
//! Architecture invariant: asking for a backend that was not compiled in, or for a GPU that is
//! absent, is a [`BackendError`], never a panic.

mod cuda_probe;
pub mod kernels;
pub mod optim;

use std::fmt;
use std::str::FromStr;

pub use burn;

/// CPU time (user plus system) this process has used so far, in seconds, from
/// `/proc/self/stat` (Linux); `None` elsewhere. Benchmarks divide it by wall time to show how
/// many cores a training step keeps busy.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // Clock ticks per second: 100 on every Linux configuration Rust targets by default.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The largest threshold glibc accepts for serving an allocation from its own mapping (half of
/// its 64 MiB heap size on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Tunes the C allocator for training: buffers up to 32 MiB (activations, im2col tiles,
/// gradients) are served from the heap and freed memory is kept for the next step, instead of
/// each one being mapped fresh, faulted in page by page and unmapped again. glibc's default
/// (mappings from 128 KiB, raised only after frees) spent about a fifth of a ResNet-18 step on
/// CPU in page faults and zeroing. Call once, early, in a process that trains on the CPU; it
/// returns whether the allocator took the settings (`false` off glibc, where it does nothing).
#[allow(unsafe_code)]
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes the allocator's parameters; glibc synchronises it
        // with allocations in other threads.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * MMAP_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Free and total memory in bytes of the device a backend name (`cuda`, `cuda:N`) names, from
/// the CUDA driver; `None` for the CPU backend or when the driver cannot tell.
pub fn device_memory(backend: &str) -> Option<(u64, u64)> {
    match BackendChoice::resolve_name_only(backend).ok()? {
        BackendChoice::Cuda(index) => cuda_probe::memory_info(index).ok(),
        BackendChoice::Cpu => None,
    }
}

/// How many CUDA devices the driver reports, or why it cannot be asked, whether or not the
/// CUDA backend is compiled in (a binary without it can tell that a build with it would run).
pub fn cuda_device_count() -> Result<usize, String> {
    cuda_probe::device_count()
}

/// A backend as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendChoice {
    /// The flex CPU backend.
    Cpu,
    /// A CUDA device by index.
    Cuda(usize),
}

/// Why a backend cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The name is not a backend.
    #[error("unknown backend `{0}`: use `cpu`, `cuda` or `cuda:N`")]
    Unknown(String),
    /// The backend exists but this binary was built without it.
    #[error(
        "backend `{backend}` is not compiled into this binary: rebuild with `--features {feature}`"
    )]
    NotCompiled {
        /// The backend asked for.
        backend: String,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// No usable CUDA device.
    #[error("backend `{backend}` is unavailable: {reason}")]
    Unavailable {
        /// The backend asked for.
        backend: String,
        /// What the driver said.
        reason: String,
    },
}

impl FromStr for BackendChoice {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        match s.trim() {
            "cpu" | "flex" => Ok(BackendChoice::Cpu),
            "cuda" | "gpu" => Ok(BackendChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(BackendChoice::Cuda)
                .ok_or_else(|| BackendError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Cpu => f.write_str("cpu"),
            BackendChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Backends compiled into this build.
pub fn compiled() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "flex") {
        out.push("cpu");
    }
    if cfg!(feature = "cuda") {
        out.push("cuda");
    }
    out
}

impl BackendChoice {
    /// Parses `name` and checks that the backend is compiled in and, for CUDA, that the driver
    /// loads and the device exists. Never panics, never initialises Burn.
    pub fn resolve(name: &str) -> Result<BackendChoice, BackendError> {
        let choice: BackendChoice = name.parse()?;
        choice.check()?;
        Ok(choice)
    }

    /// Parses `name` and checks only that the backend is compiled in, touching no device
    /// (for `autodl check`).
    pub fn resolve_name_only(name: &str) -> Result<BackendChoice, BackendError> {
        let choice: BackendChoice = name.parse()?;
        match choice {
            BackendChoice::Cuda(_) if !cfg!(feature = "cuda") => Err(BackendError::NotCompiled {
                backend: choice.to_string(),
                feature: "cuda",
            }),
            BackendChoice::Cpu if !cfg!(feature = "flex") => Err(BackendError::NotCompiled {
                backend: choice.to_string(),
                feature: "flex",
            }),
            _ => Ok(choice),
        }
    }

    /// See [`BackendChoice::resolve`].
    pub fn check(self) -> Result<(), BackendError> {
        match self {
            BackendChoice::Cpu if !cfg!(feature = "flex") => Err(BackendError::NotCompiled {
                backend: self.to_string(),
                feature: "flex",
            }),
            BackendChoice::Cpu => Ok(()),
            BackendChoice::Cuda(_) if !cfg!(feature = "cuda") => Err(BackendError::NotCompiled {
                backend: self.to_string(),
                feature: "cuda",
            }),
            BackendChoice::Cuda(index) => {
                let count =
                    cuda_probe::device_count().map_err(|reason| BackendError::Unavailable {
                        backend: self.to_string(),
                        reason,
                    })?;
                if index >= count {
                    return Err(BackendError::Unavailable {
                        backend: self.to_string(),
                        reason: format!("the driver reports {count} device(s)"),
                    });
                }
                Ok(())
            }
        }
    }
}

/// Runs `$body` with `$B` bound to the autodiff backend type for `$choice` and `$device` to
/// its device, returning `Result<_, BackendError>`.
///
/// ```ignore
/// let loss = autodl_backend::with_backend!(choice, |B, device| train::<B>(&device))?;
/// ```
#[macro_export]
macro_rules! with_backend {
    ($choice:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $choice {
            $crate::BackendChoice::Cpu => $crate::__flex_arm!($B, $device, $body),
            $crate::BackendChoice::Cuda(index) => $crate::__cuda_arm!($B, $device, index, $body),
        }
    }};
}

#[cfg(feature = "flex")]
#[doc(hidden)]
#[macro_export]
macro_rules! __flex_arm {
    ($B:ident, $device:ident, $body:expr) => {{
        #[allow(dead_code)]
        type $B = $crate::burn::backend::Autodiff<$crate::burn::backend::Flex>;
        let $device = $crate::burn::backend::flex::FlexDevice::default();
        Ok::<_, $crate::BackendError>($body)
    }};
}

#[cfg(not(feature = "flex"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __flex_arm {
    ($B:ident, $device:ident, $body:expr) => {
        Err($crate::BackendError::NotCompiled {
            backend: "cpu".to_owned(),
            feature: "flex",
        })
    };
}

#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! __cuda_arm {
    ($B:ident, $device:ident, $index:expr, $body:expr) => {{
        #[allow(dead_code)]
        type $B = $crate::burn::backend::Autodiff<$crate::burn::backend::Cuda>;
        let $device = $crate::burn::backend::cuda::CudaDevice::new($index);
        Ok::<_, $crate::BackendError>($body)
    }};
}

#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __cuda_arm {
    ($B:ident, $device:ident, $index:expr, $body:expr) => {{
        let _ = $index;
        Err($crate::BackendError::NotCompiled {
            backend: "cuda".to_owned(),
            feature: "cuda",
        })
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("cpu".parse::<BackendChoice>(), Ok(BackendChoice::Cpu));
        assert_eq!("cuda".parse::<BackendChoice>(), Ok(BackendChoice::Cuda(0)));
        assert_eq!(
            "cuda:3".parse::<BackendChoice>(),
            Ok(BackendChoice::Cuda(3))
        );
        assert!(matches!(
            "tpu".parse::<BackendChoice>(),
            Err(BackendError::Unknown(_))
        ));
        assert!("cuda:x".parse::<BackendChoice>().is_err());
    }

    #[test]
    fn missing_gpu_is_an_error_not_a_panic() {
        // On a machine without CUDA (CI) this must be an error; on one with it, Ok.
        let r = BackendChoice::Cuda(999).check();
        assert!(r.is_err());
    }
}
