//! The learning-rate schedule: a pure function of the step, so a resumed run needs no state for it.

use crate::spec::LrScheduler;

/// Warmup then cosine, linear or constant decay down to a floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub kind: LrScheduler,
    /// The floor as a fraction of `peak_lr`.
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// The learning rate of update `step` (counted from 1).
    pub fn lr_at(&self, step: u64) -> f64 {
        let min_lr = self.peak_lr * self.min_lr_ratio;
        // 1) linear warmup from peak/warmup at step 1 to peak at step `warmup_steps`
        if step <= self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps as f64;
        }
        // 2) decay over the remaining steps, reaching the floor at the last step
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        match self.kind {
            LrScheduler::Constant => self.peak_lr,
            LrScheduler::Linear => min_lr + (self.peak_lr - min_lr) * (1.0 - progress),
            LrScheduler::Cosine => {
                min_lr
                    + (self.peak_lr - min_lr)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: LrScheduler) -> Schedule {
        Schedule {
            peak_lr: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            kind,
            min_lr_ratio: 0.1,
        }
    }

    #[test]
    fn warmup_is_linear_from_the_first_step() {
        let s = sched(LrScheduler::Cosine);
        assert!((s.lr_at(1) - 1e-4).abs() < 1e-15);
        assert!((s.lr_at(5) - 5e-4).abs() < 1e-15);
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-15);
    }

    #[test]
    fn cosine_hits_midpoint_and_floor() {
        // Hand computation: step 60 is halfway through 100 decay steps, cos(pi/2) = 0,
        // so lr = 1e-4 + 9e-4 * 0.5 = 5.5e-4; the last step is the floor 1e-4.
        let s = sched(LrScheduler::Cosine);
        assert!((s.lr_at(60) - 5.5e-4).abs() < 1e-15);
        assert!((s.lr_at(110) - 1e-4).abs() < 1e-15);
        // step 35: progress 0.25, 1e-4 + 9e-4 * 0.5 * (1 + cos(pi/4)) = 8.681980515339464e-4
        assert!((s.lr_at(35) - 8.681980515339464e-4).abs() < 1e-15);
    }

    #[test]
    fn linear_and_constant() {
        let l = sched(LrScheduler::Linear);
        // step 85: progress 0.75 -> 1e-4 + 9e-4 * 0.25 = 3.25e-4
        assert!((l.lr_at(85) - 3.25e-4).abs() < 1e-15);
        assert!((l.lr_at(110) - 1e-4).abs() < 1e-15);
        let c = sched(LrScheduler::Constant);
        assert_eq!(c.lr_at(11), 1e-3);
        assert_eq!(c.lr_at(110), 1e-3);
    }

    #[test]
    fn no_warmup_starts_at_peak() {
        let s = Schedule {
            warmup_steps: 0,
            ..sched(LrScheduler::Cosine)
        };
        assert!((s.lr_at(1) - 1e-3).abs() < 1e-6);
    }
}
