//! Choosing the run-time `Device` from a `--device` string.
//!
//! Cargo features decide which backends are compiled in (`ndarray`, `flex`, `wgpu`,
//! `cuda`); the string picks one of them at run time.

use burn::tensor::Device;

/// The device names this build understands, for help texts and errors.
pub fn available_devices() -> Vec<&'static str> {
    let mut names = vec!["auto", "cpu"];
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu[:N]");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda[:N]");
    }
    names
}

/// Parses a device name: `auto` (the first GPU backend compiled in, else the CPU), `cpu`,
/// `ndarray`, `flex`, `wgpu`, `wgpu:N`, `cuda`, `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device, String> {
    let (kind, index) = match spec.split_once(':') {
        Some((kind, index)) => {
            let index: usize = index
                .parse()
                .map_err(|_| format!("device `{spec}`: `{index}` is not a device number"))?;
            (kind, Some(index))
        }
        None => (spec, None),
    };
    // Only the GPU backends take a device number.
    let _ = index;
    let unavailable = |feature: &str| {
        format!(
            "device `{spec}` needs burnbert built with `--features {feature}`; this build has: {}",
            available_devices().join(", ")
        )
    };
    match kind {
        "auto" if cuda_devices() > 0 => parse_device("cuda"),
        "auto" if cfg!(feature = "wgpu") => parse_device("wgpu"),
        "auto" | "cpu" => cpu_device().ok_or_else(|| unavailable("ndarray")),
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // still the unit tests' backend, as the project intends
            return Ok(Device::ndarray());
            #[allow(unreachable_code)]
            Err(unavailable("ndarray"))
        }
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[allow(unreachable_code)]
            Err(unavailable("flex"))
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(match index {
                Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
                None => burn::tensor::DeviceKind::DefaultDevice,
            }));
            #[allow(unreachable_code)]
            Err(unavailable("wgpu"))
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                let found = cuda_devices();
                let index = index.unwrap_or(0);
                if index >= found {
                    return Err(format!(
                        "device `{spec}`: {found} CUDA device(s) found (is the NVIDIA driver \
                         installed?); use `--device cpu` to run on the CPU instead"
                    ));
                }
                return Ok(Device::cuda(index));
            }
            #[allow(unreachable_code)]
            Err(unavailable("cuda"))
        }
        _ => Err(format!(
            "unknown device `{spec}`; this build has: {}",
            available_devices().join(", ")
        )),
    }
}

/// How many CUDA devices the driver reports: 0 without the `cuda` feature, and 0 (not a
/// panic: cubecl checks for `libcuda` first) on a machine without the NVIDIA driver.
fn cuda_devices() -> usize {
    #[cfg(feature = "cuda")]
    return Device::enumerate(burn::tensor::DeviceType::Cuda)
        .into_vec()
        .len();
    #[allow(unreachable_code)]
    0
}

/// The CPU backend: flex when compiled in (Burn's successor to ndarray), else ndarray.
fn cpu_device() -> Option<Device> {
    #[cfg(feature = "flex")]
    return Some(Device::flex());
    #[cfg(all(feature = "ndarray", not(feature = "flex")))]
    #[allow(deprecated)]
    return Some(Device::ndarray());
    #[allow(unreachable_code)]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_what_is_available() {
        let err = parse_device("tpu").unwrap_err();
        assert!(
            err.contains("unknown device `tpu`") && err.contains("cpu"),
            "{err}"
        );
        let err = parse_device("cuda:x").unwrap_err();
        assert!(err.contains("not a device number"), "{err}");
    }

    /// With `--features cuda` on a machine without an NVIDIA GPU (CI), asking for CUDA says
    /// so and how to fall back; with a GPU, it gives the device.
    #[test]
    fn cuda_without_a_gpu_says_how_to_fall_back() {
        match parse_device("cuda") {
            Ok(_) => assert!(cuda_devices() > 0),
            Err(err) if cfg!(feature = "cuda") => {
                assert_eq!(cuda_devices(), 0);
                assert!(err.contains("0 CUDA device(s) found"), "{err}");
                assert!(err.contains("is the NVIDIA driver installed?"), "{err}");
                assert!(err.contains("use `--device cpu`"), "{err}");
            }
            Err(err) => assert!(
                err.contains("needs burnbert built with `--features cuda`"),
                "{err}"
            ),
        }
    }

    #[test]
    fn cpu_is_always_there() {
        assert!(parse_device("cpu").is_ok());
        assert!(parse_device("auto").is_ok());
    }
}
