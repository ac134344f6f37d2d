//! How many training rows a job's data makes, counted as the trainer makes them, so the estimate
//! gives the run's real step count: documents tokenised and packed with EOS (continued
//! pretraining), conversations rendered with the model's template, masked, cut or dropped at the
//! sequence length and packed (supervised), preference pairs kept (DPO) — each file apart, minus
//! the validation rows held out of it. Pretraining a preset has no tokenizer before the job
//! trains one, so its rows are not counted here (the estimate falls back to the data's bytes).

use std::path::Path;

use super::data::{self, PackedRows, hold_out};
use super::domains;
use super::dpo::data::read_preference_file;
use super::hparams::{DEFAULT_MAX_SEQ_LEN, Resolved};
use super::job::{TrainError, TrainJob};
use super::sft::read_chat_file;
use super::sft_pack::pack_examples;
use super::token_stats::ModelText;
use crate::chat::loss_mask::Overlength;
use crate::spec::{self, MethodType};

/// The training rows (pairs, for preference tuning) of `job`, whose files are local paths and
/// whose `model` is a model folder; `None` for pretraining from scratch.
pub fn training_rows(job: &TrainJob) -> Result<Option<usize>, TrainError> {
    let spec = &job.spec;
    let dir = Path::new(&spec.model);
    if crate::model::preset(&spec.model).is_some() || !dir.join("config.json").is_file() {
        return Ok(None);
    }
    let cfg = crate::model::hf::read_config(dir)?;
    let hp = Resolved::from_spec(spec, false, cfg.num_parameters());
    let seq_len = hp
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(cfg.max_position_embeddings))
        .min(cfg.max_position_embeddings);
    let files = domains::training_files(job);
    let hold = domains::validation_files(job).is_empty();
    let split = |i: usize| domains::holdout_seed(hp.seed, i);
    let mut rows = 0;
    match spec.method.kind {
        MethodType::Pretrain => {
            let tokenizer = crate::tokenizer::load(&dir.join("tokenizer.json"))?;
            let ids = crate::tokenizer::special_ids(
                &tokenizer,
                cfg.bos_token_id,
                cfg.eos_token_id,
                cfg.pad_token_id,
            )?;
            for (i, f) in files.iter().enumerate() {
                let stream = data::tokenize_file(&f.path, &tokenizer, ids.eos)?;
                let packed = PackedRows::pack(&stream, seq_len, ids.pad);
                rows += if hold {
                    packed
                        .split_validation(hp.validation_split, split(i))
                        .0
                        .len()
                } else {
                    packed.len()
                };
            }
        }
        MethodType::Supervised | MethodType::Dpo => {
            let text = ModelText::from_folder(dir)?;
            let overlength = match spec.hyperparameters().overlength.unwrap_or_default() {
                spec::Overlength::Truncate => Overlength::Truncate,
                spec::Overlength::Drop => Overlength::Drop,
            };
            let packing = spec.hyperparameters().packing.unwrap_or(true);
            for (i, f) in files.iter().enumerate() {
                rows += if spec.method.kind == MethodType::Dpo {
                    let (mut pairs, ..) = read_preference_file(
                        &f.path,
                        text.tokenizer(),
                        text.template(),
                        seq_len,
                        overlength,
                    )?;
                    if hold {
                        hold_out(&mut pairs, hp.validation_split, split(i));
                    }
                    pairs.len()
                } else {
                    let (mut examples, ..) = read_chat_file(
                        &f.path,
                        text.tokenizer(),
                        text.template(),
                        seq_len,
                        overlength,
                    )?;
                    if hold {
                        hold_out(&mut examples, hp.validation_split, split(i));
                    }
                    pack_examples(&examples, seq_len, packing)
                        .map_err(|e| TrainError::Unsupported(e.to_string()))?
                        .len()
                };
            }
        }
    }
    Ok(Some(rows))
}
