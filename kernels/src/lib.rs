//! burnbert's own CubeCL kernels for the GPU backends (CUDA, wgpu), each with its autodiff
//! node; a newcomer who does not care about GPUs can skip this crate: the model
//! (`burnbert-model`'s `ops.rs`) holds Burn's reference version of every operation here, and
//! that is what runs on the CPU.
//!
//! What is here, one kernel forward and one backward each:
//!
//! - [`layer_norm`]: LayerNorm over the last axis;
//! - [`add_norm`]: the "Add & Norm" after the attention and after the feed-forward network
//!   (bias, dropout, residual sum and LayerNorm in one);
//! - [`bias_gelu`]: the exact GELU with the bias of the dense layer before it;
//! - [`split_heads`] and [`merge_heads`]: the attention's heads, split (with their bias) and
//!   merged;
//! - [`masked_softmax`]: the attention's scaled, masked softmax;
//! - [`dropout`], its mask drawn on the device;
//! - [`adamw_step`]: AdamW's update of one parameter, in one kernel instead of Burn's fourteen;
//! - `Nccl` (with `cuda`): the sum of a flat buffer over the processes of a run, one per GPU,
//!   device to device, for their gradients;
//! - where they run: [`runs_own_kernels`] (`BURNBERT_GPU_KERNELS=0` turns them off),
//!   [`applies`] (which also asks the self-check: each kernel is compared with Burn's
//!   operations the first time a process uses a GPU, and switched off where it disagrees),
//!   and CubeCL's on-disk cache of compiled kernels ([`keep_compiled_kernels`]).
//!
//! Burn 0.22 builds each of these from primitive operations and differentiates each of them,
//! one kernel launch and one pass over memory apiece; its automatic fusion, which would merge
//! them, is off in burnbert (it compiled for minutes before a first step, BENCHMARKS.md, "GPU").
//! The row-wise kernels (LayerNorm, Add & Norm, softmax) run one cube of up to 128 units per
//! row, striding over it, with the row's sums and maxima meeting in shared memory; the others
//! take one unit per element. Arithmetic is f32 whatever the tensors' float type.
//!
//! # Features
//!
//! `wgpu` and `cuda` compile the kernels for those backends. With neither (the CPU-only
//! build) the crate needs no CubeCL: [`applies`] and [`runs_own_kernels`] are always false,
//! [`keep_compiled_kernels`] does nothing, and the operations exist with the same signatures
//! so that callers need no `#[cfg]`, but panic if called (no caller that checks [`applies`]
//! first reaches them).
//!
//! # Tests
//!
//! The kernels' tests run on wgpu, which CI provides through Mesa's lavapipe (a Vulkan driver
//! on the CPU), against Burn's operations on the CPU. With `cuda` too, a test per kernel file
//! compiles its kernels' CUDA C++ with NVRTC as cubecl-cuda would on an H100
//! (`src/cuda_source.rs`; `scripts/test` installs NVRTC and sets `BURNBERT_CUDA_TOOLKIT`).

use burn::tensor::{Bool, Device, Tensor};

// First, for its `assert_compiles!` macro, which the kernel files' tests use.
#[cfg(all(test, feature = "cuda", feature = "wgpu"))]
#[macro_use]
mod cuda_source;

mod switch;
pub use switch::{keep_compiled_kernels, runs_own_kernels};

#[cfg(feature = "gpu")]
mod adamw;
#[cfg(feature = "gpu")]
mod add_norm;
#[cfg(feature = "gpu")]
mod autodiff;
#[cfg(feature = "gpu")]
mod dropout;
#[cfg(feature = "gpu")]
mod gelu;
#[cfg(feature = "gpu")]
mod heads;
#[cfg(feature = "gpu")]
mod host;
#[cfg(feature = "gpu")]
mod layer_norm;
#[cfg(feature = "cuda")]
mod nccl;
#[cfg(feature = "cuda")]
pub use nccl::{Nccl, cuda_gpu, unique_id as nccl_unique_id};
#[cfg(feature = "gpu")]
mod reduce;
#[cfg(feature = "gpu")]
mod self_check;
#[cfg(feature = "gpu")]
mod softmax;

