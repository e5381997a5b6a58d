//! Offline stand-in for `cubecl-llvm` 0.11.3 (see `vendor/README.md` in the workspace).
//!
//! `cubecl-cuda` 0.11.3 always depends on `cubecl-llvm`, whose build script needs a
//! prebuilt LLVM that `tracel-llvm-bundler` downloads at build time. This crate keeps
//! the items `cubecl-cuda` names, with their upstream shapes, and none of the LLVM code
//! generator. The workspace selects `cubecl-cuda`'s `cpp` feature, so kernels are
//! compiled as CUDA C++ through NVRTC at run time and nothing here is reached; if the
//! LLVM backend is selected anyway, device creation panics with an explanation.
//!
//! Only the NVPTX side (`cubecl-cuda`) is provided: `cubecl-hip` and `cubecl-cpu`
//! need the real crate.

#[cfg(feature = "nvptx")]
pub mod nvptx;
pub mod shared;
pub mod target;

#[cfg(feature = "nvptx")]
pub use shared::NvptxModule;
pub use shared::{PlironArtifact, PlironCompiler, PlironOptions};
pub use target::LlvmTarget;

/// Why the LLVM backend cannot run in this build.
pub(crate) const NOT_BUILT: &str = "cubecl-cuda selected its LLVM backend, but this workspace \
     replaces cubecl-llvm with an offline stub (vendor/cubecl-llvm) that has no LLVM code \
     generator. Enable cubecl-cuda's `cpp` feature (NVRTC backend), or remove the \
     `[patch.crates-io]` entry for cubecl-llvm to build the real crate (needs internet).";
