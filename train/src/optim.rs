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
pub fn clip_grad_norm<M: Module>(model: &M, grads: GradientsParams, max_norm: f64) -> (GradientsParams, f64) {
    let norm = global_norm(model, &grads);
    // torch adds 1e-6 to the norm in the denominator.
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        (scale_grads(model, grads, coef), norm)
    } else {
        (grads, norm)
    }
}

