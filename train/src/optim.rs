//! AdamW as transformers' examples set it up, on Burn's optimizer, plus global-norm
//! gradient clipping.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{
    AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, ModuleOptimizer,
    Optimizer,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

/// AdamW with decoupled weight decay on the weights, and none on biases and LayerNorm
/// parameters (the two parameter groups of transformers' `run_glue_no_trainer.py`).
/// betas (0.9, 0.999) and eps 1e-8 are `torch.optim.AdamW`'s defaults.
pub fn adamw(weight_decay: f64) -> ModuleOptimizer {
    ModuleOptimizer::from(AdamW::new(weight_decay as f32)).with_group(
        ParamGroup::from_any_predicates(vec!["bias", "layer_norm"]),
        AdamW::new(0.0),
        None,
    )
}

/// Burn's AdamW, with the update done in one pass over each parameter on the CPU backends.
///
/// Burn's AdamW is a chain of about fifteen tensor operations per parameter, each a pass
/// over memory, which the CPU backends run one at a time on one core: 76 ms of a 580 ms
/// MiniLM step at MRPC's shapes on the developers' 2-core machine (BENCHMARKS.md). Here the
/// same arithmetic, in the same order, runs as one loop over parameter, gradient and both
/// moments, split over the cores. GPU backends, and other float types, keep Burn's
/// version. The state is Burn's `AdamWState`, so checkpoints read either way.
#[derive(Clone)]
pub struct AdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    unfused: burn::optim::AdamW,
}

impl AdamW {
    fn new(weight_decay: f32) -> Self {
        let (beta_1, beta_2, epsilon) = (0.9, 0.999, 1e-8);
        let unfused = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            unfused,
        }
    }

    /// The step of `burn::optim::AdamW` (moments, bias correction, decay, update) as one
    /// loop over host memory.
    fn fused_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, AdamWState<D>) {
        let device = tensor.device();
        let shape = tensor.shape();
        let (time, mut moment_1, mut moment_2) = match state {
            Some(state) => (
                state.momentum.time + 1,
                host_f32(state.momentum.moment_1),
                host_f32(state.momentum.moment_2),
            ),
            None => {
                let zeros = vec![0.0; shape.num_elements()];
                (1, zeros.clone(), zeros)
            }
        };
        let (mut param, grad) = (host_f32(tensor), host_f32(grad));

        let (beta_1, beta_2, epsilon) = (self.beta_1, self.beta_2, self.epsilon);
        let correction_1 = 1.0 - beta_1.powi(time as i32);
        let correction_2 = 1.0 - beta_2.powi(time as i32);
        let decay = (1.0 - lr * self.weight_decay as f64) as f32;
        let lr = lr as f32;
        // Large enough that handing a chunk to another core pays off.
        const CHUNK: usize = 1 << 15;
        param
            .par_chunks_mut(CHUNK)
            .zip(moment_1.par_chunks_mut(CHUNK))
            .zip(moment_2.par_chunks_mut(CHUNK))
            .zip(grad.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    m[i] = m[i] * beta_1 + g[i] * (1.0 - beta_1);
                    v[i] = v[i] * beta_2 + g[i] * g[i] * (1.0 - beta_2);
                    let update = (m[i] / correction_1) / ((v[i] / correction_2).sqrt() + epsilon);
                    p[i] = p[i] * decay - update * lr;
                }
            });

        let on_device =
            |values: Vec<f32>| Tensor::from_data(TensorData::new(values, shape.clone()), &device);
        let state = AdamWState::new(AdaptiveMomentumState::new(
            time,
            on_device(moment_1),
            on_device(moment_2),
        ));
        (on_device(param), state)
    }
}

/// A tensor's values, taken without a copy where the backend allows (flex, when the
/// tensor is contiguous and not shared).
fn host_f32<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("the fused step takes f32 tensors only")
}

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let fused = burnbert_model::is_cpu_backend(&tensor.device())
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32;
        if fused {
            let (tensor, state) = self.fused_step(lr, tensor, grad, state);
            (tensor, Some(state))
        } else {
            self.unfused.step(lr, tensor, grad, state)
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        burn::optim::AdamW::to_device(state, device)
    }
}

/// The L2 norm of all gradients together, as `torch.nn.utils.clip_grad_norm_` computes it.
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    struct SumOfSquares<'a> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumOfSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                let squares = grad.square().sum();
                self.sum = Some(match self.sum.take() {
                    Some(sum) => sum + squares,
                    None => squares,
                });
            }
        }
    }
    let mut visitor = SumOfSquares { grads, sum: None };
    model.visit(&mut visitor);
    visitor
        .sum
        .map_or(0.0, |s| (s.into_scalar::<f32>() as f64).sqrt())
}

