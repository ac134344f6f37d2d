//! What this machine has to give: memory still available to a new job or a loaded model.
//! Candle aborts the whole process on out-of-memory (it cannot be caught), so the trainer, the
//! worker and chat all check here before they allocate a model's worth of memory. Also this
//! process's peak resident memory, which the benchmarks report.

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux); `None` where it cannot be read.
pub fn available_memory_bytes() -> Option<u64> {
    parse_mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// The peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    kb_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
}

/// The `MemAvailable:` line of a `/proc/meminfo` text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    kb_field(meminfo, "MemAvailable:")
}

/// A `Name:   123 kB` line of a `/proc` text, in bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(parse_mem_available(text), Some(23_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn this_machine_reports_some_memory() {
        assert!(available_memory_bytes().is_some_and(|b| b > 0));
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
