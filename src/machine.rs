//! What this machine has to give: memory still available to a new job or a loaded model.
//! Candle aborts the whole process on out-of-memory (it cannot be caught), so the trainer, the
//! worker and chat all check here before they allocate a model's worth of memory. Also this
//! process's peak resident memory and a line describing the processor, which the benchmarks
//! report beside every CPU figure.

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux); `None` where it cannot be read.
pub fn available_memory_bytes() -> Option<u64> {
    parse_mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemTotal` from `/proc/meminfo`, in bytes: the CPU device's memory in the workers listing.
pub fn total_memory_bytes() -> Option<u64> {
    kb_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// The peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    kb_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
}

/// The resident memory of this process now (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    kb_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )
}

/// CPU time this process has used, user and system, in seconds (`/proc/self/stat`).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its closing parenthesis;
    // utime and stime are the 14th and 15th fields, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The processor's model name, its logical CPUs, the SIMD features that decide the speed of
/// Wick's kernels (AVX2, FMA, AVX-512, AVX512-BF16, AMX) and the load average, in one line.
pub fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| cpuinfo_field(&info, name).unwrap_or_default();
    let flags = field("flags");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "cpu \"{}\", {} logical CPUs, SIMD {}, load average {}",
        field("model name"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        simd.join(" "),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The processor's model name (`model name` in `/proc/cpuinfo`).
pub fn cpu_model_name() -> Option<String> {
    cpuinfo_field(
        &std::fs::read_to_string("/proc/cpuinfo").ok()?,
        "model name",
    )
}

/// The value of the first `name : value` line of a `/proc/cpuinfo` text.
fn cpuinfo_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
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
