//! Asks the CUDA driver how many devices there are, without touching Burn.
//!
//! On Burn 0.21 a missing driver is a panic deep inside the runtime, so before handing a CUDA
//! device to Burn we load the driver library ourselves and ask it.
#![allow(unsafe_code)]

/// Number of CUDA devices, or why the driver cannot be used.
pub fn device_count() -> Result<usize, String> {
    // SAFETY: loading the system CUDA driver runs its initialisers, which is what any CUDA
    // program does; the library is never unloaded while its symbols are in use.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .or_else(|_| unsafe { libloading::Library::new("libcuda.so") })
        .map_err(|e| format!("the CUDA driver (libcuda.so) could not be loaded: {e}"))?;
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    // SAFETY: the signatures match the CUDA driver API (cuInit, cuDeviceGetCount).
    unsafe {
        let init: libloading::Symbol<'_, Init> =
            lib.get(b"cuInit\0").map_err(|e| format!("cuInit missing: {e}"))?;
        let code = init(0);
        if code != 0 {
            return Err(format!("cuInit failed with CUDA error {code}"));
        }
        let get: libloading::Symbol<'_, Count> =
            lib.get(b"cuDeviceGetCount\0").map_err(|e| format!("cuDeviceGetCount missing: {e}"))?;
        let mut n = 0i32;
        let code = get(&mut n);
        if code != 0 {
            return Err(format!("cuDeviceGetCount failed with CUDA error {code}"));
        }
        // Keep the driver loaded: Burn will load it again and unloading is never needed.
        std::mem::forget(lib);
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
