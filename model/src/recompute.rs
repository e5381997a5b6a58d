//! Activation checkpointing by layer (`--gradient-checkpointing`), as transformers'
//! `gradient_checkpointing_enable()` wraps each encoder layer in `torch.utils.checkpoint`: a
//! checkpointed layer keeps only its inputs for the backward pass, and runs again there.
//!
//! Burn 0.22's checkpointing strategies choose per operation: its balanced strategy keeps the
//! output of every compute-bound operation (each matrix product) and recomputes the
//! memory-bound ones between them, so most of a layer's activations stay alive
//! (BENCHMARKS.md, "Long sequences and activation checkpointing"). Here a whole layer is one
//! autodiff node instead. Forward, the layer runs without a graph. Backward, it runs again
//! from its inputs with a graph of its own, whose backward pass from the node's output
//! gradient gives the gradients of the inputs (handed to the outer graph) and of the layer's
//! parameters (registered under the parameters' own nodes, where `GradientsParams` finds
//! them). Dropout draws the same masks both times: `crate::dropout` records the draws its
//! masks start from and replays them.

use std::fmt;
use std::marker::PhantomData;

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::NoCheckpointing},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{Backend, DispatchKindConversion, DispatchTensor};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::dropout;

/// `forward(layer, inputs)`, checkpointed when `checkpointing` is on and an input tracks
/// gradients: the result and every gradient are the same, and only `inputs` are kept for the
/// backward pass, where the layer runs again.
///
/// A float tensor that carries gradients into the layer must be one of `inputs`; `forward`
/// may capture masks, layouts and tensors made from no parameter (their graph is not the
/// layer's).
///
/// # Shapes
///
/// The inputs and the output are the layer's own, each of rank 3.
pub fn layer<M, F, const N: usize>(
    checkpointing: bool,
    layer: &M,
    inputs: [Tensor<3>; N],
    forward: F,
) -> Tensor<3>
where
    M: Module + 'static,
    F: Fn(&M, [Tensor<3>; N]) -> Tensor<3> + Clone + Send + 'static,
{
    if !checkpointing || !inputs.iter().any(Tensor::is_tracked) {
        return forward(layer, inputs);
    }
    #[cfg(feature = "flex")]
    if is_on::<burn::backend::Flex, 3, N>(&inputs) {
        return checkpointed::<burn::backend::Flex, M, F, N>(layer, forward, inputs);
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // still the unit tests' backend, as the project intends
    if is_on::<burn::backend::NdArray, 3, N>(&inputs) {
        return checkpointed::<burn::backend::NdArray, M, F, N>(layer, forward, inputs);
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if is_on::<burn::backend::Cube, 3, N>(&inputs) {
        return checkpointed::<burn::backend::Cube, M, F, N>(layer, forward, inputs);
    }
    unreachable!(
        "tracked tensors are on a backend compiled in (flex, ndarray, CubeCL), without Burn's \
         own checkpointing strategies, which burnbert does not use"
    )
}

/// A layer and how it runs: what the backward pass runs again.
#[derive(Clone)]
struct Recompute<M, F> {
    layer: M,
    forward: F,
}

/// Whether `inputs` are tensors of `Autodiff<B>` without Burn's own checkpointing.
pub(crate) fn is_on<B, const D: usize, const N: usize>(inputs: &[Tensor<D>; N]) -> bool
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<Autodiff<B>>,
{
    inputs
        .iter()
        .all(|x| x.clone().try_into_primitive::<Autodiff<B>>().is_ok())
}

/// The layer as one node of `Autodiff<B>`'s graph, run without a graph of its own.
fn checkpointed<B, M, F, const N: usize>(layer: &M, forward: F, inputs: [Tensor<3>; N]) -> Tensor<3>
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<Autodiff<B>> + DispatchKindConversion<B>,
    M: Module + 'static,
    F: Fn(&M, [Tensor<3>; N]) -> Tensor<3> + Clone + Send + 'static,
{
    // Visited first, as reading a parameter initialises it where it is lazy: the copies below
    // then hold its value, and its gradient goes to its node.
    let mut nodes = ParamNodes::<B>(Vec::new(), PhantomData);
    layer.visit(&mut nodes);
    let untracked = layer.clone().no_grad();
    let detached = inputs.clone().map(Tensor::detach);
    let (output, draws) = dropout::recorded(|| forward(&untracked, detached));
    let output = primitive::<Autodiff<B>>(output).into_primitive();
    let recompute = Recompute {
        layer: layer.clone(),
        forward,
    };
    let inputs = inputs.map(primitive::<Autodiff<B>>);
    // The nodes are taken before the primitives are moved out, as Burn's `prepare` asks.
    let guards = inputs.each_ref().map(|x| x.node());
    let inputs = inputs.map(|x| x.into_primitive());
    let node = <LayerBackward<M, F> as Backward<B, N>>::prepare::<NoCheckpointing>(
        LayerBackward(PhantomData),
        guards,
    );
    let output = match node.compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                recompute,
                inputs,
                draws,
                params: nodes.0,
            },
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive::<Autodiff<B>>(output)
}

/// The float primitive of `x` on backend `B`, which the caller checked.
fn primitive<B>(x: Tensor<3>) -> B::FloatTensorPrimitive
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<B>,
{
    x.try_into_primitive::<B>()
        .unwrap_or_else(|e| panic!("a checkpointed layer's tensors are on one backend: {e:?}"))
}

/// The backward pass of a checkpointed layer.
struct LayerBackward<M, F>(PhantomData<fn() -> (M, F)>);

impl<M, F> fmt::Debug for LayerBackward<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LayerBackward")
    }
}

