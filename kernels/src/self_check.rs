//! The kernels check themselves: the first time a process uses a GPU device, each kernel is
//! compared with Burn's own operations on that device, on small fixed inputs, forward and
//! backward, in f32 and in each 16-bit float type the device has (mixed precision runs the
//! kernels in bf16 or f16, against Burn in f32). A kernel that disagrees is switched off there ([`crate::applies`] says no), with
//! one warning line naming it, and the model runs Burn's operations in its place.
//!
//! The verdicts are kept beside CubeCL's compiled kernels (a text file next to its
//! environment database), keyed by the device's name and compilation target and by these
//! kernels' sources, so later runs on the same GPU read them instead of checking again.
//! Deleting the file checks again.
//!
//! `BURNBERT_SELF_CHECK_FAULT=KERNEL:output` or `KERNEL:gradient` (`bias_gelu:gradient`, say)
//! makes this process's checks find that kernel wrong, to see it switched off end to end
//! (tests/integration/training_parity.rs); such a verdict is neither read from nor kept in the
//! file.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData, module};

use crate::Kernel;
use crate::add_norm::add_norm_with;
use crate::dropout::Mask;

/// The outcome of each kernel's check on one device, in [`Kernel::ALL`]'s order: `Err` says
/// what differed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict(Vec<(Kernel, Result<(), String>)>);

/// Whether `kernel` agreed with Burn's operations on `device` (a CubeCL device): checked once
/// per device and process, or read from the cache of an earlier run.
pub(crate) fn passes(kernel: Kernel, device: &Device) -> bool {
    static VERDICTS: Mutex<Vec<(Device, Verdict)>> = Mutex::new(Vec::new());
    let device = device.clone().without_autodiff();
    // Held while checking, so that two threads starting on one device check it once.
    let mut verdicts = VERDICTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, verdict)) = verdicts.iter().find(|(known, _)| *known == device) {
        return verdict.passes(kernel);
    }
    let (name, fingerprint) = identity(&device);
    let path = cache_path(&name, &fingerprint);
    let verdict = cached_or_checked(&device, &name, &path, injected_fault());
    for line in verdict.warnings(&name, &path) {
        eprintln!("{line}");
    }
    let passes = verdict.passes(kernel);
    verdicts.push((device, verdict));
    passes
}

/// What a fault injected into a kernel's check (tests only) makes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The output, off by one in its first element.
    Output,
    /// The gradient of the first input, twice the right one, while the output stays right.
    /// AdamW's step has no gradient: its check ignores this fault.
    Gradient,
}

impl Fault {
    const ALL: [Fault; 2] = [Fault::Output, Fault::Gradient];

    fn name(self) -> &'static str {
        match self {
            Fault::Output => "output",
            Fault::Gradient => "gradient",
        }
    }
}

/// The fault that `BURNBERT_SELF_CHECK_FAULT` (`KERNEL:output` or `KERNEL:gradient`) injects
/// into this process's checks, if set.
fn injected_fault() -> Option<(Kernel, Fault)> {
    let value = std::env::var("BURNBERT_SELF_CHECK_FAULT").ok()?;
    let fault = Kernel::ALL
        .iter()
        .flat_map(|&kernel| Fault::ALL.map(|fault| (kernel, fault)))
        .find(|(kernel, fault)| value == format!("{}:{}", kernel.name(), fault.name()));
    Some(fault.unwrap_or_else(|| {
        panic!("BURNBERT_SELF_CHECK_FAULT={value}: not `KERNEL:output` or `KERNEL:gradient`")
    }))
}

/// The verdict kept at `path`, or else the check's on `device` (named `name`), then kept
/// there. With a `fault` injected into a kernel's check (tests only) the verdict is neither
/// read nor kept.
fn cached_or_checked(
    device: &Device,
    name: &str,
    path: &Path,
    fault: Option<(Kernel, Fault)>,
) -> Verdict {
    if fault.is_none()
        && let Some(verdict) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| Verdict::parse(&text))
    {
        return verdict;
    }
    let verdict = check_all(device, fault);
    if fault.is_none() {
        // Written whole and renamed, so that a process starting beside this one reads a
        // verdict or none. A cache that cannot be written costs the next run a check.
        let partial = path.with_extension(format!("{}.partial", std::process::id()));
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .and_then(|()| std::fs::write(&partial, verdict.to_text(name)))
            .and_then(|()| std::fs::rename(&partial, path));
    }
    verdict
}

