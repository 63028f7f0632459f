//! The rayon pool a CPU engine's threads run on.

/// A rayon pool for a `threads` setting and the thread count work on it really gets: no pool
/// for one thread, and one thread when the pool cannot be built.
pub fn thread_pool(threads: usize) -> (Option<rayon::ThreadPool>, usize) {
    let threads = crate::host::resolve_threads(threads);
    let pool = (threads > 1)
        .then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .ok()
        })
        .flatten();
    let threads = if pool.is_some() { threads } else { 1 };
    (pool, threads)
}
