//! The attention in training on the CPU without `[batch, heads, seq, seq]` buffers, for long
//! sequences (issue 37): FlashAttention's plan in blocks of query rows. Forward, each block's
//! scores, softmax and product with the values are computed and dropped, keeping only the
//! output and each query row's softmax maximum and sum. Backward, each block's probabilities
//! are computed again from them (FlashAttention 2's backward pass, with the row's
//! `Σ dP·P` as `dO·O`). A block spans all keys: on a CPU its `rows × seq` scores stay in the
//! caches for every length a BERT family reads, so the keys need no tiles and no online
//! softmax.
//!
//! It is the same computation as `crate::ops::self_attention`'s naive path: scores divided by
//! `divisor`, masked with the most negative float, softmax, dropout on the probabilities drawn
//! from the same ChaCha8 words of the same seed (`crate::dropout::fill_mask`), so with one seed
//! both paths drop the same probabilities and agree up to the order of float sums. Inputs of
//! 16-bit floats are computed in f32, and the output and gradients cast back.

use std::fmt;

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::NoCheckpointing},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{Bool, DType, Device, FloatDType, Tensor, TensorData};
use burn_flex::ops::unary::exp_f32;
use rayon::prelude::*;

use crate::device::is_cpu_backend;
use crate::dropout::{fill_mask, mask_seed};

/// Query rows per block: a block's scores, probabilities and their gradients are four
/// `BLOCK × seq` buffers per thread.
const BLOCK: usize = 64;

/// The length from which the blocked path runs: from 128 keys it was faster than the naive
/// path, and on MRPC's batches (rows of up to about 100) as fast (BENCHMARKS.md, "Long
/// sequences"); the course's batches keep the naive path, the reference of the tests.
const FROM_LENGTH: usize = 128;

/// Whether [`attention`] takes `seq` keys on `device`: training on a CPU backend (an autodiff
/// device) at a length [`is_blocked`].
pub(crate) fn applies(device: &Device, seq: usize) -> bool {
    is_blocked(seq) && device.is_autodiff() && is_cpu_backend(device)
}

/// Whether training on the CPU runs the attention of `seq` keys in blocks.
pub(crate) fn is_blocked(seq: usize) -> bool {
    seq >= FROM_LENGTH
}

/// `softmax(q·kᵀ / divisor, masked)·v`, dropping each probability with probability
/// `1 - keep` where `keep` is given, with its gradients for `q`, `k` and `v`; computed in
/// blocks of query rows, keeping no `seq × seq` buffer.
///
/// # Shapes
///
/// `q`, `k`, `v` `[batch, heads, seq, dim]`; `mask` (true at the keys a query does not see)
/// `[batch, 1, 1, seq]` or `[batch, 1, seq, seq]`; the output is `[batch, heads, seq, dim]`.
pub(crate) fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4, Bool>,
    divisor: f64,
    keep: Option<f64>,
) -> Tensor<4> {
    let [batch, heads, seq, dim] = q.dims();
    let device = q.device();
    let mask_rows = mask.dims()[2];
    let mut saved = Saved {
        q: host(q.clone()),
        k: host(k.clone()),
        v: host(v.clone()),
        mask: mask.into_data().iter::<bool>().collect(),
        mask_rows,
        shape: [batch, heads, seq, dim],
        divisor: divisor as f32,
        dropout: keep.map(|keep| (mask_seed(&device), keep)),
        dtype: q.dtype(),
        output: Vec::new(),
        max: Vec::new(),
        sum: Vec::new(),
    };
    saved.forward();
    let output = |device: &Device| {
        Tensor::<4>::from_data(TensorData::new(saved.output.clone(), saved.shape), device)
            .cast(saved.dtype)
    };
    let inputs = [q, k, v];
    if !inputs.iter().any(Tensor::is_tracked) {
        return output(&device);
    }
    let inner = output(&device.clone().without_autodiff());
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // still the unit tests' backend, as the project intends
    if crate::recompute::is_on::<burn::backend::NdArray, 4, 3>(&inputs) {
        return tracked::<burn::backend::NdArray>(inputs, inner, saved);
    }
    tracked::<burn::backend::Flex>(inputs, inner, saved)
}

/// `x` on the host, in f32.
fn host(x: Tensor<4>) -> Vec<f32> {
    x.without_autodiff()
        .cast(FloatDType::F32)
        .into_data()
        .try_into_vec::<f32>()
        .expect("a tensor cast to f32 holds f32")
}