impl Verdict {
    fn passes(&self, kernel: Kernel) -> bool {
        self.0
            .iter()
            .any(|(k, result)| *k == kernel && result.is_ok())
    }

    /// One line per kernel that disagreed.
    fn warnings(&self, device: &str, path: &Path) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(kernel, result)| result.as_ref().err().map(|what| (kernel, what)))
            .map(|(kernel, what)| {
                format!(
                    "warning: burnbert's GPU kernel `{}` disagrees with Burn's operations on \
                     {device} ({what}); it is switched off there and Burn's operations run \
                     instead (verdict kept in {}; delete it to check again)",
                    kernel.name(),
                    path.display()
                )
            })
            .collect()
    }

    /// The cache file's text: a comment line, then `name ok` or `name disagrees: what`.
    fn to_text(&self, device: &str) -> String {
        let mut text = format!("# burnbert's GPU kernels checked against Burn on {device}\n");
        for (kernel, result) in &self.0 {
            match result {
                Ok(()) => text += &format!("{} ok\n", kernel.name()),
                Err(what) => text += &format!("{} disagrees: {what}\n", kernel.name()),
            }
        }
        text
    }

    /// [`Self::to_text`] read back; `None` unless it names every kernel once.
    fn parse(text: &str) -> Option<Self> {
        let mut results = Vec::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (name, rest) = line.split_once(' ')?;
            let kernel = *Kernel::ALL.iter().find(|k| k.name() == name)?;
            let result = match rest.strip_prefix("disagrees: ") {
                Some(what) => Err(what.to_string()),
                None if rest == "ok" => Ok(()),
                None => return None,
            };
            results.push((kernel, result));
        }
        let every = Kernel::ALL
            .iter()
            .all(|k| results.iter().filter(|(r, _)| r == k).count() == 1);
        (every && results.len() == Kernel::ALL.len()).then_some(Self(results))
    }
}

/// The device's name as its driver gives it (`NVIDIA H100 PCIe`) and what CubeCL compiles
/// for on it (`ptx_sm90`, say).
fn identity(device: &Device) -> (String, String) {
    let tensor = crate::autodiff::Input::from(Tensor::<1>::zeros([1], device)).into_primitive();
    let identity = &tensor.client.properties().identity;
    (identity.name.clone(), identity.fingerprint.clone())
}

/// Where the verdict for a device ([`identity`]) is kept: beside CubeCL's environment
/// database (which holds the compiled kernels), named by a hash of the device's name, its
/// compilation target and these kernels' sources, so that a new GPU, driver target or kernel
/// is checked afresh.
fn cache_path(name: &str, fingerprint: &str) -> PathBuf {
    let mut hash = Fnv::default();
    hash.write(name.as_bytes());
    hash.write(fingerprint.as_bytes());
    hash.write(&sources_hash().to_le_bytes());
    let database = cubecl_environment::environment::path();
    database.with_extension(format!("burnbert-kernels-{:016x}.txt", hash.0))
}

/// A hash of the kernels' sources, this file's included.
fn sources_hash() -> u64 {
    static HASH: OnceLock<u64> = OnceLock::new();
    *HASH.get_or_init(|| {
        let mut hash = Fnv::default();
        for source in [
            include_str!("adamw.rs"),
            include_str!("add_norm.rs"),
            include_str!("autodiff.rs"),
            include_str!("dropout.rs"),
            include_str!("gelu.rs"),
            include_str!("heads.rs"),
            include_str!("host.rs"),
            include_str!("layer_norm.rs"),
            include_str!("reduce.rs"),
            include_str!("self_check.rs"),
            include_str!("softmax.rs"),
        ] {
            hash.write(source.as_bytes());
        }
        hash.0
    })
}

