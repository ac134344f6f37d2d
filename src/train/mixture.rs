//! Which training row comes next: the data order of a job, over one file or a mixture of files
//! (domains), with an optional curriculum.
//!
//! Each domain deals its own rows epoch after epoch in a seeded shuffled order (the first
//! domain's order is exactly [`RowSampler::epoch_order`]'s, so a one-file job trains as it always
//! has); with the length curriculum, its first epoch comes short to long instead. Across domains
//! the next row comes from the domain furthest behind its share of the tokens dealt so far (the
//! one with the largest `weight · tokens_dealt − domain_tokens_dealt`, ties to the first): a
//! deterministic interleaving whose realised token shares stay within one row of the weights
//! at every point of a run. Staged weights restart that count at each stage's first step.
//!
//! The whole state is the number of rows dealt: a resumed job replays the choices up to its data
//! position (a fraction of a second for millions of rows), so checkpoints keep one integer as
//! before.

use super::data::RowSampler;

/// One domain: its rows' place among all the job's rows, their tokens, and its name for
/// metrics (`None` for a one-file job, which reports none).
#[derive(Debug, Clone)]
pub struct DomainRows {
    pub name: Option<String>,
    /// The domain's rows are `start..start + tokens.len()` of the job's rows.
    pub start: usize,
    /// Real (non-padding) tokens of each row.
    pub tokens: Vec<u32>,
    /// With the length curriculum: the rows (domain-local) from short to long.
    pub by_length: Option<Vec<usize>>,
}

impl DomainRows {
    fn len(&self) -> usize {
        self.tokens.len()
    }
}

/// The mixture weights in force up to a step (inclusive); the last stage runs to the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub until_step: u64,
    /// One per domain, summing to 1.
    pub weights: Vec<f64>,
}

/// Everything the order depends on but the seed and the position.
#[derive(Debug, Clone)]
pub struct MixPlan {
    pub domains: Vec<DomainRows>,
    pub stages: Vec<Stage>,
    /// Rows per optimiser step (batch size × accumulation), to place stage boundaries.
    pub rows_per_step: u64,
}

impl MixPlan {
    /// One unnamed domain of `n_rows` rows in shuffled order: what a one-file job (and a
    /// preference job) uses.
    pub fn single(n_rows: usize) -> Self {
        MixPlan {
            domains: vec![DomainRows {
                name: None,
                start: 0,
                tokens: vec![1; n_rows],
                by_length: None,
            }],
            stages: vec![Stage {
                until_step: u64::MAX,
                weights: vec![1.0],
            }],
            rows_per_step: 1,
        }
    }

    /// Normalised weights: `weights`, or each domain's share of all tokens when `None`.
    pub fn normalise(weights: Option<&[f64]>, domains: &[DomainRows]) -> Vec<f64> {
        let raw: Vec<f64> = match weights {
            Some(w) => w.to_vec(),
            None => domains
                .iter()
                .map(|d| d.tokens.iter().map(|&t| f64::from(t)).sum())
                .collect(),
        };
        let total: f64 = raw.iter().sum();
        if total > 0.0 {
            raw.iter().map(|w| w / total).collect()
        } else {
            vec![1.0 / raw.len() as f64; raw.len()]
        }
    }

    /// All rows of all domains.
    pub fn total_rows(&self) -> usize {
        self.domains.iter().map(DomainRows::len).sum()
    }

    /// Whether the domains are named (a mixture reports per-domain metrics).
    pub fn named(&self) -> bool {
        self.domains.iter().any(|d| d.name.is_some())
    }

    fn stage_at(&self, step: u64) -> usize {
        self.stages
            .iter()
            .position(|s| step <= s.until_step)
            .unwrap_or(self.stages.len() - 1)
    }
}

