//! burnbert's kernels compiled as cubecl-cuda compiles them for an H100, on a machine without a
//! GPU: for the tests, which check that NVRTC accepts every kernel in every float type. Each
//! kernel file's `compiles_for_cuda` test lists its kernels with [`assert_compiles!`].
//!
//! On CUDA, cubecl-cuda expands a kernel into CubeCL's IR, turns that into CUDA C++ and hands it
//! to NVRTC when the kernel is first launched. The wgpu tests on lavapipe run the same IR but
//! never reach that C++, so a kernel that CUDA's compiler refuses would first fail on a lent GPU.
//! Here a kernel is expanded without a CUDA device (`create_dummy_kernel`, with small wgpu
//! buffers for its tensor arguments, which the expansion reads only for their layout), its C++
//! is made by cubecl-cuda's own compiler with the options its runtime sets for compute
//! capability 9.0, and NVRTC compiles it with the flags cubecl-cuda passes.
//!
//! NVRTC and the CUDA headers come from NVIDIA's `nvidia-cuda-nvrtc` and `nvidia-cuda-runtime`
//! wheels, which `scripts/test` unpacks into one directory and names in
//! `BURNBERT_CUDA_TOOLKIT` (with its `lib` on `LD_LIBRARY_PATH`).

use std::sync::Arc;

use burn::tensor::{DType, Tensor};
use burn_cubecl::cubecl::prelude::*;
use cubecl_cuda::{CudaCompilationOptions, CudaCompiler, CudaRuntime};
use cubecl_runtime::{compiler::Compiler, runtime::Runtime};

use crate::host::UNITS;

/// Compiles a kernel for CUDA with [`assert_compiles`]: `assert_compiles!(e, kernel[a, b,
/// c](scalars...))` expands the kernel `kernel` (imported by name) with the [`Expansion`] `e`,
/// a small buffer for each tensor argument named in the brackets (the names are the kernel's
/// own, for the reader), and the scalar, comptime and `dtype` arguments in parentheses, in the
/// kernel's order: its tensors come first.
macro_rules! assert_compiles {
    ($e:ident, $kernel:ident[$($tensor:ident),* $(,)?]($($argument:expr),* $(,)?)) => {
        $crate::cuda_source::assert_compiles($kernel::create_dummy_kernel(
            $e.device_properties.clone(),
            $e.target_properties.clone(),
            $e.count(),
            $e.dim(),
            $({
                let _ = stringify!($tensor);
                $e.tensor()
            },)*
            $($argument),*
        ))
    };
}

/// The float types burnbert's kernels are launched with.
const FLOAT_TYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The directory holding NVRTC's `lib` and the CUDA headers' `include`.
const TOOLKIT_VARIABLE: &str = "BURNBERT_CUDA_TOOLKIT";

/// What a kernel's expansion needs in place of a CUDA device: a device's properties (the wgpu
/// device's; the kernels here read none that differ) and CUDA's target properties.
pub struct Expansion {
    pub device_properties: Arc<DeviceProperties>,
    pub target_properties: Arc<TargetProperties>,
    device: burn::tensor::Device,
}

impl Expansion {
    /// On the wgpu device (lavapipe in the tests).
    fn new() -> Self {
        let device = crate::testing::wgpu();
        let client = plain(Tensor::<1>::zeros([1], &device)).client;
        Self {
            device_properties: client.properties_shared(),
            target_properties: Arc::new(<CudaRuntime as Runtime>::target_properties()),
            device,
        }
    }

    /// The launch's cube count: one cube.
    pub fn count(&self) -> CubeCount {
        CubeCount::Static(1, 1, 1)
    }

    /// The launch's cube: [`UNITS`] units, which sets the kernel's launch bounds.
    pub fn dim(&self) -> CubeDim {
        CubeDim::new_1d(UNITS)
    }

    /// A tensor argument: a small f32 buffer. A kernel's float type is its `dtype` argument, not
    /// its buffers'.
    pub fn tensor(&self) -> TensorArg {
        plain(Tensor::<1>::zeros([4], &self.device)).into_tensor_arg()
    }
}

/// The CubeCL tensor under a tensor on the wgpu device.
fn plain(tensor: Tensor<1>) -> burn_cubecl::tensor::CubeTensor {
    crate::autodiff::Input::from(tensor).into_primitive()
}

/// Runs `check` with an [`Expansion`] on the wgpu device and each float type's storage type
/// (the `dtype` argument of a launch).
pub fn for_each_float_type(check: impl Fn(&Expansion, ElemType)) {
    let expansion = Expansion::new();
    for dtype in FLOAT_TYPES {
        check(
            &expansion,
            burn::backend::cubecl::dtype_to_storage_type(dtype),
        );
    }
}

/// Compiles `kernel` to CUDA C++ as cubecl-cuda does for an H100 (compute capability 9.0), and
/// that C++ to PTX with NVRTC as cubecl-cuda does; panics with NVRTC's log and the source if
/// either step fails.
///
/// Without NVRTC (`BURNBERT_CUDA_TOOLKIT` unset) it says so and returns, unless
/// `BURNBERT_REQUIRE_ALL_TESTS` is set, as `scripts/test` sets it: then that is a failure too.
pub fn assert_compiles<K: CubeKernel>(kernel: K) {
    let name = std::any::type_name::<K>();
    let source = CudaCompiler::default()
        .compile(kernel.define(), &h100_options())
        .unwrap_or_else(|error| panic!("{name}: CubeCL's CUDA compiler failed: {error:?}"))
        .to_string();
    let Some(include) = toolkit_include() else {
        return;
    };
    let options = cudarc::nvrtc::CompileOptions {
        // cubecl-cuda's flags (`compile_to_ptx` in its `compute/context.rs`).
        arch: Some("sm_90a"),
        include_paths: vec![include],
        options: vec!["-lineinfo".into()],
        ..Default::default()
    };
    if let Err(error) = cudarc::nvrtc::compile_ptx_with_opts(&source, options) {
        panic!("{name}: NVRTC does not compile the CUDA C++ of this kernel: {error:?}\n{source}");
    }
}

/// The C++ compiler's options as cubecl-cuda's runtime sets them on a device of compute
/// capability 9.0 with CUDA 13 (`DeviceService::init` in its `runtime.rs`).
fn h100_options() -> CudaCompilationOptions {
    let mut options = CudaCompilationOptions::default();
    let cpp = &mut options.cpp;
    cpp.warp_size = 32;
    let features = &mut cpp.supports_features;
    features.fast_math = true;
    features.dp4a = true;
    features.grid_constants = true;
    features.fast_tanh = true;
    features.clusters = true;
    features.elect_sync = true;
    options
}

/// The CUDA headers' directory, or `None` (after saying why) where NVRTC is not installed and
/// not required.
fn toolkit_include() -> Option<String> {
    match std::env::var(TOOLKIT_VARIABLE) {
        Ok(toolkit) => Some(format!("{toolkit}/include")),
        Err(_) if std::env::var_os("BURNBERT_REQUIRE_ALL_TESTS").is_some() => panic!(
            "{TOOLKIT_VARIABLE} is not set: scripts/test installs NVRTC and the CUDA headers \
             and sets it"
        ),
        Err(_) => {
            eprintln!(
                "{TOOLKIT_VARIABLE} is not set: the CUDA C++ was made but not compiled with \
                 NVRTC (scripts/test does both)"
            );
            None
        }
    }
}