/// FNV-1a, 64 bits: a stable hash for file names (std's `DefaultHasher` may change between
/// Rust releases).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Every kernel checked on `device`, with `fault` injected into one kernel's check (tests).
/// The fused Add & Norm drops out with the dropout kernel's mask, so it fails where dropout
/// does.
fn check_all(device: &Device, fault: Option<(Kernel, Fault)>) -> Verdict {
    let device = device.clone().without_autodiff().autodiff();
    // f32, then each 16-bit type the device has (mixed precision runs the kernels in them).
    let dtypes: Vec<FloatDType> = [FloatDType::F32, FloatDType::BF16, FloatDType::F16]
        .into_iter()
        .filter(|&dtype| device.supports_dtype(DType::from(dtype)))
        .collect();
    let mut results: Vec<(Kernel, Result<(), String>)> = Kernel::ALL
        .iter()
        .map(|&kernel| {
            let result = dtypes.iter().try_for_each(|&dtype| {
                let check = Check {
                    device: &device,
                    fault: fault
                        .filter(|&(faulty, _)| faulty == kernel)
                        .map(|(_, fault)| fault),
                    dtype,
                };
                check_kernel(&check, kernel).map_err(|what| format!("in {dtype:?}: {what}"))
            });
            (kernel, result)
        })
        .collect();
    let dropout_failed = results
        .iter()
        .any(|(k, result)| *k == Kernel::Dropout && result.is_err());
    for (kernel, result) in &mut results {
        if *kernel == Kernel::AddNorm && dropout_failed && result.is_ok() {
            *result = Err("it drops out with the dropout kernel's mask".into());
        }
    }
    Verdict(results)
}

/// Rows of the row-wise kernels' inputs: wider than a cube of 128 units, which strides.
const WIDTH: usize = 200;
const ROWS: usize = 6;

/// `kernel` in `check.dtype` against Burn's operations in f32 on `check.device` (with
/// autodiff): the output, and the gradient of each input for the loss `sum(output ×
/// weights)`. With `check.fault`, the kernel's output or gradient is off, as a wrong kernel's
/// would be.
fn check_kernel(check: &Check, kernel: Kernel) -> Result<(), String> {
    let operands = Operands::draw();
    match kernel {
        Kernel::LayerNorm => check_layer_norm(check, operands),
        Kernel::AddNorm => check_add_norm(check, operands),
        Kernel::BiasGelu => check_bias_gelu(check, operands),
        Kernel::SplitHeads => check_split_heads(check, operands),
        Kernel::MergeHeads => check_merge_heads(check, operands),
        Kernel::MaskedSoftmax => check_masked_softmax(check, operands),
        Kernel::Dropout => check_dropout(check, operands),
        Kernel::AdamwStep => {
            let mut draws = operands.draws;
            check.adamw([(); 4].map(|()| draws.take(ROWS * WIDTH)))
        }
    }
}

