//! Element-wise loops split over rayon's threads, and compiled for AVX2 where the CPU has it
//! (burnbert patch).
//!
//! Upstream burn-flex 0.22.1 runs its unary, binary and scalar element-wise loops on the
//! calling thread only; on a 2-core machine that left one core idle for about two thirds of
//! a BERT training step. These helpers split a loop over the pool when the tensor is large
//! enough for the hand-off to pay, and run it in place otherwise.
//!
//! Each loop is a plain loop over slices with its operation taken by value, so that the
//! compiler vectorises it: rayon's `collect` writes one element at a time through its
//! consumer, and an operation reached through a reference has its captured values reloaded
//! after every store; both left the loops scalar. The crate is compiled for the baseline
//! x86-64 (SSE2), so each loop is compiled a second time for AVX2 and FMA and chosen at run
//! time ([`Piece`]). Rust does not contract `a * b + c` into an FMA, so both give the same bits.

use core::mem::MaybeUninit;

/// Below this many elements a loop stays on the calling thread.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// An element-wise operation of one value (to a value of type `R`, a cast where it differs):
/// every closure, and operations whose body is too large for the compiler to inline a closure
/// of it into the loops below (GELU's), which implement it with `#[inline(always)]`.
pub(crate) trait UnaryFn<E, R = E>: Copy + Send + Sync {
    fn apply(&self, x: E) -> R;
}

impl<E, R, F: Fn(E) -> R + Copy + Send + Sync> UnaryFn<E, R> for F {
    #[inline(always)]
    fn apply(&self, x: E) -> R {
        self(x)
    }
}

/// An element-wise operation of two values, as [`UnaryFn`].
pub(crate) trait BinaryFn<E>: Copy + Send + Sync {
    fn apply(&self, a: E, b: E) -> E;
}

impl<E, F: Fn(E, E) -> E + Copy + Send + Sync> BinaryFn<E> for F {
    #[inline(always)]
    fn apply(&self, a: E, b: E) -> E {
        self(a, b)
    }
}

/// An f32 operation applied to half-precision elements: each converted to f32 and back, in
/// the loop itself, so that the whole of it vectorises (a closure around the f32 operation
/// was a call per element).
#[derive(Clone, Copy)]
pub(crate) struct ViaF32<F>(pub F);

macro_rules! via_f32 {
    ($half:ty) => {
        impl<F: UnaryFn<f32>> UnaryFn<$half> for ViaF32<F> {
            #[inline(always)]
            fn apply(&self, x: $half) -> $half {
                <$half>::from_f32(self.0.apply(x.to_f32()))
            }
        }

        impl<F: BinaryFn<f32>> BinaryFn<$half> for ViaF32<F> {
            #[inline(always)]
            fn apply(&self, a: $half, b: $half) -> $half {
                <$half>::from_f32(self.0.apply(a.to_f32(), b.to_f32()))
            }
        }
    };
}
via_f32!(burn_std::bf16);
via_f32!(burn_std::f16);

/// The chunk length that gives each thread one piece of `len` elements.
#[cfg(feature = "rayon")]
pub(crate) fn chunk_len(len: usize) -> usize {
    len.div_ceil(rayon::current_num_threads())
        .max(PARALLEL_MIN / 2)
}

/// `data[i] = op(data[i])` for every element.
pub(crate) fn map_in_place<E, F>(data: &mut [E], op: F)
where
    E: Copy + Send,
    F: UnaryFn<E>,
{
    run(MapInPlace { data, op })
}

/// `dst[i] = op(dst[i], src[i])` for every element (of equal lengths).
pub(crate) fn zip_in_place<E, F>(dst: &mut [E], src: &[E], op: F)
where
    E: Copy + Send + Sync,
    F: BinaryFn<E>,
{
    debug_assert_eq!(dst.len(), src.len());
    run(ZipInPlace { dst, src, op })
}

/// `src` mapped through `op` into a new vector.
pub(crate) fn map_collect<E, R, F>(src: &[E], op: F) -> alloc::vec::Vec<R>
where
    E: Copy + Send + Sync,
    R: Send,
    F: UnaryFn<E, R>,
{
    let mut result = alloc::vec::Vec::with_capacity(src.len());
    let out = &mut result.spare_capacity_mut()[..src.len()];
    run(Map { out, src, op });
    // SAFETY: `Map` wrote every one of the first `src.len()` elements.
    unsafe { result.set_len(src.len()) };
    result
}

