//! What this machine offers a run, read in one place: the memory a new allocation can have
//! (the OS's figure, a container's limit, `ulimit -v`) and the threads a `threads` setting
//! means. The engines' memory checks and thread pools read it; nothing here knows an engine.

/// The memory a new allocation can have without swapping or meeting the OOM killer: the
/// machine's `MemAvailable` (/proc/meminfo), or less where a container's memory limit leaves
/// less (cgroup v2 `memory.max` − `memory.current`, or v1's `limit_in_bytes` −
/// `usage_in_bytes`), or than the address space `ulimit -v` (RLIMIT_AS) leaves beyond what
/// the process already maps; `None` where none is known.
pub fn available_memory_bytes() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
    let machine = read("/proc/meminfo").and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    });
    // v2 writes "max" for no limit, which does not parse: no limit, no headroom figure.
    let container = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    .iter()
    .find_map(|(limit, usage)| Some(number(read(limit))?.saturating_sub(number(read(usage))?)));
    [machine, container, address_space_left()]
        .into_iter()
        .flatten()
        .min()
}

/// What RLIMIT_AS (`ulimit -v`) leaves of the address space: the limit less the process's
/// current virtual size (`VmSize`, Linux; elsewhere the limit alone). `None`: no limit. Past
/// it an allocation fails however much memory is free, and Rust's allocator aborts.
#[cfg(unix)]
fn address_space_left() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let mapped = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024))
        })
        .unwrap_or(0);
    #[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some 32-bit targets
    Some((limit.rlim_cur as u64).saturating_sub(mapped))
}

#[cfg(not(unix))]
fn address_space_left() -> Option<u64> {
    None
}

/// The most threads a `threads` setting may ask for. Every thread gets a shard with its own
/// gradient and evaluation buffers (about 2.4 MB for the paper's network) and an OS thread that
/// spins looking for work, so a mistyped count (100,000) would otherwise exhaust memory or run
/// an epoch for hours instead of failing; the CLI rejects larger counts, the library clamps.
pub const MAX_THREADS: usize = 1024;

/// The thread count a `threads` setting means: 0 is one per core, and at most [`MAX_THREADS`].
pub fn resolve_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(MAX_THREADS)
}
