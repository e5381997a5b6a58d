//! AdamW as transformers' examples set it up, on Burn's optimizer, plus global-norm
//! gradient clipping.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{
    AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, ModuleOptimizer,
    Optimizer,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burnbert_kernels::StepScalars;
use rayon::prelude::*;

/// AdamW with decoupled weight decay on the weights, and none on biases and LayerNorm
/// parameters (the two parameter groups of transformers' `run_glue_no_trainer.py`, and its
/// `Trainer`'s).
/// betas (0.9, 0.999) and eps 1e-8 are `torch.optim.AdamW`'s defaults.
pub fn adamw(weight_decay: f64) -> ModuleOptimizer {
    ModuleOptimizer::from(AdamW::new(weight_decay as f32)).with_group(
        // LayerNorm's parameters are Burn's `gamma` and `beta` under any module name (BERT's
        // `LayerNorm`, DistilBERT's `sa_layer_norm`, ModernBERT's `mlp_norm`).
        ParamGroup::from_any_predicates(vec!["bias", "gamma", "beta"]),
        AdamW::new(0.0),
        None,
    )
}

/// Burn's AdamW, with the update done in one pass over each parameter on the CPU backends
/// and in one kernel per parameter on the GPU backends.
///
/// Burn's AdamW is a chain of about fifteen tensor operations per parameter, each a pass
/// over memory. The CPU backends run them one at a time on one core, and on a GPU each is a
/// kernel launch: a sizeable share of a step either way (BENCHMARKS.md). Here the same
/// arithmetic, in the same order, runs as one loop over parameter, gradient and both moments,
/// split over the cores, or as one CubeCL kernel (`burnbert_kernels::adamw_step`). Other
/// backends, and CPU tensors that are not f32, keep Burn's version. The state is Burn's
/// `AdamWState`, so checkpoints read either way.
#[derive(Clone)]
pub struct AdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    unfused: burn::optim::AdamW,
}

/// Where [`AdamW`] runs a parameter's update in one pass.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fused {
    /// One loop over host memory (CPU backends, f32).
    Host,
    /// One CubeCL kernel (GPU backends, any float type).
    #[cfg(feature = "gpu")]
    Cube,
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

    /// One loop or one kernel where the backend has one and all four tensors share one
    /// float type (f32 on the host); `None` leaves the step to Burn's AdamW.
    fn fused_route<const D: usize>(
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&AdamWState<D>>,
    ) -> Option<Fused> {
        let dtype = tensor.dtype();
        let one_dtype = grad.dtype() == dtype
            && state.is_none_or(|state| {
                state.momentum.moment_1.dtype() == dtype && state.momentum.moment_2.dtype() == dtype
            });
        let device = tensor.device();
        if one_dtype && dtype == DType::F32 && burnbert_model::is_cpu_backend(&device) {
            return Some(Fused::Host);
        }
        #[cfg(feature = "gpu")]
        if one_dtype && burnbert_kernels::applies(burnbert_kernels::Kernel::AdamwStep, &device) {
            return Some(Fused::Cube);
        }
        None
    }

    /// The step of `burn::optim::AdamW` (moments, bias correction, decay, update) in one
    /// pass, on the host or as one kernel.
    fn fused_step<const D: usize>(
        &self,
        route: Fused,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, AdamWState<D>) {
        let (time, moments) = match state {
            Some(state) => (
                state.momentum.time + 1,
                Some((state.momentum.moment_1, state.momentum.moment_2)),
            ),
            None => (1, None),
        };
        let scalars = StepScalars {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            correction_1: 1.0 - self.beta_1.powi(time as i32),
            correction_2: 1.0 - self.beta_2.powi(time as i32),
            decay: (1.0 - lr * self.weight_decay as f64) as f32,
            lr: lr as f32,
        };
        let (param, moment_1, moment_2) = match route {
            Fused::Host => host_step(tensor, grad, moments, &scalars),
            #[cfg(feature = "gpu")]
            Fused::Cube => {
                let (moment_1, moment_2) =
                    moments.unwrap_or_else(|| (tensor.zeros_like(), tensor.zeros_like()));
                burnbert_kernels::adamw_step(tensor, grad, moment_1, moment_2, &scalars)
            }
        };
        let state = AdamWState::new(AdaptiveMomentumState::new(time, moment_1, moment_2));
        (param, state)
    }
}

/// One AdamW step as a loop over host memory, split over the cores.
fn host_step<const D: usize>(
    tensor: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    s: &StepScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let device = tensor.device();
    let shape = tensor.shape();
    let (mut moment_1, mut moment_2) = match moments {
        Some((moment_1, moment_2)) => (host_f32(moment_1), host_f32(moment_2)),
        None => {
            let zeros = vec![0.0; shape.num_elements()];
            (zeros.clone(), zeros)
        }
    };
    let (mut param, grad) = (host_f32(tensor), host_f32(grad));
    // Large enough that handing a chunk to another core pays off.
    const CHUNK: usize = 1 << 15;
    param
        .par_chunks_mut(CHUNK)
        .zip(moment_1.par_chunks_mut(CHUNK))
        .zip(moment_2.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            // Zipped iterators, not indices: without bounds checks the loop vectorises.
            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                *m = *m * s.beta_1 + g * (1.0 - s.beta_1);
                *v = *v * s.beta_2 + g * g * (1.0 - s.beta_2);
                let update = (*m / s.correction_1) / ((*v / s.correction_2).sqrt() + s.epsilon);
                *p = *p * s.decay - update * s.lr;
            }
        });
    let on_device =
        |values: Vec<f32>| Tensor::from_data(TensorData::new(values, shape.clone()), &device);
    (on_device(param), on_device(moment_1), on_device(moment_2))
}

