//! bf16 matrix products on AVX512-BF16 (burnbert patch).
//!
//! Upstream converted both bf16 operands to f32, multiplied them with gemm's f32 kernels and
//! converted the product back: three passes over memory around an f32 product, so bf16 ran
//! slower than f32. gemm 0.19 has no bf16 kernels. On a CPU with AVX512-BF16 (Intel Cooper
//! Lake and Sapphire Rapids on, AMD Zen 4 on) `vdpbf16ps` multiplies 32 bf16 pairs and
//! accumulates them into 16 f32 lanes in one instruction, twice the products of an f32 FMA
//! of the same width, as oneDNN does for PyTorch's CPU autocast. This is that product: both
//! operands packed once into the instruction's pair layout, a 12 × 32 micro-kernel with f32
//! accumulators, and the result rounded to bf16 (to nearest even) as it is stored.
//!
//! The instruction treats denormal inputs as zero and flushes denormal sums to zero; the
//! products of two bf16 values are exact in f32, so otherwise the sums are those of an f32
//! FMA chain. Without the feature (or off x86-64) `matmul` keeps upstream's f32 route.

use alloc::vec;
use burn_std::bf16;

/// Rows of the micro-tile: its 12 × 2 accumulators, two right-hand registers and a broadcast
/// take 27 of the 32 vector registers.
const MR: usize = 12;
/// Columns of the micro-tile: two registers of 16 f32 lanes.
const NR: usize = 32;

/// Proof that this CPU runs the kernel: only [`Avx512Bf16::detect`] makes one, after asking
/// the CPU, and [`gemm`] takes one, so no path reaches the kernel unchecked.
#[derive(Clone, Copy)]
pub(crate) struct Avx512Bf16(());

impl Avx512Bf16 {
    /// `Some` where this CPU has AVX-512F and AVX512-BF16 (std caches the answer).
    pub(crate) fn detect() -> Option<Self> {
        let has =
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16");
        has.then_some(Self(()))
    }
}

/// A strided bf16 matrix: element `(i, j)` at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<T> {
    pub ptr: T,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: the threads read the operands (`*const`) and write disjoint tiles of the output
// (`*mut`), so sharing a matrix shares its elements as `&E` (`E: Sync`) or hands each thread
// its own of them (`E: Send`), as slices would.
unsafe impl<E: Sync> Send for Strided<*const E> {}
unsafe impl<E: Sync> Sync for Strided<*const E> {}
unsafe impl<E: Send> Send for Strided<*mut E> {}
unsafe impl<E: Send + Sync> Sync for Strided<*mut E> {}

/// `out[m, n] = lhs[m, k] @ rhs[k, n]`, every element of `out` written, on this thread or,
/// with `threaded`, on all of rayon's.
///
/// # Safety
/// The three matrices must be valid for their sizes and strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    _cpu: Avx512Bf16,
    m: usize,
    n: usize,
    k: usize,
    out: Strided<*mut bf16>,
    lhs: Strided<*const bf16>,
    rhs: Strided<*const bf16>,
    threaded: bool,
) {
    if k == 0 {
        // An empty sum.
        for i in 0..m as isize {
            for j in 0..n as isize {
                // SAFETY: `(i, j)` lies within the `m × n` output.
                unsafe { *out.ptr.offset(i * out.rs + j * out.cs) = bf16::from_f32(0.0) };
            }
        }
        return;
    }
    let pairs = k.div_ceil(2);
    let a_panels = m.div_ceil(MR);
    let b_panels = n.div_ceil(NR);
    // Packed once for all tiles: `a` as `[a_panels][pairs][MR]` pairs of one row, `b` as
    // `[b_panels][pairs][NR]` pairs of one column; padding rows, columns and the odd `k`'s
    // last element are zeros, whose products add nothing.
    let (a_step, b_step) = (pairs * MR, pairs * NR);
    let mut a = vec![0u32; a_panels * a_step];
    let mut b = vec![0u32; b_panels * b_step];
    let pack_a = |(p, panel): (usize, &mut [u32])| {
        let rows = MR.min(m - p * MR);
        // SAFETY: rows `p * MR..` and all `k` columns lie within `lhs`.
        unsafe { pack(panel, lhs, p * MR, rows, k, MR, false) }
    };
    let pack_b = |(q, panel): (usize, &mut [u32])| {
        let cols = NR.min(n - q * NR);
        // SAFETY: columns `q * NR..` and all `k` rows lie within `rhs`.
        unsafe { pack(panel, rhs, q * NR, cols, k, NR, true) }
    };
    // Threads come from rayon, where it has more than one.
    #[cfg(feature = "rayon")]
    let threaded = threaded && rayon::current_num_threads() > 1;
    #[cfg(not(feature = "rayon"))]
    let threaded = {
        let _ = threaded;
        false
    };
    if threaded {
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            a.par_chunks_exact_mut(a_step).enumerate().for_each(pack_a);
            b.par_chunks_exact_mut(b_step).enumerate().for_each(pack_b);
        }
    } else {
        a.chunks_exact_mut(a_step).enumerate().for_each(pack_a);
        b.chunks_exact_mut(b_step).enumerate().for_each(pack_b);
    }
    let tiles_of_a = |(p, a_panel): (usize, &[u32])| {
        for (q, b_panel) in b.chunks_exact(b_step).enumerate() {
            // SAFETY: the CPU has the features (`_cpu` proves it); the tile lies within
            // `out`, and panel `p`'s rows are this job's alone.
            unsafe { tile(a_panel, b_panel, pairs, out, p * MR, q * NR, m, n) };
        }
    };
    if threaded {
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            a.par_chunks_exact(a_step).enumerate().for_each(tiles_of_a);
        }
    } else {
        a.chunks_exact(a_step).enumerate().for_each(tiles_of_a);
    }
}

