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
        assert_eq!(predictions.len(), references.len(), "one reference per prediction");
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
    let right = predictions.iter().zip(references).filter(|(p, r)| p == r).count();
    right as f64 / predictions.len().max(1) as f64
}

/// `matrix[reference][prediction]` counts.
pub fn confusion_matrix(predictions: &[usize], references: &[usize], num_classes: usize) -> Vec<Vec<usize>> {
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
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
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
    let mean = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / per_class.len().max(1) as f64;
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
    let t: Vec<f64> = (0..n).map(|k| matrix[k].iter().sum::<usize>() as f64).collect();
    let p: Vec<f64> = (0..n).map(|k| matrix.iter().map(|row| row[k]).sum::<usize>() as f64).collect();
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
