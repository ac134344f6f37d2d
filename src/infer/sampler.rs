//! Choosing the next token: greedy at temperature 0, else temperature-scaled softmax with nucleus
//! (top-p) filtering, from a seeded RNG so a request with a seed is reproducible.

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Sampling settings of one request.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
}

impl Sampler {
    pub fn new(temperature: f64, top_p: f64, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Sampler {
            temperature,
            top_p,
            rng,
        }
    }

    /// The next token id from a row of logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l as f64 - max) / self.temperature).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= total);
        if self.top_p < 1.0 {
            probs.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
            let mut cum = 0.0;
            let mut keep = 0;
            for p in &probs {
                cum += p.1;
                keep += 1;
                if cum >= self.top_p {
                    break;
                }
            }
            probs.truncate(keep.max(1));
        }
        let mass: f64 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f64>() * mass;
        for (id, p) in &probs {
            r -= p;
            if r <= 0.0 {
                return *id;
            }
        }
        probs.last().map(|p| p.0).unwrap_or(0)
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = Sampler::new(0.0, 1.0, Some(1));
        assert_eq!(s.pick(&[0.1, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // p = softmax([10, 0, 0]) ≈ [0.99991, 4.5e-5, 4.5e-5]: with top_p 0.9 only token 0 remains.
        let mut s = Sampler::new(1.0, 0.9, Some(7));
        for _ in 0..200 {
            assert_eq!(s.pick(&[10.0, 0.0, 0.0]), 0);
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let logits = [1.0, 1.2, 0.9, 1.1];
        let a: Vec<u32> = {
            let mut s = Sampler::new(1.0, 1.0, Some(5));
            (0..20).map(|_| s.pick(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(1.0, 1.0, Some(5));
            (0..20).map(|_| s.pick(&logits)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter().any(|&x| x != a[0]),
            "sampling at temperature 1 varies"
        );
    }
}