/// `output` (on `B`) as the node of the attention of `inputs` in `Autodiff<B>`'s graph.
fn tracked<B>(inputs: [Tensor<4>; 3], output: Tensor<4>, saved: Saved) -> Tensor<4>
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<Autodiff<B>> + DispatchKindConversion<B>,
{
    let inputs = inputs.map(|x| {
        x.try_into_primitive::<Autodiff<B>>()
            .unwrap_or_else(|e| panic!("the attention's operands are on one CPU backend: {e:?}"))
    });
    let node = <AttentionBackward as Backward<B, 3>>::prepare::<NoCheckpointing>(
        AttentionBackward,
        inputs.each_ref().map(|x| x.node()),
    );
    let output = output
        .try_into_primitive::<B>()
        .unwrap_or_else(|e| panic!("the output is on the operands' backend: {e:?}"));
    let output = match node.compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive::<Autodiff<B>>(output)
}

/// The backward pass of [`attention`].
#[derive(Debug)]
struct AttentionBackward;

impl<B> Backward<B, 3> for AttentionBackward
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = Tensor::<4>::from_primitive::<B>(grads.consume::<B>(&ops.node));
        let device = output_grad.device();
        let saved = ops.state;
        let input_grads = saved.backward(&host(output_grad));
        for (parent, grad) in ops.parents.iter().zip(input_grads) {
            if let Some(parent) = parent {
                let grad = Tensor::<4>::from_data(TensorData::new(grad, saved.shape), &device)
                    .cast(saved.dtype)
                    .try_into_primitive::<B>()
                    .unwrap_or_else(|e| panic!("a gradient on the backend it was made on: {e:?}"));
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

/// An attention's operands on the host in f32, `[batch × heads, seq, dim]` each, its output
/// and each query row's softmax maximum and sum: what its backward pass computes from.
#[derive(Clone)]
struct Saved {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// True at the keys a query does not see, `[batch, mask_rows, seq]`.
    mask: Vec<bool>,
    /// 1 where every query sees the same keys (padding), `seq` where they differ.
    mask_rows: usize,
    /// `[batch, heads, seq, dim]`.
    shape: [usize; 4],
    divisor: f32,
    /// The seed of the probabilities' dropout mask and the probability of keeping one.
    dropout: Option<(u64, f64)>,
    /// The operands' float type, which the output and the gradients take.
    dtype: DType,
    output: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saved")
            .field("shape", &self.shape)
            .field("mask_rows", &self.mask_rows)
            .field("dropout", &self.dropout)
            .finish_non_exhaustive()
    }
}

impl Saved {
    /// Computes the output and the rows' softmax statistics, head by head on every core.
    fn forward(&mut self) {
        let [batch, heads, seq, dim] = self.shape;
        let mut output = vec![0.0; batch * heads * seq * dim];
        let mut max = vec![0.0; batch * heads * seq];
        let mut sum = vec![0.0; batch * heads * seq];
        output
            .par_chunks_mut(seq * dim)
            .zip(max.par_chunks_mut(seq))
            .zip(sum.par_chunks_mut(seq))
            .enumerate()
            // The blocks' buffers, once per piece of work rayon hands a thread.
            .for_each_init(
                || [vec![0.0; BLOCK * seq], vec![0.0; BLOCK * seq]],
                |[probabilities, drop_mask], (head, ((output, max), sum))| {
                    for start in (0..seq).step_by(BLOCK) {
                        let rows = BLOCK.min(seq - start);
                        let probabilities = &mut probabilities[..rows * seq];
                        self.scores(head, start, probabilities);
                        for (row, scores) in probabilities.chunks_mut(seq).enumerate() {
                            (max[start + row], sum[start + row]) = softmax(scores);
                        }
                        if let Some(drop_mask) = self.drop_mask(head, start, drop_mask) {
                            multiply(probabilities, drop_mask);
                        }
                        matmul(
                            &mut output[start * dim..(start + rows) * dim],
                            Matrix::rows(probabilities, seq),
                            Matrix::rows(self.head(&self.v, head), dim),
                            [rows, seq, dim],
                            false,
                        );
                    }
                },
            );
        (self.output, self.max, self.sum) = (output, max, sum);
    }

    /// The gradients of `q`, `k` and `v` from the output's, `output_grad`, head by head on
    /// every core.
    fn backward(&self, output_grad: &[f32]) -> [Vec<f32>; 3] {
        let [batch, heads, seq, dim] = self.shape;
        let len = batch * heads * seq * dim;
        let (mut q_grad, mut k_grad, mut v_grad) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        q_grad
            .par_chunks_mut(seq * dim)
            .zip(k_grad.par_chunks_mut(seq * dim))
            .zip(v_grad.par_chunks_mut(seq * dim))
            .enumerate()
            .for_each_init(
                || std::array::from_fn(|_| vec![0.0; BLOCK * seq]),
                |[probabilities, dropped, drop_mask, grad]: &mut [Vec<f32>; 4],
                 (head, ((q_grad, k_grad), v_grad))| {
                    let (q, k, v) = (
                        self.head(&self.q, head),
                        self.head(&self.k, head),
                        self.head(&self.v, head),
                    );
                    let (output, output_grad) =
                        (self.head(&self.output, head), self.head(output_grad, head));
                    for start in (0..seq).step_by(BLOCK) {
                        let rows = BLOCK.min(seq - start);
                        let block = start * dim..(start + rows) * dim;
                        let probabilities = &mut probabilities[..rows * seq];
                        let grad = &mut grad[..rows * seq];
                        self.scores(head, start, probabilities);
                        for (row, scores) in probabilities.chunks_mut(seq).enumerate() {
                            let index = head * seq + start + row;
                            let (max, inverse) = (self.max[index], 1.0 / self.sum[index]);
                            scores
                                .iter_mut()
                                .for_each(|x| *x = exp_f32(*x - max) * inverse);
                        }
                        let drop_mask = self.drop_mask(head, start, drop_mask);
                        let dropped: &[f32] = match drop_mask {
                            Some(drop_mask) => {
                                let dropped = &mut dropped[..rows * seq];
                                dropped.copy_from_slice(probabilities);
                                multiply(dropped, drop_mask);
                                dropped
                            }
                            None => probabilities,
                        };
                        // v_grad += droppedᵀ · output_grad
                        matmul(
                            v_grad,
                            Matrix::rows(dropped, seq).transposed(),
                            Matrix::rows(&output_grad[block.clone()], dim),
                            [seq, rows, dim],
                            true,
                        );
                        // The dropped probabilities' gradient, output_grad · vᵀ, then the scores'.
                        matmul(
                            grad,
                            Matrix::rows(&output_grad[block.clone()], dim),
                            Matrix::rows(v, dim).transposed(),
                            [rows, dim, seq],
                            false,
                        );
                        if let Some(drop_mask) = drop_mask {
                            multiply(grad, drop_mask);
                        }
                        for row in 0..rows {
                            let token = (start + row) * dim..(start + row + 1) * dim;
                            // Σ_j P·dP over the row, which is output·output_grad (dropout's
                            // scale included).
                            let dot: f32 = output[token.clone()]
                                .iter()
                                .zip(&output_grad[token])
                                .map(|(o, g)| o * g)
                                .sum();
                            let masked = self.mask_row(head, start + row);
                            let probabilities = &probabilities[row * seq..(row + 1) * seq];
                            for ((g, &p), &masked) in grad[row * seq..(row + 1) * seq]
                                .iter_mut()
                                .zip(probabilities)
                                .zip(masked)
                            {
                                // Masked scores were filled in, so their gradient is 0 (a query
                                // that sees no key weighs every key, and would give them one).
                                *g = if masked {
                                    0.0
                                } else {
                                    p * (*g - dot) / self.divisor
                                };
                            }
                        }
                        // q_grad = grad · k, k_grad += gradᵀ · q
                        matmul(
                            &mut q_grad[block.clone()],
                            Matrix::rows(grad, seq),
                            Matrix::rows(k, dim),
                            [rows, seq, dim],
                            false,
                        );
                        matmul(
                            k_grad,
                            Matrix::rows(grad, seq).transposed(),
                            Matrix::rows(&q[block], dim),
                            [seq, rows, dim],
                            true,
                        );
                    }
                },
            );
        [q_grad, k_grad, v_grad]
    }

    /// Head `head`'s `[seq, dim]` of a `[batch × heads, seq, dim]` tensor.
    fn head<'a>(&self, x: &'a [f32], head: usize) -> &'a [f32] {
        let [_, _, seq, dim] = self.shape;
        &x[head * seq * dim..(head + 1) * seq * dim]
    }

    /// The mask of query `query` of head `head`: true at the keys it does not see.
    fn mask_row(&self, head: usize, query: usize) -> &[bool] {
        let [_, heads, seq, _] = self.shape;
        let row = if self.mask_rows == 1 { 0 } else { query };
        let start = ((head / heads) * self.mask_rows + row) * seq;
        &self.mask[start..start + seq]
    }

    /// The scaled, masked scores of the queries from `start` of head `head` against every key,
    /// into `scores` (`rows × seq`), as the naive path computes them.
    fn scores(&self, head: usize, start: usize, scores: &mut [f32]) {
        let [_, _, seq, dim] = self.shape;
        let rows = scores.len() / seq;
        matmul(
            scores,
            Matrix::rows(
                &self.head(&self.q, head)[start * dim..(start + rows) * dim],
                dim,
            ),
            Matrix::rows(self.head(&self.k, head), dim).transposed(),
            [rows, dim, seq],
            false,
        );
        for (row, scores) in scores.chunks_mut(seq).enumerate() {
            for (score, &masked) in scores.iter_mut().zip(self.mask_row(head, start + row)) {
                // transformers adds the most negative float at masked keys.
                *score = if masked {
                    f32::MIN
                } else {
                    *score / self.divisor
                };
            }
        }
    }

    /// The dropout mask of the probabilities of the queries from `start` of head `head`, in
    /// `buffer`, where there is dropout: the words the whole `[batch, heads, seq, seq]` mask
    /// gives them.
    fn drop_mask<'a>(&self, head: usize, start: usize, buffer: &'a mut [f32]) -> Option<&'a [f32]> {
        let (seed, keep) = self.dropout?;
        let seq = self.shape[2];
        let rows = BLOCK.min(seq - start);
        let mask = &mut buffer[..rows * seq];
        fill_mask(mask, seed, keep, (head * seq + start) * seq);
        Some(mask)
    }
}

