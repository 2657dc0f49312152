//! The usual `process_*` series, read from `/proc/self` at scrape time (nothing is kept or
//! updated between scrapes): CPU seconds, resident memory, open file descriptors and the start
//! time, with the names and meanings of the Prometheus client libraries.

use std::fmt::Write as _;

use super::family_header;

/// The names of the families [`render`] writes.
pub const FAMILIES: [&str; 4] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
];

/// What `/proc/self` says about the process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    start_time_seconds: f64,
}

/// Appends the `process_*` families. A value that cannot be read (not Linux, `/proc` not
/// mounted) is left out rather than shown as a made-up 0.
pub fn render(out: &mut String) {
    let ticks = clock_ticks_per_second();
    let page = page_size();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time_seconds(&s));
    let stats = match (
        std::fs::read_to_string("/proc/self/stat"),
        std::fs::read_to_string("/proc/self/statm"),
    ) {
        (Ok(stat), Ok(statm)) => parse(&stat, &statm, ticks, page, boot.unwrap_or(0)),
        _ => None,
    };
    if let Some(stats) = stats {
        family_header(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", stats.cpu_seconds);
        family_header(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(
            out,
            "process_resident_memory_bytes {}",
            stats.resident_bytes
        );
        if boot.is_some() {
            family_header(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            let _ = writeln!(
                out,
                "process_start_time_seconds {}",
                stats.start_time_seconds
            );
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory being listed is itself one open descriptor; it is not the process's.
        let fds = entries.count().saturating_sub(1);
        family_header(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {fds}");
    }
}

/// `/proc/self/stat` and `/proc/self/statm` (proc(5)) turned into seconds and bytes. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse(stat: &str, statm: &str, ticks: f64, page: u64, boot: u64) -> Option<ProcessStats> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field n of proc(5) is at index n - 3 here (the state, field 3, comes first).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let utime = field(14)?;
    let stime = field(15)?;
    let start_ticks = field(22)?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_bytes: resident_pages * page,
        start_time_seconds: boot as f64 + start_ticks as f64 / ticks,
    })
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
fn boot_time_seconds(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_a_hostile_command_name() {
        // Fields from proc(5): pid (comm) state ppid ... utime(14) stime(15) ... starttime(22).
        let stat = "4242 (cf ) (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 6 0 1000 123 456";
        let statm = "5000 300 100 10 0 200 0";
        let stats = parse(stat, statm, 100.0, 4096, 1_700_000_000).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.resident_bytes, 300 * 4096);
        assert_eq!(stats.start_time_seconds, 1_700_000_010.0);
    }

    #[test]
    fn malformed_proc_files_give_nothing() {
        assert_eq!(parse("no parenthesis", "1 2", 100.0, 4096, 0), None);
        assert_eq!(parse("1 (x) S 1 2", "1 2", 100.0, 4096, 0), None);
        assert_eq!(boot_time_seconds("cpu 1 2 3\n"), None);
        assert_eq!(
            boot_time_seconds("cpu 1\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn renders_this_process_with_sane_values() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            let prefix = format!("{name} ");
            out.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("{name} in\n{out}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = crate::clock::unix_now_ms() as f64 / 1000.0;
        let started = value("process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0);
    }
}
