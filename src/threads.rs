//! Fork-safe data parallelism for loading and validation: scoped threads started per call.
//!
//! rayon's global pool cannot be used in a process forked from one that had started it (the
//! pool's threads do not survive a fork, so work sent to it never runs); Python executors fork
//! workers that load data, so the data path spawns its own threads instead. Starting two threads
//! costs tens of microseconds, so small inputs run on the calling thread.

/// `f` over `items`, results in item order, on up to `available_parallelism` threads when `work`
/// (a size in rows or cells) makes it worth it.
pub fn map_ordered<T: Sync, R: Send>(items: &[T], work: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const MIN_WORK: usize = 50_000;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if threads <= 1 || work < MIN_WORK {
        return items.iter().map(f).collect();
    }
    // Contiguous chunks, one per thread; the calling thread takes the first.
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let mut chunks = items.chunks(chunk);
        let first = chunks.next().unwrap_or(&[]);
        let handles: Vec<_> = chunks.map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        for handle in handles {
            out.extend(handle.join().expect("a data thread panicked"));
        }
        out
    })
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
}