/// `scores` replaced by their softmax; returns their maximum and the sum of their exponentials
/// less it, from which the backward pass computes the same probabilities. As flex's softmax:
/// the maximum subtracted, the sum in lanes, the row multiplied by its inverse.
fn softmax(scores: &mut [f32]) -> (f32, f32) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |max, &x| max.max(x));
    scores.iter_mut().for_each(|x| *x = exp_f32(*x - max));
    let mut lanes = [0.0f32; 16];
    let mut chunks = scores.chunks_exact(16);
    for chunk in &mut chunks {
        lanes
            .iter_mut()
            .zip(chunk)
            .for_each(|(lane, &x)| *lane += x);
    }
    let sum = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inverse = 1.0 / sum;
    scores.iter_mut().for_each(|x| *x *= inverse);
    (max, sum)
}

/// `x *= mask`, element by element.
fn multiply(x: &mut [f32], mask: &[f32]) {
    x.iter_mut().zip(mask).for_each(|(x, &m)| *x *= m);
}

/// A matrix in a slice: element `(i, j)` at `i × row + j × column`.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    row: usize,
    column: usize,
}

impl<'a> Matrix<'a> {
    /// Rows of `width` one after another.
    fn rows(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            row: width,
            column: 1,
        }
    }

    /// The transposed matrix, a view of the same elements.
    fn transposed(self) -> Self {
        Self {
            row: self.column,
            column: self.row,
            ..self
        }
    }

    /// Whether every element of a `rows × columns` matrix lies in `data`.
    fn holds(&self, rows: usize, columns: usize) -> bool {
        rows == 0
            || columns == 0
            || (rows - 1) * self.row + (columns - 1) * self.column < self.data.len()
    }
}

