//! Choosing the run-time `Device` from a `--device` string, and nothing else.
//!
//! Cargo features decide which backends are compiled in (`ndarray`, `flex`, `wgpu`,
//! `cuda`); the string picks one of them at run time.

use burn::tensor::Device;

/// The device names this build understands, for help texts and errors.
pub fn available_devices() -> Vec<&'static str> {
    let mut names = vec!["auto"];
    if cfg!(any(feature = "flex", feature = "ndarray")) {
        names.push("cpu");
    }
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
    resolve(spec).map(|(device, _)| device)
}

/// Parses `spec` like [`parse_device`] and makes its backend the one that Burn's
/// `Device::default()` gives in this process. Programs call it at the start of `main`.
///
/// Burn 0.22 materialises a loaded optimizer state on `Device::default()` (burn-optim's
/// `ModuleOptimizer::load_record`), and that is the first backend compiled in (CUDA in a
/// `--features cuda` build, wgpu in a wgpu one) whatever device the run uses: resuming on a
/// machine without that driver would panic. `BURN_DEVICE` is Burn's own override of it.
pub fn select_device(spec: &str) -> Result<Device, String> {
    let (device, backend) = resolve(spec)?;
    make_default(backend);
    Ok(device)
}

/// The devices of a data-parallel run, chosen like [`select_device`]: `list` is `all` or
/// device numbers of `spec`'s backend (`0,1,3`); `None` is `spec`'s one device.
///
/// The CPU backends have a single device: there, N numbers give N workers sharing it, which
/// runs the multi-device path (for testing it) without a speed-up.
pub fn select_devices(spec: &str, list: Option<&str>) -> Result<Vec<Device>, String> {
    let Some(list) = list else {
        return Ok(vec![select_device(spec)?]);
    };
    if spec.contains(':') {
        return Err(format!(
            "--device {spec} names one device; with --devices give the backend alone \
             (e.g. --device cuda --devices 0,1)"
        ));
    }
    let (device, backend) = resolve(spec)?;
    let gpu = matches!(backend, "cuda" | "wgpu");
    let devices = if list == "all" {
        if gpu {
            enumerate(backend)
        } else {
            vec![device]
        }
    } else {
        let mut numbers: Vec<usize> = Vec::new();
        for part in list.split(',').map(str::trim) {
            let number = part.parse().map_err(|_| {
                format!("--devices `{list}`: `{part}` is not a device number (e.g. 0,1 or all)")
            })?;
            if numbers.contains(&number) {
                return Err(format!(
                    "--devices `{list}`: device {number} is listed twice"
                ));
            }
            numbers.push(number);
        }
        numbers
            .into_iter()
            .map(|n| {
                if gpu {
                    resolve(&format!("{backend}:{n}")).map(|(device, _)| device)
                } else {
                    Ok(device.clone())
                }
            })
            .collect::<Result<_, _>>()?
    };
    if devices.is_empty() {
        return Err(format!("--devices all: no {backend} device found"));
    }
    make_default(backend);
    Ok(devices)
}

/// Whether `device`, or the device it adds autodiff to, belongs to a CPU backend (ndarray or
/// flex), which runs any tensor shape without compiling kernels for it.
pub fn is_cpu_backend(device: &Device) -> bool {
    let device = device.clone().without_autodiff();
    ["ndarray", "flex"]
        .into_iter()
        .filter_map(|name| parse_device(name).ok())
        .any(|cpu| cpu == device)
}

/// How `device` is named to users, as `auto` resolved it: `cpu (flex)`, `cpu (ndarray)`,
/// `cuda:0`, `wgpu:1` (Burn's own description where the device is none of those).
pub fn device_name(device: &Device) -> String {
    let device = device.clone().without_autodiff();
    for cpu in ["flex", "ndarray"] {
        if parse_device(cpu).is_ok_and(|d| d == device) {
            return format!("cpu ({cpu})");
        }
    }
    for backend in ["cuda", "wgpu"] {
        if let Some(index) = enumerate(backend).iter().position(|d| *d == device) {
            return format!("{backend}:{index}");
        }
    }
    format!("{device:?}")
}

