//! LayerNorm over the last axis, as transformers' `nn.LayerNorm(hidden_size,
//! eps=config.layer_norm_eps)`: the module, whose forward pass is [`crate::ops::layer_norm`]
//! (Burn's on the CPU, one kernel forward and one backward on the GPU backends).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// LayerNorm with a weight (`gamma`) and a bias (`beta`, absent where the family has none:
/// ModernBERT's `norm_bias: false`). Burn's `LayerNorm` keeps its
/// epsilon private, so the GPU kernel could not be given the same one; this module keeps
/// Burn's parameter names, to which `crate::checkpoint` maps transformers' `weight` and `bias`
/// (and which older checkpoints use themselves).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Option<Param<Tensor<1>>>,
    /// Added to the variance: `layer_norm_eps`, 1e-12 in BERT's configurations.
    pub epsilon: f64,
}

impl LayerNorm {
    /// A LayerNorm over `size` features that starts as the identity (gamma 1, beta 0), as
    /// PyTorch's.
    pub fn new(size: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Initializer::Ones.init([size], device),
            beta: Some(Initializer::Zeros.init([size], device)),
            epsilon,
        }
    }

    /// The same without `beta`.
    pub fn without_bias(size: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            beta: None,
            ..Self::new(size, epsilon, device)
        }
    }

    /// `beta`, or zeros where there is none.
    pub fn beta_or_zeros(&self) -> Tensor<1> {
        match &self.beta {
            Some(beta) => beta.val(),
            None => self.gamma.val().zeros_like(),
        }
    }

    /// Normalizes `input` over its last axis: `(x - mean) / sqrt(var + eps) * gamma + beta`,
    /// with the biased variance, as PyTorch.
    /// Under mixed precision (`input` in bf16, the parameters in f32) gamma and beta are cast
    /// to the input's type.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        crate::ops::layer_norm(input, self.gamma.val(), self.beta_or_zeros(), self.epsilon)
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{DType, Distribution, FloatDType, TensorData};

    /// Values of `tensor` as f32, for comparing.
    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor
            .cast(FloatDType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: lengths");
        // Relative to the tensor's scale: a gradient summed over rows can cancel to near zero.
        let scale = expected.iter().map(|e| e.abs()).fold(1e-3, f32::max);
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= tolerance * scale,
                "{what}[{i}]: {a} vs {e}"
            );
        }
    }

    /// Inputs of a LayerNorm over `rows × width` and weights for the loss `sum(output ×
    /// weights)`: an input far from normalized, gamma around 1, beta around 0.
    struct Case {
        input: Vec<f32>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        weights: Vec<f32>,
        rows: usize,
        width: usize,
    }

    impl Case {
        fn new(rows: usize, width: usize) -> Self {
            let cpu = crate::parse_device("cpu").unwrap();
            let random = |n: usize, mean: f64, std: f64| {
                Tensor::<1>::random([n], Distribution::Normal(mean, std), &cpu)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap()
            };
            Self {
                input: random(rows * width, 1.0, 3.0),
                gamma: random(width, 1.0, 0.5),
                beta: random(width, 0.0, 1.0),
                weights: random(rows * width, 0.0, 1.0),
                rows,
                width,
            }
        }

        /// The output and the gradients of input, gamma and beta on `device` (with autodiff),
        /// in `dtype`; with `transposed`, the input is read from a `[width, rows]` tensor
        /// (not contiguous).
        fn run(&self, device: &Device, dtype: FloatDType, transposed: bool) -> [Vec<f32>; 4] {
            let device = device.clone().autodiff();
            let (rows, width) = (self.rows, self.width);
            let matrix = |values: &[f32]| {
                Tensor::<2>::from_data(TensorData::new(values.to_vec(), [rows, width]), &device)
            };
            let vector = |values: &[f32]| {
                Tensor::<1>::from_data(TensorData::new(values.to_vec(), [width]), &device)
            };
            let input = match transposed {
                false => matrix(&self.input),
                true => {
                    let stored = matrix(&self.input).transpose().into_data();
                    Tensor::<2>::from_data(stored, &device).transpose()
                }
            };
            let input = input.cast(dtype).require_grad();
            let norm = LayerNorm {
                gamma: Param::from_tensor(vector(&self.gamma).cast(dtype)),
                beta: Some(Param::from_tensor(vector(&self.beta).cast(dtype))),
                epsilon: 1e-12,
            };
            if crate::runs_own_kernels(&device) {
                assert!(burnbert_kernels::applies(
                    burnbert_kernels::Kernel::LayerNorm,
                    &device
                ));
            }
            let output = norm.forward(input.clone());
            let grads = (output.clone() * matrix(&self.weights).cast(dtype))
                .sum()
                .backward();
            [
                values(output),
                values(input.grad(&grads).unwrap()),
                values(norm.gamma.grad(&grads).unwrap()),
                values(norm.beta.as_ref().unwrap().grad(&grads).unwrap()),
            ]
        }
    }

    /// On wgpu (lavapipe), the one-kernel forward and backward give the CPU's output and
    /// gradients (Burn's LayerNorm from primitive operations, differentiated by its autodiff),
    /// for rows narrower and wider than a cube, a transposed input, and in f16.
    #[test]
    fn gpu_kernels_match_the_cpu_forward_and_backward() {
        let (cpu, gpu) = (
            crate::parse_device("cpu").unwrap(),
            crate::parse_device("wgpu").unwrap(),
        );
        let names = ["output", "input grad", "gamma grad", "beta grad"];
        for (rows, width) in [(15, 96), (14, 300), (4, 768)] {
            let case = Case::new(rows, width);
            let expected = case.run(&cpu, FloatDType::F32, false);
            for transposed in [false, true] {
                let actual = case.run(&gpu, FloatDType::F32, transposed);
                for ((a, e), name) in actual.iter().zip(&expected).zip(names) {
                    let what = format!("{rows} × {width}, transposed {transposed}: {name}");
                    assert_close(a, e, 1e-4, &what);
                }
            }
            if gpu.supports_dtype(DType::F16) {
                let actual = case.run(&gpu, FloatDType::F16, false);
                for ((a, e), name) in actual.iter().zip(&expected).zip(names) {
                    assert_close(a, e, 2e-2, &format!("{rows} × {width} in f16: {name}"));
                }
            }
        }
    }

    /// Without autodiff (evaluation, prediction) the kernel gives the CPU's output too, also
    /// for more rows than a GPU launches cubes along one axis (65,535 on Vulkan), as a large
    /// evaluation batch has.
    #[test]
    fn gpu_inference_matches_the_cpu() {
        let (cpu, gpu) = (
            crate::parse_device("cpu").unwrap(),
            crate::parse_device("wgpu").unwrap(),
        );
        for shape in [[2, 9, 384], [70, 1000, 8]] {
            let width = shape[2];
            let x = Tensor::<3>::random(shape, Distribution::Normal(0.5, 2.0), &cpu);
            let norm = LayerNorm::new(width, 1e-12, &cpu);
            let norm = LayerNorm {
                gamma: Param::from_tensor(norm.gamma.val() * 1.5),
                beta: Some(Param::from_tensor(norm.beta_or_zeros() + 0.25)),
                ..norm
            };
            let expected = values(norm.forward(x.clone()));
            let on_gpu = norm.to_device(&gpu);
            let actual = values(on_gpu.forward(x.to_device(&gpu)));
            assert_close(
                &actual,
                &expected,
                1e-5,
                &format!("{shape:?}: inference output"),
            );
        }
    }
}
