//! Metrics like 🤗 Evaluate's `glue` metric: feed predictions batch by batch with
//! `add_batch`, then `compute`. Definitions follow scikit-learn's (which Evaluate calls),
//! including its conventions for degenerate cases: F1, precision and recall are 0 when
//! their denominator is 0, and Matthews correlation is 0 when a marginal is constant.

use std::collections::BTreeMap;

use burnbert_data::MetricKind;

/// A streaming metric accumulator for one task.
#[derive(Debug, Clone)]
pub struct Metrics {
    kinds: Vec<MetricKind>,
    /// 0 for regression.
    num_classes: usize,
    predictions: Vec<f64>,
    references: Vec<f64>,
}

impl Metrics {
    /// Metrics `kinds` for a task with `num_classes` classes (0 for regression).
    pub fn new(kinds: &[MetricKind], num_classes: usize) -> Self {
        Self {
            kinds: kinds.to_vec(),
            num_classes,
            predictions: Vec::new(),
            references: Vec::new(),
        }
    }

    /// Adds predicted classes (or scores) and their references.
    pub fn add_batch(&mut self, predictions: &[f64], references: &[f64]) {
        assert_eq!(
            predictions.len(),
            references.len(),
            "one reference per prediction"
        );
        self.predictions.extend_from_slice(predictions);
        self.references.extend_from_slice(references);
    }

    /// Number of examples seen.
    pub fn len(&self) -> usize {
        self.predictions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.predictions.is_empty()
    }

    /// The task's metrics by name (`accuracy`, `f1`, `matthews_correlation`, `pearson`,
    /// `spearmanr`), in the order the task lists them.
    pub fn compute(&self) -> BTreeMap<String, f64> {
        let classes = || -> (Vec<usize>, Vec<usize>) {
            (
                self.predictions.iter().map(|&p| p as usize).collect(),
                self.references.iter().map(|&r| r as usize).collect(),
            )
        };
        self.kinds
            .iter()
            .map(|kind| {
                let value = match kind {
                    MetricKind::Accuracy => {
                        let (p, r) = classes();
                        accuracy(&p, &r)
                    }
                    MetricKind::F1 => {
                        let (p, r) = classes();
                        binary_scores(&p, &r, 1).f1
                    }
                    MetricKind::Matthews => {
                        let (p, r) = classes();
                        matthews(&confusion_matrix(&p, &r, self.num_classes.max(2)))
                    }
                    MetricKind::Pearson => pearson(&self.predictions, &self.references),
                    MetricKind::Spearman => spearman(&self.predictions, &self.references),
                };
                (kind.name().to_string(), value)
            })
            .collect()
    }

    /// The confusion matrix, rows = reference class, columns = predicted class.
    pub fn confusion_matrix(&self) -> Vec<Vec<usize>> {
        let p: Vec<usize> = self.predictions.iter().map(|&p| p as usize).collect();
        let r: Vec<usize> = self.references.iter().map(|&r| r as usize).collect();
        confusion_matrix(&p, &r, self.num_classes.max(2))
    }
}

/// Fraction of predictions equal to their reference.
pub fn accuracy(predictions: &[usize], references: &[usize]) -> f64 {
    let right = predictions
        .iter()
        .zip(references)
        .filter(|(p, r)| p == r)
        .count();
    right as f64 / predictions.len().max(1) as f64
}

