//! burnbert's integration tests, in one binary so that Burn is linked once.

mod common;
mod datasets;
#[cfg(feature = "mpi")]
mod distributed;
mod errors;
mod execution;
mod families;
mod fuzz;
mod multi_device;
mod parity;
mod programs;
mod tokenization;
mod training;
mod training_parity;
