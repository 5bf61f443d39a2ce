//! Magnitude pruning (`--prune channels=RATIO`): in every group of coupled layers, the RATIO
//! lowest-scoring classes go.
//!
//! A class's score is the mean, over every weight slice it owns, of that slice's norm (L1 or
//! L2) divided by the mean norm of its layer's slices of the same kind: the producers' output
//! filters (Conv, depthwise Conv, Gemm and MatMul rows) and the readers' input columns (every
//! output's weights for that channel, or for its block of features after a Flatten). Dividing
//! by the layer's mean lets layers of different scale vote equally (Torch-Pruning's group
//! magnitude importance with a mean normalizer). Pinned classes and the classes of the layers
//! `--prune-skip` names never go, and every value keeps at least one channel. With
//! `round_to` (`--prune-round-to N`) each group keeps a multiple of N classes.

use std::collections::{BTreeMap, BTreeSet};

use kiln_ir::{Graph, NodeId};

use super::groups::{ChannelGroups, ClassId, Role};

/// How a weight slice's size is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Metric {
    /// Sum of absolute values.
    #[default]
    L1,
    /// Euclidean norm.
    L2,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MagnitudeOptions {
    /// Fraction of each group's classes to remove, in [0, 1).
    pub ratio: f64,
    pub metric: Metric,
    /// Names of nodes whose output channels must stay.
    pub skip: Vec<String>,
    /// Each group keeps a multiple of this many classes (the nearest to what `ratio` asks,
    /// ties towards keeping more; at least one multiple): integer kernels run fastest on
    /// channel counts that fill their SIMD lanes (4 int8 channels per word on Cortex-M DSP).
    /// 1: no rounding.
    pub round_to: usize,
}

