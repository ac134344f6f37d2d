//! The files a job trains and evaluates on, as domains: one unnamed training file (and maybe one
//! validation file) for a plain job; with `training_files` / `validation_files`, named files
//! with weights. Pretraining and SFT read each file into its own rows with their own reader;
//! this module says which files there are, where validation rows come from, and turns the rows'
//! token counts into the [`MixPlan`] the step loop deals from.
//!
//! In a spec the trainer runs, `training_files[i].file` and `validation_files[i].file` are local
//! paths (the worker and `wick train` rewrite the file ids or relative paths, and fill in each
//! `name` first, so names stay the ones the user saw).

use std::path::PathBuf;

use super::hparams::Resolved;
use super::job::TrainJob;
use super::mixture::{DomainRows, MixPlan, Stage, length_order};

/// One data file of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// The domain's name in metrics; `None` for a plain one-file job.
    pub name: Option<String>,
    pub path: PathBuf,
    /// The share of training tokens asked for (not normalised); `None`: the file's own share.
    pub weight: Option<f64>,
}

/// The job's training files, in the spec's order.
pub fn training_files(job: &TrainJob) -> Vec<DataFile> {
    match &job.spec.training_files {
        Some(files) => files
            .iter()
            .map(|f| DataFile {
                name: Some(f.domain().to_string()),
                path: PathBuf::from(&f.file),
                weight: f.weight,
            })
            .collect(),
        None => vec![DataFile {
            name: None,
            path: job.training_file.clone(),
            weight: None,
        }],
    }
}

/// The job's validation files; empty when validation rows are held out of the training files.
pub fn validation_files(job: &TrainJob) -> Vec<DataFile> {
    match &job.spec.validation_files {
        Some(files) => files
            .iter()
            .map(|f| DataFile {
                name: Some(f.domain().to_string()),
                path: PathBuf::from(&f.file),
                weight: None,
            })
            .collect(),
        None => job
            .validation_file
            .iter()
            .map(|p| DataFile {
                name: None,
                path: p.clone(),
                weight: None,
            })
            .collect(),
    }
}

/// The seed a domain's held-out split is drawn with: the job's for the first (so a one-file job
/// holds out what it always did), mixed with the domain's place for the others.
pub fn holdout_seed(seed: u64, domain: usize) -> u64 {
    seed ^ (domain as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The validation sets of a job: one per validation file, read by `read`, named as the file;
/// without validation files, the rows held out of each training file (`held_out`, named as it).
pub fn validation_sets<R>(
    held_out: Vec<(Option<String>, R)>,
    files: &[DataFile],
    mut read: impl FnMut(&std::path::Path) -> Result<R, super::job::TrainError>,
) -> Result<Vec<(Option<String>, R)>, super::job::TrainError> {
    if files.is_empty() {
        return Ok(held_out);
    }
    files
        .iter()
        .map(|f| Ok((f.name.clone(), read(&f.path)?)))
        .collect()
}

/// One domain's training rows, as the plan needs them: their real tokens and, for the length
/// curriculum, a length per row (what "short" means for that kind of row).
pub struct DomainTokens {
    pub tokens: Vec<u32>,
    pub lengths: Vec<f64>,
}

/// The order the step loop deals rows in: `files` in order, their rows laid end to end, the
/// weights (and curriculum stages) of the spec.
pub fn mix_plan(
    job: &TrainJob,
    hp: &Resolved,
    files: &[DataFile],
    rows: Vec<DomainTokens>,
) -> MixPlan {
    let by_length = job.spec.curriculum.as_ref().is_some_and(|c| c.by_length());
    let mut start = 0;
    let domains: Vec<DomainRows> = files
        .iter()
        .zip(rows)
        .map(|(f, r)| {
            let d = DomainRows {
                name: f.name.clone(),
                start,
                by_length: by_length.then(|| length_order(&r.lengths)),
                tokens: r.tokens,
            };
            start += d.tokens.len();
            d
        })
        .collect();
    let asked: Option<Vec<f64>> = files.iter().map(|f| f.weight).collect();
    let base = MixPlan::normalise(asked.as_deref(), &domains);
    let stages = match job.spec.curriculum.as_ref().and_then(|c| c.stages.as_ref()) {
        Some(stages) => stages
            .iter()
            .map(|st| {
                let w: Vec<f64> = files
                    .iter()
                    .map(|f| {
                        f.name
                            .as_ref()
                            .and_then(|n| st.weights.get(n))
                            .copied()
                            .unwrap_or(0.0)
                    })
                    .collect();
                Stage {
                    until_step: u64::from(st.until_step),
                    weights: MixPlan::normalise(Some(&w), &domains),
                }
            })
            .collect(),
        None => vec![Stage {
            until_step: u64::MAX,
            weights: base,
        }],
    };
    MixPlan {
        domains,
        stages,
        rows_per_step: (hp.batch_size * hp.gradient_accumulation_steps) as u64,
    }
}
