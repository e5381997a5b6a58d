//! Where the kernels run: the on/off switch, and CubeCL's on-disk cache of compiled kernels.

use burn::tensor::Device;

/// Whether burnbert's own GPU kernels run on `device`: on CubeCL devices (CUDA, wgpu), with or
/// without autodiff, unless `BURNBERT_GPU_KERNELS=0` asks for Burn's operations instead, to
/// compare the two or to step around a kernel that fails on some GPU. Always false in a
/// CPU-only build.
pub fn runs_own_kernels(device: &Device) -> bool {
    #[cfg(feature = "gpu")]
    {
        static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let enabled = *ENABLED.get_or_init(|| {
            own_kernels_enabled(std::env::var("BURNBERT_GPU_KERNELS").ok().as_deref())
        });
        enabled
            && matches!(
                device.clone().without_autodiff().as_dispatch(),
                burn::backend::DispatchDevice::Cube(_)
            )
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = device;
        false
    }
}

/// `BURNBERT_GPU_KERNELS`: on unless set to `0`, `false` or `off`.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
fn own_kernels_enabled(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), Some("0" | "false" | "off"))
}

/// Turns on CubeCL's on-disk cache of compiled kernels, so that a second run on the same GPU
/// skips the NVRTC/shader compilation that makes most of the first step's time
/// (BENCHMARKS.md, "GPU"). CubeCL keeps it off unless configured; this reads the
/// configuration as CubeCL would (`cubecl.toml` from the working directory up, then its
/// `CUBECL_*` variables) and changes only that switch. The cache lives in `target/environment`
/// of the Cargo workspace around the working directory, else in the user's cache directory.
///
/// It must run before the first GPU device is touched (burnbert-model's device parsing calls
/// it); it reads the files once per process. It does nothing in a CPU-only build.
pub fn keep_compiled_kernels() {
    #[cfg(feature = "gpu")]
    {
        use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            config.compilation.cache = true;
            CubeClRuntimeConfig::try_set(config);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels run on CubeCL devices only, and `BURNBERT_GPU_KERNELS` turns them off with
    /// 0, false or off; anything else, or nothing, leaves them on.
    #[test]
    fn own_kernels_run_on_gpu_backends_unless_turned_off() {
        assert!(!runs_own_kernels(&crate::testing::cpu()));
        #[cfg(feature = "wgpu")]
        assert!(runs_own_kernels(&crate::testing::wgpu().autodiff()));
        for off in ["0", "false", "off", " 0 "] {
            assert!(!own_kernels_enabled(Some(off)), "{off}");
        }
        for on in [None, Some("1"), Some("on"), Some("")] {
            assert!(own_kernels_enabled(on), "{on:?}");
        }
    }

    /// CubeCL keeps no compiled kernels on disk unless configured; a GPU build configures it
    /// before any device exists (its warm start is measured in BENCHMARKS.md).
    #[cfg(feature = "gpu")]
    #[test]
    fn gpu_builds_keep_compiled_kernels_on_disk() {
        use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
        keep_compiled_kernels();
        assert!(CubeClRuntimeConfig::get().compilation.cache);
    }
}