/// The order of a domain's rows in one of its epochs: the length order in the first epoch with
/// the curriculum, else a shuffle seeded by the job and the domain.
fn domain_epoch_order(d: &DomainRows, index: usize, seed: u64, epoch: u64) -> Vec<usize> {
    if epoch == 0
        && let Some(order) = &d.by_length
    {
        return order.clone();
    }
    // Domain 0 keeps the job's seed, so a one-file job deals what it always dealt.
    let seed = seed ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    RowSampler::epoch_order(d.len(), seed, epoch)
}

/// Deals rows by the plan; see the module docs.
#[derive(Debug, Clone)]
pub struct MixtureSampler<'a> {
    plan: &'a MixPlan,
    seed: u64,
    position: u64,
    /// Rows dealt per domain.
    dealt: Vec<u64>,
    /// Tokens dealt per domain, all told and within the current stage.
    tokens: Vec<u64>,
    stage_tokens: Vec<u64>,
    stage: usize,
    /// Each domain's current epoch order.
    orders: Vec<Option<(u64, Vec<usize>)>>,
}

impl<'a> MixtureSampler<'a> {
    /// A sampler that has dealt `position` rows already (replayed here).
    pub fn new(plan: &'a MixPlan, seed: u64, position: u64) -> Self {
        assert!(plan.total_rows() > 0, "a sampler needs rows");
        let n = plan.domains.len();
        let mut s = MixtureSampler {
            plan,
            seed,
            position: 0,
            dealt: vec![0; n],
            tokens: vec![0; n],
            stage_tokens: vec![0; n],
            stage: 0,
            orders: vec![None; n],
        };
        for _ in 0..position {
            s.next_domain_row();
        }
        s
    }

    /// Rows dealt so far, across epochs: the data position a checkpoint stores.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Epochs consumed, fractional: rows dealt over all rows of all domains.
    pub fn epoch(&self) -> f64 {
        self.position as f64 / self.plan.total_rows() as f64
    }

    /// Tokens dealt so far per named domain, as `(name, tokens)`.
    pub fn tokens_seen(&self) -> Vec<(&'a str, u64)> {
        self.plan
            .domains
            .iter()
            .zip(&self.tokens)
            .filter_map(|(d, &t)| d.name.as_deref().map(|n| (n, t)))
            .collect()
    }

    /// The next `count` rows (indices among all the job's rows).
    pub fn next_rows(&mut self, count: usize) -> Vec<usize> {
        (0..count).map(|_| self.next_domain_row()).collect()
    }

    /// The domain the next row comes from.
    fn pick(&mut self) -> usize {
        let step = self.position / self.plan.rows_per_step.max(1) + 1;
        let stage = self.plan.stage_at(step);
        if stage != self.stage {
            self.stage = stage;
            self.stage_tokens.iter_mut().for_each(|t| *t = 0);
        }
        let weights = &self.plan.stages[stage].weights;
        let dealt: u64 = self.stage_tokens.iter().sum();
        let mut best = None;
        for (d, &w) in weights.iter().enumerate() {
            if w <= 0.0 || self.plan.domains[d].len() == 0 {
                continue;
            }
            let deficit = w * dealt as f64 - self.stage_tokens[d] as f64;
            if best.is_none_or(|(_, b)| deficit > b) {
                best = Some((d, deficit));
            }
        }
        best.map_or(0, |(d, _)| d)
    }

    fn next_domain_row(&mut self) -> usize {
        let d = self.pick();
        let domain = &self.plan.domains[d];
        let n = domain.len() as u64;
        let (epoch, within) = (self.dealt[d] / n, (self.dealt[d] % n) as usize);
        if self.orders[d].as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.orders[d] = Some((epoch, domain_epoch_order(domain, d, self.seed, epoch)));
        }
        let local = self.orders[d].as_ref().expect("order set above").1[within];
        let tokens = u64::from(domain.tokens[local]);
        self.dealt[d] += 1;
        self.tokens[d] += tokens;
        self.stage_tokens[d] += tokens;
        self.position += 1;
        domain.start + local
    }
}

