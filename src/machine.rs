//! What this machine has to give: memory still available to a new job or a loaded model.
//! Candle aborts the whole process on out-of-memory (it cannot be caught), so the trainer, the
//! worker and chat all check here before they allocate a model's worth of memory.

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux); `None` where it cannot be read.
pub fn available_memory_bytes() -> Option<u64> {
    parse_mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// The `MemAvailable:` line of a `/proc/meminfo` text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
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
    }
}
