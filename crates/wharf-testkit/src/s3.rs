//! An in-process S3-protocol server (s3s-fs) on a free port, backed by a temporary directory.
