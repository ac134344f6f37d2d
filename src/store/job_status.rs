//! Job states (the `jobs.status` column, typed), named as OpenAI's fine-tuning API names them (plus `paused`), and the only
//! transitions allowed between them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    ValidatingFiles,
    Queued,
    Running,
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::ValidatingFiles,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::ValidatingFiles => "validating_files",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Succeeded, failed and cancelled jobs never move again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Whether a job may move from `self` to `to`.
    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        match (self, to) {
            (ValidatingFiles, Queued | Failed | Cancelled) => true,
            (Queued, Running | Paused | Cancelled | Failed) => true,
            // Running -> Queued: the lease was lost or the worker stopped; another worker resumes.
            (Running, Succeeded | Failed | Cancelled | Paused | Queued) => true,
            (Paused, Queued | Cancelled) => true,
            _ => false,
        }
    }
}

/// The `status` column decodes straight into a [`JobStatus`].
impl TryFrom<String> for JobStatus {
    type Error = super::UnknownValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        super::decode_text("jobs.status", s, &Self::ALL, Self::as_str)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;
    use super::*;

    #[test]
    fn terminal_states_never_move() {
        for from in [Succeeded, Failed, Cancelled] {
            for to in JobStatus::ALL {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn the_normal_path_is_allowed() {
        assert!(ValidatingFiles.can_become(Queued));
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Succeeded));
        assert!(Running.can_become(Paused) && Paused.can_become(Queued));
        assert!(!Queued.can_become(Succeeded));
    }
}
