//! An operation with its own autodiff node, written once for every kernel: [`with_backward`].
//!
//! Burn's autodiff differentiates each primitive operation; a kernel that does the work of
//! several registers one node instead, whose `Backward` impl launches the backward kernel.

use burn::backend::Cube;
use burn::backend::autodiff::{
    Autodiff,
    checkpoint::strategy::NoCheckpointing,
    ops::{Backward, OpsKind},
};
use burn::tensor::{Bool, Tensor};
use burn_cubecl::tensor::CubeTensor;

/// The autodiff backend over CubeCL as the kernels take it (checked by `crate::applies`).
pub type Tracked = Autodiff<Cube, NoCheckpointing>;

/// A float tensor of any rank on a CubeCL device, as an input of [`with_backward`]: the CubeCL
/// tensor under it and, on a device that tracks gradients, its autodiff node.
pub enum Input {
    Plain(CubeTensor),
    Tracked(<Tracked as burn::backend::BackendTypes>::FloatTensorPrimitive),
}

impl<const D: usize> From<Tensor<D>> for Input {
    fn from(tensor: Tensor<D>) -> Self {
        match tensor.is_autodiff() {
            true => {
                Input::Tracked(tensor.try_into_primitive::<Tracked>().expect(
                    "an autodiff CubeCL tensor without checkpointing (checked by `applies`)",
                ))
            }
            false => Input::Plain(
                tensor
                    .try_into_primitive::<Cube>()
                    .expect("a CubeCL tensor (checked by `applies`)"),
            ),
        }
    }
}

impl Input {
    /// The CubeCL tensor, without the autodiff node: for a tensor that is no input of the
    /// operation's node (a random seed, say).
    pub fn into_primitive(self) -> CubeTensor {
        match self {
            Input::Plain(tensor) => tensor,
            Input::Tracked(tensor) => tensor.into_primitive(),
        }
    }
}

/// Runs `forward` on the CubeCL tensors of `inputs`, as one operation: on a device without
/// autodiff, on the tensors alone; on one with autodiff, as a node of the graph whose parents
/// are the inputs, in this order, and whose backward pass is `backward`, given the state that
/// `forward` returns beside the output (which is dropped where no input tracks gradients).
/// All inputs are on one device.
///
/// Every kernel's host function ends in it: the autodiff bookkeeping (Burn's
/// `prepare`/`compute_bound`/`stateful` and its tracked and untracked cases) lives here alone.
pub fn with_backward<B, const N: usize, const D: usize>(
    backward: B,
    inputs: [Input; N],
    forward: impl FnOnce([CubeTensor; N]) -> (CubeTensor, B::State),
) -> Tensor<D>
where
    B: Backward<Cube, N>,
{
    let tracked = matches!(inputs.first(), Some(Input::Tracked(_)));
    if !tracked {
        let primitives = inputs.map(|input| match input {
            Input::Plain(tensor) => tensor,
            Input::Tracked(_) => panic!("inputs of one operation on one device"),
        });
        return Tensor::from_primitive::<Cube>(forward(primitives).0);
    }
    let tensors = inputs.map(|input| match input {
        Input::Tracked(tensor) => tensor,
        Input::Plain(_) => panic!("inputs of one operation on one device"),
    });
    // The nodes are taken before the primitives are moved out, as Burn's `prepare` asks.
    let nodes = tensors.each_ref().map(|tensor| tensor.node());
    let primitives = tensors.map(|tensor| tensor.into_primitive());
    let output = match backward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (output, state) = forward(primitives);
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(primitives).0),
    };
    Tensor::from_primitive::<Tracked>(output)
}

/// The CubeCL tensor under a bool tensor, on a device with or without autodiff (which keeps
/// bool tensors as they are).
pub fn plain_bool<const D: usize>(tensor: Tensor<D, Bool>) -> CubeTensor {
    match tensor.device().is_autodiff() {
        true => tensor.try_into_primitive::<Tracked>(),
        false => tensor.try_into_primitive::<Cube>(),
    }
    .expect("a CubeCL bool tensor (checked by `applies`)")
}