impl Default for MagnitudeOptions {
    fn default() -> Self {
        MagnitudeOptions {
            ratio: 0.0,
            metric: Metric::L1,
            skip: Vec::new(),
            round_to: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MagnitudeError {
    #[error("--prune-skip '{0}': the optimized graph has no node of that name")]
    UnknownNode(String),
    #[error("the pruning ratio must be at least 0 and below 1, got {0}")]
    Ratio(f64),
}

/// What magnitude pruning chose.
#[derive(Clone, Debug, Default)]
pub struct MagnitudePlan {
    pub removed: BTreeSet<ClassId>,
    /// Score of each class (infinite for pinned and skipped ones).
    pub scores: Vec<f64>,
    /// Classes of each group kept because `--prune-skip` named one of their layers.
    pub skipped: BTreeSet<ClassId>,
}

fn norm(metric: Metric, w: &[f32]) -> f64 {
    match metric {
        Metric::L1 => w.iter().map(|&x| f64::from(x).abs()).sum(),
        Metric::L2 => w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt(),
    }
}

/// The score of every class (see the module docs); pinned classes score infinity.
pub fn class_scores(g: &Graph, groups: &ChannelGroups, metric: Metric) -> Vec<f64> {
    let mut sums = vec![0.0f64; groups.classes.len()];
    let mut counts = vec![0usize; groups.classes.len()];
    let mut add_side = |per_slot: Vec<(ClassId, f64)>| {
        let mean = per_slot.iter().map(|(_, n)| n).sum::<f64>() / per_slot.len().max(1) as f64;
        for (c, n) in per_slot {
            sums[c] += if mean > 0.0 { n / mean } else { 0.0 };
            counts[c] += 1;
        }
    };
    for (&id, role) in &groups.roles {
        if !matches!(
            role,
            Role::Conv | Role::Depthwise | Role::Gemm | Role::MatMul
        ) {
            continue;
        }
        let Some(m) = super::weight_matrix(g, id) else {
            continue;
        };
        let node = g.node(id);
        if let Some(l) = node.outputs.first().and_then(|v| groups.layouts.get(v)) {
            add_side(
                l.slots
                    .iter()
                    .enumerate()
                    .map(|(o, &e)| (groups.class_of(e), norm(metric, m.out_row(o))))
                    .collect(),
            );
        }
        if *role == Role::Depthwise {
            continue;
        }
        if let Some(l) = node.inputs.first().and_then(|v| groups.layouts.get(v)) {
            add_side(
                l.slots
                    .iter()
                    .enumerate()
                    .map(|(s, &e)| {
                        let w: Vec<f32> = (s * l.block..(s + 1) * l.block)
                            .flat_map(|i| m.in_column(i))
                            .collect();
                        (groups.class_of(e), norm(metric, &w))
                    })
                    .collect(),
            );
        }
    }
    (0..groups.classes.len())
        .map(|c| {
            if groups.classes[c].is_pinned() || counts[c] == 0 {
                f64::INFINITY
            } else {
                sums[c] / counts[c] as f64
            }
        })
        .collect()
}

/// How many of a group's `n` classes go at `ratio`: the nearest whole number, or with
/// `round_to` > 1 (and at least `round_to` classes) the number that leaves the multiple of
/// `round_to` nearest to what the ratio keeps, ties towards keeping more, never none.
fn removal_count(n: usize, ratio: f64, round_to: usize) -> usize {
    let k = (ratio * n as f64).round() as usize;
    if round_to <= 1 || n < round_to {
        return k;
    }
    let keep = n.saturating_sub(k);
    let lower = keep / round_to * round_to;
    let upper = lower + round_to;
    let keep = if lower == keep {
        keep
    } else if lower == 0 || upper - keep <= keep - lower {
        upper
    } else {
        lower
    };
    n.saturating_sub(keep.min(n))
}

/// Chooses the classes to remove.
pub fn magnitude_plan(
    g: &Graph,
    groups: &ChannelGroups,
    options: &MagnitudeOptions,
) -> Result<MagnitudePlan, MagnitudeError> {
    if !(0.0..1.0).contains(&options.ratio) {
        return Err(MagnitudeError::Ratio(options.ratio));
    }
    let mut skipped = BTreeSet::new();
    for name in &options.skip {
        let nodes: Vec<NodeId> = g
            .node_ids()
            .into_iter()
            .filter(|&n| g.node(n).name == *name)
            .collect();
        if nodes.is_empty() {
            return Err(MagnitudeError::UnknownNode(name.clone()));
        }
        for n in nodes {
            for v in &g.node(n).outputs {
                skipped.extend(groups.value_classes(*v).into_iter().flatten());
            }
        }
    }
    let mut scores = class_scores(g, groups, options.metric);
    for &c in &skipped {
        scores[c] = f64::INFINITY;
    }
    let mut removed = BTreeSet::new();
    for group in &groups.groups {
        let mut candidates: Vec<ClassId> = group
            .classes
            .iter()
            .copied()
            .filter(|&c| scores[c].is_finite())
            .collect();
        let n = group.classes.len();
        let k = removal_count(n, options.ratio, options.round_to).min(candidates.len());
        candidates.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        removed.extend(candidates.into_iter().take(k));
    }
    let by_score: BTreeMap<ClassId, f64> = scores.iter().copied().enumerate().collect();
    super::keep_one_per_layout(groups, &mut removed, &|c| by_score[&c]);
    Ok(MagnitudePlan {
        removed,
        scores,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::removal_count;

    #[test]
    fn removal_counts_round_what_is_kept() {
        // Plain: the nearest whole number of classes.
        assert_eq!(removal_count(8, 0.25, 1), 2);
        assert_eq!(removal_count(16, 0.1, 1), 2);
        // Rounded to 4: 8 * 0.75 = 6 kept -> 8 (ties keep more); 16 * 0.75 = 12 stays.
        assert_eq!(removal_count(8, 0.25, 4), 0);
        assert_eq!(removal_count(16, 0.25, 4), 4);
        assert_eq!(removal_count(16, 0.1, 4), 0);
        assert_eq!(removal_count(64, 0.3, 4), 20);
        // Never below one multiple; groups smaller than a multiple are not rounded.
        assert_eq!(removal_count(8, 0.9, 4), 4);
        assert_eq!(removal_count(3, 0.5, 4), 2);
        assert_eq!(removal_count(10, 0.5, 4), 6);
    }
}