fn make_default(backend: &str) {
    // SAFETY: programs call this before they start threads, so nothing reads the
    // environment at the same time.
    unsafe { std::env::set_var("BURN_DEVICE", backend) };
}

/// Every device of a GPU backend that the driver reports.
fn enumerate(backend: &str) -> Vec<Device> {
    match backend {
        #[cfg(feature = "cuda")]
        "cuda" => Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec(),
        _ => Vec::new(),
    }
}

/// The device for `spec`, and its backend's name as `BURN_DEVICE` spells it.
fn resolve(spec: &str) -> Result<(Device, &'static str), String> {
    // Before the first GPU device is touched; nothing in a CPU-only build.
    burnbert_kernels::keep_compiled_kernels();
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
        "auto" if cuda_devices() > 0 => resolve("cuda"),
        "auto" if cfg!(feature = "wgpu") => resolve("wgpu"),
        "auto" | "cpu" => cpu_device().ok_or_else(|| unavailable("flex")),
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // still the unit tests' backend, as the project intends
            return Ok((Device::ndarray(), "ndarray"));
            #[allow(unreachable_code)]
            Err(unavailable("ndarray"))
        }
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok((Device::flex(), "flex"));
            #[allow(unreachable_code)]
            Err(unavailable("flex"))
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok((
                Device::wgpu(match index {
                    Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
                    None => burn::tensor::DeviceKind::DefaultDevice,
                }),
                "wgpu",
            ));
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
                return Ok((Device::cuda(index), "cuda"));
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
fn cpu_device() -> Option<(Device, &'static str)> {
    #[cfg(feature = "flex")]
    return Some((Device::flex(), "flex"));
    #[cfg(all(feature = "ndarray", not(feature = "flex")))]
    #[allow(deprecated)]
    return Some((Device::ndarray(), "ndarray"));
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
    fn device_lists_on_the_cpu_give_workers_sharing_it() {
        let cpu = parse_device("cpu").unwrap();
        assert_eq!(select_devices("cpu", None).unwrap(), vec![cpu.clone()]);
        assert_eq!(
            select_devices("cpu", Some("all")).unwrap(),
            vec![cpu.clone()]
        );
        assert_eq!(
            select_devices("cpu", Some("0, 1,2")).unwrap(),
            vec![cpu.clone(), cpu.clone(), cpu]
        );
        let err = select_devices("cpu", Some("0,x")).unwrap_err();
        assert!(err.contains("`x` is not a device number"), "{err}");
        let err = select_devices("cpu", Some("1,1")).unwrap_err();
        assert!(err.contains("device 1 is listed twice"), "{err}");
        let err = select_devices("cuda:1", Some("0,1")).unwrap_err();
        assert!(err.contains("--device cuda:1 names one device"), "{err}");
    }

    /// In a build with CUDA or wgpu, Burn's own default would be that GPU backend.
    #[test]
    fn the_selected_device_becomes_burns_default() {
        let device = select_device("cpu").unwrap();
        assert_eq!(Device::default(), device);
    }

    #[test]
    fn cpu_backends_are_told_from_gpu_backends() {
        assert!(is_cpu_backend(&parse_device("cpu").unwrap()));
        assert!(is_cpu_backend(&parse_device("cpu").unwrap().autodiff()));
        if let Ok(gpu) = parse_device("wgpu") {
            assert!(!is_cpu_backend(&gpu));
            assert!(!is_cpu_backend(&gpu.autodiff()));
        }
    }

    #[test]
    fn devices_are_named_as_users_name_them() {
        let expected = if cfg!(feature = "flex") {
            "cpu (flex)"
        } else {
            "cpu (ndarray)"
        };
        assert_eq!(device_name(&parse_device("cpu").unwrap()), expected);
        assert_eq!(
            device_name(&parse_device("cpu").unwrap().autodiff()),
            expected
        );
        if cfg!(feature = "ndarray") {
            assert_eq!(
                device_name(&parse_device("ndarray").unwrap()),
                "cpu (ndarray)"
            );
        }
    }

    #[test]
    fn cpu_is_always_there() {
        assert!(parse_device("cpu").is_ok());
        assert!(parse_device("auto").is_ok());
    }
}
