//! The estimate of a whole job from its spec and training files, as the CLI and a worker's
//! memory check ask for it: the model's shape from its preset or folder, the data's size from
//! the files' bytes, or, when asked, the rows counted from the files as the trainer makes them.
//! Kept apart from [`super::estimate`], the cost model itself, which the chat trainers' memory
//! check uses: counting rows needs those trainers' data code.

use std::path::Path;

use candle_core::Device;

use super::estimate::{
    BYTES_PER_TOKEN, DataSize, Estimate, estimate_for_spec, machine_peak_gflops,
};
use super::job::{TrainError, TrainJob};
use super::row_count;
use crate::model;
use crate::spec::JobSpec;

/// The estimate for a job spec. The model is a preset or a local Hugging Face folder; the data's
/// size comes from the training files (their bytes / [`BYTES_PER_TOKEN`]) when given, else one
/// epoch of `max_steps` is assumed.
///
/// With `count_rows` (and a model folder, whose tokenizer a job would use), the rows are counted
/// from the files as the trainer makes them ([`row_count`]): the real step count.
pub fn estimate_job(
    spec: &JobSpec,
    training_files: &[&Path],
    count_rows: bool,
) -> Result<Estimate, TrainError> {
    spec.validate()?;
    let (cfg, from_scratch) = match model::preset(&spec.model) {
        Some(c) => (c, true),
        None => {
            let dir = Path::new(&spec.model);
            if !dir.join("config.json").is_file() {
                return Err(TrainError::UnknownModel(spec.model.clone()));
            }
            (crate::model::hf::read_config(dir)?, false)
        }
    };
    let mut bytes = 0u64;
    for f in training_files {
        bytes += std::fs::metadata(f)
            .map_err(|_| TrainError::MissingFile(f.to_path_buf()))?
            .len();
    }
    let mut data = (!training_files.is_empty())
        .then(|| DataSize::Tokens((bytes as f64 / BYTES_PER_TOKEN) as u64));
    if count_rows && !from_scratch && !training_files.is_empty() {
        let job = TrainJob {
            spec: spec.clone(),
            training_file: training_files[0].to_path_buf(),
            validation_file: spec.validation_file.as_deref().map(Into::into),
            output_dir: std::env::temp_dir(),
            resume_from: None,
            device: Device::Cpu,
            base_model_name: None,
        };
        if let Some(rows) = row_count::training_rows(&job)? {
            data = Some(DataSize::Rows(rows));
        }
    }
    Ok(estimate_for_spec(
        spec,
        cfg,
        from_scratch,
        data,
        machine_peak_gflops(),
    ))
}