/// `output = a·b`, or `output += a·b` where `accumulate`, with `a` `m × k`, `b` `k × n` and
/// `output` `m × n` in rows: gemm, the product flex runs, on the calling thread (the heads run
/// on every core).
fn matmul(output: &mut [f32], a: Matrix, b: Matrix, [m, k, n]: [usize; 3], accumulate: bool) {
    assert!(
        output.len() >= m * n && a.holds(m, k) && b.holds(k, n),
        "a {m}×{k} by {k}×{n} product outside its slices"
    );
    // SAFETY: the assertion keeps every element gemm reads (`a`, `b`) and writes (`output`, with
    // row stride n) inside the three slices, and `output` is borrowed mutably alone.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            output.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.column as isize,
            a.row as isize,
            b.data.as_ptr(),
            b.column as isize,
            b.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dropout::seeding;
    use crate::ops::{dropout, masked_softmax};
    use burn::nn::DropoutConfig;
    use burn::tensor::Distribution;

    /// Both CPU backends, where the blocked path runs.
    fn devices() -> Vec<Device> {
        ["flex", "ndarray"]
            .into_iter()
            .map(|name| crate::parse_device(name).unwrap().autodiff())
            .collect()
    }

    /// The naive path of `crate::ops::self_attention` before its heads are merged.
    fn naive(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Tensor<4, Bool>,
        keep: Option<f64>,
    ) -> Tensor<4> {
        let divisor = (q.dims()[3] as f64).sqrt();
        let probabilities = masked_softmax(q.matmul(k.transpose()), mask, divisor);
        let probabilities = match keep {
            Some(keep) => dropout(&DropoutConfig::new(1.0 - keep).init(), probabilities),
            None => probabilities,
        };
        probabilities.matmul(v)
    }

    /// The output and the gradients of `q`, `k` and `v` of `Σ output × weights`.
    fn pass(
        attend: impl FnOnce(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
        inputs: &[Tensor<4>; 3],
        weights: &Tensor<4>,
    ) -> Vec<Vec<f32>> {
        let inputs = inputs.clone().map(|x| x.detach().require_grad());
        let [q, k, v] = inputs.clone();
        let output = attend(q, k, v);
        let grads = (output.clone() * weights.clone()).sum().backward();
        let mut values = vec![host(output)];
        values.extend(
            inputs
                .iter()
                .map(|x| host(x.grad(&grads).expect("a gradient"))),
        );
        values
    }

    fn assert_close(actual: &[Vec<f32>], expected: &[Vec<f32>], tolerance: f32, what: &str) {
        for (name, (actual, expected)) in ["output", "q", "k", "v"]
            .iter()
            .zip(actual.iter().zip(expected))
        {
            let scale = expected.iter().fold(0f32, |m, x| m.max(x.abs()));
            let error = actual
                .iter()
                .zip(expected)
                .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
            assert!(
                error <= tolerance * scale,
                "{what}: {name} differs by {error:e} (largest value {scale:e})"
            );
        }
    }

    /// `[batch, 1, rows, seq]`, true at masked keys: the second sequence's last three keys
    /// are padding; with `rows == seq`, each query also sees only keys within 2 of it (as
    /// ModernBERT's sliding window) and the second sequence's first query sees none.
    fn mask(seq: usize, rows: usize, device: &Device) -> Tensor<4, Bool> {
        let values: Vec<bool> = (0..2 * rows * seq)
            .map(|index| {
                let (batch, query, key) = (index / (rows * seq), index / seq % rows, index % seq);
                let padding = batch == 1 && key + 3 >= seq;
                let window = rows > 1 && query.abs_diff(key) > 2;
                let blind = rows > 1 && batch == 1 && query == 0;
                padding || window || blind
            })
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 1, rows, seq]), device)
    }

    /// The blocked path's output and gradients equal the naive path's at lengths below, at and
    /// above a block, with padding, with a mask per query where one query sees no key, and
    /// with dropout, whose mask is the naive path's for the same seed.
    #[test]
    fn blocks_give_the_naive_paths_output_and_gradients() {
        let _turn = seeding();
        for device in devices() {
            for seq in [5, BLOCK, 2 * BLOCK + 3] {
                device.seed(seq as u64);
                let shape = [2, 3, seq, 8];
                let random = || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let inputs = [random(), random(), random()];
                let weights = random();
                for rows in [1, seq] {
                    for keep in [None, Some(0.75)] {
                        let what =
                            format!("{device:?}, seq {seq}, mask rows {rows}, keep {keep:?}");
                        let mask = mask(seq, rows, &device);
                        device.seed(7);
                        let expected = pass(
                            |q, k, v| naive(q, k, v, mask.clone(), keep),
                            &inputs,
                            &weights,
                        );
                        device.seed(7);
                        let divisor = (8f64).sqrt();
                        let actual = pass(
                            |q, k, v| attention(q, k, v, mask.clone(), divisor, keep),
                            &inputs,
                            &weights,
                        );
                        assert_close(&actual, &expected, 1e-5, &what);
                    }
                }
            }
        }
    }

    /// bf16 operands give bf16 results near the f32 ones (computed in f32, rounded once).
    #[test]
    fn half_precision_operands_give_their_type() {
        let device = crate::parse_device("flex").unwrap().autodiff();
        let shape = [1, 2, 70, 8];
        let random = || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let inputs = [random(), random(), random()];
        let weights = random();
        let mask = mask(70, 1, &device).narrow(0, 1, 1);
        let attend = |inputs: &[Tensor<4>; 3]| {
            pass(
                |q, k, v| {
                    let output = attention(q, k, v, mask.clone(), 8f64.sqrt(), None);
                    assert_eq!(output.dtype(), inputs[0].dtype());
                    output
                },
                inputs,
                &weights.clone().cast(inputs[0].dtype()),
            )
        };
        let half = inputs.clone().map(|x| x.cast(FloatDType::BF16));
        assert_close(&attend(&half), &attend(&inputs), 2e-2, "bf16");
    }
}