/// The rows of a domain from short to long by `key` (ties keep row order).
pub fn length_order(keys: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str, start: usize, tokens: Vec<u32>) -> DomainRows {
        DomainRows {
            name: Some(name.into()),
            start,
            tokens,
            by_length: None,
        }
    }

    #[test]
    fn one_domain_deals_exactly_what_the_row_sampler_deals() {
        let plan = MixPlan::single(13);
        let mut mix = MixtureSampler::new(&plan, 7, 0);
        let mut rows = RowSampler::new(13, 7, 0);
        assert_eq!(mix.next_rows(40), rows.next_rows(40));
        assert_eq!(mix.position(), rows.position());
    }

    #[test]
    fn token_shares_follow_the_weights_within_a_row() {
        // Rows of 100 and 30 tokens: weights are of tokens, not rows.
        let domains = vec![
            domain("web", 0, vec![100; 50]),
            domain("code", 50, vec![30; 20]),
        ];
        let weights = MixPlan::normalise(Some(&[0.7, 0.3]), &domains);
        let plan = MixPlan {
            domains,
            stages: vec![Stage {
                until_step: u64::MAX,
                weights,
            }],
            rows_per_step: 8,
        };
        let mut s = MixtureSampler::new(&plan, 1, 0);
        for _ in 0..500 {
            let rows = s.next_rows(1);
            assert!(rows[0] < 70);
            let seen = s.tokens_seen();
            let total = (seen[0].1 + seen[1].1) as f64;
            // Within one row's tokens of the target, at every point.
            assert!((seen[0].1 as f64 - 0.7 * total).abs() <= 100.0, "{seen:?}");
        }
        let seen = s.tokens_seen();
        let share = seen[0].1 as f64 / (seen[0].1 + seen[1].1) as f64;
        assert!((share - 0.7).abs() < 0.01, "{share}");
        // The code domain, 20 rows, was dealt many epochs over, each a permutation.
        let again = MixtureSampler::new(&plan, 1, 500);
        assert_eq!(
            again.tokens_seen(),
            s.tokens_seen(),
            "replay reaches the same state"
        );
    }

    #[test]
    fn natural_weights_are_each_domains_token_share() {
        let domains = vec![domain("a", 0, vec![10; 3]), domain("b", 3, vec![10; 1])];
        assert_eq!(MixPlan::normalise(None, &domains), vec![0.75, 0.25]);
    }

    #[test]
    fn stages_switch_weights_at_their_step() {
        let domains = vec![
            domain("web", 0, vec![10; 10]),
            domain("code", 10, vec![10; 10]),
        ];
        let plan = MixPlan {
            domains,
            stages: vec![
                Stage {
                    until_step: 2,
                    weights: vec![1.0, 0.0],
                },
                Stage {
                    until_step: 3,
                    weights: vec![0.0, 1.0],
                },
            ],
            rows_per_step: 4,
        };
        let mut s = MixtureSampler::new(&plan, 3, 0);
        let rows = s.next_rows(4 * 5);
        // Steps 1-2 web only, then code only (the last stage runs to the end).
        assert!(rows[..8].iter().all(|&r| r < 10), "{rows:?}");
        assert!(rows[8..].iter().all(|&r| r >= 10), "{rows:?}");
    }

    #[test]
    fn length_curriculum_goes_short_to_long_in_the_first_epoch_only() {
        let keys = [5.0, 1.0, 3.0, 1.0];
        let mut d = domain("x", 0, vec![1; 4]);
        d.by_length = Some(length_order(&keys));
        let plan = MixPlan {
            domains: vec![d],
            stages: vec![Stage {
                until_step: u64::MAX,
                weights: vec![1.0],
            }],
            rows_per_step: 1,
        };
        let mut s = MixtureSampler::new(&plan, 9, 0);
        assert_eq!(s.next_rows(4), vec![1, 3, 2, 0]);
        let second = s.next_rows(4);
        assert_eq!(second, RowSampler::epoch_order(4, 9, 1));
    }
}