/// The row-wise kernels' inputs, drawn in one fixed order; the other checks draw theirs
/// after them from `draws`.
struct Operands {
    draws: Draws,
    vector: Vec<f32>,
    matrix: Vec<f32>,
    residual: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Operands {
    fn draw() -> Self {
        let mut draws = Draws(0x9e37_79b9_7f4a_7c15);
        let vector = draws.take(WIDTH);
        let [matrix, residual] = [(); 2].map(|()| draws.take(ROWS * WIDTH));
        let [gamma, beta] = [(); 2].map(|()| draws.take(WIDTH));
        Self {
            draws,
            vector,
            matrix,
            residual,
            gamma,
            beta,
        }
    }
}

/// A flat input as the row-wise kernels' `[ROWS, WIDTH]`.
fn rows(x: &Tensor<1>) -> Tensor<2> {
    x.clone().reshape([ROWS, WIDTH])
}

/// BERT's LayerNorm epsilon.
const EPS: f64 = 1e-12;

fn check_layer_norm(check: &Check, o: Operands) -> Result<(), String> {
    check.compare(
        [o.matrix, o.gamma, o.beta],
        |[x, g, b]| {
            flat(crate::layer_norm::layer_norm(
                rows(x),
                g.clone(),
                b.clone(),
                EPS,
            ))
        },
        |[x, g, b]| flat(module::layer_norm(rows(x), g.clone(), Some(b.clone()), EPS)),
    )
}

/// Without dropout and with the dropout kernel's mask.
fn check_add_norm(check: &Check, o: Operands) -> Result<(), String> {
    [false, true].into_iter().try_for_each(|dropout| {
        let mask = dropout.then(|| check.mask());
        check.compare(
            [
                o.matrix.clone(),
                o.vector.clone(),
                o.residual.clone(),
                o.gamma.clone(),
                o.beta.clone(),
            ],
            |[h, bias, r, g, b]| {
                let gamma_beta = [g.clone(), b.clone()];
                let mask = mask.clone();
                flat(add_norm_with(
                    rows(h),
                    bias.clone(),
                    rows(r),
                    gamma_beta,
                    EPS,
                    mask,
                ))
            },
            |[h, bias, r, g, b]| {
                let biased = rows(h) + bias.clone().unsqueeze();
                let dropped = match dropout {
                    true => biased * check.mask_values([ROWS, WIDTH]),
                    false => biased,
                };
                flat(module::layer_norm(
                    dropped + rows(r),
                    g.clone(),
                    Some(b.clone()),
                    EPS,
                ))
            },
        )
    })
}

fn check_bias_gelu(check: &Check, o: Operands) -> Result<(), String> {
    check.compare(
        [o.matrix, o.vector],
        |[x, bias]| flat(crate::gelu::bias_gelu(rows(x), bias.clone())),
        |[x, bias]| {
            // The exact GELU, `v · (1 + erf(v / √2)) / 2`, which Burn differentiates
            // exactly (its own `gelu`'s backward is the tanh approximation's).
            let v = rows(x) + bias.clone().unsqueeze();
            let phi = (v.clone() / std::f32::consts::SQRT_2).erf().add_scalar(1.0) / 2.0;
            flat(v * phi)
        },
    )
}

fn check_split_heads(check: &Check, mut o: Operands) -> Result<(), String> {
    let (batch, seq, heads, head_dim) = (2, 5, 4, 6);
    let width = heads * head_dim;
    check.compare(
        [o.draws.take(batch * seq * width), o.draws.take(width)],
        |[x, bias]| {
            let x = x.clone().reshape([batch, seq, width]);
            flat(crate::heads::split_heads(x, bias.clone(), heads))
        },
        |[x, bias]| {
            let x = x.clone().reshape([batch, seq, width]) + bias.clone().unsqueeze();
            flat(x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2))
        },
    )
}

/// Contiguous heads, and heads stored as `[batch, heads, head_dim, seq]` and merged from
/// their transposed view.
fn check_merge_heads(check: &Check, mut o: Operands) -> Result<(), String> {
    let shape = [2, 4, 5, 6];
    let transposed = [2, 4, 6, 5];
    let both = |merge: fn(Tensor<4>) -> Tensor<3>, x: &Tensor<1>, y: &Tensor<1>| {
        let y = y.clone().reshape(transposed).swap_dims(2, 3);
        Tensor::cat(
            vec![flat(merge(x.clone().reshape(shape))), flat(merge(y))],
            0,
        )
    };
    let n = shape.iter().product();
    check.compare(
        [o.draws.take(n), o.draws.take(n)],
        |[x, y]| both(crate::heads::merge_heads, x, y),
        |[x, y]| both(|h| h.swap_dims(1, 2).reshape([2, 5, 24]), x, y),
    )
}

