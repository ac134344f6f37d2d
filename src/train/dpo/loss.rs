//! The preference losses (`loss_type` of a DPO job), per pair, in f64 on the host: the loss, its
//! derivatives with respect to the policy's *summed* log-probabilities of the chosen and the
//! rejected output, and the rewards TRL reports. The model's graph never sees these formulas: the
//! trainer backpropagates `Σ ∂L/∂s · s` through the per-sequence log-probs `s`, which gives the
//! same gradients as differentiating the loss itself (every term below depends on the model only
//! through `s`).
//!
//! Formulas as TRL writes them (`z` the pair's margin, `σ` the logistic function, `ℓ` the output's
//! token count; SimPO, IPO and ORPO use per-token averages `s/ℓ`):
//! - `sigmoid` (DPO): `z = β·((s⁺ − r⁺) − (s⁻ − r⁻))`, loss `−log σ(z)`; rewards `β(s − r)`.
//! - `ipo`: the margin on per-token averages, `h = (s⁺ − r⁺)/ℓ⁺ − (s⁻ − r⁻)/ℓ⁻`, loss
//!   `(h − 1/(2β))²`; rewards `β(s − r)` as for DPO (TRL 1.16 reports the summed ratio).
//! - `simpo`: no reference, `z = β·(s⁺/ℓ⁺ − s⁻/ℓ⁻) − γ`, loss `−log σ(z)`; rewards `β·s/ℓ`.
//! - `orpo`: no reference, `a = s/ℓ`, log-odds `(a⁺ − a⁻) − (log(1−e^{a⁺}) − log(1−e^{a⁻}))`,
//!   loss `−β·log σ(log-odds)` beside the chosen outputs' mean NLL (weight 1); rewards `β·a`.
//!   TRL's ORPO takes that NLL over the prompt too; Wick keeps it on the output's tokens, as
//!   SFT does (a prompt is never a target).
//!
//! `tests/fixtures/dpo_reference.json` holds TRL 1.16's own values of each formula on fixed
//! log-probs (made by `tests/fixtures/make_dpo_reference.py`, which calls TRL's functions).
//!
//! A window's loss is the mean of its pairs' losses, plus `rpo_alpha` (1 for ORPO) times the mean
//! NLL over every chosen token of the window; [`nll_weight`] gives that coefficient.

pub use crate::spec::LossType;

/// The loss settings of a job, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreferenceLoss {
    pub kind: LossType,
    pub beta: f64,
    /// SimPO's target margin γ.
    pub simpo_gamma: f64,
    /// Weight of the chosen outputs' NLL (RPO); ORPO always adds it with weight 1.
    pub rpo_alpha: f64,
}

/// One pair's log-probabilities: the policy's and the reference's sums over each output's tokens,
/// and the outputs' token counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLogps {
    pub chosen: f64,
    pub rejected: f64,
    /// The reference's sums (ignored by SimPO and ORPO).
    pub ref_chosen: f64,
    pub ref_rejected: f64,
    pub chosen_len: f64,
    pub rejected_len: f64,
}

/// One pair's loss, its derivatives and rewards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairTerms {
    pub loss: f64,
    /// ∂loss/∂(policy's summed log-prob of the chosen output).
    pub d_chosen: f64,
    /// ∂loss/∂(policy's summed log-prob of the rejected output).
    pub d_rejected: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
}

/// `−log σ(z)` without overflow, and its derivative `−σ(−z)`.
fn neg_log_sigmoid(z: f64) -> (f64, f64) {
    // softplus(−z) = max(−z, 0) + log(1 + e^{−|z|})
    let value = (-z).max(0.0) + (-z.abs()).exp().ln_1p();
    let sig_neg = if z >= 0.0 {
        let e = (-z).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + z.exp())
    };
    (value, -sig_neg)
}

/// `log(1 − e^a)` for `a < 0`, and its derivative `−e^a/(1 − e^a)`.
fn log1m_exp(a: f64) -> (f64, f64) {
    // Two forms for accuracy (Mächler 2012): near 0 use log(−expm1(a)), else log1p(−e^a).
    let value = if a > -std::f64::consts::LN_2 {
        (-a.exp_m1()).ln()
    } else {
        (-a.exp()).ln_1p()
    };
    // −e^a/(1 − e^a) = −1/(e^{−a} − 1)
    (value, -1.0 / (-a).exp_m1())
}

impl PreferenceLoss {
    /// The coefficient of the window's mean chosen-token NLL in the loss.
    pub fn nll_weight(&self) -> f64 {
        match self.kind {
            LossType::Orpo => 1.0 + self.rpo_alpha,
            _ => self.rpo_alpha,
        }
    }

