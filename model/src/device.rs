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

/// Parses a device name: `auto` (a CUDA device, else a wgpu adapter that is a GPU, else the
/// CPU, with a note saying so in a GPU build), `cpu`, `ndarray`, `flex`, `wgpu` (the default
/// adapter), `wgpu:N` (the Nth adapter wgpu lists), `cuda`, `cuda:N`. A device that does not
/// exist is an error that says what there is.
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
/// The CPU backends have a single device: there, the numbers 0 to N - 1 give N workers sharing
/// it, which runs the multi-device path (for testing it) without a speed-up; any other number
/// is an error, as a GPU number that does not exist is.
pub fn select_devices(spec: &str, list: Option<&str>) -> Result<Vec<Device>, String> {
    let (devices, backend) = resolve_devices(spec, list)?;
    make_default(backend);
    Ok(devices)
}

/// The devices [`select_devices`] gives, and their backend, without making it the default:
/// changing the environment is for programs before they start threads, not for tests.
fn resolve_devices(spec: &str, list: Option<&str>) -> Result<(Vec<Device>, &'static str), String> {
    let Some(list) = list else {
        let (device, backend) = resolve(spec)?;
        return Ok((vec![device], backend));
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
        if !gpu && let Some(&beyond) = numbers.iter().find(|&&n| n >= numbers.len()) {
            return Err(format!(
                "--devices `{list}`: the CPU has no device {beyond}; on the CPU the numbers \
                 name workers sharing its one device, from 0 (e.g. --devices 0,1 for two)"
            ));
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
    Ok((devices, backend))
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
/// `cuda:0`, `wgpu:1`, `wgpu (default adapter: NAME)` (Burn's own description where the
/// device is none of those).
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
    #[cfg(feature = "wgpu")]
    if device == Device::wgpu(burn::tensor::DeviceKind::DefaultDevice) {
        let adapter = device
            .identity()
            .map_or_else(String::new, |i| format!(": {}", i.name));
        return format!("wgpu (default adapter{adapter})");
    }
    format!("{device:?}")
}

fn make_default(backend: &str) {
    // SAFETY: programs call this before they start threads, so nothing reads the
    // environment at the same time; the unit tests, which run in threads, never call it.
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
    let unavailable = |feature: &str| {
        format!(
            "device `{spec}` needs burnbert built with `--features {feature}`; this build has: {}",
            available_devices().join(", ")
        )
    };
    // The CPU is one device: `cpu` or `cpu:0`.
    if matches!(kind, "auto" | "cpu" | "ndarray" | "flex") && index.is_some_and(|i| i > 0) {
        return Err(format!(
            "device `{spec}`: the CPU is one device, `{kind}`; for several workers sharing it, \
             use --devices 0,1"
        ));
    }
    let named = |name: &'static str| move |device| (device, name);
    match kind {
        "auto" if cuda_devices() > 0 => resolve("cuda"),
        "auto" if wgpu_gpu_found() => resolve("wgpu"),
        "auto" | "cpu" => {
            let cpu = cpu_device().ok_or_else(|| unavailable("flex"))?;
            if kind == "auto" && cfg!(any(feature = "cuda", feature = "wgpu")) {
                note_once(&format!(
                    "note: --device auto: no GPU found ({}), so burnbert runs on the CPU",
                    gpus_looked_for()
                ));
            }
            Ok(cpu)
        }
        "ndarray" => ndarray_device()
            .map(named("ndarray"))
            .ok_or_else(|| unavailable("ndarray")),
        "flex" => flex_device()
            .map(named("flex"))
            .ok_or_else(|| unavailable("flex")),
        "wgpu" => wgpu_device(spec, index)?
            .map(named("wgpu"))
            .ok_or_else(|| unavailable("wgpu")),
        "cuda" => cuda_device(spec, index)?
            .map(named("cuda"))
            .ok_or_else(|| unavailable("cuda")),
        _ => Err(format!(
            "unknown device `{spec}`; this build has: {}",
            available_devices().join(", ")
        )),
    }
}

/// The ndarray device, in a build with it.
fn ndarray_device() -> Option<Device> {
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // still the unit tests' backend, as the project intends
    return Some(Device::ndarray());
    #[cfg(not(feature = "ndarray"))]
    None
}

/// The flex device, in a build with it.
fn flex_device() -> Option<Device> {
    #[cfg(feature = "flex")]
    return Some(Device::flex());
    #[cfg(not(feature = "flex"))]
    None
}

/// wgpu's default adapter, or adapter `index`.
#[cfg(feature = "wgpu")]
fn wgpu_device(spec: &str, index: Option<usize>) -> Result<Option<Device>, String> {
    let adapters = enumerate("wgpu");
    if adapters.is_empty() {
        return Err(format!(
            "device `{spec}`: no wgpu adapter found (no Vulkan, Metal, DirectX 12 or OpenGL \
             driver that wgpu can use); install your GPU's driver, or Mesa's lavapipe for a \
             software one, or use `--device cpu` to run on the CPU"
        ));
    }
    match index {
        None => Ok(Some(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))),
        Some(i) => match adapters.get(i) {
            Some(device) => Ok(Some(device.clone())),
            None => Err(format!(
                "device `{spec}`: {} wgpu adapter(s) found, numbered from 0; use \
                 `--device wgpu` for the default one",
                adapters.len()
            )),
        },
    }
}

/// None: this build has no wgpu.
#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_spec: &str, _index: Option<usize>) -> Result<Option<Device>, String> {
    Ok(None)
}