/// Two rows of a batch, the second with its last 37 keys padded; scores of a few units, as
/// attention's are.
fn check_masked_softmax(check: &Check, mut o: Operands) -> Result<(), String> {
    let (keys, padded) = (150, 37);
    let shape = [2, 3, 5, keys];
    let padding: Vec<i64> = (0..2 * keys)
        .map(|i| (i >= 2 * keys - padded) as i64)
        .collect();
    let padding = Tensor::<2, Int>::from_data(TensorData::new(padding, [2, keys]), check.device)
        .equal_elem(1)
        .reshape([2, 1, 1, keys]);
    let scores = o
        .draws
        .take(shape.iter().product())
        .iter()
        .map(|v| v * 8.0)
        .collect();
    let divisor = 8.0;
    check.compare(
        [scores],
        |[x]| {
            flat(crate::softmax::masked_softmax(
                x.clone().reshape(shape),
                padding.clone(),
                divisor,
            ))
        },
        |[x]| {
            let scores = x.clone().reshape(shape).div_scalar(divisor);
            flat(softmax(scores.mask_fill(padding.clone(), f32::MIN), 3))
        },
    )
}

fn check_dropout(check: &Check, o: Operands) -> Result<(), String> {
    let values = check.mask_values([ROWS, WIDTH]);
    // Keeping 0.9 of 1200: 1080, with a standard deviation of 10.4.
    let kept = values
        .clone()
        .not_equal_elem(0.0)
        .int()
        .sum()
        .into_scalar::<i64>();
    if (kept - 1080).abs() > 60 {
        return Err(format!(
            "it kept {kept} of 1200 elements, asked to keep 0.9"
        ));
    }
    check.compare(
        [o.matrix],
        |[x]| flat(crate::dropout::dropout_with(rows(x), check.mask())),
        |[x]| flat(rows(x) * values.clone()),
    )
}

/// One check of the kernels on a device: the autodiff device, the fault injected into the
/// kernel (tests), and the float type the kernels run in.
struct Check<'a> {
    device: &'a Device,
    fault: Option<Fault>,
    dtype: FloatDType,
}