#[cfg(test)]
mod testing;

/// The body of each operation below: its module's function in a GPU build. In a CPU-only
/// build [`applies`] is false, so no caller that checks it reaches the body.
macro_rules! gpu_only {
    ($module:ident::$function:ident($($argument:expr),* $(,)?)) => {{
        #[cfg(feature = "gpu")]
        return $module::$function($($argument),*);
        #[cfg(not(feature = "gpu"))]
        {
            let _ = ($($argument,)*);
            unreachable!(concat!(
                "burnbert-kernels was built without `wgpu` or `cuda`: `applies` is false, so `",
                stringify!($function),
                "` is never called"
            ))
        }
    }};
}

/// burnbert's kernels, one per operation below, each of which [`applies`] or not on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    LayerNorm,
    AddNorm,
    BiasGelu,
    SplitHeads,
    MergeHeads,
    MaskedSoftmax,
    Dropout,
    AdamwStep,
}

impl Kernel {
    pub const ALL: [Kernel; 8] = [
        Kernel::LayerNorm,
        Kernel::AddNorm,
        Kernel::BiasGelu,
        Kernel::SplitHeads,
        Kernel::MergeHeads,
        Kernel::MaskedSoftmax,
        Kernel::Dropout,
        Kernel::AdamwStep,
    ];

    /// The name of its function in this crate: `layer_norm`, `add_norm`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kernel::LayerNorm => "layer_norm",
            Kernel::AddNorm => "add_norm",
            Kernel::BiasGelu => "bias_gelu",
            Kernel::SplitHeads => "split_heads",
            Kernel::MergeHeads => "merge_heads",
            Kernel::MaskedSoftmax => "masked_softmax",
            Kernel::Dropout => "dropout",
            Kernel::AdamwStep => "adamw_step",
        }
    }
}

/// Whether `kernel` takes the place of Burn's operations on `device`: where the kernels run
/// ([`runs_own_kernels`]), on Burn's autodiff without its checkpointing strategies (the
/// kernels' nodes are written for that autodiff type; burnbert's own checkpointing,
/// `burnbert-model`'s `recompute`, uses none), and where the kernel agreed with Burn's
/// operations when the process first used the device (the self-check, `src/self_check.rs`).
/// Always false in a CPU-only build. Callers check it before the operation below.
pub fn applies(kernel: Kernel, device: &Device) -> bool {
    #[cfg(feature = "gpu")]
    {
        runs_own_kernels(device)
            && matches!(
                device.gradient_checkpointing_strategy(),
                None | Some(burn::tensor::GradientCheckpointingStrategy::Disabled)
            )
            && self_check::passes(kernel, device)
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (kernel, device);
        false
    }
}

/// LayerNorm of `input` over its last axis, `(x - mean) / sqrt(var + epsilon) * gamma + beta`
/// with the biased (two-pass) variance, as PyTorch; in `input`'s float type, to which gamma
/// and beta are cast. Differentiable when the device tracks gradients.
///
/// # Shapes
///
/// `input` `[..., width]`, `gamma` and `beta` `[width]`; the output is `input`'s shape.
pub fn layer_norm<const D: usize>(
    input: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    gpu_only!(layer_norm::layer_norm(input, gamma, beta, epsilon))
}

/// "Add & Norm": `LayerNorm(dropout(hidden + bias) + residual)` over the last axis, with
/// gamma, beta and epsilon, and `dropout`'s `(seed, keep)` keeping each element with
/// probability `keep` (`None`: no dropout; dropout needs a device that tracks gradients); in
/// `hidden`'s float type, to which the others are cast. The dropout mask is [`dropout`]'s.
///
/// # Shapes
///
/// `hidden` and `residual` `[..., width]`, `bias`, `gamma` and `beta` `[width]`; the output
/// is `hidden`'s shape.
pub fn add_norm<const D: usize>(
    hidden: Tensor<D>,
    bias: Tensor<1>,
    residual: Tensor<D>,
    gamma_beta: [Tensor<1>; 2],
    epsilon: f64,
    dropout: Option<(Tensor<1>, f64)>,
) -> Tensor<D> {
    gpu_only!(add_norm::add_norm(
        hidden, bias, residual, gamma_beta, epsilon, dropout
    ))
}