    /// The loss of one pair, its derivatives with respect to the policy's summed log-probs, and
    /// the rewards.
    pub fn pair(&self, p: &PairLogps) -> PairTerms {
        let beta = self.beta;
        let (lc, lr) = (p.chosen_len.max(1.0), p.rejected_len.max(1.0));
        match self.kind {
            LossType::Sigmoid => {
                let (dc, dr) = (p.chosen - p.ref_chosen, p.rejected - p.ref_rejected);
                let (loss, g) = neg_log_sigmoid(beta * (dc - dr));
                PairTerms {
                    loss,
                    d_chosen: g * beta,
                    d_rejected: -g * beta,
                    chosen_reward: beta * dc,
                    rejected_reward: beta * dr,
                }
            }
            LossType::Ipo => {
                let (dc, dr) = (
                    (p.chosen - p.ref_chosen) / lc,
                    (p.rejected - p.ref_rejected) / lr,
                );
                let h = dc - dr - 1.0 / (2.0 * beta);
                PairTerms {
                    loss: h * h,
                    d_chosen: 2.0 * h / lc,
                    d_rejected: -2.0 * h / lr,
                    chosen_reward: beta * (p.chosen - p.ref_chosen),
                    rejected_reward: beta * (p.rejected - p.ref_rejected),
                }
            }
            LossType::Simpo => {
                let (ac, ar) = (p.chosen / lc, p.rejected / lr);
                let (loss, g) = neg_log_sigmoid(beta * (ac - ar) - self.simpo_gamma);
                PairTerms {
                    loss,
                    d_chosen: g * beta / lc,
                    d_rejected: -g * beta / lr,
                    chosen_reward: beta * ac,
                    rejected_reward: beta * ar,
                }
            }
            LossType::Orpo => {
                // Averages of log-probs are ≤ 0; exactly 0 (a certain output) has infinite odds.
                let (ac, ar) = ((p.chosen / lc).min(-1e-12), (p.rejected / lr).min(-1e-12));
                let ((mc, dmc), (mr, dmr)) = (log1m_exp(ac), log1m_exp(ar));
                let log_odds = (ac - ar) - (mc - mr);
                let (nls, g) = neg_log_sigmoid(log_odds);
                PairTerms {
                    loss: beta * nls,
                    d_chosen: beta * g * (1.0 - dmc) / lc,
                    d_rejected: -beta * g * (1.0 - dmr) / lr,
                    chosen_reward: beta * ac,
                    rejected_reward: beta * ar,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> Vec<PairLogps> {
        let p = |c, r, rc, rr, lc, lr| PairLogps {
            chosen: c,
            rejected: r,
            ref_chosen: rc,
            ref_rejected: rr,
            chosen_len: lc,
            rejected_len: lr,
        };
        vec![
            p(-12.5, -14.0, -13.0, -13.5, 5.0, 6.0),
            p(-8.0, -6.5, -8.5, -7.0, 4.0, 4.0),
            p(-20.25, -30.0, -22.0, -25.0, 9.0, 7.0),
            p(-3.0, -2.0, -2.5, -2.5, 2.0, 3.0),
        ]
    }

    fn all_losses() -> Vec<PreferenceLoss> {
        [
            LossType::Sigmoid,
            LossType::Ipo,
            LossType::Simpo,
            LossType::Orpo,
        ]
        .into_iter()
        .map(|kind| PreferenceLoss {
            kind,
            beta: kind.default_beta(),
            simpo_gamma: 0.5,
            rpo_alpha: 0.0,
        })
        .collect()
    }

    #[test]
    fn derivatives_match_central_differences() {
        let h = 1e-6;
        for loss in all_losses() {
            for p in pairs() {
                let t = loss.pair(&p);
                let at = |c: f64, r: f64| {
                    loss.pair(&PairLogps {
                        chosen: c,
                        rejected: r,
                        ..p
                    })
                    .loss
                };
                let fd_c =
                    (at(p.chosen + h, p.rejected) - at(p.chosen - h, p.rejected)) / (2.0 * h);
                let fd_r =
                    (at(p.chosen, p.rejected + h) - at(p.chosen, p.rejected - h)) / (2.0 * h);
                assert!(
                    (fd_c - t.d_chosen).abs() < 1e-7 * (1.0 + fd_c.abs()),
                    "{:?} chosen: {fd_c} vs {}",
                    loss.kind,
                    t.d_chosen
                );
                assert!(
                    (fd_r - t.d_rejected).abs() < 1e-7 * (1.0 + fd_r.abs()),
                    "{:?} rejected: {fd_r} vs {}",
                    loss.kind,
                    t.d_rejected
                );
            }
        }
    }

    #[test]
    fn dpo_with_the_policy_equal_to_the_reference_is_ln_2() {
        let loss = PreferenceLoss {
            kind: LossType::Sigmoid,
            beta: 0.1,
            simpo_gamma: 0.0,
            rpo_alpha: 0.0,
        };
        for p in pairs() {
            let t = loss.pair(&PairLogps {
                chosen: p.ref_chosen,
                rejected: p.ref_rejected,
                ..p
            });
            assert_eq!(t.loss, std::f64::consts::LN_2);
            assert_eq!((t.chosen_reward, t.rejected_reward), (0.0, 0.0));
            // σ(0) = 1/2: the gradient pushes chosen up and rejected down by β/2.
            assert_eq!((t.d_chosen, t.d_rejected), (-0.05, 0.05));
        }
    }

    /// TRL 1.16's values (tests/fixtures/dpo_reference.json, `cases`) on its fixed inputs.
    #[test]
    fn every_loss_matches_trl() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let text = std::fs::read_to_string(root.join("dpo_reference.json")).unwrap();
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        let col = |name: &str| -> Vec<f64> {
            serde_json::from_value(r["loss_inputs"][name].clone()).unwrap()
        };
        let (pc, pr, rc, rr, lc, lr) = (
            col("policy_chosen_logps"),
            col("policy_rejected_logps"),
            col("ref_chosen_logps"),
            col("ref_rejected_logps"),
            col("chosen_lengths"),
            col("rejected_lengths"),
        );
        let inputs: Vec<PairLogps> = (0..4)
            .map(|i| PairLogps {
                chosen: pc[i],
                rejected: pr[i],
                ref_chosen: rc[i],
                ref_rejected: rr[i],
                chosen_len: lc[i],
                rejected_len: lr[i],
            })
            .collect();
        let cases: [(&str, LossType, f64, &str, f64); 5] = [
            ("sigmoid", LossType::Sigmoid, 0.0, "losses", 1.0),
            ("ipo", LossType::Ipo, 0.0, "losses", 1.0),
            ("simpo", LossType::Simpo, 0.0, "losses", 1.0),
            // TRL's ORPO `losses` are β·log σ(log-odds), the negative of the pair loss.
            ("orpo", LossType::Orpo, 0.0, "losses_f64", -1.0),
            ("sigmoid_rpo", LossType::Sigmoid, 0.5, "losses", 1.0),
        ];
        for (name, kind, rpo_alpha, losses_key, sign) in cases {
            let c = &r["cases"][name];
            let loss = PreferenceLoss {
                kind,
                beta: c["beta"].as_f64().unwrap(),
                simpo_gamma: c["simpo_gamma"].as_f64().unwrap_or(0.0),
                rpo_alpha,
            };
            let terms: Vec<PairTerms> = inputs.iter().map(|p| loss.pair(p)).collect();
            let want = |k: &str| -> Vec<f64> { serde_json::from_value(c[k].clone()).unwrap() };
            let close = |a: f64, b: f64, what: &str| {
                // TRL's ORPO rewards are float32; everything else float64.
                let tol = if name == "orpo" { 1e-7 } else { 1e-12 };
                assert!(
                    (a - b).abs() < tol * (1.0 + b.abs()),
                    "{name} {what}: {a} vs {b}"
                );
            };
            for (i, t) in terms.iter().enumerate() {
                close(t.loss, sign * want(losses_key)[i], "loss");
                close(t.chosen_reward, want("chosen_rewards")[i], "chosen reward");
                close(
                    t.rejected_reward,
                    want("rejected_rewards")[i],
                    "rejected reward",
                );
            }
            // The window's loss: the mean pair loss plus the NLL term at its weight.
            let mean = terms.iter().map(|t| t.loss).sum::<f64>() / 4.0;
            let nll = c["nll"].as_f64().unwrap_or(0.0);
            let total = mean + loss.nll_weight() * nll;
            let want_total = match name {
                "orpo" => c["orpo_total_f64"].as_f64().unwrap(),
                _ => c["loss"].as_f64().unwrap(),
            };
            close(total, want_total, "window loss");
        }
        // With the policy equal to the reference, DPO is ln 2 for every pair.
        let ln2: Vec<f64> =
            serde_json::from_value(r["cases"]["ln2_case"]["losses"].clone()).unwrap();
        assert!(ln2.iter().all(|&l| l == std::f64::consts::LN_2));
    }

    #[test]
    fn stable_far_from_zero() {
        let (v, g) = neg_log_sigmoid(800.0);
        assert_eq!((v, g), (0.0, -0.0));
        let (v, g) = neg_log_sigmoid(-800.0);
        assert_eq!((v, g), (800.0, -1.0));
        let (v, _) = log1m_exp(-1e-10);
        assert!((v - (1e-10f64).ln()).abs() < 1e-6);
    }
}