/// `op` of matching elements of `lhs` and `rhs` (of equal lengths) into a new vector.
pub(crate) fn zip_map_collect<E, F>(lhs: &[E], rhs: &[E], op: F) -> alloc::vec::Vec<E>
where
    E: Copy + Send + Sync,
    F: BinaryFn<E>,
{
    // In release builds too: `ZipMap` writes as many elements as the shorter operand has,
    // and `set_len` below takes `lhs.len()` of them as written.
    assert_eq!(
        lhs.len(),
        rhs.len(),
        "zip_map_collect: operands of unequal lengths"
    );
    let mut result = alloc::vec::Vec::with_capacity(lhs.len());
    let out = &mut result.spare_capacity_mut()[..lhs.len()];
    run(ZipMap { out, lhs, rhs, op });
    // SAFETY: `ZipMap` wrote every one of the first `lhs.len()` elements.
    unsafe { result.set_len(lhs.len()) };
    result
}

/// Applies `f` to matching pieces of `dst` and `src` (of equal length), for loops that bring
/// their own SIMD (flex's `simd` module).
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

/// Loops to compile again for AVX-512 and for AVX2 and FMA, and run in the widest form the
/// CPU has ([`run_widest`]).
pub(crate) trait Vectorised: Sized {
    /// The loops; implementations are `#[inline(always)]`, so that [`avx512`] and [`avx2`]
    /// compile them.
    fn run(self);
}

/// One element-wise loop over matching slices, which can be cut in two and run.
trait Piece: Vectorised + Send {
    fn len(&self) -> usize;
    /// The first `mid` elements of every slice, and the rest.
    fn split_at(self, mid: usize) -> (Self, Self);
}

/// Runs `piece`, in pieces on several threads when it is large.
fn run<P: Piece>(piece: P) {
    #[cfg(feature = "rayon")]
    if piece.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        let chunk = chunk_len(piece.len());
        let mut pieces = alloc::vec::Vec::new();
        let mut rest = piece;
        while rest.len() > chunk {
            let (first, tail) = rest.split_at(chunk);
            pieces.push(first);
            rest = tail;
        }
        pieces.push(rest);
        pieces.into_par_iter().for_each(run_widest);
        return;
    }
    run_widest(piece)
}

/// Runs `work` compiled for AVX-512 where the CPU has it, else for AVX2 and FMA where it has
/// those.
#[inline(always)]
pub(crate) fn run_widest<W: Vectorised>(work: W) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature `avx512` is compiled for, checked just above.
            return unsafe { avx512(work) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features `avx2` is compiled for, checked just above.
            return unsafe { avx2(work) };
        }
    }
    work.run()
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<W: Vectorised>(work: W) {
    work.run()
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<W: Vectorised>(work: W) {
    work.run()
}

struct MapInPlace<'a, E, F> {
    data: &'a mut [E],
    op: F,
}

impl<E: Copy + Send, F: UnaryFn<E>> Piece for MapInPlace<'_, E, F> {
    fn len(&self) -> usize {
        self.data.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (a, b) = self.data.split_at_mut(mid);
        let op = self.op;
        (Self { data: a, op }, Self { data: b, op })
    }
}

impl<E: Copy + Send, F: UnaryFn<E>> Vectorised for MapInPlace<'_, E, F> {
    #[inline(always)]
    fn run(self) {
        let op = self.op;
        for x in self.data {
            *x = op.apply(*x);
        }
    }
}

struct ZipInPlace<'a, E, F> {
    dst: &'a mut [E],
    src: &'a [E],
    op: F,
}

impl<E: Copy + Send + Sync, F: BinaryFn<E>> Piece for ZipInPlace<'_, E, F> {
    fn len(&self) -> usize {
        self.dst.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (d1, d2) = self.dst.split_at_mut(mid);
        let (s1, s2) = self.src.split_at(mid);
        let op = self.op;
        (
            Self {
                dst: d1,
                src: s1,
                op,
            },
            Self {
                dst: d2,
                src: s2,
                op,
            },
        )
    }
}

impl<E: Copy + Send + Sync, F: BinaryFn<E>> Vectorised for ZipInPlace<'_, E, F> {
    #[inline(always)]
    fn run(self) {
        let op = self.op;
        for (d, &s) in self.dst.iter_mut().zip(self.src) {
            *d = op.apply(*d, s);
        }
    }
}

struct Map<'a, E, R, F> {
    out: &'a mut [MaybeUninit<R>],
    src: &'a [E],
    op: F,
}

impl<E: Copy + Send + Sync, R: Send, F: UnaryFn<E, R>> Piece for Map<'_, E, R, F> {
    fn len(&self) -> usize {
        self.out.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (o1, o2) = self.out.split_at_mut(mid);
        let (s1, s2) = self.src.split_at(mid);
        let op = self.op;
        (
            Self {
                out: o1,
                src: s1,
                op,
            },
            Self {
                out: o2,
                src: s2,
                op,
            },
        )
    }
}

