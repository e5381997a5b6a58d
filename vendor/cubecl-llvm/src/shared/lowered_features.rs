//! What a device advertises, narrowed to what the LLVM backend lowers for it.

use cubecl_core::ir::DeviceProperties;

/// The GPU target a device's features are narrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    Nvptx,
}

/// `cubecl-cuda` calls this while creating a device, and only when its LLVM backend is
/// selected: the earliest point to say that this build has no LLVM backend.
pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {
    panic!("{}", crate::NOT_BUILT);
}
