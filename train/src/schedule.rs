//! Learning-rate schedules as pure functions of the optimizer step, written to match
//! transformers' `get_scheduler` step for step. A function of the step (rather than a
//! stateful scheduler object like Burn's `LrScheduler`) is what warmup + decay over a
//! step count needs, and it resumes from a checkpoint with nothing to restore.

use std::f64::consts::PI;

/// The shape of the schedule after warmup.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear decay to 0 at the last step (the course's `get_scheduler("linear")`).
    Linear,
    /// Half a cosine wave down to 0 at the last step.
    Cosine,
    /// The peak rate throughout.
    Constant,
}

/// A warmup then decay schedule over `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// The learning rate for the update at `step` (0-based), the value transformers'
    /// scheduler reports after `step` calls of `lr_scheduler.step()`.
    pub fn lr(&self, step: usize) -> f64 {
        let (step, warmup, total) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < warmup {
            return self.peak * step / warmup.max(1.0);
        }
        let factor = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
            ScheduleKind::Cosine => {
                let progress = (step - warmup) / (total - warmup).max(1.0);
                (0.5 * (1.0 + (PI * progress).cos())).max(0.0)
            }
        };
        self.peak * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' `get_scheduler` values, from `assets/fixtures/make_fixtures.py`.
    #[test]
    fn matches_transformers_get_scheduler() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/fixtures/schedule_reference.json"
        );
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (case, kind) in [
            ("linear_1377", ScheduleKind::Linear),
            ("linear_warmup10_50", ScheduleKind::Linear),
            ("cosine_warmup10_50", ScheduleKind::Cosine),
            ("constant_with_warmup5_20", ScheduleKind::Constant),
        ] {
            let case = &reference[case];
            let schedule = Schedule {
                kind,
                peak: case["base_lr"].as_f64().unwrap(),
                warmup_steps: case["num_warmup_steps"].as_u64().unwrap() as usize,
                total_steps: case["num_training_steps"].as_u64().unwrap() as usize,
            };
            let steps = case["k"].as_array().unwrap();
            let rates = case["lr"].as_array().unwrap();
            assert!(!steps.is_empty());
            for (k, lr) in steps.iter().zip(rates) {
                let (k, lr) = (k.as_u64().unwrap() as usize, lr.as_f64().unwrap());
                let ours = schedule.lr(k);
                assert!(
                    (ours - lr).abs() <= 1e-12 * lr.abs().max(1e-5),
                    "{kind:?} step {k}: {ours} vs {lr}"
                );
            }
        }
    }
}
