//! Work of a cold start spread over the machine's cores: parsing the manifests and
//! resolving the services. Both happen before the first write to NB, while the server and
//! the other cores are idle; on a change (one file, a few services) one thread does it.

/// At most this many threads work at once.
const MAX_THREADS: usize = 4;

/// `f` applied to contiguous chunks of `items` of about equal `weight` each, on up to
/// [`MAX_THREADS`] threads (one per core), the results in `items`' order. Below `min_weight`
/// in all, or on one core, `f` runs once on this thread over all of `items` (a thread costs
/// more than it saves).
pub fn map_chunks<T: Sync, R: Send>(
    items: &[T],
    weight: impl Fn(&T) -> usize,
    min_weight: usize,
    f: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    let total: usize = items.iter().map(&weight).sum();
    if threads < 2 || items.len() < 2 || total < min_weight {
        return vec![f(items)];
    }
    let per_thread = total.div_ceil(threads);
    let mut chunks: Vec<&[T]> = Vec::with_capacity(threads);
    let (mut start, mut acc) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        acc += weight(item);
        if acc >= per_thread || i + 1 == items.len() {
            chunks.push(&items[start..=i]);
            (start, acc) = (i + 1, 0);
        }
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || f(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                // A panic in `f` is a bug: surface it as one, on this thread.
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_item_once_in_order_whatever_the_weights() {
        let items: Vec<usize> = (0..1000).collect();
        for (weight, min) in [(1, 0), (1, 10_000), (7, 100)] {
            let out: Vec<Vec<usize>> = map_chunks(
                &items,
                |i| if i % 3 == 0 { weight } else { 1 },
                min,
                |c| c.to_vec(),
            );
            assert_eq!(out.concat(), items);
            if min > 1000 * weight {
                assert_eq!(out.len(), 1, "below the minimum: one call");
            }
        }
        assert_eq!(map_chunks(&[] as &[u8], |_| 1, 0, <[u8]>::len), [0]);
    }
}
