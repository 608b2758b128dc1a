//! Edge coverage from LLVM's SanitizerCoverage (`trace-pc-guard`), on stable Rust.
//!
//! Built with `-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3
//! -Cllvm-args=-sanitizer-coverage-trace-pc-guard` (what `cargo xtask fuzz` sets, for the
//! target only, in a release build so that these callbacks inline what they call), every
//! instrumented edge calls [`__sanitizer_cov_trace_pc_guard`], which marks the edge in a map.
//! Without those flags the callbacks are never called and the map stays empty: the engine
//! then mutates blindly, which is what the brief CI run does.

// The callbacks' signatures are LLVM's: raw pointers to the guard array.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// Slots in the edge map; edges beyond it share slots.
pub const MAP_SIZE: usize = 1 << 18;

static MAP: [AtomicU8; MAP_SIZE] = [const { AtomicU8::new(0) }; MAP_SIZE];
static NEXT: AtomicU32 = AtomicU32::new(1);

/// Numbers the guards of one instrumented module; LLVM calls it from the module's
/// constructor.
///
/// # Safety
/// `start..stop` must be the module's guard array, as LLVM passes it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sanitizer_cov_trace_pc_guard_init(start: *mut u32, stop: *mut u32) {
    let mut p = start;
    while p < stop {
        // SAFETY: p lies in the guard array LLVM handed us.
        unsafe {
            if *p == 0 {
                *p = NEXT.fetch_add(1, Ordering::Relaxed);
            }
            p = p.add(1);
        }
    }
}

/// Marks an edge; LLVM calls it on every instrumented edge.
///
/// # Safety
/// `guard` must point into a guard array numbered by the init callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sanitizer_cov_trace_pc_guard(guard: *mut u32) {
    // SAFETY: LLVM passes a pointer into the guard array.
    let i = unsafe { *guard } as usize;
    MAP[i & (MAP_SIZE - 1)].store(1, Ordering::Relaxed);
}

/// Whether this binary is instrumented: some module numbered its guards.
pub fn instrumented() -> bool {
    NEXT.load(Ordering::Relaxed) > 1
}

/// Instrumented edges in the binary.
pub fn edges() -> usize {
    NEXT.load(Ordering::Relaxed) as usize - 1
}

/// Clears the map before an input runs.
pub fn reset() {
    for slot in &MAP {
        slot.store(0, Ordering::Relaxed);
    }
}

/// Adds the edges the last input hit to `seen`; returns how many were new.
pub fn merge_into(seen: &mut [bool]) -> usize {
    let mut new = 0;
    for (s, slot) in seen.iter_mut().zip(&MAP) {
        if slot.load(Ordering::Relaxed) != 0 && !*s {
            *s = true;
            new += 1;
        }
    }
    new
}
