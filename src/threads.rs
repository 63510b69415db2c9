//! Fork-safe data parallelism for loading, validation and sweeps: scoped threads started per call.
//!
//! rayon's global pool cannot be used in a process forked from one that had started it (the
//! pool's threads do not survive a fork, so work sent to it never runs); Python executors fork
//! workers that load data, so the data path spawns its own threads instead. Starting two threads
//! costs tens of microseconds, so small inputs run on the calling thread.

/// The cores this process may use, found once: `available_parallelism` reads the cgroup's CPU
/// quota files on every call (a fifth of reading a small funding store went to it).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

thread_local! {
    /// This thread is one of the threads a [`map_ordered`] or [`map_with_state`] keeps busy.
    static IN_PARALLEL_MAP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread may start a helper thread of its own (a backtest's indicator
/// thread): the process has a second core and the caller is not one of the threads of a parallel
/// map, which already keep every core busy.
pub fn spare_core() -> bool {
    cores() >= 2 && !IN_PARALLEL_MAP.with(std::cell::Cell::get)
}

/// Marks the current thread as a parallel map's until dropped.
struct InParallelMap(bool);

impl InParallelMap {
    fn enter() -> Self {
        Self(IN_PARALLEL_MAP.with(|flag| flag.replace(true)))
    }
}

impl Drop for InParallelMap {
    fn drop(&mut self) {
        IN_PARALLEL_MAP.with(|flag| flag.set(self.0));
    }
}

/// `f` over `items`, results in item order, on up to [`cores`] threads when `work`
/// (a size in rows or cells) makes it worth it.
pub fn map_ordered<T: Sync, R: Send>(items: &[T], work: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const MIN_WORK: usize = 50_000;
    let threads = cores().min(items.len());
    if threads <= 1 || work < MIN_WORK {
        return items.iter().map(f).collect();
    }
    // Contiguous chunks, one per thread; the calling thread takes the first.
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let mut chunks = items.chunks(chunk);
        let first = chunks.next().unwrap_or(&[]);
        let handles: Vec<_> = chunks
            .map(|part| {
                scope.spawn(move || {
                    let _busy = InParallelMap::enter();
                    part.iter().map(f).collect::<Vec<R>>()
                })
            })
            .collect();
        let busy = InParallelMap::enter();
        let mut out: Vec<R> = first.iter().map(f).collect();
        drop(busy);
        for handle in handles {
            out.extend(handle.join().expect("a data thread panicked"));
        }
        out
    })
}

/// `f` over `items` on `threads` worker threads (all cores when `None`), results in item order.
/// Each worker owns one state from `init`, reused for every item it takes (items are handed out
/// one at a time, so uneven items balance): a sweep's workers keep their output buffers.
pub fn map_with_state<T: Sync, S, R: Send>(
    items: &[T],
    threads: Option<usize>,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let available = cores();
    let threads = threads.unwrap_or(available).max(1).min(items.len());
    if threads <= 1 {
        let mut state = init();
        return items.iter().map(|item| f(&mut state, item)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || {
        let _busy = InParallelMap::enter();
        let mut state = init();
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(index) else { return done };
            done.push((index, f(&mut state, item)));
        }
    };
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mine = worker();
        for (index, result) in
            mine.into_iter().chain(handles.into_iter().flat_map(|h| h.join().expect("a worker thread panicked")))
        {
            slots[index] = Some(result);
        }
    });
    slots.into_iter().map(|slot| slot.expect("every item was taken")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_their_order() {
        let items: Vec<usize> = (0..1000).collect();
        assert_eq!(super::map_ordered(&items, 1_000_000, |x| x * 2), (0..1000).map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(super::map_ordered(&items, 10, |x| x + 1)[999], 1000);
        assert!(super::map_ordered(&Vec::<u8>::new(), 1_000_000, |x| *x).is_empty());
    }

    #[test]
    fn stateful_workers_keep_the_order_and_reuse_their_state() {
        let items: Vec<usize> = (0..200).collect();
        let inits = std::sync::atomic::AtomicUsize::new(0);
        for threads in [None, Some(1), Some(3)] {
            inits.store(0, std::sync::atomic::Ordering::Relaxed);
            let out = super::map_with_state(
                &items,
                threads,
                || {
                    inits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    0usize
                },
                |taken: &mut usize, x| {
                    *taken += 1;
                    x * 3
                },
            );
            assert_eq!(out, items.iter().map(|x| x * 3).collect::<Vec<_>>());
            let workers = inits.load(std::sync::atomic::Ordering::Relaxed);
            assert!(workers >= 1 && workers <= threads.unwrap_or(usize::MAX), "{workers} states for {threads:?}");
        }
        assert!(super::map_with_state(&Vec::<u8>::new(), Some(2), || (), |_, x| *x).is_empty());
    }
}
