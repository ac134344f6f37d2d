//! Where things live in the blob store: one function per kind of object, so every reader and
//! writer of a key agrees on it.

/// An uploaded file (or a results file a job wrote) of organization `org_id`.
pub fn file(org_id: &str, file_id: &str) -> String {
    format!("files/{org_id}/{file_id}")
}

/// The folder of a job's finished model (a Hugging Face folder; `adapter/` inside for LoRA).
pub fn model(job_id: &str) -> String {
    format!("models/{job_id}")
}

/// The folder of one checkpoint of a job; `folder` is the checkpoint's folder name
/// (`checkpoint-00000012`, as the trainer writes it).
pub fn checkpoint(job_id: &str, folder: &str) -> String {
    format!("jobs/{job_id}/checkpoints/{folder}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_layout() {
        assert_eq!(file("org-1", "file-2"), "files/org-1/file-2");
        assert_eq!(model("ftjob-3"), "models/ftjob-3");
        assert_eq!(
            checkpoint("ftjob-3", "checkpoint-00000012"),
            "jobs/ftjob-3/checkpoints/checkpoint-00000012"
        );
    }
}
