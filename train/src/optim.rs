//! AdamW as transformers' examples set it up, on Burn's optimizer, plus global-norm
//! gradient clipping.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

/// AdamW with decoupled weight decay on the weights, and none on biases and LayerNorm
/// parameters (the two parameter groups of transformers' `run_glue_no_trainer.py`).
/// betas (0.9, 0.999) and eps 1e-8 are `torch.optim.AdamW`'s defaults.
pub fn adamw(weight_decay: f64) -> ModuleOptimizer {
    let config = |decay: f64| {
        AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
            .with_weight_decay(decay as f32)
    };
    ModuleOptimizer::from(config(weight_decay).build()).with_group(
        ParamGroup::from_any_predicates(vec!["bias", "layer_norm"]),
        config(0.0).build(),
        None,
    )
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
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (a - e).abs() <= 1e-6 + 1e-5 * e.abs(),
                "{what}: {actual:?} vs {expected:?}"
            );
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