/// What the backward pass needs: the layer, its inputs, the draws its dropout masks started
/// from, and its parameters' nodes in the outer graph in visiting order (`None` where a
/// parameter is frozen).
struct State<B: Backend, M, F, const N: usize> {
    recompute: Recompute<M, F>,
    inputs: [B::FloatTensorPrimitive; N],
    draws: Vec<Tensor<1>>,
    params: Vec<Option<NodeId>>,
}

impl<B: Backend, M: Clone, F: Clone, const N: usize> Clone for State<B, M, F, N> {
    fn clone(&self) -> Self {
        Self {
            recompute: self.recompute.clone(),
            inputs: self.inputs.clone(),
            draws: self.draws.clone(),
            params: self.params.clone(),
        }
    }
}

impl<B: Backend, M, F, const N: usize> fmt::Debug for State<B, M, F, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("draws", &self.draws.len())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<B, M, F, const N: usize> Backward<B, N> for LayerBackward<M, F>
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<Autodiff<B>> + DispatchKindConversion<B>,
    M: Module + 'static,
    F: Fn(&M, [Tensor<3>; N]) -> Tensor<3> + Clone + Send + 'static,
{
    type State = State<B, M, F, N>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let State {
            recompute,
            inputs,
            draws,
            params,
        } = ops.state;
        let output_grad = grads.consume::<B>(&ops.node);
        // The layer again, from fresh leaves: its graph is its own, apart from the outer one.
        let inputs = inputs.map(|x| {
            Tensor::<3>::from_primitive::<B>(x)
                .autodiff()
                .require_grad()
        });
        let layer = recompute.layer.map(&mut FreshLeaves);
        let output = dropout::replayed(draws, || (recompute.forward)(&layer, inputs.clone()));
        let output_grad = Tensor::<3>::from_primitive::<B>(output_grad).autodiff();
        let inner = (output * output_grad).sum().backward();
        for (parent, input) in ops.parents.iter().zip(inputs) {
            if let (Some(parent), Some(grad)) = (parent, input.grad(&inner)) {
                grads.register::<B>(parent.id, primitive::<B>(grad));
            }
        }
        layer.visit(&mut RegisterGrads::<B, _> {
            inner: &inner,
            outer: grads,
            params: params.into_iter(),
            backend: PhantomData,
        });
    }
}

/// The nodes of a module's parameters in `Autodiff<B>`'s graph, in visiting order.
struct ParamNodes<B>(Vec<Option<NodeId>>, PhantomData<B>);

impl<B> ModuleVisitor for ParamNodes<B>
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<Autodiff<B>>,
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let node = match tensor.is_tracked() {
            true => tensor
                .try_into_primitive::<Autodiff<B>>()
                .ok()
                .map(|x| x.id()),
            false => None,
        };
        self.0.push(node);
    }
}

/// Each parameter as a new leaf with its value and id.
struct FreshLeaves;

impl ModuleMapper for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|tensor| tensor.detach().require_grad())
    }
}

/// Registers the gradients of a recomputed layer's parameters, from its own graph's
/// `inner`, under the nodes `params` of the outer graph.
struct RegisterGrads<'a, B: Backend, P> {
    inner: &'a burn::tensor::Gradients,
    outer: &'a mut Gradients,
    params: P,
    backend: PhantomData<B>,
}

impl<B, P> ModuleVisitor for RegisterGrads<'_, B, P>
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<B>,
    P: Iterator<Item = Option<NodeId>>,
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let node = self
            .params
            .next()
            .expect("the recomputed layer has the layer's parameters");
        if let (Some(node), Some(grad)) = (node, param.val().grad(self.inner)) {
            let grad = grad
                .try_into_primitive::<B>()
                .unwrap_or_else(|e| panic!("a gradient on the layer's backend: {e:?}"));
            self.outer.register::<B>(node, grad);
        }
    }
}