/// Packs `width` rows (`of_columns` false: of `lhs`, from row `first`) or columns (of `rhs`)
/// into `[pairs][lanes]` pairs `(x[2p], x[2p + 1])` along `k`, the low half first as
/// `vdpbf16ps` reads them.
///
/// # Safety
/// The `width` lines from `first` and their `k` elements must lie within `matrix`.
unsafe fn pack(
    panel: &mut [u32],
    matrix: Strided<*const bf16>,
    first: usize,
    width: usize,
    k: usize,
    lanes: usize,
    of_columns: bool,
) {
    // Line `l`'s element `e` along k.
    let (line_step, k_step) = if of_columns {
        (matrix.cs, matrix.rs)
    } else {
        (matrix.rs, matrix.cs)
    };
    let bits = |l: usize, e: usize| -> u32 {
        // SAFETY: the caller's contract.
        let x = unsafe {
            *matrix
                .ptr
                .offset((first + l) as isize * line_step + e as isize * k_step)
        };
        x.to_bits() as u32
    };
    for (p, lanes_of_pair) in panel.chunks_exact_mut(lanes).enumerate() {
        let (even, odd) = (2 * p, 2 * p + 1);
        for (l, pair) in lanes_of_pair[..width].iter_mut().enumerate() {
            let high = if odd < k { bits(l, odd) } else { 0 };
            *pair = bits(l, even) | (high << 16);
        }
    }
}

