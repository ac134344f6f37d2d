//! Where the blob store lives, as `--blob-store` names it (a setting, so it sits beside
//! [`crate::config`], below [`crate::blob`] which opens it): a local folder (`file:///path`, the
//! default being `<data-dir>/blobs`) or an S3-compatible bucket (`s3://bucket/prefix`), reached
//! with the usual `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP` for a plain-HTTP self-hosted server). Requests are
//! path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`, which is what self-hosted servers
//! (MinIO, Ceph, moto, s3s) expect.

use std::path::PathBuf;

/// A parsed `--blob-store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A folder on this machine.
    Local(PathBuf),
    /// A bucket, and the prefix (no leading or trailing `/`, maybe empty) every key goes under.
    S3 { bucket: String, prefix: String },
}

/// Why a `--blob-store` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("the blob store {0:?} is neither file:///absolute/path nor s3://bucket[/prefix]")]
    Scheme(String),
    #[error("the blob store {0:?} names no bucket (s3://bucket[/prefix])")]
    NoBucket(String),
    #[error("the blob store {0:?} is not an absolute path (file:///absolute/path)")]
    RelativePath(String),
}

impl std::str::FromStr for BlobLocation {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LocationError::NoBucket(s.into()));
            }
            Ok(BlobLocation::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            })
        } else if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(LocationError::RelativePath(s.into()));
            }
            Ok(BlobLocation::Local(PathBuf::from(path)))
        } else {
            Err(LocationError::Scheme(s.into()))
        }
    }
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobLocation::Local(p) => write!(f, "file://{}", p.display()),
            BlobLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            BlobLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_and_names_what_is_wrong() {
        assert_eq!(
            "s3://wick/prod/blobs/".parse(),
            Ok(BlobLocation::S3 {
                bucket: "wick".into(),
                prefix: "prod/blobs".into()
            })
        );
        assert_eq!(
            "s3://wick".parse(),
            Ok(BlobLocation::S3 {
                bucket: "wick".into(),
                prefix: "".into()
            })
        );
        assert_eq!(
            "file:///srv/wick".parse(),
            Ok(BlobLocation::Local("/srv/wick".into()))
        );
        assert_eq!(
            "s3:///x".parse::<BlobLocation>(),
            Err(LocationError::NoBucket("s3:///x".into()))
        );
        assert_eq!(
            "file://relative".parse::<BlobLocation>(),
            Err(LocationError::RelativePath("file://relative".into()))
        );
        assert_eq!(
            "gs://b".parse::<BlobLocation>(),
            Err(LocationError::Scheme("gs://b".into()))
        );
        let s3: BlobLocation = "s3://wick/p".parse().unwrap();
        assert_eq!(s3.to_string(), "s3://wick/p");
    }
}