/// The exact GELU of `x + bias`, `v · Φ(v)` with `Φ(v) = (1 + erf(v / √2)) / 2`, in `x`'s
/// float type (to which `bias` is cast); its backward is the exact derivative, as PyTorch's.
/// The bias is the feed-forward network's first dense layer's, whose matrix product comes
/// without it.
///
/// # Shapes
///
/// `x` `[..., width]`, `bias` `[width]`; the output is `x`'s shape.
pub fn bias_gelu<const D: usize>(x: Tensor<D>, bias: Tensor<1>) -> Tensor<D> {
    gpu_only!(gelu::bias_gelu(x, bias))
}

/// `x + bias` as contiguous heads, in `x`'s float type (to which `bias` is cast): a dense
/// layer's product split into the attention's heads with the layer's bias added. cubek's
/// matrix product copies a head-split view (its batch dimensions out of order) before every
/// product that reads it, forward and backward.
///
/// # Shapes
///
/// `x` `[batch, seq, heads × head_dim]`, `bias` `[heads × head_dim]`; the output is
/// `[batch, heads, seq, head_dim]`.
pub fn split_heads(x: Tensor<3>, bias: Tensor<1>, heads: usize) -> Tensor<4> {
    gpu_only!(heads::split_heads(x, bias, heads))
}

/// Heads merged back into one row per token, the inverse of [`split_heads`] (without the
/// bias).
///
/// # Shapes
///
/// `x` `[batch, heads, seq, head_dim]`, any strides; the output is
/// `[batch, seq, heads × head_dim]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    gpu_only!(heads::merge_heads(x))
}

/// The attention's probabilities: `softmax(scores / divisor)` over the keys, with the keys
/// where `padding` is true weighing 0 (as transformers' most negative float gives them).
///
/// # Shapes
///
/// `scores` `[batch, heads, queries, keys]`, `padding` `[batch, 1, 1, keys]`; the output is
/// `scores`' shape.
pub fn masked_softmax(scores: Tensor<4>, padding: Tensor<4, Bool>, divisor: f64) -> Tensor<4> {
    gpu_only!(softmax::masked_softmax(scores, padding, divisor))
}

/// `x` with each element zeroed with probability `1 - keep` and the others scaled by
/// `1 / keep`. The mask is Philox4x32-10's stream for a 64-bit seed, one draw per element,
/// drawn again in the backward pass instead of kept; `seed` is one [`dropout_seed`] drew.
pub fn dropout<const D: usize>(x: Tensor<D>, seed: Tensor<1>, keep: f64) -> Tensor<D> {
    gpu_only!(dropout::dropout(x, seed, keep))
}

/// A seed for [`dropout`] and [`add_norm`]'s masks, drawn from Burn's generator on `device` (a
/// GPU), where it stays: `Device::seed` reproduces runs and nothing waits for the host. The
/// same seed gives the same mask, so a layer run again drops what it dropped.
pub fn dropout_seed(device: &Device) -> Tensor<1> {
    gpu_only!(dropout::seed(device))
}

/// The scalars of one AdamW step, computed once on the host for every element: `correction_1`
/// and `correction_2` are `1 - beta^t`, `decay` is `1 - lr × weight_decay`.
#[derive(Debug, Clone, Copy)]
pub struct StepScalars {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub correction_1: f32,
    pub correction_2: f32,
    pub decay: f32,
    pub lr: f32,
}

/// One AdamW step of a parameter, in one kernel launch that updates the parameter and both
/// moments in place, in the order of `burn::optim::AdamW`; returns them. A tensor that is
/// shared or not contiguous is copied first. The four tensors must be of one float type and
/// on a device where [`runs_own_kernels`].
///
/// # Shapes
///
/// `param`, `grad`, `moment_1` and `moment_2` of one shape, as are the three returned.
pub fn adamw_step<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moment_1: Tensor<D>,
    moment_2: Tensor<D>,
    scalars: &StepScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    gpu_only!(adamw::adamw_step(param, grad, moment_1, moment_2, scalars))
}