impl<E: Copy + Send + Sync, R: Send, F: UnaryFn<E, R>> Vectorised for Map<'_, E, R, F> {
    #[inline(always)]
    fn run(self) {
        let op = self.op;
        for (o, &x) in self.out.iter_mut().zip(self.src) {
            o.write(op.apply(x));
        }
    }
}

struct ZipMap<'a, E, F> {
    out: &'a mut [MaybeUninit<E>],
    lhs: &'a [E],
    rhs: &'a [E],
    op: F,
}

impl<E: Copy + Send + Sync, F: BinaryFn<E>> Piece for ZipMap<'_, E, F> {
    fn len(&self) -> usize {
        self.out.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (o1, o2) = self.out.split_at_mut(mid);
        let (l1, l2) = self.lhs.split_at(mid);
        let (r1, r2) = self.rhs.split_at(mid);
        let op = self.op;
        (
            Self {
                out: o1,
                lhs: l1,
                rhs: r1,
                op,
            },
            Self {
                out: o2,
                lhs: l2,
                rhs: r2,
                op,
            },
        )
    }
}

impl<E: Copy + Send + Sync, F: BinaryFn<E>> Vectorised for ZipMap<'_, E, F> {
    #[inline(always)]
    fn run(self) {
        let op = self.op;
        for ((o, &a), &b) in self.out.iter_mut().zip(self.lhs).zip(self.rhs) {
            o.write(op.apply(a, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operands of unequal lengths stop the loop with a panic, in release builds too (the
    /// tests run in release): without it `set_len` would expose uninitialised elements.
    #[test]
    #[should_panic(expected = "operands of unequal lengths")]
    fn zip_map_collect_refuses_unequal_lengths() {
        let (lhs, rhs) = ([1.0f32; 8], [2.0f32; 5]);
        let _ = zip_map_collect(&lhs, &rhs, |a: f32, b: f32| a + b);
    }

    /// Each compiled width of a loop gives the same bits (Rust contracts no `a * b + c` into
    /// an FMA), the branch-free `exp_f32` included. A width this CPU lacks cannot run: the
    /// test says so (QEMU's emulator has no AVX-512 either).
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[cfg_attr(miri, ignore = "Miri runs the baseline's loops alone")]
    #[test]
    fn every_compiled_width_gives_the_same_bits() {
        let op = |x: f32| crate::ops::unary::exp_f32(x) * 0.5 + x * x - 1.1;
        let inputs: alloc::vec::Vec<f32> = (0..1000).map(|i| i as f32 * 0.037 - 20.0).collect();
        let baseline = {
            let mut data = inputs.clone();
            MapInPlace {
                data: &mut data,
                op,
            }
            .run();
            data
        };
        let same_bits = |data: &[f32]| {
            data.iter()
                .zip(&baseline)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        let test = "parallel::every_compiled_width_gives_the_same_bits";
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let mut data = inputs.clone();
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            unsafe {
                avx2(MapInPlace {
                    data: &mut data,
                    op,
                })
            };
            assert!(same_bits(&data), "AVX2 and FMA against the baseline");
        } else {
            crate::not_run::not_run(&format!("{test} (AVX2)"), "it has no AVX2 and FMA");
        }
        if std::is_x86_feature_detected!("avx512f") {
            let mut data = inputs.clone();
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe {
                avx512(MapInPlace {
                    data: &mut data,
                    op,
                })
            };
            assert!(same_bits(&data), "AVX-512 against the baseline");
        } else {
            crate::not_run::not_run(&format!("{test} (AVX-512)"), "it has no AVX-512");
        }
    }

    /// On equal lengths, on one thread and split over a pool of three, the collecting loops
    /// write every element (under Miri too: `scripts/test` runs these tests there).
    #[test]
    fn collecting_loops_write_every_element() {
        let check = || {
            for len in [0, 7, PARALLEL_MIN * 2 + 3] {
                let lhs: alloc::vec::Vec<f32> = (0..len).map(|i| i as f32).collect();
                let rhs: alloc::vec::Vec<f32> = (0..len).map(|i| (2 * i) as f32).collect();
                let sum = zip_map_collect(&lhs, &rhs, |a: f32, b: f32| a + b);
                assert_eq!(sum.len(), len);
                assert!(sum.iter().enumerate().all(|(i, &s)| s == (3 * i) as f32));
                let halves = map_collect(&rhs, |x: f32| x / 2.0);
                assert_eq!(halves, lhs);
            }
        };
        #[cfg(feature = "rayon")]
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(check);
        #[cfg(not(feature = "rayon"))]
        check();
    }
}
