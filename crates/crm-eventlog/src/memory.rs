//! Process memory settings for binaries that run the store.

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`, through rustix), for every
/// mapping, present and future. Call it first thing in `main`.
///
/// mimalloc (the allocator of the server and the load generators) asks for huge pages on its
/// arenas (`madvise(MADV_HUGEPAGE)`), and returns freed memory to the kernel a few milliseconds
/// later. With the kernel's THP setting at `madvise`, as on our machines, the next touch of a
/// returned page then faults in and zeroes a whole 2 MiB page: under a query load that was a
/// fifth of the server's CPU, all of it in the kernel's `clear_page_erms`
/// (docs/PERFORMANCE.md, "Allocator"). Setting `MIMALLOC_ALLOW_THP=0` in the environment does
/// the same; this makes it the default. Returns false where the kernel refuses (or on other
/// systems), which only costs that CPU.
pub fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::disable_transparent_huge_pages(true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_reports_huge_pages_disabled() {
        assert!(super::disable_transparent_huge_pages());
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }
}
