//! Element-wise loops split over rayon's threads (burnbert patch).
//!
//! Upstream burn-flex 0.22.1 runs its unary, binary and scalar element-wise loops on the
//! calling thread only; on a 2-core machine that left one core idle for about two thirds of
//! a BERT training step. These helpers split a loop over the pool when the tensor is large
//! enough for the hand-off to pay, and run it in place otherwise.

/// Below this many elements a loop stays on the calling thread.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// The chunk length that gives each thread one piece of `len` elements.
#[cfg(feature = "rayon")]
fn chunk_len(len: usize) -> usize {
    len.div_ceil(rayon::current_num_threads())
        .max(PARALLEL_MIN / 2)
}

/// Applies `f` to `data`, in pieces on several threads when it is large.
pub(crate) fn for_each_chunk<E, F>(data: &mut [E], f: F)
where
    E: Send,
    F: Fn(&mut [E]) + Sync,
{
    #[cfg(feature = "rayon")]
    if data.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk_len(data.len()))
            .for_each(|c| f(c));
        return;
    }
    f(data)
}

/// Applies `f` to matching pieces of `dst` and `src` (of equal length).
pub(crate) fn zip_chunks<E, S, F>(dst: &mut [E], src: &[S], f: F)
where
    E: Send,
    S: Sync,
    F: Fn(&mut [E], &[S]) + Sync,
{
    debug_assert_eq!(dst.len(), src.len());
    #[cfg(feature = "rayon")]
    if dst.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        let chunk = chunk_len(dst.len());
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| f(d, s));
        return;
    }
    f(dst, src)
}

/// `src` mapped through `op` into a new vector, in pieces on several threads when large.
pub(crate) fn map_collect<E, R, F>(src: &[E], op: F) -> alloc::vec::Vec<R>
where
    E: Copy + Sync,
    R: Send,
    F: Fn(E) -> R + Sync + Send,
{
    #[cfg(feature = "rayon")]
    if src.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        return src
            .par_iter()
            .with_min_len(PARALLEL_MIN / 2)
            .map(|&x| op(x))
            .collect();
    }
    src.iter().map(|&x| op(x)).collect()
}

/// `op` of matching elements of `lhs` and `rhs` into a new vector, in pieces on several
/// threads when large.
pub(crate) fn zip_map_collect<E, R, F>(lhs: &[E], rhs: &[E], op: F) -> alloc::vec::Vec<R>
where
    E: Copy + Sync,
    R: Send,
    F: Fn(E, E) -> R + Sync + Send,
{
    #[cfg(feature = "rayon")]
    if lhs.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        return lhs
            .par_iter()
            .zip(rhs.par_iter())
            .with_min_len(PARALLEL_MIN / 2)
            .map(|(&a, &b)| op(a, b))
            .collect();
    }
    lhs.iter().zip(rhs).map(|(&a, &b)| op(a, b)).collect()
}