/// One micro-tile: rows `row..row + MR` and columns `col..col + NR` of `out` (clipped to
/// `m × n`) from panel `a` and panel `b`.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16, and `out` be valid for `m × n`.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    a: &[u32],
    b: &[u32],
    pairs: usize,
    out: Strided<*mut bf16>,
    row: usize,
    col: usize,
    m: usize,
    n: usize,
) {
    use core::arch::x86_64::{
        __m256i, __m512bh, __m512i, _mm256_storeu_si256, _mm512_cvtneps_pbh, _mm512_dpbf16_ps,
        _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_ps,
    };
    use core::mem::transmute;

    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for (a_pairs, b_pairs) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(pairs) {
        // SAFETY: each chunk holds 16 + 16 `u32`, one register each.
        let (b0, b1): (__m512bh, __m512bh) = unsafe {
            (
                transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b_pairs.as_ptr().cast())),
                transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b_pairs.as_ptr().add(16).cast())),
            )
        };
        for (acc_row, &a_pair) in acc.iter_mut().zip(a_pairs) {
            // SAFETY: a vector of 16 copies of one pair reinterpreted as 32 bf16.
            let a_pair: __m512bh = unsafe { transmute(_mm512_set1_epi32(a_pair as i32)) };
            acc_row[0] = _mm512_dpbf16_ps(acc_row[0], a_pair, b0);
            acc_row[1] = _mm512_dpbf16_ps(acc_row[1], a_pair, b1);
        }
    }

    let (rows, cols) = (MR.min(m - row), NR.min(n - col));
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        // SAFETY: 16 f32 lanes rounded to 16 bf16, stored as 32 bytes.
        let mut rounded = [0u16; NR];
        unsafe {
            for (half, &lanes) in acc_row.iter().enumerate() {
                let bits: __m256i = transmute(_mm512_cvtneps_pbh(lanes));
                _mm256_storeu_si256(rounded.as_mut_ptr().add(16 * half).cast(), bits);
            }
        }
        let first = (row + r) as isize * out.rs + col as isize * out.cs;
        if cols == NR && out.cs == 1 {
            // SAFETY: the row's `NR` elements lie within the output, one after the other.
            unsafe {
                core::ptr::copy_nonoverlapping(rounded.as_ptr().cast(), out.ptr.offset(first), NR)
            };
            continue;
        }
        for (c, &bits) in rounded[..cols].iter().enumerate() {
            // SAFETY: `(row + r, col + c)` lies within the `m × n` output.
            unsafe { *out.ptr.offset(first + c as isize * out.cs) = bf16::from_bits(bits) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// bf16 values in [-2, 2) that use all of bf16's mantissa.
    fn values(len: usize, seed: usize) -> Vec<bf16> {
        (0..len)
            .map(|i| bf16::from_f32(((i * 7919 + seed * 104_729) % 4093) as f32 / 1024.0 - 2.0))
            .collect()
    }

    /// One product against a sum in f64 of the same bf16 values: a transposed or plain left
    /// and right operand, output rows `pad` elements longer than `n`, whose padding must stay
    /// as it was.
    fn check(
        cpu: Avx512Bf16,
        (m, n, k): (usize, usize, usize),
        transposed: (bool, bool),
        pad: usize,
        threaded: bool,
    ) {
        let (lhs, rhs) = (values(m * k, 1), values(k * n, 2));
        // Element (i, p) of the left operand and (p, j) of the right one.
        let (lhs_rs, lhs_cs) = if transposed.0 { (1, m) } else { (k, 1) };
        let (rhs_rs, rhs_cs) = if transposed.1 { (1, k) } else { (n, 1) };
        let sentinel = bf16::from_f32(-7.0);
        let out_rs = n + pad;
        let mut out = vec![sentinel; m * out_rs];
        // SAFETY: the buffers hold the matrices.
        unsafe {
            gemm(
                cpu,
                m,
                n,
                k,
                Strided {
                    ptr: out.as_mut_ptr(),
                    rs: out_rs as isize,
                    cs: 1,
                },
                Strided {
                    ptr: lhs.as_ptr(),
                    rs: lhs_rs as isize,
                    cs: lhs_cs as isize,
                },
                Strided {
                    ptr: rhs.as_ptr(),
                    rs: rhs_rs as isize,
                    cs: rhs_cs as isize,
                },
                threaded,
            )
        };
        for i in 0..m {
            for j in 0..n {
                let (mut sum, mut sum_abs) = (0f64, 0f64);
                for p in 0..k {
                    let term = lhs[i * lhs_rs + p * lhs_cs].to_f64()
                        * rhs[p * rhs_rs + j * rhs_cs].to_f64();
                    sum += term;
                    sum_abs += term.abs();
                }
                let got = out[i * out_rs + j].to_f64();
                // bf16's rounding of the result (half a unit in its 8-bit mantissa), and
                // f32's of each of the k sums.
                let bound = sum.abs() / 256.0 + sum_abs * k as f64 * 6e-8;
                assert!(
                    (got - sum).abs() <= bound,
                    "({m}x{k} @ {k}x{n}, {transposed:?}) [{i}, {j}]: got {got}, want {sum}"
                );
            }
            for p in n..out_rs {
                assert_eq!(out[i * out_rs + p], sentinel, "padding [{i}, {p}] written");
            }
        }
    }

    /// The kernel on this CPU, or `None` after saying that `test` cannot run here (QEMU's
    /// emulator has no AVX-512 either); elsewhere `matmul` takes the f32 route, which
    /// matmul.rs's tests check.
    fn cpu(test: &str) -> Option<Avx512Bf16> {
        let cpu = Avx512Bf16::detect();
        if cpu.is_none() {
            crate::not_run::not_run(test, "it has no AVX512-BF16");
        }
        cpu
    }

    #[test]
    fn kernel_matches_a_sum_in_f64() {
        let Some(cpu) = cpu("bf16_gemm::kernel_matches_a_sum_in_f64") else {
            return;
        };
        // Whole tiles, partial tiles in both directions, an odd k, k of 1, a single element.
        let shapes = [
            (12, 32, 2),
            (13, 33, 7),
            (25, 70, 64),
            (1, 1, 1),
            (40, 5, 1),
            (3, 97, 130),
        ];
        for shape in shapes {
            for transposed in [(false, false), (true, false), (false, true), (true, true)] {
                check(cpu, shape, transposed, 0, false);
            }
            check(cpu, shape, (false, false), 3, true);
        }
    }

    #[test]
    fn kernel_writes_zeros_for_an_empty_sum() {
        let Some(cpu) = cpu("bf16_gemm::kernel_writes_zeros_for_an_empty_sum") else {
            return;
        };
        check(cpu, (5, 3, 0), (false, false), 2, false);
    }

    /// Whether `T` is `Sync`, answered for a concrete type at compile time: an inherent
    /// constant, where `T: Sync` makes it exist, wins over the trait's.
    struct IsSync<T>(core::marker::PhantomData<T>);
    trait NotSync {
        const SYNC: bool = false;
    }
    impl<T> NotSync for IsSync<T> {}
    impl<T: Sync> IsSync<T> {
        const SYNC: bool = true;
    }

    /// A matrix is shared between threads only where its elements may be: never for
    /// elements that are not `Sync` (a blanket `Sync` for any `T` said yes).
    #[test]
    fn strided_matrices_are_sync_only_for_sync_elements() {
        let answers = [
            IsSync::<Strided<*const bf16>>::SYNC,
            IsSync::<Strided<*mut bf16>>::SYNC,
            IsSync::<Strided<*const core::cell::Cell<bf16>>>::SYNC,
            IsSync::<Strided<*mut core::cell::Cell<bf16>>>::SYNC,
        ];
        assert_eq!(answers, [true, true, false, false]);
    }
}