/// A tensor's values, taken without a copy where the backend allows (flex, when the
/// tensor is contiguous and not shared).
fn host_f32<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("the host step takes f32 tensors only")
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
        match Self::fused_route(&tensor, &grad, state.as_ref()) {
            None => self.unfused.step(lr, tensor, grad, state),
            Some(route) => {
                let (tensor, state) = self.fused_step(route, lr, tensor, grad, state);
                (tensor, Some(state))
            }
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

    /// The devices the fused step runs on, with the route it takes there: the host loop on
    /// the CPU, and the CubeCL kernel on wgpu (lavapipe in the tests) when compiled in.
    fn fused_devices() -> Vec<(Device, Fused)> {
        let mut devices = vec![(burnbert_model::parse_device("cpu").unwrap(), Fused::Host)];
        #[cfg(feature = "wgpu")]
        devices.push((burnbert_model::parse_device("wgpu").unwrap(), Fused::Cube));
        devices
    }

    /// The fused step gives Burn's AdamW's parameters and state, step after step, with and
    /// without weight decay, on a parameter longer than one chunk (host) or one cube (GPU),
    /// and on a transposed one (a gradient that is not contiguous).
    #[test]
    fn fused_step_matches_burns_adamw() {
        for (device, route) in fused_devices() {
            let random = |shape: [usize; 2]| {
                Tensor::<2>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device)
            };
            for (weight_decay, transposed) in [(0.0, false), (0.01, false), (0.01, true)] {
                let optimizer = AdamW::new(weight_decay);
                let n = 33_335;
                let (mut fused, mut unfused) = (random([n, 3]), None::<Tensor<2>>);
                let (mut fused_state, mut unfused_state) = (None, None);
                for step in 0..3 {
                    let grad = match transposed {
                        true => random([3, n]).transpose(),
                        false => random([n, 3]),
                    };
                    let start = unfused.take().unwrap_or_else(|| fused.clone());
                    let (param, state) =
                        optimizer
                            .unfused
                            .step(1e-3, start, grad.clone(), unfused_state.take());
                    unfused = Some(param);
                    unfused_state = state;
                    let what = format!("{device:?}, decay {weight_decay}, step {step}");
                    let state = fused_state.take();
                    let chosen = AdamW::fused_route(&fused, &grad, state.as_ref());
                    assert_eq!(chosen, Some(route), "{what}");
                    let (param, state) = optimizer.fused_step(route, 1e-3, fused, grad, state);
                    fused = param;
                    let expected = unfused_state.as_ref().unwrap();
                    assert_eq!(state.momentum.time, expected.momentum.time);
                    for (name, actual, want) in [
                        ("param", &fused, unfused.as_ref().unwrap()),
                        ("m", &state.momentum.moment_1, &expected.momentum.moment_1),
                        ("v", &state.momentum.moment_2, &expected.momentum.moment_2),
                    ] {
                        assert_close(
                            &values(actual.clone().reshape([-1])),
                            &values(want.clone().reshape([-1])),
                            &format!("{what}: {name}"),
                        );
                    }
                    fused_state = Some(state);
                }
            }
        }
    }

    /// On a GPU the kernel keeps the tensors' half-precision type and computes in f32: its
    /// moments and parameter after two steps match Burn's AdamW in f32 to half precision.
    #[cfg(feature = "wgpu")]
    #[test]
    fn fused_step_in_half_precision_on_gpu() {
        let device = burnbert_model::parse_device("wgpu").unwrap();
        let dtypes: Vec<DType> = [DType::F16, DType::BF16]
            .into_iter()
            .filter(|&dtype| device.supports_dtype(dtype))
            .collect();
        assert!(
            !dtypes.is_empty(),
            "{device:?} supports neither f16 nor bf16"
        );
        let random = || {
            Tensor::<1>::random(
                [5000],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            )
        };
        let optimizer = AdamW::new(0.01);
        for dtype in dtypes {
            let (param, grads) = (random(), [random(), random()]);
            let (mut expected, mut expected_state) = (param.clone(), None);
            let (mut half, mut half_state) = (param.cast(dtype), None);
            for grad in grads {
                let (p, state) =
                    optimizer
                        .unfused
                        .step(1e-2, expected, grad.clone(), expected_state.take());
                (expected, expected_state) = (p, state);
                let grad = grad.cast(dtype);
                let route = AdamW::fused_route(&half, &grad, half_state.as_ref());
                assert_eq!(route, Some(Fused::Cube), "{dtype:?}");
                let (p, state) =
                    optimizer.fused_step(Fused::Cube, 1e-2, half, grad, half_state.take());
                (half, half_state) = (p, Some(state));
            }
            let (state, want) = (half_state.unwrap(), expected_state.unwrap());
            for (what, actual, want) in [
                ("param", half, expected),
                ("m", state.momentum.moment_1, want.momentum.moment_1),
                ("v", state.momentum.moment_2, want.momentum.moment_2),
            ] {
                assert_eq!(actual.dtype(), dtype, "{what}");
                let (actual, want) = (values(actual.cast(DType::F32)), values(want));
                // bf16 keeps 8 significant bits, f16 11; a parameter near zero carries the
                // rounding error of its starting value, hence the tensor's scale.
                let rms = (want.iter().map(|w| w * w).sum::<f32>() / want.len() as f32).sqrt();
                for (i, (a, w)) in actual.iter().zip(&want).enumerate() {
                    assert!(
                        (a - w).abs() <= 1e-2 * (w.abs() + rms),
                        "{dtype:?} {what}[{i}]: {a} vs {w}"
                    );
                }
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
