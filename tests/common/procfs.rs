//! What `/proc` says about a process: CPU time, resident memory, open descriptors, and the
//! open-files limit. Shared by end-to-end tests (memory per hostile connection) and the
//! benchmarks (CPU and memory against a peer).

use std::{fs, process::Command};

/// Clock ticks per second of `/proc/PID/stat` times.
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all threads), in seconds; NaN when it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some((_, after)) = stat.rsplit_once(") ") else {
        return f64::NAN;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // After "pid (comm) ": state is field 0, utime 11, stime 12.
    let get = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (get(11) + get(12)) / clk_tck()
}

/// Resident memory of a process, KiB (`VmRSS`); NaN when it cannot be read.
pub fn rss_kib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process's open-files limit: (soft, hard).
pub fn nofile_limits() -> (u64, u64) {
    let text = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("Max open files"));
    let nums: Vec<u64> = line
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        nums.first().copied().unwrap_or(1024),
        nums.get(1).copied().unwrap_or(1024),
    )
}

/// Raise our soft open-files limit to the hard limit (children inherit it) with util-linux
/// `prlimit`; returns the soft limit in force afterwards. The hard limit itself needs
/// CAP_SYS_RESOURCE to raise, which containers usually lack.
pub fn raise_nofile() -> u64 {
    let (soft, hard) = nofile_limits();
    if soft >= hard {
        return soft;
    }
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status();
    nofile_limits().0
}
