//! Cache hints for the cold scrape's loops: a scrape of 1,000 containers touches each one's
//! state and writes its samples once, after everything before has pushed them out of the
//! caches, so the loops ask for what comes next ahead of it. A hint reads nothing and never
//! faults; elsewhere than x86-64 it does nothing.

/// Asks the CPU to bring the cache line holding `address` into its caches.
#[inline]
pub fn line<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch only hints: it reads nothing and never faults, whatever the
        // address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The same for every line of `bytes` bytes from `address`.
#[inline]
pub fn lines<T>(address: *const T, bytes: usize) {
    let start = address.cast::<u8>();
    for offset in (0..bytes).step_by(64) {
        line(start.wrapping_add(offset));
    }
}