impl Check<'_> {
    /// The outcomes of `own` (burnbert's kernel, on the inputs cast to the check's float
    /// type) and `reference` (Burn's operations, in f32) on the same flat inputs, compared.
    fn compare<const N: usize>(
        &self,
        inputs: [Vec<f32>; N],
        own: impl Fn(&[Tensor<1>; N]) -> Tensor<1>,
        reference: impl Fn(&[Tensor<1>; N]) -> Tensor<1>,
    ) -> Result<(), String> {
        let own = outcome(self.device, &inputs, |x| {
            let mut x = x.clone();
            if self.fault == Some(Fault::Gradient) {
                // Zero in value, the input itself in derivative: the first input's gradient
                // doubles.
                x[0] = x[0].clone() + (x[0].clone() - x[0].clone().detach());
            }
            let x = x.map(|t| t.cast(self.dtype));
            self.perhaps_wrong(own(&x).cast(FloatDType::F32))
        });
        agree(
            &own,
            &outcome(self.device, &inputs, reference),
            self.tolerance(),
        )
    }

    /// Each element to this fraction of its tensor's largest magnitude (at least 1): in f32,
    /// loose for arithmetic in another order and tight for a wrong kernel; in 16 bits, a few
    /// roundings of bf16's 8-bit significand (2^-8 ≈ 4e-3) each.
    fn tolerance(&self) -> f32 {
        match self.dtype {
            FloatDType::F32 => 1e-3,
            _ => 3e-2,
        }
    }

    /// `output`, off by one in its first element with [`Fault::Output`].
    fn perhaps_wrong(&self, output: Tensor<1>) -> Tensor<1> {
        match self.fault {
            Some(Fault::Output) => {
                let (n, device) = (output.dims()[0], output.device());
                output + one_hot(n, &device)
            }
            _ => output,
        }
    }

    /// The fixed dropout mask of [`MASK_SEED`], keeping 0.9.
    fn mask(&self) -> Mask {
        let seed = TensorData::new(MASK_SEED.map(|s| s as f32).to_vec(), [3]);
        Mask::with_seed(Tensor::from_data(seed, self.device), 0.9)
    }

    /// [`Self::mask`] as a constant tensor of `shape`: `1 / keep` where it keeps an element,
    /// else 0; drawn on the host ([`host_mask`]), not by the kernel under check.
    fn mask_values(&self, shape: [usize; 2]) -> Tensor<2> {
        let mask = self.mask();
        let values = host_mask(MASK_SEED, mask.threshold, shape.iter().product())
            .into_iter()
            .map(|kept| if kept { mask.scale } else { 0.0 })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    /// The AdamW kernel against its formula in Burn's operations, without autodiff: the
    /// parameter and both moments after one step.
    fn adamw(&self, [param, grad, moment_1, moment_2]: [Vec<f32>; 4]) -> Result<(), String> {
        let device = self.device.clone().without_autodiff();
        let tensor = |values: &Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(values.clone(), [values.len()]), &device)
        };
        let moment_2 = tensor(&moment_2).abs();
        let (param, grad, moment_1) = (tensor(&param), tensor(&grad), tensor(&moment_1));
        let s = crate::StepScalars {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            correction_1: 1.0 - 0.9f32.powi(3),
            correction_2: 1.0 - 0.999f32.powi(3),
            decay: 1.0 - 2e-5 * 0.01,
            lr: 2e-5,
        };
        let half = |t: &Tensor<1>| t.clone().cast(self.dtype);
        let own = crate::adamw::adamw_step(
            half(&param),
            half(&grad),
            half(&moment_1),
            half(&moment_2),
            &s,
        );
        let own = (
            own.0.cast(FloatDType::F32),
            own.1.cast(FloatDType::F32),
            own.2.cast(FloatDType::F32),
        );
        let m = moment_1 * s.beta_1 + grad.clone() * (1.0 - s.beta_1);
        let v = moment_2 * s.beta_2 + grad.clone() * grad * (1.0 - s.beta_2);
        let update =
            (m.clone() / s.correction_1) / ((v.clone() / s.correction_2).sqrt() + s.epsilon);
        let reference = param * s.decay - update * s.lr;
        let values = |tensors: [Tensor<1>; 3]| {
            let [p, m, v] = tensors;
            let all = Tensor::cat(vec![p, m, v], 0);
            vec![
                all.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap(),
            ]
        };
        let (p, m_own, v_own) = own;
        agree(
            &values([self.perhaps_wrong(p), m_own, v_own]),
            &values([reference, m, v]),
            self.tolerance(),
        )
    }
}

/// The seed of the checks' dropout mask: three integers below 2^24, as
/// [`crate::dropout_seed`] draws.
const MASK_SEED: [u32; 3] = [1234, 5678, 9012];

/// Whether the dropout mask of `seed` keeps each of `n` elements, drawn on the host: the
/// reference that the dropout kernel's masks are checked against. The key is the seed's low
/// 64 bits (`seed[0] + seed[1] · 2^24 + seed[2] · 2^48`); element `i` is kept where word
/// `i % 4` of the Philox block of the 64-bit counter `i / 4` is below `threshold`.
pub(crate) fn host_mask(seed: [u32; 3], threshold: u32, n: usize) -> Vec<bool> {
    let key = seed[0] as u64 | (seed[1] as u64) << 24 | (seed[2] as u64) << 48;
    let key = [key as u32, (key >> 32) as u32];
    (0..n)
        .map(|i| {
            let block = (i / 4) as u64;
            philox([block as u32, (block >> 32) as u32, 0, 0], key)[i % 4] < threshold
        })
        .collect()
}

