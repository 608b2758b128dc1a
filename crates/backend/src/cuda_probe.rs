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
        let init: libloading::Symbol<'_, Init> = lib
            .get(b"cuInit\0")
            .map_err(|e| format!("cuInit missing: {e}"))?;
        let code = init(0);
        if code != 0 {
            return Err(format!("cuInit failed with CUDA error {code}"));
        }
        let get: libloading::Symbol<'_, Count> = lib
            .get(b"cuDeviceGetCount\0")
            .map_err(|e| format!("cuDeviceGetCount missing: {e}"))?;
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

/// Free and total memory of CUDA device `index` in bytes, as the driver reports them
/// (`cuMemGetInfo` in the device's primary context, the one Burn's runtime uses). Free memory
/// already excludes what other processes hold, so a shared GPU is accounted for.
pub fn memory_info(index: usize) -> Result<(u64, u64), String> {
    // SAFETY: as in `device_count`.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .or_else(|_| unsafe { libloading::Library::new("libcuda.so") })
        .map_err(|e| format!("the CUDA driver (libcuda.so) could not be loaded: {e}"))?;
    type Init = unsafe extern "C" fn(u32) -> i32;
    type DeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Retain = unsafe extern "C" fn(*mut *mut std::ffi::c_void, i32) -> i32;
    type Release = unsafe extern "C" fn(i32) -> i32;
    type Push = unsafe extern "C" fn(*mut std::ffi::c_void) -> i32;
    type Pop = unsafe extern "C" fn(*mut *mut std::ffi::c_void) -> i32;
    type MemInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    let ordinal = i32::try_from(index).map_err(|_| format!("no CUDA device {index}"))?;
    let check = |what: &str, code: i32| {
        if code == 0 {
            Ok(())
        } else {
            Err(format!("{what} failed with CUDA error {code}"))
        }
    };
    // SAFETY: the signatures match the CUDA driver API (cuInit, cuDeviceGet,
    // cuDevicePrimaryCtxRetain/Release, cuCtxPushCurrent_v2, cuCtxPopCurrent_v2,
    // cuMemGetInfo_v2); every pointer passed points at a live local.
    unsafe {
        let sym = |name: &[u8]| {
            lib.get::<*const ()>(name)
                .map(|s| *s)
                .map_err(|e| format!("{} missing: {e}", String::from_utf8_lossy(name)))
        };
        let init: Init = std::mem::transmute(sym(b"cuInit\0")?);
        let device_get: DeviceGet = std::mem::transmute(sym(b"cuDeviceGet\0")?);
        let retain: Retain = std::mem::transmute(sym(b"cuDevicePrimaryCtxRetain\0")?);
        let release: Release = std::mem::transmute(sym(b"cuDevicePrimaryCtxRelease_v2\0")?);
        let push: Push = std::mem::transmute(sym(b"cuCtxPushCurrent_v2\0")?);
        let pop: Pop = std::mem::transmute(sym(b"cuCtxPopCurrent_v2\0")?);
        let mem_info: MemInfo = std::mem::transmute(sym(b"cuMemGetInfo_v2\0")?);
        check("cuInit", init(0))?;
        let mut device = 0i32;
        check("cuDeviceGet", device_get(&mut device, ordinal))?;
        let mut ctx = std::ptr::null_mut();
        check("cuDevicePrimaryCtxRetain", retain(&mut ctx, device))?;
        let result = check("cuCtxPushCurrent", push(ctx)).and_then(|()| {
            let (mut free, mut total) = (0usize, 0usize);
            let r = check("cuMemGetInfo", mem_info(&mut free, &mut total));
            let mut popped = std::ptr::null_mut();
            pop(&mut popped);
            r.map(|()| (free as u64, total as u64))
        });
        release(device);
        // Keep the driver loaded, as `device_count` does.
        std::mem::forget(lib);
        result
    }
}