/// CUDA device `index` (0 by default).
#[cfg(feature = "cuda")]
fn cuda_device(spec: &str, index: Option<usize>) -> Result<Option<Device>, String> {
    let found = cuda_devices();
    let index = index.unwrap_or(0);
    if index >= found {
        return Err(format!(
            "device `{spec}`: {found} CUDA device(s) found (is the NVIDIA driver installed?); \
             use `--device cpu` to run on the CPU instead"
        ));
    }
    Ok(Some(Device::cuda(index)))
}

/// None: this build has no CUDA.
#[cfg(not(feature = "cuda"))]
fn cuda_device(_spec: &str, _index: Option<usize>) -> Result<Option<Device>, String> {
    Ok(None)
}

/// Whether wgpu has an adapter that is a GPU. Software adapters (Mesa's lavapipe, llvmpipe)
/// run wgpu's kernels on the CPU, slower than the CPU backends, so `auto` passes them by; a
/// user who wants one names it (`--device wgpu`), as the tests do.
fn wgpu_gpu_found() -> bool {
    #[cfg(feature = "wgpu")]
    return enumerate("wgpu").iter().any(|device| {
        device
            .identity()
            .is_some_and(|identity| identity.physical.is_some())
    });
    #[allow(unreachable_code)]
    false
}

/// What `auto` looked for and found, for its note.
fn gpus_looked_for() -> String {
    let mut looked = Vec::new();
    if cfg!(feature = "cuda") {
        looked.push("no CUDA device".to_string());
    }
    if cfg!(feature = "wgpu") {
        let adapters = enumerate("wgpu");
        looked.push(match adapters.len() {
            0 => "no wgpu adapter".to_string(),
            n => format!("{n} software wgpu adapter(s), which `--device wgpu` would use"),
        });
    }
    looked.join("; ")
}

/// Prints `note` to standard error once per process: programs resolve `auto` more than once.
fn note_once(note: &str) {
    static NOTED: std::sync::Once = std::sync::Once::new();
    NOTED.call_once(|| eprintln!("{note}"));
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

    /// [`select_devices`]'s devices, without its change to the environment.
    fn devices(spec: &str, list: Option<&str>) -> Result<Vec<Device>, String> {
        resolve_devices(spec, list).map(|(devices, _)| devices)
    }

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
        assert_eq!(devices("cpu", None).unwrap(), vec![cpu.clone()]);
        assert_eq!(devices("cpu", Some("all")).unwrap(), vec![cpu.clone()]);
        assert_eq!(
            devices("cpu", Some("0, 1,2")).unwrap(),
            vec![cpu.clone(), cpu.clone(), cpu]
        );
        let err = devices("cpu", Some("0,x")).unwrap_err();
        assert!(err.contains("`x` is not a device number"), "{err}");
        let err = devices("cpu", Some("1,1")).unwrap_err();
        assert!(err.contains("device 1 is listed twice"), "{err}");
        let err = devices("cuda:1", Some("0,1")).unwrap_err();
        assert!(err.contains("--device cuda:1 names one device"), "{err}");
    }

    /// A device number that does not exist is an error on every backend: the CPU is device
    /// 0 (its workers 0 to N - 1), and a GPU backend has the devices its driver lists.
    #[test]
    fn device_numbers_that_do_not_exist_are_errors() {
        let err = devices("cpu", Some("0,5")).unwrap_err();
        assert!(err.contains("the CPU has no device 5"), "{err}");
        assert!(err.contains("--devices 0,1"), "{err}");
        for spec in ["cpu:3", "flex:1", "auto:2"] {
            let err = parse_device(spec).unwrap_err();
            assert!(err.contains("the CPU is one device"), "{spec}: {err}");
        }
        assert!(parse_device("cpu:0").is_ok());
        for backend in ["cuda", "wgpu"] {
            let found = enumerate(backend).len();
            let err = devices(backend, Some(&format!("0,{}", found + 1))).unwrap_err();
            assert!(
                err.contains(&format!("{found} ")) || err.contains("needs burnbert built"),
                "{backend}: {err}"
            );
        }
    }

    /// `wgpu:N` is the Nth adapter wgpu lists (lavapipe's alone in CI), and `auto` passes a
    /// software adapter by for the CPU, whose backends are faster than one.
    #[cfg(feature = "wgpu")]
    #[test]
    fn wgpu_numbers_the_adapters_it_lists_and_auto_skips_software_ones() {
        let adapters = enumerate("wgpu");
        assert!(!adapters.is_empty(), "CI installs Mesa's lavapipe");
        assert_eq!(parse_device("wgpu:0").unwrap(), adapters[0]);
        assert_eq!(device_name(&adapters[0]), "wgpu:0");
        let err = parse_device(&format!("wgpu:{}", adapters.len())).unwrap_err();
        assert!(err.contains("wgpu adapter(s) found"), "{err}");
        let default = device_name(&parse_device("wgpu").unwrap());
        assert!(default.starts_with("wgpu (default adapter: "), "{default}");
        let gpu = wgpu_gpu_found() || cuda_devices() > 0;
        assert_eq!(
            parse_device("auto").unwrap() == parse_device("cpu").unwrap(),
            !gpu
        );
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
