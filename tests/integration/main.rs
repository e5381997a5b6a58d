//! burnbert's integration tests, in one binary so that Burn is linked once.

mod common;
mod errors;
mod parity;
mod tokenization;
mod programs;
mod training;
