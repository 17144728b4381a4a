//! CPU time of the calling thread, from Linux's `/proc/thread-self/schedstat`
//! (its first field: nanoseconds on a CPU, kept up to the last scheduler
//! tick). On a shared, busy machine a thread's wall time includes the time
//! it waited for a core; its CPU time does not, so lines per CPU second
//! compares two runs fairly when the load changed between them.

/// Nanoseconds the calling thread has run so far; `None` where the kernel
/// does not say (not Linux, no procfs).
pub fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn grows_while_the_thread_works() {
        let Some(before) = super::thread_cpu_ns() else {
            eprintln!("skipping: /proc/thread-self/schedstat is not readable here");
            return;
        };
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(super::thread_cpu_ns().unwrap() > before);
    }
}
