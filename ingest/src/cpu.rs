//! Machine CPU use, sampled from `/proc/stat` (Linux) for the capacity reports.

/// Machine CPU use from /proc/stat deltas (Linux). `None` where /proc is unreadable.
#[derive(Default)]
pub struct CpuSampler {
    last: Option<(u64, u64)>,
}

impl CpuSampler {
    /// Use since the previous call, 0..=1.
    pub fn sample(&mut self) -> Option<f32> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let prev = self.last.replace((total, idle));
        let (pt, pi) = prev?;
        let dt = total.saturating_sub(pt);
        if dt == 0 {
            return None;
        }
        Some(1.0 - idle.saturating_sub(pi) as f32 / dt as f32)
    }
}