/// Random123's published known answers for Philox4x32-10 (its `kat_vectors`, also in
/// TensorFlow's and cuRAND's tests): counter, key, output.
#[cfg(test)]
pub(crate) const PHILOX_KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    (
        [0; 4],
        [0; 2],
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
    ),
    (
        [u32::MAX; 4],
        [u32::MAX; 2],
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

/// Philox4x32-10's block of `counter` under `key` on the host, written from Random123's
/// `philox4x32_R` apart from the kernel's (`crate::dropout::kernel::philox`): ten rounds of
/// two 32 × 32 → 64-bit products, the key bumped by its Weyl constants after each.
fn philox(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let ([mut c0, mut c1, mut c2, mut c3], [mut k0, mut k1]) = (counter, key);
    for _ in 0..10 {
        let product_0 = c0 as u64 * 0xD251_1F53;
        let product_1 = c2 as u64 * 0xCD9E_8D57;
        [c0, c1, c2, c3] = [
            (product_1 >> 32) as u32 ^ c1 ^ k0,
            product_1 as u32,
            (product_0 >> 32) as u32 ^ c3 ^ k1,
            product_0 as u32,
        ];
        k0 = k0.wrapping_add(0x9E37_79B9);
        k1 = k1.wrapping_add(0xBB67_AE85);
    }
    [c0, c1, c2, c3]
}

/// A vector of `n` zeros but a one first.
fn one_hot(n: usize, device: &Device) -> Tensor<1> {
    let mut values = vec![0.0f32; n];
    values[0] = 1.0;
    Tensor::from_data(TensorData::new(values, [n]), device)
}

fn flat<const D: usize>(tensor: Tensor<D>) -> Tensor<1> {
    let n = tensor.shape().num_elements();
    tensor.reshape([n])
}

/// The output of `f` on `inputs` and each input's gradient for `sum(output × weights)`, the
/// weights fixed; a gradient that does not exist is empty.
fn outcome<const N: usize>(
    device: &Device,
    inputs: &[Vec<f32>; N],
    f: impl Fn(&[Tensor<1>; N]) -> Tensor<1>,
) -> Vec<Vec<f32>> {
    let leaves: [Tensor<1>; N] = inputs.each_ref().map(|values| {
        Tensor::from_data(TensorData::new(values.clone(), [values.len()]), device).require_grad()
    });
    let output = f(&leaves);
    let n = output.dims()[0];
    let weights = Tensor::from_data(TensorData::new(Draws(7).take(n), [n]), device);
    let grads = (output.clone() * weights).sum().backward();
    let values = |tensor: Tensor<1>| {
        tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    };
    std::iter::once(values(output.inner()))
        .chain(
            leaves
                .iter()
                .map(|leaf| leaf.grad(&grads).map_or_else(Vec::new, values)),
        )
        .collect()
}

/// Whether two outcomes agree, each element to `tolerance` of its tensor's largest magnitude
/// (at least 1).
fn agree(own: &[Vec<f32>], reference: &[Vec<f32>], tolerance: f32) -> Result<(), String> {
    for (k, (own, reference)) in own.iter().zip(reference).enumerate() {
        let what = match k {
            0 => "output".to_string(),
            k => format!("gradient of input {k}"),
        };
        if own.len() != reference.len() {
            return Err(format!(
                "{what}: {} values, not {}",
                own.len(),
                reference.len()
            ));
        }
        let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, e)) in own.iter().zip(reference).enumerate() {
            // NaN disagrees too.
            if (a - e).abs().is_nan() || (a - e).abs() > tolerance * scale {
                return Err(format!("{what}[{i}] is {a}, not {e}"));
            }
        }
    }
    Ok(())
}

/// Fixed inputs in [-2, 2) (xorshift64*), drawn on the host so that checking draws nothing
/// from Burn's generators, which the run's dropout uses.
struct Draws(u64);

impl Draws {
    fn take(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
                bits as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;

    fn failing(verdict: &Verdict) -> Vec<Kernel> {
        verdict
            .0
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(kernel, _)| *kernel)
            .collect()
    }

    /// On lavapipe every kernel agrees with Burn's operations, in f32 and in f16 (lavapipe's
    /// 16-bit type), and so runs.
    #[test]
    fn every_kernel_agrees_with_burn_on_lavapipe() {
        let device = crate::testing::wgpu();
        assert!(device.supports_dtype(DType::F16), "the check in f16 runs");
        let verdict = check_all(&device, None);
        assert_eq!(failing(&verdict), [], "{verdict:?}");
        for kernel in Kernel::ALL {
            assert!(crate::applies(kernel, &device), "{kernel:?}");
            assert!(
                crate::applies(kernel, &device.clone().autodiff()),
                "{kernel:?}"
            );
        }
    }

