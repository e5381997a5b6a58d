//! What the tests share: the devices they compare, and turns at Burn's random generators.

use burn::tensor::Device;

/// The CPU device the kernels are checked against: flex, burnbert-model's `cpu`.
pub fn cpu() -> Device {
    Device::flex()
}

/// The wgpu device the kernels run on in the tests (lavapipe in CI), with the compiled-kernel
/// cache set up first, as burnbert-model's device parsing does.
#[cfg(feature = "wgpu")]
pub fn wgpu() -> Device {
    crate::keep_compiled_kernels();
    Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
}

/// Burn's generators are one per backend and process; tests that seed them and draw take
/// turns, or a test running beside them would draw between the seeding and the mask.
#[cfg(feature = "wgpu")]
pub fn seeding() -> std::sync::MutexGuard<'static, ()> {
    static GENERATORS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GENERATORS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
