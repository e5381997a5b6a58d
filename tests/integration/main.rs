//! burnbert's integration tests, in one binary so that Burn is linked once.

mod common;
mod parity;
mod tokenization;
mod training;
