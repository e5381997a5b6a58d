//! NVPTX target.

pub mod ptx_version;