    /// A kernel made wrong through the test hook, in its output or in its gradient alone,
    /// fails its check alone (Add & Norm with dropout, whose mask it shares), and gets one
    /// warning line naming it and what differed. AdamW's step has no gradient: its output
    /// only.
    #[test]
    fn a_wrong_kernel_is_switched_off_with_one_warning_line() {
        let device = crate::testing::wgpu();
        let faults = Kernel::ALL
            .into_iter()
            .flat_map(|kernel| Fault::ALL.map(|fault| (kernel, fault)))
            .filter(|&fault| fault != (Kernel::AdamwStep, Fault::Gradient));
        for (wrong, fault) in faults {
            let verdict = check_all(&device, Some((wrong, fault)));
            let expected = match wrong {
                Kernel::Dropout => vec![Kernel::AddNorm, Kernel::Dropout],
                kernel => vec![kernel],
            };
            assert_eq!(failing(&verdict), expected, "{verdict:?}");
            let warnings = verdict.warnings("lavapipe", Path::new("verdicts.txt"));
            assert_eq!(warnings.len(), expected.len(), "{warnings:?}");
            let line = &warnings[expected.iter().position(|&k| k == wrong).unwrap()];
            let differed = match fault {
                Fault::Output => "(in F32: output[0] is ",
                Fault::Gradient => "(in F32: gradient of input 1[",
            };
            assert!(
                line.starts_with(&format!(
                    "warning: burnbert's GPU kernel `{}`",
                    wrong.name()
                )) && line.contains(differed)
                    && line.contains("switched off")
                    && !line.contains('\n'),
                "{fault:?}: {line}"
            );
        }
    }

    /// A verdict is kept, and a later check reads it instead of checking again: an edited
    /// verdict is believed. A file that is not a verdict is checked again and rewritten; a
    /// check with a wrong kernel keeps nothing.
    #[test]
    fn verdicts_are_kept_and_read_instead_of_checking_again() {
        let device = crate::testing::wgpu();
        let dir = std::env::temp_dir().join(format!("burnbert-self-check-{}", std::process::id()));
        let path = dir.join("verdicts.txt");
        let _ = std::fs::remove_dir_all(&dir);
        let checked = cached_or_checked(&device, "lavapipe", &path, None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Verdict::parse(&text), Some(checked.clone()));
        let edited = text.replace("bias_gelu ok", "bias_gelu disagrees: edited by a test");
        std::fs::write(&path, edited).unwrap();
        let read = cached_or_checked(&device, "lavapipe", &path, None);
        assert_eq!(failing(&read), [Kernel::BiasGelu]);
        std::fs::write(&path, "bias_gelu ok\n").unwrap();
        assert_eq!(cached_or_checked(&device, "lavapipe", &path, None), checked);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::remove_file(&path).unwrap();
        cached_or_checked(
            &device,
            "lavapipe",
            &path,
            Some((Kernel::Dropout, Fault::Output)),
        );
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The host's Philox4x32-10, the reference for the dropout kernel's masks, gives the
    /// known answers, as the kernel's does (`crate::dropout`'s tests).
    #[test]
    fn host_philox_gives_random123s_known_answers() {
        for (counter, key, expected) in PHILOX_KNOWN_ANSWERS {
            assert_eq!(
                philox(counter, key),
                expected,
                "counter {counter:x?}, key {key:x?}"
            );
        }
    }

    /// Checking draws nothing from Burn's generator, which the run's dropout masks come from:
    /// a run that checks and one that reads the verdict draw the same masks.
    #[test]
    fn checking_draws_nothing_from_burns_generator() {
        let device = crate::testing::wgpu();
        let _turn = crate::testing::seeding();
        let draw = || Tensor::<1>::random([4], burn::tensor::Distribution::Default, &device);
        device.seed(3);
        let without = draw().into_data();
        device.seed(3);
        check_all(&device, None);
        draw().into_data().assert_eq(&without, true);
    }
}