/// `matrix[reference][prediction]` counts.
pub fn confusion_matrix(
    predictions: &[usize],
    references: &[usize],
    num_classes: usize,
) -> Vec<Vec<usize>> {
    let n = predictions
        .iter()
        .chain(references)
        .map(|&c| c + 1)
        .max()
        .unwrap_or(0)
        .max(num_classes);
    let mut matrix = vec![vec![0; n]; n];
    for (&p, &r) in predictions.iter().zip(references) {
        matrix[r][p] += 1;
    }
    matrix
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Scores of class `positive` against all others (scikit-learn's `average="binary"`).
pub fn binary_scores(predictions: &[usize], references: &[usize], positive: usize) -> ClassScores {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (&p, &r) in predictions.iter().zip(references) {
        match (p == positive, r == positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    ClassScores {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
    }
}

/// Unweighted mean of the per-class scores over the classes present in either list
/// (scikit-learn's `average="macro"`).
pub fn macro_scores(predictions: &[usize], references: &[usize]) -> ClassScores {
    let mut classes: Vec<usize> = predictions.iter().chain(references).copied().collect();
    classes.sort();
    classes.dedup();
    let per_class: Vec<ClassScores> = classes
        .iter()
        .map(|&c| binary_scores(predictions, references, c))
        .collect();
    let mean = |f: fn(&ClassScores) -> f64| {
        per_class.iter().map(f).sum::<f64>() / per_class.len().max(1) as f64
    };
    ClassScores {
        precision: mean(|s| s.precision),
        recall: mean(|s| s.recall),
        f1: mean(|s| s.f1),
    }
}

/// Micro-averaged F1; for single-label classification it equals accuracy.
pub fn micro_f1(predictions: &[usize], references: &[usize]) -> f64 {
    accuracy(predictions, references)
}

/// Matthews correlation coefficient from a confusion matrix (the multiclass form
/// scikit-learn uses); 0 when the denominator is 0.
pub fn matthews(matrix: &[Vec<usize>]) -> f64 {
    let n = matrix.len();
    let t: Vec<f64> = (0..n)
        .map(|k| matrix[k].iter().sum::<usize>() as f64)
        .collect();
    let p: Vec<f64> = (0..n)
        .map(|k| matrix.iter().map(|row| row[k]).sum::<usize>() as f64)
        .collect();
    let c: f64 = (0..n).map(|k| matrix[k][k] as f64).sum();
    let s: f64 = t.iter().sum();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov_ytyp = c * s - dot(&t, &p);
    let cov_ypyp = s * s - dot(&p, &p);
    let cov_ytyt = s * s - dot(&t, &t);
    if cov_ypyp * cov_ytyt == 0.0 {
        0.0
    } else {
        cov_ytyp / (cov_ytyt * cov_ypyp).sqrt()
    }
}

/// Pearson's correlation coefficient.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's rank correlation: Pearson's on ranks, ties getting their average rank.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && values[order[end + 1]] == values[order[start]] {
            end += 1;
        }
        let average = (start + end) as f64 / 2.0 + 1.0;
        for &i in &order[start..=end] {
            ranks[i] = average;
        }
        start = end + 1;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// scikit-learn's and SciPy's values, from `assets/fixtures/make_fixtures.py`.
    fn reference() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/fixtures/metrics_reference.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn classes(value: &Value) -> Vec<usize> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }

    fn reals(value: &Value) -> Vec<f64> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    }

    fn matrix(value: &Value) -> Vec<Vec<usize>> {
        value.as_array().unwrap().iter().map(classes).collect()
    }

    fn close(ours: f64, theirs: &Value, what: &str) {
        let theirs = theirs.as_f64().unwrap();
        assert!(!ours.is_nan(), "{what}: NaN");
        assert!(
            (ours - theirs).abs() < 1e-12,
            "{what}: {ours} vs scikit-learn {theirs}"
        );
    }

    fn check_binary(case: &Value, what: &str) {
        let (p, r) = (classes(&case["predictions"]), classes(&case["labels"]));
        let scores = binary_scores(&p, &r, 1);
        close(
            accuracy(&p, &r),
            &case["accuracy"],
            &format!("{what} accuracy"),
        );
        close(
            scores.precision,
            &case["precision"],
            &format!("{what} precision"),
        );
        close(scores.recall, &case["recall"], &format!("{what} recall"));
        close(scores.f1, &case["f1"], &format!("{what} f1"));
        let cm = confusion_matrix(&p, &r, 2);
        close(
            matthews(&cm),
            &case["matthews_corrcoef"],
            &format!("{what} mcc"),
        );
        assert_eq!(
            cm,
            matrix(&case["confusion_matrix"]),
            "{what} confusion matrix"
        );

        let mut streamed = Metrics::new(
            &[MetricKind::Accuracy, MetricKind::F1, MetricKind::Matthews],
            2,
        );
        let (pf, rf): (Vec<f64>, Vec<f64>) = (
            p.iter().map(|&x| x as f64).collect(),
            r.iter().map(|&x| x as f64).collect(),
        );
        for (pc, rc) in pf.chunks(7).zip(rf.chunks(7)) {
            streamed.add_batch(pc, rc);
        }
        let computed = streamed.compute();
        close(
            computed["accuracy"],
            &case["accuracy"],
            &format!("{what} streamed accuracy"),
        );
        close(computed["f1"], &case["f1"], &format!("{what} streamed f1"));
        close(
            computed["matthews_correlation"],
            &case["matthews_corrcoef"],
            &format!("{what} streamed mcc"),
        );
    }

    #[test]
    fn binary_metrics_match_scikit_learn() {
        check_binary(&reference()["binary"], "binary");
    }

    #[test]
    fn degenerate_cases_follow_scikit_learn_without_nan() {
        let reference = reference();
        for case in ["all_pred_zero", "all_one_both", "all_zero_both"] {
            check_binary(&reference["edge_cases"][case], case);
        }
    }

    #[test]
    fn multiclass_metrics_match_scikit_learn() {
        let case = &reference()["multiclass"];
        let (p, r) = (classes(&case["predictions"]), classes(&case["labels"]));
        let macro_ = macro_scores(&p, &r);
        close(accuracy(&p, &r), &case["accuracy"], "accuracy");
        close(macro_.f1, &case["f1_macro"], "macro f1");
        close(
            macro_.precision,
            &case["precision_macro"],
            "macro precision",
        );
        close(macro_.recall, &case["recall_macro"], "macro recall");
        close(micro_f1(&p, &r), &case["f1_micro"], "micro f1");
        let cm = confusion_matrix(&p, &r, 3);
        assert_eq!(cm, matrix(&case["confusion_matrix"]));
        close(matthews(&cm), &case["matthews_corrcoef"], "multiclass mcc");
    }

    #[test]
    fn correlations_match_scipy_with_and_without_ties() {
        let reference = reference();
        for case in ["random", "ties"] {
            let case = &reference["regression"][case];
            let (p, r) = (reals(&case["predictions"]), reals(&case["references"]));
            close(pearson(&p, &r), &case["pearson"], "pearson");
            close(spearman(&p, &r), &case["spearman"], "spearman");
        }
    }
}