/// Scales all gradients by `factor`.
pub fn scale_grads<M: Module>(model: &M, grads: GradientsParams, factor: f64) -> GradientsParams {
    struct Scale {
        grads: GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, grad.mul_scalar(self.factor));
            }
        }
    }
    let mut visitor = Scale { grads, factor };
    model.visit(&mut visitor);
    visitor.grads
}

/// Clips gradients to a global L2 norm of at most `max_norm` (transformers'
/// `max_grad_norm`); returns the norm before clipping.
pub fn clip_grad_norm<M: Module>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = global_norm(model, &grads);
    // torch adds 1e-6 to the norm in the denominator.
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        (scale_grads(model, grads, coef), norm)
    } else {
        (grads, norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use serde_json::Value;

    /// A weight (decayed) and a bias (not decayed), like the two groups of the reference.
    #[derive(Module, Debug)]
    struct TwoGroups {
        weight: Param<Tensor<1>>,
        bias: Param<Tensor<1>>,
    }

    fn floats(value: &Value) -> Vec<f32> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }

    fn tensor(values: Vec<f32>, device: &Device) -> Tensor<1> {
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), device)
    }

    fn values(tensor: Tensor<1>) -> Vec<f32> {
        tensor.into_data().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: lengths");
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-6 + 1e-5 * e.abs(),
                "{what}[{i}]: {a} vs {e}"
            );
        }
    }

    /// The fused CPU step gives Burn's AdamW's parameters and state, step after step, with
    /// and without weight decay, on a parameter longer than one chunk.
    #[test]
    fn fused_step_matches_burns_adamw() {
        let device = burnbert_model::parse_device("cpu").unwrap();
        let random = |n: usize| {
            Tensor::<1>::random([n], burn::tensor::Distribution::Normal(0.0, 1.0), &device)
        };
        for weight_decay in [0.0, 0.01] {
            let optimizer = AdamW::new(weight_decay);
            let n = 100_003;
            let (mut fused, mut unfused) = (random(n), None::<Tensor<1>>);
            let (mut fused_state, mut unfused_state) = (None, None);
            for step in 0..3 {
                let grad = random(n);
                let start = unfused.take().unwrap_or_else(|| fused.clone());
                let (param, state) =
                    optimizer
                        .unfused
                        .step(1e-3, start, grad.clone(), unfused_state.take());
                unfused = Some(param);
                unfused_state = state;
                let (param, state) = optimizer.fused_step(1e-3, fused, grad, fused_state.take());
                fused = param;
                let expected = unfused_state.as_ref().unwrap();
                assert_eq!(state.momentum.time, expected.momentum.time);
                for (what, actual, want) in [
                    ("param", &fused, unfused.as_ref().unwrap()),
                    ("m", &state.momentum.moment_1, &expected.momentum.moment_1),
                    ("v", &state.momentum.moment_2, &expected.momentum.moment_2),
                ] {
                    assert_close(
                        &values(actual.clone()),
                        &values(want.clone()),
                        &format!("decay {weight_decay} step {step} {what}"),
                    );
                }
                fused_state = Some(state);
            }
        }
    }

    /// Three AdamW steps against `torch.optim.AdamW` with two parameter groups, without and
    /// with `clip_grad_norm_(max_norm=1.0)`.
    #[test]
    fn matches_torch_adamw_and_clip_grad_norm() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/fixtures/adamw_reference.json"
        );
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let device = burnbert_model::parse_device("cpu").unwrap().autodiff();
        for (case, clip) in [("no_clip", None), ("clip_1.0", Some(1.0))] {
            let mut model = TwoGroups {
                weight: Param::from_tensor(tensor(floats(&reference["init_a"]), &device)),
                bias: Param::from_tensor(tensor(floats(&reference["init_b"]), &device)),
            };
            let mut optimizer = adamw(0.01);
            for (step, expected) in reference[case].as_array().unwrap().iter().enumerate() {
                let mut grads = GradientsParams::new();
                grads.register(
                    model.weight.id,
                    tensor(floats(&reference["grads_a"][step]), &device),
                );
                grads.register(
                    model.bias.id,
                    tensor(floats(&reference["grads_b"][step]), &device),
                );
                if let Some(max_norm) = clip {
                    let (clipped, norm) = clip_grad_norm(&model, grads, max_norm);
                    let want = expected["total_norm_before_clip"].as_f64().unwrap();
                    assert!((norm - want).abs() < 1e-5, "norm {norm} vs {want}");
                    assert_close(
                        &values(clipped.get::<1>(model.weight.id).unwrap()),
                        &floats(&expected["grad_a_after_clip"]),
                        "clipped a",
                    );
                    grads = clipped;
                }
                model = optimizer.step(1e-3, model, grads);
                assert_close(
                    &values(model.weight.val()),
                    &floats(&expected["a"]),
                    &format!("{case} step {step} a"),
                );
                assert_close(
                    &values(model.bias.val()),
                    &floats(&expected["b"]),
                    &format!("{case} step {step} b"),
                );
            }
        }
    }
}
