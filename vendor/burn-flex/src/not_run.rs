//! Tests whose subject this CPU cannot run say so (burnbert patch). Such a test calls
//! [`not_run`] and returns: it prints the reason, and appends `test: reason` to the file
//! named by `BURNBERT_NOT_RUN`, which burnbert's `scripts/test` lists at its end, so that a
//! test that checked nothing does not pass in silence.

use std::io::Write;

pub(crate) fn not_run(test: &str, reason: &str) {
    std::eprintln!("not run on this CPU: {test}, because {reason}");
    if let Some(path) = std::env::var_os("BURNBERT_NOT_RUN") {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "burn-flex {test}: {reason}"))
            .expect("the file BURNBERT_NOT_RUN names can be written");
    }
}
